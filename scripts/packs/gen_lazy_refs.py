#!/usr/bin/env python3
"""Writes tests/data/packs/lazy_reference.json: how ComfyUI 0.3.64's own executor runs
workflows with lazy inputs, through the Impact Pack's `ImpactSwitch` (the most used lazy
node), and that class's `/object_info` entry. cli/tests/lazy_inputs.rs runs the same prompts
on comfyrs and compares which nodes ran and what the outputs show.

Set-up as in README.md here, with ltdrdata/ComfyUI-Impact-Pack in BASE/custom_nodes and its
load-time imports in the deps folder (`pip install --target DEPS --no-deps
opencv-python-headless scikit-image piexif segment-anything dill lazy_loader imageio tifffile
networkx`). The pack imports its detector subpack (a separate repository, not needed by the
switch) at load: an empty `modules/impact/subpack_nodes.py` in the scratch copy stands in.

Usage:
  PYTHONPATH=DEPS VENV/bin/python scripts/packs/gen_lazy_refs.py COMFYUI_DIR BASE OUT.json
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def s(value):
    return {"class_type": "PrimitiveString", "inputs": {"value": value}}


def cat(a, b):
    return {"class_type": "StringConcatenate", "inputs": {"string_a": a, "string_b": b, "delimiter": ""}}


def show(src):
    return {"class_type": "PreviewAny", "inputs": {"source": src}}


def switch(select, **inputs):
    d = {"select": select, "sel_mode": False}
    d.update(inputs)
    return {"class_type": "ImpactSwitch", "inputs": d}


# Each case: a prompt (API format) and optional extra_pnginfo. Node ids name their role.
CASES = {
    # Only the chosen branch runs; the others (and what feeds only them) do not.
    "select_second_of_three": {
        "prompt": {
            "a": s("A"), "a2": cat(["a", 0], "!"),
            "b": s("B"), "b2": cat(["b", 0], "?"),
            "c": s("C"),
            "sw": switch(2, input1=["a2", 0], input2=["b2", 0], input3=["c", 0]),
            "out": show(["sw", 0]), "label": show(["sw", 1]), "index": show(["sw", 2]),
        },
    },
    # A select beyond the connected inputs: the switch asks for an input it does not have,
    # which ComfyUI's executor refuses (NodeInputError).
    "select_missing_input": {
        "prompt": {
            "a": s("A"),
            "sw": switch(4, input1=["a", 0]),
            "out": show(["sw", 0]), "label": show(["sw", 1]), "index": show(["sw", 2]),
        },
    },
    # The select comes from another node (a strong input); a branch shared with a strong
    # consumer runs anyway.
    "linked_select_and_shared_branch": {
        "prompt": {
            "n": {"class_type": "PrimitiveInt", "inputs": {"value": 1}},
            "a": s("A"), "b": s("B"),
            "sw": switch(["n", 0], input1=["a", 0], input2=["b", 0]),
            "both": cat(["b", 0], ["sw", 0]),
            "out": show(["both", 0]),
        },
    },
    # Switches feeding switches: only the chosen path through both runs.
    "nested_switches": {
        "prompt": {
            "a": s("A"), "b": s("B"), "c": s("C"),
            "inner": switch(2, input1=["a", 0], input2=["b", 0]),
            "outer": switch(1, input1=["inner", 0], input2=["c", 0]),
            "out": show(["outer", 0]),
        },
    },
    # The frontend's slot label (extra_pnginfo.workflow) names the choice.
    "label_from_the_workflow": {
        "prompt": {
            "a": s("A"), "b": s("B"),
            "7": switch(2, input1=["a", 0], input2=["b", 0]),
            "out": show(["7", 0]), "label": show(["7", 1]),
        },
        "extra_pnginfo": {"workflow": {"nodes": [
            {"id": 7, "type": "ImpactSwitch", "inputs": [
                {"name": "input1", "type": "*", "link": 1},
                {"name": "input2", "type": "*", "link": 2, "label": "the B side"},
            ]},
        ]}},
    },
}


def run(executor, events, case):
    events.clear()
    extra = {"client_id": "reference"}
    if "extra_pnginfo" in case:
        extra["extra_pnginfo"] = case["extra_pnginfo"]
    outputs = [k for k, v in case["prompt"].items() if v["class_type"] == "PreviewAny"]
    executor.execute(case["prompt"], "p", extra, outputs)
    ran = sorted({d["node"] for e, d in events if e == "executing" and d.get("node")})
    shown = {d["node"]: d["output"] for e, d in events if e == "executed"}
    errors = [
        {k: d[k] for k in ("node_id", "node_type", "exception_type", "exception_message")}
        for e, d in events if e == "execution_error"
    ]
    return {"success": executor.success, "ran": ran, "ui": shown, "errors": errors}


def main():
    comfyui, base, out_path = sys.argv[1], sys.argv[2], os.path.abspath(sys.argv[3])
    import comfyui_packs
    nodes, object_info = comfyui_packs.load(comfyui, base)
    import execution
    import server

    srv = server.PromptServer.instance
    events = []
    srv.send_sync = lambda event, data, sid=None: events.append((event, data))
    results = {}
    for name, case in CASES.items():
        # A fresh executor per case: nothing cached from the previous one.
        executor = execution.PromptExecutor(srv)
        results[name] = dict(case, result=run(executor, events, case))
    ref = {
        "comfyui": "0.3.64 (a125cd84)",
        "object_info": {"ImpactSwitch": object_info("ImpactSwitch")},
        "cases": results,
    }
    with open(out_path, "w") as f:
        json.dump(ref, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
