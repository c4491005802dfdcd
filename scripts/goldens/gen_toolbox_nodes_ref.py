#!/usr/bin/env python3
"""Reference data for comfyrs' utility image and latent nodes (tests/toolbox_nodes.rs), in the
format of tests/data/image_nodes_ref.json: ComfyUI's own node functions run on small
deterministic tensors; inputs and outputs stored as float32 bit patterns (8 hex digits per
value, big-endian); INT outputs as numbers.

Nodes: GetImageSize, ImageCompositeMasked, ImageScaleToMaxDimension, ImageFromBatch,
RepeatImageBatch, ImageFlip, ImageRotate, ResizeAndPadImage (comfy_extras/nodes_images.py,
nodes_mask.py), LatentAdd, LatentSubtract, LatentMultiply, LatentInterpolate, LatentBatch,
LatentBatchSeedBehavior (comfy_extras/nodes_latent.py), LatentCrop, LatentFlip, LatentRotate
(nodes.py).

Usage (ComfyUI v0.3.64 source and its venv; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_toolbox_nodes_ref.py [OUT.json]
"""
import json
import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "tests", "data", "toolbox_nodes_ref.json")
sys.argv = [sys.argv[0], "--cpu"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import utils.install_util  # noqa: E402,F401  (ComfyUI's `utils` package before comfy/utils.py)
import torch  # noqa: E402
import nodes  # noqa: E402
from comfy_extras import nodes_images, nodes_mask, nodes_latent  # noqa: E402


def hexes(t):
    t = t.detach().to(torch.float32).contiguous().reshape(-1)
    return "".join("%08x" % struct.unpack(">I", struct.pack(">f", v))[0] for v in t.tolist())


def tensor(t):
    return {"shape": list(t.shape), "hex": hexes(t)}


def latent(d):
    out = {"samples": tensor(d["samples"])}
    if "noise_mask" in d:
        out["noise_mask"] = tensor(d["noise_mask"])
    if "batch_index" in d:
        out["batch_index"] = list(d["batch_index"])
    return out


def main():
    g = torch.Generator().manual_seed(1515)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    inputs = {}

    def add(name, kind, value):
        inputs[name] = (kind, value)

    add("img_a", "IMAGE", rand(2, 6, 9, 3))
    add("img_tall", "IMAGE", rand(1, 11, 5, 3))
    add("img_sq", "IMAGE", rand(1, 7, 7, 3))
    add("img_small", "IMAGE", rand(1, 3, 4, 3))
    add("img_rgba", "IMAGE", rand(1, 4, 5, 4))
    add("img_gray", "IMAGE", rand(2, 4, 5, 1))
    add("img_b3", "IMAGE", rand(3, 6, 9, 3))
    add("mask_a", "MASK", rand(1, 5, 6))
    add("mask_b", "MASK", rand(2, 3, 3))
    add("lat_a", "LATENT", {"samples": randn(1, 4, 5, 7)})
    add("lat_b", "LATENT", {"samples": randn(1, 4, 5, 7)})
    add("lat_c", "LATENT", {"samples": randn(2, 4, 3, 4)})
    add("lat_4", "LATENT", {"samples": randn(4, 4, 5, 7)})
    add("lat_4b", "LATENT", {"samples": randn(4, 4, 5, 7)})
    add("lat_m", "LATENT", {"samples": randn(3, 4, 4, 6), "noise_mask": rand(3, 1, 4, 4),
                            "batch_index": [5, 6, 9]})
    add("lat_big", "LATENT", {"samples": randn(1, 4, 12, 20)})
    add("lat_zero", "LATENT", {"samples": torch.zeros(1, 4, 3, 3)})

    def arg(v):
        if isinstance(v, str) and v.startswith("@"):
            kind, value = inputs[v[1:]]
            if kind == "LATENT":
                return {k: (x.clone() if torch.is_tensor(x) else list(x)) for k, x in value.items()}
            return value.clone()
        return v

    cases = []

    def case(name, node, call, args, out_kinds):
        real = {k: arg(v) for k, v in args.items()}
        result = call(**real)
        if hasattr(result, "result"):
            result = result.result
        outs = []
        for kind, value in zip(out_kinds, result):
            if kind == "INT":
                outs.append({"kind": kind, "value": int(value)})
            elif kind == "LATENT":
                outs.append({"kind": kind, **latent(value)})
            else:
                outs.append({"kind": kind, **tensor(value)})
        cases.append({"name": name, "node": node, "args": args, "outputs": outs})

    gis = nodes_images.GetImageSize()
    for src in ["img_a", "img_tall", "img_gray"]:
        case(f"GetImageSize {src}", "GetImageSize", gis.get_size, {"image": "@" + src}, ["INT", "INT", "INT"])

    icm = nodes_mask.ImageCompositeMasked()
    for (d, s, x, y, rs, m) in [("img_a", "img_small", 2, 1, False, None),
                                ("img_a", "img_small", 7, 4, False, None),
                                ("img_a", "img_small", 20, 20, False, None),
                                ("img_a", "img_small", 1, 2, False, "mask_a"),
                                ("img_a", "img_small", 0, 0, True, None),
                                ("img_a", "img_sq", 3, 0, True, "mask_b"),
                                ("img_b3", "img_small", 4, 3, False, "mask_b"),
                                ("img_a", "img_rgba", 1, 1, False, None),
                                ("img_gray", "img_small", 0, 0, False, None),
                                ("img_a", "img_gray", 2, 2, False, "mask_a")]:
        args = {"destination": "@" + d, "source": "@" + s, "x": x, "y": y, "resize_source": rs}
        if m:
            args["mask"] = "@" + m
        try:
            case(f"ImageCompositeMasked {d} {s} {x} {y} {rs} {m}", "ImageCompositeMasked", icm.composite, args, ["IMAGE"])
        except RuntimeError as e:
            cases.append({"name": f"ImageCompositeMasked {d} {s} {x} {y} {rs} {m}", "node": "ImageCompositeMasked",
                          "args": args, "error": str(e).splitlines()[0]})

    smd = nodes_images.ImageScaleToMaxDimension()
    for src in ["img_a", "img_tall", "img_sq"]:
        for method, size in [("area", 4), ("lanczos", 13), ("bilinear", 10), ("nearest-exact", 3), ("bicubic", 16)]:
            case(f"ImageScaleToMaxDimension {src} {method} {size}", "ImageScaleToMaxDimension", smd.upscale,
                 {"image": "@" + src, "upscale_method": method, "largest_size": size}, ["IMAGE"])

    ifb = nodes_images.ImageFromBatch()
    for bi, ln in [(0, 1), (1, 2), (2, 1), (40, 3), (0, 10)]:
        case(f"ImageFromBatch {bi} {ln}", "ImageFromBatch", ifb.frombatch,
             {"image": "@img_b3", "batch_index": bi, "length": ln}, ["IMAGE"])
    rib = nodes_images.RepeatImageBatch()
    for a in [1, 3]:
        case(f"RepeatImageBatch {a}", "RepeatImageBatch", rib.repeat, {"image": "@img_a", "amount": a}, ["IMAGE"])
    fl = nodes_images.ImageFlip()
    ro = nodes_images.ImageRotate()
    for m in ["x-axis: vertically", "y-axis: horizontally"]:
        case(f"ImageFlip {m}", "ImageFlip", fl.flip, {"image": "@img_a", "flip_method": m}, ["IMAGE"])
    for r in ["none", "90 degrees", "180 degrees", "270 degrees"]:
        case(f"ImageRotate {r}", "ImageRotate", ro.rotate, {"image": "@img_a", "rotation": r}, ["IMAGE"])
    rp = nodes_images.ResizeAndPadImage()
    for tw, th, color, interp in [(12, 12, "white", "area"), (5, 9, "black", "bicubic"),
                                  (20, 7, "white", "nearest-exact"), (9, 6, "black", "bilinear"),
                                  (16, 16, "black", "lanczos")]:
        case(f"ResizeAndPadImage {tw}x{th} {color} {interp}", "ResizeAndPadImage", rp.resize_and_pad,
             {"image": "@img_a", "target_width": tw, "target_height": th, "padding_color": color,
              "interpolation": interp}, ["IMAGE"])

    la = nodes_latent.LatentAdd
    ls = nodes_latent.LatentSubtract
    for a, b in [("lat_a", "lat_b"), ("lat_a", "lat_c"), ("lat_m", "lat_a"), ("lat_c", "lat_zero")]:
        case(f"LatentAdd {a} {b}", "LatentAdd", la.execute, {"samples1": "@" + a, "samples2": "@" + b}, ["LATENT"])
        case(f"LatentSubtract {a} {b}", "LatentSubtract", ls.execute, {"samples1": "@" + a, "samples2": "@" + b}, ["LATENT"])
    for m in [0.5, -1.3, 0.0]:
        case(f"LatentMultiply {m}", "LatentMultiply", nodes_latent.LatentMultiply.execute,
             {"samples": "@lat_m", "multiplier": m}, ["LATENT"])
    for a, b, r in [("lat_a", "lat_b", 0.3), ("lat_a", "lat_c", 0.7), ("lat_4", "lat_4b", 0.5),
                    ("lat_zero", "lat_a", 0.25), ("lat_a", "lat_b", 1.0)]:
        case(f"LatentInterpolate {a} {b} {r}", "LatentInterpolate", nodes_latent.LatentInterpolate.execute,
             {"samples1": "@" + a, "samples2": "@" + b, "ratio": r}, ["LATENT"])
    for a, b in [("lat_a", "lat_b"), ("lat_m", "lat_c"), ("lat_c", "lat_m")]:
        case(f"LatentBatch {a} {b}", "LatentBatch", nodes_latent.LatentBatch.execute,
             {"samples1": "@" + a, "samples2": "@" + b}, ["LATENT"])
    for src in ["lat_m", "lat_c"]:
        for sb in ["random", "fixed"]:
            case(f"LatentBatchSeedBehavior {src} {sb}", "LatentBatchSeedBehavior",
                 nodes_latent.LatentBatchSeedBehavior.execute, {"samples": "@" + src, "seed_behavior": sb}, ["LATENT"])
    lc = nodes.LatentCrop()
    for w, h, x, y in [(64, 64, 0, 0), (96, 64, 16, 24), (512, 512, 64, 64), (64, 64, 200, 200), (72, 80, 8, 8)]:
        case(f"LatentCrop {w}x{h}+{x}+{y}", "LatentCrop", lc.crop,
             {"samples": "@lat_big", "width": w, "height": h, "x": x, "y": y}, ["LATENT"])
    case("LatentCrop small latent", "LatentCrop", lc.crop,
         {"samples": "@lat_m", "width": 64, "height": 64, "x": 8, "y": 8}, ["LATENT"])
    lf = nodes.LatentFlip()
    lr = nodes.LatentRotate()
    for m in ["x-axis: vertically", "y-axis: horizontally"]:
        case(f"LatentFlip {m}", "LatentFlip", lf.flip, {"samples": "@lat_m", "flip_method": m}, ["LATENT"])
    for r in ["none", "90 degrees", "180 degrees", "270 degrees"]:
        case(f"LatentRotate {r}", "LatentRotate", lr.rotate, {"samples": "@lat_m", "rotation": r}, ["LATENT"])

    out_inputs = {}
    for name, (kind, value) in inputs.items():
        out_inputs[name] = {"kind": kind, **(latent(value) if kind == "LATENT" else tensor(value))}
    with open(OUT, "w") as f:
        json.dump({"inputs": out_inputs, "cases": cases}, f, indent=0)
        f.write("\n")


if __name__ == "__main__":
    main()
