#!/usr/bin/env python3
"""Writes tests/data/animated_save_golden.safetensors: ComfyUI's SaveAnimatedPNG and
SaveAnimatedWEBP (comfy_extras/nodes_images.py, through Pillow) on a fixed batch of 5 frames
(frames 1 and 2 identical, so Pillow merges them in the APNG), decoded again with Pillow:
"input" the IMAGE batch; "<case>/frames" the decoded RGB(A) frames [N, H, W, C] as uint8
values in f32; metadata "<case>" the per-frame durations, frame count, the text chunks /
EXIF Pillow reads back.

Usage (ComfyUI v0.3.64 source and its venv's Pillow; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_animated_save_goldens.py [OUT]
"""
import json
import os
import sys
import tempfile

OUT = [a for a in sys.argv[1:] if not a.startswith("--")]
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402
comfy.options.enable_args_parsing()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageSequence  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
import PIL  # noqa: E402
import types  # noqa: E402

# nodes_images imports the server (for previews the savers do not use): a stand-in module.
if "server" not in sys.modules:
    _stub = types.ModuleType("server")
    _stub.PromptServer = type("PromptServer", (), {"instance": None})
    sys.modules["server"] = _stub
from comfy_extras import nodes_images as ni  # noqa: E402


def decode(path):
    im = Image.open(path)
    frames, durations = [], []
    for f in ImageSequence.Iterator(im):
        frames.append(np.array(f.convert("RGB")))
        durations.append(f.info.get("duration"))
    info = {k: v for k, v in im.info.items() if isinstance(v, (str, int, float))}
    exif = {str(k): v for k, v in im.getexif().items()} if path.endswith(".webp") else {}
    return torch.tensor(np.stack(frames)).float(), {"durations": durations, "n": len(frames), "info": info, "exif": exif}


def main():
    g = torch.Generator().manual_seed(17)
    images = torch.rand([5, 6, 10, 3], generator=g)
    images[2] = images[1]
    # inputs before class_type, as the frontend sends a prompt (and comfyrs records it)
    prompt = {"1": {"inputs": {"fps": 7.0}, "class_type": "SaveAnimatedPNG"}}
    extra = {"workflow": {"nodes": []}, "note": "x"}
    tensors, meta = {"input": images}, {}
    cases = {
        "png": lambda n, o: n.save_images(images, 7.0, 4, "anim", prompt=prompt, extra_pnginfo=extra),
        "webp_lossless": lambda n, o: n.save_images(images, 7.0, "anim", True, 80, "default", prompt=prompt, extra_pnginfo=extra),
        "webp_lossy": lambda n, o: n.save_images(images, 2.5, "anim", False, 90, "fastest", prompt=prompt, extra_pnginfo=extra),
    }
    for name, f in cases.items():
        with tempfile.TemporaryDirectory() as out:
            n = ni.SaveAnimatedPNG() if name == "png" else ni.SaveAnimatedWEBP()
            n.output_dir = out
            res = f(n, out)
            file = res["ui"]["images"][0]["filename"]
            frames, m = decode(os.path.join(out, file))
            m["ui"] = res["ui"]
            tensors[f"{name}/frames"] = frames
            meta[name] = json.dumps(m)
    path = OUT[0] if OUT else os.path.join(REPO, "tests", "data", "animated_save_golden.safetensors")
    meta["machine"] = f"ComfyUI a125cd84, Pillow {PIL.__version__}"
    save_file({k: v.contiguous() for k, v in tensors.items()}, path, metadata=meta)
    print("->", path)


if __name__ == "__main__":
    main()
