"""A comfyrs node host that runs the packs of a ComfyUI ``custom_nodes`` folder.

comfyrs starts it as ``PY comfyui_host.py --comfyui ROOT --packs DIR`` with the user's ComfyUI
Python (torch and the packs' requirements installed) when ``serve`` gets ``--comfyui-packs``.
Packs are loaded by ComfyUI's own loader (``nodes.load_custom_node``), after their
``prestartup_script.py``, with ComfyUI's modules importable and a ``PromptServer`` instance
for the routes and messages they register at import. Every class whose inputs and outputs are
primitives, IMAGE, MASK or LATENT is declared to comfyrs; the others are reported as not
runnable, with the reason. Nodes run through ComfyUI's own ``execution`` helpers (V1 and V3,
per-node instances, OUTPUT_IS_LIST, async nodes, ``ui`` results); ``comfy.utils.ProgressBar``
and interrupts are wired to comfyrs. See docs/node-protocol.md.
"""

import argparse
import asyncio
import importlib.util
import json
import logging
import os
import sys
import traceback

from comfyrs_node import Host, Interrupted

PORTABLE = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO", "IMAGE", "MASK", "LATENT", "*"}


def type_names(spec_type):
    """The type names of one declared input/output type (a list is a combo)."""
    if isinstance(spec_type, (list, tuple)):
        return ["COMBO"]
    return [t.strip() for t in str(spec_type).split(",")]


class ComfyUIHost(Host):
    name = "comfyui"
    language = "python"

    def __init__(self, root, packs):
        super().__init__()
        self.root = os.path.abspath(root)
        self.packs = os.path.abspath(packs)
        self.classes = {}
        self.instances = {}
        self.loop = None

    # --- start-up --------------------------------------------------------------------------

    def on_hello(self, msg):
        sys.path.insert(0, self.root)
        os.chdir(self.root)
        argv = [os.path.join(self.root, "main.py")]
        try:
            import torch

            if not torch.cuda.is_available() and not (
                hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
            ):
                argv.append("--cpu")
        except ImportError:
            pass
        # The packs' web assets are served by comfyrs; ComfyUI's frontend is not needed here.
        # An empty folder inside the exchange folder (removed with it).
        no_frontend = os.path.join(self.exchange_dir, "no-frontend")
        os.makedirs(no_frontend, exist_ok=True)
        argv += ["--front-end-root", no_frontend]
        sys.argv = argv
        import comfy.options

        comfy.options.enable_args_parsing()
        # As main.py does first: later imports shadow ComfyUI's `utils` package otherwise.
        import utils.extra_config  # noqa: F401
        import comfy.cli_args  # noqa: F401  (parses sys.argv)

        self.version = "ComfyUI"
        try:
            import comfyui_version

            self.version = "ComfyUI " + comfyui_version.__version__
        except ImportError:
            pass
        import folder_paths

        paths = msg.get("paths") or {}
        if paths.get("output"):
            folder_paths.set_output_directory(paths["output"])
        if paths.get("input"):
            folder_paths.set_input_directory(paths["input"])
        if paths.get("temp"):
            folder_paths.set_temp_directory(paths["temp"])
        folder_paths.add_model_folder_path("custom_nodes", self.packs, is_default=True)

    def _prestartup(self):
        for name in sorted(os.listdir(self.packs)):
            script = os.path.join(self.packs, name, "prestartup_script.py")
            if name.endswith(".disabled") or not os.path.isfile(script):
                continue
            try:
                spec = importlib.util.spec_from_file_location(os.path.splitext(script)[0], script)
                module = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(module)
            except Exception as e:
                logging.error(f"Failed to execute startup-script: {script} / {e}")

    def _load(self):
        self._prestartup()
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        import comfy.model_management
        import comfy.utils
        import nodes
        import server

        prompt_server = server.PromptServer(self.loop)
        host = self

        def send_sync(event, data, sid=None):
            # Node code's messages to its frontend extension go out on comfyrs' WebSocket,
            # to every client without a sid (as ComfyUI does), else to the prompt's client.
            # Outside a node call there is no prompt to attach them to: dropped.
            ctx = host._ctx
            if ctx is None:
                logging.debug(f"send_sync {event} outside a node call dropped")
                return
            if isinstance(data, (bytes, bytearray)):
                logging.debug(f"binary send_sync {event} dropped")
                return
            ctx.send_sync(event, data, broadcast=sid is None)

        prompt_server.send_sync = send_sync
        comfy.utils.set_progress_bar_global_hook(self._progress_hook)
        core = set(nodes.NODE_CLASS_MAPPINGS)
        failed = {}
        for name in sorted(os.listdir(self.packs)):
            path = os.path.join(self.packs, name)
            if name == "__pycache__" or name.endswith(".disabled"):
                continue
            if os.path.isfile(path) and os.path.splitext(path)[1] != ".py":
                continue
            ok = self.loop.run_until_complete(nodes.load_custom_node(path, core, module_parent="custom_nodes"))
            if not ok:
                failed[name] = "the pack failed to import (IMPORT FAILED); see comfyrs' log"
        del host
        return nodes, server, core, failed

    def list_nodes(self):
        nodes, server, core, failed = self._load()
        from comfy_api.internal import _ComfyNodeInternal

        out, unavailable, extra = {}, {}, {}
        for pack, why in failed.items():
            unavailable[f"{pack} (pack)"] = why
        for name, cls in nodes.NODE_CLASS_MAPPINGS.items():
            if name in core:
                continue
            try:
                info = self._node_info(nodes, name, cls, _ComfyNodeInternal)
                info = json.loads(json.dumps(info, default=str))
            except Exception as e:
                unavailable[name] = f"its declaration cannot be read: {type(e).__name__}: {e}"
                continue
            reason = self._not_portable(info)
            if reason:
                unavailable[name] = reason
                continue
            self.classes[name] = (cls, info)
            out[name] = info
            extra[name] = {
                "input_is_list": bool(getattr(cls, "INPUT_IS_LIST", False)),
                "not_idempotent": bool(getattr(cls, "NOT_IDEMPOTENT", False)),
                "fingerprint": self._is_changed_name(cls) is not None,
                "check_lazy_status": self._has_lazy_status(cls),
                "validate_inputs": self._validate_spec(cls),
                "dynamic_inputs": self._dynamic_inputs(cls),
            }
        web = {k: os.path.abspath(v) for k, v in nodes.EXTENSION_WEB_DIRS.items()}
        return {"nodes": out, "unavailable": unavailable, "extra": extra, "web_dirs": web}

    @staticmethod
    def _node_info(nodes, name, cls, v3_base):
        """The class's /object_info entry, as ComfyUI's server builds it."""
        if issubclass(cls, v3_base):
            return cls.GET_NODE_INFO_V1()
        inputs = cls.INPUT_TYPES()
        info = {
            "input": inputs,
            "input_order": {k: list(v.keys()) for k, v in inputs.items()},
            "output": cls.RETURN_TYPES,
            "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
            "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
            "name": name,
            "display_name": nodes.NODE_DISPLAY_NAME_MAPPINGS.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", "nodes"),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
        if getattr(cls, "DEPRECATED", False):
            info["deprecated"] = True
        if getattr(cls, "EXPERIMENTAL", False):
            info["experimental"] = True
        if hasattr(cls, "API_NODE"):
            info["api_node"] = cls.API_NODE
        return info

    @staticmethod
    def _not_portable(info):
        for section in ("required", "optional"):
            for key, spec in (info.get("input", {}).get(section) or {}).items():
                for t in type_names(spec[0] if isinstance(spec, (list, tuple)) and spec else spec):
                    if t not in PORTABLE:
                        return (f"input '{key}' is {t}; only primitives, IMAGE, MASK and LATENT "
                                "cross between comfyrs and ComfyUI packs (not yet runnable)")
        for i, t in enumerate(info.get("output", [])):
            for n in type_names(t):
                if n not in PORTABLE:
                    return (f"output {i} is {n}; only primitives, IMAGE, MASK and LATENT cross "
                            "between comfyrs and ComfyUI packs (not yet runnable)")
        return None

    @staticmethod
    def _has_lazy_status(cls):
        """Whether ComfyUI's executor would call the class's check_lazy_status."""
        from comfy_api.internal import _ComfyNodeInternal, first_real_override

        if issubclass(cls, _ComfyNodeInternal):
            return first_real_override(cls, "check_lazy_status") is not None
        return getattr(cls, "check_lazy_status", None) is not None

    @staticmethod
    def _validate_function(cls):
        """VALIDATE_INPUTS (V1) or validate_inputs (V3), found as ComfyUI's validation finds it."""
        from comfy_api.internal import _ComfyNodeInternal, first_real_override

        if issubclass(cls, _ComfyNodeInternal):
            return "validate_inputs", first_real_override(cls, "validate_inputs")
        return "VALIDATE_INPUTS", getattr(cls, "VALIDATE_INPUTS", None)

    @classmethod
    def _validate_spec(cls_, cls):
        """Its parameters, as ComfyUI reads them (inputs named there skip the min/max/choice
        checks), or None."""
        import inspect

        _, fn = cls_._validate_function(cls)
        if fn is None:
            return None
        spec = inspect.getfullargspec(fn)
        return {"args": list(spec.args), "kwargs": spec.varkw is not None}

    @staticmethod
    def _dynamic_inputs(cls):
        """Whether the class takes inputs beyond its declaration, and as which type: its
        optional dict claims any name (a pack's "flexible" dict), or its function takes
        ``**kwargs`` (ComfyUI passes undeclared linked inputs to it)."""
        import inspect

        from comfy_api.internal import _ComfyNodeInternal

        if issubclass(cls, _ComfyNodeInternal):
            return None
        probe = "__comfyrs_undeclared_input__"
        try:
            optional = cls.INPUT_TYPES().get("optional")
            if optional is not None and probe in optional:
                spec = optional[probe]
                ty = spec[0] if isinstance(spec, (list, tuple)) and spec else "*"
                return {"type": ty if isinstance(ty, str) else "*"}
        except Exception:
            pass
        fn = getattr(cls, getattr(cls, "FUNCTION", ""), None)
        try:
            if fn is not None and inspect.getfullargspec(fn).varkw is not None:
                return {"type": "*"}
        except TypeError:
            pass
        return None

    def validate_inputs(self, class_type, inputs):
        """ComfyUI's custom validation: the literal inputs its function names (all of them
        with ``**kwargs``), plus ``input_types`` when asked for (the declared types of the
        linked inputs, which comfyrs has checked against the links)."""
        import execution

        cls, info = self.classes[class_type]
        name, fn = self._validate_function(cls)
        if fn is None:
            return True
        spec = self._validate_spec(cls)
        args, kwargs = spec["args"], spec["kwargs"]
        data = {k: [v] for k, v in inputs.items() if k in args or kwargs}
        if "input_types" in args:
            types = {}
            for section in ("required", "optional"):
                for key, decl in (info.get("input", {}).get(section) or {}).items():
                    if key not in inputs and isinstance(decl, (list, tuple)) and decl \
                            and isinstance(decl[0], str):
                        types[key] = decl[0]
            data["input_types"] = [types]

        async def run():
            r = await execution._async_map_node_over_list(None, None, cls, data, name)
            return await execution.resolve_map_node_over_list_results(r)

        for r in self.loop.run_until_complete(run()):
            if r is not True and type(r).__name__ != "ExecutionBlocker":
                return r
        return True

    @staticmethod
    def _is_changed_name(cls):
        """The class's IS_CHANGED method, found as ComfyUI's IsChangedCache finds it."""
        from comfy_api.internal import _ComfyNodeInternal, first_real_override

        if issubclass(cls, _ComfyNodeInternal) and first_real_override(cls, "fingerprint_inputs") is not None:
            return "fingerprint_inputs"
        if hasattr(cls, "IS_CHANGED"):
            return "IS_CHANGED"
        return None

    def fingerprint(self, class_type, inputs):
        import execution

        cls, info = self.classes[class_type]
        data = {k: [v] for k, v in inputs.items()}
        # Linked inputs reach IS_CHANGED as None in ComfyUI.
        for section in ("required", "optional"):
            for name in (info.get("input", {}).get(section) or {}):
                if name not in data and section == "required":
                    data[name] = [None]

        async def run():
            r = await execution._async_map_node_over_list(None, None, cls, data, self._is_changed_name(cls))
            return await execution.resolve_map_node_over_list_results(r)

        try:
            values = self.loop.run_until_complete(run())
        except Exception as e:
            logging.warning("WARNING: {}".format(e))
            return float("nan")
        # NaN never equals itself: ComfyUI runs such a node every time.
        if any(isinstance(v, float) and v != v for v in values):
            return float("nan")
        return values

    # --- values ----------------------------------------------------------------------------

    def read_tensors(self, path):
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
        return load_file(path), meta

    def write_tensors(self, path, tensors, metadata=None):
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").float().contiguous() for k, v in tensors.items()}
        save_file(tensors, path + ".part", metadata=metadata or None)
        os.replace(path + ".part", path)

    def encode(self, v, ty):
        import torch

        if ty == "*" or "," in str(ty):
            # The declared type does not say: go by the value.
            if isinstance(v, torch.Tensor):
                ty = "IMAGE" if v.dim() == 4 else "MASK"
            elif isinstance(v, dict) and isinstance(v.get("samples"), torch.Tensor):
                ty = "LATENT"
        elif isinstance(v, torch.Tensor) and ty in ("INT", "FLOAT", "BOOLEAN"):
            v = v.item()
        if ty in ("IMAGE", "MASK", "LATENT"):
            return super().encode(v, ty)
        if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
            v = v.item()
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError):
            raise TypeError(f"a {type(v).__name__} value ({ty}) cannot be passed to comfyrs")
        return v

    # --- execution -------------------------------------------------------------------------

    def _progress_hook(self, value, total, preview_image=None, prompt_id=None, node_id=None):
        import comfy.model_management

        if self._ctx is not None:
            self.send({"type": "progress", "id": self._ctx._id, "value": value, "max": total})
        comfy.model_management.throw_exception_if_processing_interrupted()

    _ctx = None

    def _call_data(self, ctx, class_type, inputs):
        """The node instance (one per node id, as ComfyUI keeps them), its inputs as ComfyUI's
        per-input lists with hidden values added, and V3 hidden inputs."""
        from comfy_api.internal import _ComfyNodeInternal
        from comfy_api.latest import io
        from comfy_execution.graph import DynamicPrompt

        cls, info = self.classes[class_type]
        key = (ctx.node_id, class_type)
        obj = self.instances.get(key)
        if obj is None:
            obj = cls()
            self.instances[key] = obj
        list_input = bool(getattr(cls, "INPUT_IS_LIST", False))
        data = {k: (v if list_input and isinstance(v, list) else [v]) for k, v in inputs.items()}
        hidden = ctx.hidden or {}
        prompt = hidden.get("prompt") or {}
        hidden_v3 = {}
        declared = (info.get("input") or {}).get("hidden") or {}
        for name, kind in declared.items():
            kind = kind[0] if isinstance(kind, (list, tuple)) else kind
            value = {
                "PROMPT": prompt,
                "DYNPROMPT": DynamicPrompt(prompt),
                "EXTRA_PNGINFO": hidden.get("extra_pnginfo"),
                "UNIQUE_ID": ctx.node_id,
            }.get(kind)
            if issubclass(cls, _ComfyNodeInternal):
                hk = {"PROMPT": io.Hidden.prompt, "DYNPROMPT": io.Hidden.dynprompt,
                      "EXTRA_PNGINFO": io.Hidden.extra_pnginfo, "UNIQUE_ID": io.Hidden.unique_id}.get(kind)
                if hk is not None:
                    hidden_v3[hk] = value
            else:
                data[name] = [value]
        return obj, data, hidden_v3

    def check_lazy_status(self, ctx, class_type, inputs):
        import execution

        # Linked lazy inputs that have not run arrive as None (comfyrs sends null), as
        # ComfyUI passes them.
        obj, data, hidden_v3 = self._call_data(ctx, class_type, inputs)

        async def run():
            r = await execution._async_map_node_over_list(
                ctx.prompt_id, ctx.node_id, obj, data, "check_lazy_status", allow_interrupt=True,
                hidden_inputs=hidden_v3)
            return await execution.resolve_map_node_over_list_results(r)

        results = self.loop.run_until_complete(run())
        needed = []
        for r in results:
            if isinstance(r, list):
                needed.extend(x for x in r if isinstance(x, str) and x not in needed)
        return needed

    def execute(self, ctx, class_type, inputs):
        import comfy.model_management
        import execution

        info = self.classes[class_type][1]
        obj, data, hidden_v3 = self._call_data(ctx, class_type, inputs)

        async def run():
            results = await execution._async_map_node_over_list(
                ctx.prompt_id, ctx.node_id, obj, data, obj.FUNCTION, allow_interrupt=True,
                hidden_inputs=hidden_v3)
            results = await execution.resolve_map_node_over_list_results(results)
            return execution.get_output_from_returns(results, obj)

        comfy.model_management.interrupt_current_processing(False)
        self._ctx = ctx
        watcher = None
        try:
            import threading

            stop = threading.Event()

            def watch():
                # Turn comfyrs' interrupt into ComfyUI's flag, which nodes and ProgressBar check.
                while not stop.wait(0.02):
                    if self._interrupt.is_set():
                        comfy.model_management.interrupt_current_processing(True)
                        return

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            output, ui, has_subgraph = self.loop.run_until_complete(run())
        except comfy.model_management.InterruptProcessingException:
            raise Interrupted()
        finally:
            self._ctx = None
            if watcher is not None:
                stop.set()
        if has_subgraph:
            raise RuntimeError("node expansion (subgraph results) is not supported through comfyrs yet")
        types = info.get("output", [])
        is_list = info.get("output_is_list", [])
        result = []
        for i, slot in enumerate(output):
            if i < len(is_list) and is_list[i]:
                result.append(_ListOut(slot))
            else:
                result.append(slot[0] if isinstance(slot, list) and slot else slot)
        out = {"result": tuple(result)}
        if ui:
            out["ui"] = json.loads(json.dumps(ui, default=str))
        return out

    def output_types(self, class_type):
        return self.classes[class_type][1].get("output", [])


class _ListOut(list):
    """An OUTPUT_IS_LIST slot: encoded item by item."""


class _Host(ComfyUIHost):
    def encode(self, v, ty):
        if isinstance(v, _ListOut):
            return {"$list": [ComfyUIHost.encode(self, x, ty) for x in v]}
        return ComfyUIHost.encode(self, v, ty)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--comfyui", required=True, help="the ComfyUI checkout")
    p.add_argument("--packs", required=True, help="the custom_nodes folder")
    a = p.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    _Host(a.comfyui, a.packs).run()
    # comfyrs closed stdin: leave now, whatever threads ComfyUI or the packs started.
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
