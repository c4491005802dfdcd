"""Loads ComfyUI (0.3.64) with the custom node packs of BASE/custom_nodes the way main.py does,
in-process, so that node classes can be asked for their `/object_info` entries and executed.

Shared by gen_pack_refs.py. ComfyUI's source and venv and the packs are NOT part of this
repository (scripts/packs/README.md says how to set them up).
"""
import asyncio
import os
import sys


class _Request:
    def __init__(self, match_info):
        self.match_info = match_info
        self.rel_url = None


def load(comfyui_dir, base_dir):
    sys.path.insert(0, comfyui_dir)
    os.chdir(comfyui_dir)
    sys.argv = [sys.argv[0], "--cpu", "--base-directory", base_dir, "--disable-api-nodes"]
    import comfy.options
    comfy.options.enable_args_parsing()
    import utils.extra_config  # noqa: F401  (main.py imports ComfyUI's `utils` package first)
    import comfy.cli_args  # noqa: F401  (applies --base-directory to folder_paths)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    import server
    srv = server.PromptServer(loop)
    import nodes
    loop.run_until_complete(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
    handler = None
    for route in srv.routes:
        if getattr(route, "path", None) == "/object_info/{node_class}" and route.method == "GET":
            handler = route.handler
    if handler is None:
        raise RuntimeError("GET /object_info/{node_class} not found")

    def object_info(cls):
        import json
        resp = loop.run_until_complete(handler(_Request({"node_class": cls})))
        return json.loads(resp.text)[cls]

    return nodes, object_info
