"""A tiny ComfyUI-style custom node pack (written for comfyrs' tests; not from any real pack).

It imports ComfyUI modules at load as real packs do, registers a route on the PromptServer,
and declares nodes of each kind the comfyrs host must handle: tensors in and out, a list
output, a ``ui`` result, progress through ``comfy.utils.ProgressBar``, an interrupt check,
and a MODEL-typed node that is reported as not runnable."""

import torch

import comfy.model_management
import comfy.utils
import folder_paths  # noqa: F401  (packs import it at load)
import server
from aiohttp import web

WEB_DIRECTORY = "./web/js"


@server.PromptServer.instance.routes.get("/demo_pack/ping")
async def ping(request):
    return web.json_response({"pong": True})


class DemoBrighten:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "amount": ("FLOAT", {"default": 0.1, "min": -1.0, "max": 1.0, "step": 0.01})}}

    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("image", "luma")
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, image, amount):
        out = (image + amount).clamp(0, 1)
        luma = out[..., 0] * 0.299 + out[..., 1] * 0.587 + out[..., 2] * 0.114
        return (out, luma)


class DemoSplitWords:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "default": "a b"})}}

    RETURN_TYPES = ("STRING", "INT")
    OUTPUT_IS_LIST = (True, False)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, text):
        words = text.split()
        return (words, len(words))


class DemoShowText:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"forceInput": True})}, "hidden": {"unique_id": "UNIQUE_ID"}}

    INPUT_IS_LIST = True
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "demo"

    def run(self, text, unique_id=None):
        joined = "|".join(text)
        return {"ui": {"text": [joined], "node": [unique_id]}, "result": (joined,)}


class DemoLatentScale:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "factor": ("FLOAT", {"default": 2.0}),
                             "offset": ("FLOAT", {"default": 0.0})}}

    RETURN_TYPES = ("LATENT",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, samples, factor, offset):
        out = samples.copy()
        out["samples"] = samples["samples"] * factor + offset
        return (out,)


class DemoLatentInfo:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",)}}

    RETURN_TYPES = ()
    FUNCTION = "run"
    OUTPUT_NODE = True
    CATEGORY = "demo"

    def run(self, samples):
        s = samples["samples"]
        return {"ui": {"shape": list(s.shape), "sum": [float(s.sum())],
                       "batch_index": [samples.get("batch_index")]}}


class DemoSteps:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 3, "min": 1, "max": 100000})}}

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, steps):
        bar = comfy.utils.ProgressBar(steps)
        for i in range(steps):
            comfy.model_management.throw_exception_if_processing_interrupted()
            bar.update(1)
            torch.ones(64, 64).sum()
        return (steps,)


class DemoCounter:
    """Counts its own runs; IS_CHANGED says "always" (NaN) or gives the mode back."""

    def __init__(self):
        self.runs = 0

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mode": (["always", "stable"],)}}

    @classmethod
    def IS_CHANGED(cls, mode):
        return float("nan") if mode == "always" else mode

    RETURN_TYPES = ("INT",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, mode):
        self.runs += 1
        return (self.runs,)


class DemoModelPatch:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    RETURN_TYPES = ("MODEL",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, model):
        return (model,)


class DemoFails:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"default": ""})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, text):
        raise KeyError(f"no such word: {text}")


class DemoEvenSteps:
    """VALIDATE_INPUTS naming one input: `steps` is checked by it, not by its declared max."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 2, "min": 0, "max": 10}),
                             "label": ("STRING", {"default": "s"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, steps):
        if steps % 2:
            return f"steps must be even, got {steps}"
        return True

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, steps, label):
        return (f"{label}{steps}",)


class DemoRejectAll:
    """VALIDATE_INPUTS with **kwargs answering False: every literal input fails."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"a": ("INT", {"default": 1, "min": 0, "max": 5}), "b": ("STRING", {"default": "x"})}}

    @classmethod
    def VALIDATE_INPUTS(cls, **kwargs):
        return kwargs.get("a") != 99

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, a, b):
        return (f"{b}{a}",)


class DemoJoinAny:
    """Takes inputs beyond its declaration through **kwargs (the frontend adds them)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"sep": ("STRING", {"default": ","})}}

    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, sep, **kwargs):
        parts = []
        for k in sorted(kwargs):
            v = kwargs[k]
            if isinstance(v, torch.Tensor):
                v = "x".join(str(d) for d in v.shape)
            parts.append(f"{k}={v}")
        return (sep.join(parts),)


class _AnyName(dict):
    """A "flexible" optional dict, as some packs declare: every name is an optional input."""

    def __contains__(self, key):
        return True

    def __getitem__(self, key):
        return ("*",)


class DemoFlexibleSum:
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}, "optional": _AnyName()}

    RETURN_TYPES = ("FLOAT",)
    FUNCTION = "run"
    CATEGORY = "demo"

    def run(self, **kwargs):
        return (float(sum(v for v in kwargs.values() if isinstance(v, (int, float)))),)


NODE_CLASS_MAPPINGS = {
    "DemoEvenSteps": DemoEvenSteps,
    "DemoRejectAll": DemoRejectAll,
    "DemoJoinAny": DemoJoinAny,
    "DemoFlexibleSum": DemoFlexibleSum,
    "DemoBrighten": DemoBrighten,
    "DemoSplitWords": DemoSplitWords,
    "DemoShowText": DemoShowText,
    "DemoLatentScale": DemoLatentScale,
    "DemoLatentInfo": DemoLatentInfo,
    "DemoSteps": DemoSteps,
    "DemoCounter": DemoCounter,
    "DemoModelPatch": DemoModelPatch,
    "DemoFails": DemoFails,
    # A core name: ComfyUI keeps its own class.
    "EmptyImage": DemoBrighten,
}
NODE_DISPLAY_NAME_MAPPINGS = {"DemoBrighten": "Brighten (demo)"}
