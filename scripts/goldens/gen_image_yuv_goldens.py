#!/usr/bin/env python3
"""Writes tests/data/image_yuv_golden.safetensors: ComfyUI's ImageRGBToYUV / ImageYUVToRGB
(comfy_extras/nodes_morphology.py, kornia's rgb_to_ycbcr / ycbcr_to_rgb) on fixed inputs:
"rgb" -> "y", "u", "v"; those back -> "back"; independent random planes "y3", "u3", "v3"
(3 distinct channels each, so the channel mean matters) -> "rgb3".

Usage (ComfyUI v0.3.64 source, its venv's torch and kornia; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_image_yuv_goldens.py [OUT]
"""
import os
import sys

OUT = [a for a in sys.argv[1:] if not a.startswith("--")]
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402
comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from comfy_extras import nodes_morphology as nm  # noqa: E402


def main():
    g = torch.Generator().manual_seed(5)
    rgb = torch.rand([2, 5, 7, 3], generator=g)
    rgb[0, 0, 0] = torch.tensor([0.0, 0.0, 0.0])
    rgb[0, 0, 1] = torch.tensor([1.0, 1.0, 1.0])
    y, u, v = nm.ImageRGBToYUV.execute(rgb).result
    back = nm.ImageYUVToRGB.execute(y, u, v).result[0]
    y3, u3, v3 = (torch.rand([2, 5, 7, 3], generator=g) * 1.4 - 0.2 for _ in range(3))
    rgb3 = nm.ImageYUVToRGB.execute(y3, u3, v3).result[0]
    t = {"rgb": rgb, "y": y, "u": u, "v": v, "back": back, "y3": y3, "u3": u3, "v3": v3, "rgb3": rgb3}
    out = OUT[0] if OUT else os.path.join(REPO, "tests", "data", "image_yuv_golden.safetensors")
    save_file({k: x.contiguous() for k, x in t.items()}, out, metadata={"machine": "ComfyUI a125cd84, torch " + torch.__version__ + ", kornia 0.9.0, CPU"})
    print("->", out)


if __name__ == "__main__":
    main()
