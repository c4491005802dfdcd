"""ComfyUI's own validation of the test pack's VALIDATE_INPUTS / undeclared-input prompts.

Run with the reference ComfyUI and its Python:

    /work/ref/venv/bin/python scripts/comfyui_packs/validate_reference.py \
        --comfyui /work/ref/ComfyUI > tests/data/node_hosts/validate_inputs_comfyui.json

It loads tests/node_hosts/custom_nodes/demo_pack with ComfyUI's loader and prints, for each
prompt below, what `execution.validate_prompt` answers (valid, and the node errors), which
tests/comfyui_packs.rs compares comfyrs' answers with.
"""

import argparse
import asyncio
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
PACK = os.path.join(HERE, "..", "..", "tests", "node_hosts", "custom_nodes", "demo_pack")


def show(class_type, inputs):
    return {"1": {"class_type": class_type, "inputs": inputs},
            "2": {"class_type": "PreviewAny", "inputs": {"source": ["1", 0]}}}


PROMPTS = {
    "even_steps_odd": show("DemoEvenSteps", {"steps": 3, "label": "s"}),
    "even_steps_over_max": show("DemoEvenSteps", {"steps": 12, "label": "s"}),
    "reject_all": show("DemoRejectAll", {"a": 99, "b": "x"}),
    "reject_all_ok": show("DemoRejectAll", {"a": 7, "b": "y"}),
    "undeclared_linked": {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 4, "batch_size": 1, "color": 0}},
        "2": {"class_type": "PrimitiveString", "inputs": {"value": "hi"}},
        "3": {"class_type": "DemoJoinAny", "inputs": {"sep": ";", "img": ["1", 0], "word": ["2", 0]}},
        "4": {"class_type": "PreviewAny", "inputs": {"source": ["3", 0]}},
        "5": {"class_type": "PrimitiveInt", "inputs": {"value": 2}},
        "6": {"class_type": "PrimitiveFloat", "inputs": {"value": 0.5}},
        "7": {"class_type": "DemoFlexibleSum", "inputs": {"x": ["5", 0], "y": ["6", 0]}},
        "8": {"class_type": "PreviewAny", "inputs": {"source": ["7", 0]}},
    },
}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--comfyui", required=True)
    a = p.parse_args()
    root = os.path.abspath(a.comfyui)
    sys.path.insert(0, root)
    os.chdir(root)
    sys.argv = [os.path.join(root, "main.py"), "--cpu"]
    import comfy.options

    comfy.options.enable_args_parsing()
    import utils.extra_config  # noqa: F401
    import comfy.cli_args  # noqa: F401
    import execution
    import nodes
    import server

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    server.PromptServer(loop)
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
    core = set(nodes.NODE_CLASS_MAPPINGS)
    assert loop.run_until_complete(nodes.load_custom_node(os.path.abspath(PACK), core, module_parent="custom_nodes"))
    out = {}
    for name, prompt in PROMPTS.items():
        valid, error, good, node_errors = loop.run_until_complete(execution.validate_prompt("p", prompt, None))
        out[name] = {"valid": valid, "node_errors": {k: v["errors"] for k, v in node_errors.items()}}
    print(json.dumps(out, indent=1, sort_keys=True, default=str))


if __name__ == "__main__":
    main()
