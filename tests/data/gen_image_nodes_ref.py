#!/usr/bin/env python3
"""Reference data for comfyrs' image, latent and mask nodes (tests/image_nodes.rs).

Runs ComfyUI's own node functions (and comfy.utils.common_upscale, including its PIL lanczos,
and comfy.utils.reshape_mask) from its source on small deterministic tensors and writes inputs,
outputs, the pass order Pillow chose for each lanczos resize and the nodes' /object_info entries to
tests/data/image_nodes_ref.json. Tensors are stored as float32 bit patterns (8 hex digits per
value, big-endian), so the Rust side can compare bit for bit; outputs of more than 20000 values
as the sha256 of those bytes plus their first 256 values.

Usage (a Python with torch, numpy, scipy and Pillow, e.g. a ComfyUI venv):

    python tests/data/gen_image_nodes_ref.py /path/to/ComfyUI [out.json]

The file in the repository was made with ComfyUI a125cd84 (v0.3.64), torch 2.8.0 CPU,
numpy 2.4.6, Pillow 13.0.0, scipy 1.17.1 on x86-64.
"""

import hashlib
import json
import os
import struct
import subprocess
import sys


def main():
    comfy_dir = os.path.abspath(sys.argv[1])
    out_path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "image_nodes_ref.json")
    # ComfyUI parses the command line on import; give it a CPU-only one.
    sys.argv = [sys.argv[0], "--cpu"]
    sys.path.insert(0, comfy_dir)
    import comfy.options
    comfy.options.enable_args_parsing()
    import utils.install_util  # noqa: F401  (ComfyUI's `utils` package before comfy/utils.py shadows it)
    import torch
    import numpy
    import PIL
    import scipy
    import nodes
    import comfy.utils
    from comfy_extras import nodes_images, nodes_mask, nodes_post_processing

    torch.manual_seed(1234)

    def hexes(t):
        t = t.detach().to(torch.float32).contiguous().reshape(-1)
        return "".join("%08x" % struct.unpack(">I", struct.pack(">f", v))[0] for v in t.tolist())

    def tensor(t):
        return {"shape": list(t.shape), "hex": hexes(t)}

    def output_tensor(t, limit=20000):
        # Large outputs are stored as the sha256 of their big-endian float32 bytes plus the first
        # 256 values, to keep the file small; they are compared exactly.
        if t.numel() <= limit:
            return tensor(t)
        h = hexes(t)
        return {"shape": list(t.shape), "sha256": hashlib.sha256(bytes.fromhex(h)).hexdigest(),
                "hex_head": h[:256 * 8]}

    def latent(d):
        out = {"samples": tensor(d["samples"])}
        if "noise_mask" in d:
            out["noise_mask"] = tensor(d["noise_mask"])
        if "batch_index" in d:
            out["batch_index"] = list(d["batch_index"])
        return out

    # ---- inputs -------------------------------------------------------------------------
    inputs = {}

    def add(name, kind, value):
        inputs[name] = (kind, value)

    add("img_a", "IMAGE", torch.rand(2, 6, 9, 3))
    add("img_b", "IMAGE", torch.rand(1, 5, 7, 3) * 1.4 - 0.2)  # outside 0..1: lanczos clips
    add("img_small", "IMAGE", torch.rand(1, 4, 4, 3))
    add("img_rgba", "IMAGE", torch.rand(1, 3, 3, 4))
    # The layout of a VAEDecode output: [B, H, W, C] viewed on a channels-first tensor.
    add("img_cf", "IMAGE", torch.rand(1, 3, 6, 9).movedim(1, -1))
    add("lat_a", "LATENT", {"samples": torch.randn(2, 4, 5, 7)})
    add("lat_b", "LATENT", {"samples": torch.randn(1, 4, 3, 4)})
    add("lat_c", "LATENT", {"samples": torch.randn(2, 4, 5, 7)})
    add("lat_d", "LATENT", {"samples": torch.randn(2, 4, 4, 6)})
    add("lat_m", "LATENT", {"samples": torch.randn(3, 4, 4, 4),
                            "noise_mask": torch.rand(3, 1, 4, 4),
                            "batch_index": [5, 6, 9]})
    add("lat_m2", "LATENT", {"samples": torch.randn(3, 4, 4, 4),
                             "noise_mask": torch.rand(2, 1, 4, 4)})
    add("lat_m1", "LATENT", {"samples": torch.randn(2, 4, 4, 4),
                             "noise_mask": torch.rand(1, 1, 4, 4)})
    add("lat_big", "LATENT", {"samples": torch.randn(1, 4, 8, 8)})
    add("mask_a", "MASK", torch.rand(2, 6, 9))
    add("mask_bin", "MASK", (torch.rand(1, 7, 8) > 0.7).float())
    add("mask_c", "MASK", torch.rand(1, 4, 5))
    add("mask_half", "MASK", torch.tensor([[[0.5, 0.49, 1.5, 0.0], [1.0, 0.51, 0.25, 0.75]]]))

    # Inputs of the lanczos and reshape_mask cases come from their own generator, so the draws
    # above (and every older case) stay as they were.
    g = torch.Generator().manual_seed(2026)

    def rand(*shape):
        return torch.rand(*shape, generator=g)

    def with_alpha(color, alpha):
        # Alpha with exact 0 and 1 (8-bit 0 and 255), a few values outside 0..1 and the rest random.
        pick = rand(*alpha.shape)
        alpha = torch.where(pick < 0.2, torch.zeros_like(alpha), alpha)
        alpha = torch.where(pick > 0.8, torch.ones_like(alpha), alpha)
        alpha = torch.where((pick > 0.45) & (pick < 0.5), alpha * 3.0 - 1.0, alpha)
        return torch.cat([color, alpha], dim=-1)

    add("lz_rgb", "IMAGE", rand(2, 11, 13, 3) * 1.2 - 0.1)
    add("lz_wide", "IMAGE", rand(1, 5, 31, 3))
    add("lz_tall", "IMAGE", rand(1, 29, 6, 3))
    add("lz_big", "IMAGE", rand(1, 30, 40, 3))
    add("lz_rgba", "IMAGE", with_alpha(rand(2, 11, 13, 3), rand(2, 11, 13, 1)))
    add("lz_la", "IMAGE", with_alpha(rand(1, 9, 10, 1), rand(1, 9, 10, 1)))
    add("lz_gray", "IMAGE", rand(1, 4, 4, 1))
    add("mask_big", "MASK", rand(1, 37, 23))

    def arg(v):
        if isinstance(v, str) and v.startswith("@"):
            kind, value = inputs[v[1:]]
            if kind == "LATENT":
                return {k: (x.clone() if torch.is_tensor(x) else list(x)) for k, x in value.items()}
            return value.clone() if value.is_contiguous() else value
        return v

    cases = []

    def case(name, node, call, args, out_kinds):
        real = {k: arg(v) for k, v in args.items()}
        result = call(**real)
        if hasattr(result, "result"):  # V3 NodeOutput
            result = result.result
        outs = []
        for kind, value in zip(out_kinds, result):
            outs.append({"kind": kind, **(latent(value) if kind == "LATENT" else output_tensor(value))})
        cases.append({"name": name, "node": node, "args": args, "outputs": outs})

    def upscale_case(name, src, w, h, method, crop):
        kind, value = inputs[src]
        samples = value["samples"]
        out = comfy.utils.common_upscale(samples, w, h, method, crop)
        cases.append({"name": name, "node": "common_upscale",
                      "args": {"samples": "@" + src, "width": w, "height": h,
                               "upscale_method": method, "crop": crop},
                      "outputs": [{"kind": "PLANES", **tensor(out)}]})

    # ---- common_upscale on latents (channels-first, what LatentUpscale sees) ----------------
    for method in ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]:
        for (w, h) in [(16, 11), (4, 3), (5, 7), (12, 5), (3, 2), (7, 5), (1, 1)]:
            upscale_case(f"common_upscale {method} 7x5->{w}x{h}", "lat_a", w, h, method, "disabled")
        upscale_case(f"common_upscale {method} 7x5->9x9 center", "lat_a", 9, 9, method, "center")
        # out_h + out_w > 128: torch's generic bilinear kernel instead of the channels-last one.
        upscale_case(f"common_upscale {method} 7x5->130x2", "lat_a", 130, 2, method, "disabled")

    # ---- latent nodes -----------------------------------------------------------------------
    lu = nodes.LatentUpscale()
    for method in ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"]:
        case(f"LatentUpscale {method}", "LatentUpscale", lu.upscale,
             {"samples": "@lat_a", "upscale_method": method, "width": 96, "height": 64, "crop": "disabled"}, ["LATENT"])
    case("LatentUpscale center crop", "LatentUpscale", lu.upscale,
         {"samples": "@lat_a", "upscale_method": "bilinear", "width": 64, "height": 64, "crop": "center"}, ["LATENT"])
    case("LatentUpscale width 0 keeps aspect", "LatentUpscale", lu.upscale,
         {"samples": "@lat_a", "upscale_method": "bicubic", "width": 0, "height": 80, "crop": "disabled"}, ["LATENT"])
    case("LatentUpscale height 0 keeps aspect", "LatentUpscale", lu.upscale,
         {"samples": "@lat_a", "upscale_method": "nearest-exact", "width": 120, "height": 0, "crop": "disabled"}, ["LATENT"])
    case("LatentUpscale 0x0 passes through", "LatentUpscale", lu.upscale,
         {"samples": "@lat_m", "upscale_method": "bilinear", "width": 0, "height": 0, "crop": "disabled"}, ["LATENT"])
    case("LatentUpscale at least 64", "LatentUpscale", lu.upscale,
         {"samples": "@lat_m", "upscale_method": "area", "width": 16, "height": 8, "crop": "center"}, ["LATENT"])
    lub = nodes.LatentUpscaleBy()
    for method, s in [("nearest-exact", 1.5), ("bilinear", 1.5), ("area", 0.5), ("bicubic", 2.0), ("bislerp", 1.5)]:
        case(f"LatentUpscaleBy {method} {s}", "LatentUpscaleBy", lub.upscale,
             {"samples": "@lat_a", "upscale_method": method, "scale_by": s}, ["LATENT"])
    case("LatentUpscaleBy keeps noise_mask and batch_index", "LatentUpscaleBy", lub.upscale,
         {"samples": "@lat_m", "upscale_method": "bislerp", "scale_by": 1.25}, ["LATENT"])

    lfb = nodes.LatentFromBatch()
    for bi, ln, src in [(1, 1, "lat_m"), (1, 5, "lat_m"), (40, 2, "lat_m"), (0, 2, "lat_m2"),
                        (1, 2, "lat_m2"), (1, 1, "lat_m1"), (1, 1, "lat_a")]:
        case(f"LatentFromBatch {src} {bi} {ln}", "LatentFromBatch", lfb.frombatch,
             {"samples": "@" + src, "batch_index": bi, "length": ln}, ["LATENT"])
    rlb = nodes.RepeatLatentBatch()
    for amount, src in [(3, "lat_m"), (2, "lat_m2"), (2, "lat_m1"), (4, "lat_a")]:
        case(f"RepeatLatentBatch {src} {amount}", "RepeatLatentBatch", rlb.repeat,
             {"samples": "@" + src, "amount": amount}, ["LATENT"])

    lc = nodes.LatentComposite()
    for x, y, f, frm, to in [(8, 16, 0, "lat_b", "lat_a"), (24, 8, 0, "lat_b", "lat_a"),
                             (16, 8, 16, "lat_b", "lat_a"), (0, 0, 8, "lat_b", "lat_a"),
                             (8, 8, 24, "lat_big", "lat_a"), (0, 8, 40, "lat_big", "lat_a"),
                             (56, 40, 0, "lat_b", "lat_a")]:
        case(f"LatentComposite {frm}->{to} x{x} y{y} feather{f}", "LatentComposite", lc.composite,
             {"samples_to": "@" + to, "samples_from": "@" + frm, "x": x, "y": y, "feather": f}, ["LATENT"])
    lbl = nodes.LatentBlend()
    case("LatentBlend same shape", "LatentBlend", lbl.blend,
         {"samples1": "@lat_a", "samples2": "@lat_c", "blend_factor": 0.3}, ["LATENT"])
    case("LatentBlend resized", "LatentBlend", lbl.blend,
         {"samples1": "@lat_a", "samples2": "@lat_d", "blend_factor": 0.65}, ["LATENT"])
    slm = nodes.SetLatentNoiseMask()
    case("SetLatentNoiseMask", "SetLatentNoiseMask", slm.set_mask,
         {"samples": "@lat_a", "mask": "@mask_a"}, ["LATENT"])

    # ---- image nodes ------------------------------------------------------------------------
    isc = nodes.ImageScale()
    for method in ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]:
        case(f"ImageScale {method}", "ImageScale", isc.upscale,
             {"image": "@img_a", "upscale_method": method, "width": 13, "height": 10, "crop": "disabled"}, ["IMAGE"])
        case(f"ImageScale {method} down", "ImageScale", isc.upscale,
             {"image": "@img_a", "upscale_method": method, "width": 5, "height": 4, "crop": "disabled"}, ["IMAGE"])
        case(f"ImageScale {method} channels-first source", "ImageScale", isc.upscale,
             {"image": "@img_cf", "upscale_method": method, "width": 13, "height": 10, "crop": "disabled"}, ["IMAGE"])
    for method in ["bilinear", "bicubic"]:
        case(f"ImageScale {method} wide (generic kernel)", "ImageScale", isc.upscale,
             {"image": "@img_small", "upscale_method": method, "width": 130, "height": 2, "crop": "disabled"}, ["IMAGE"])
        case(f"ImageScale {method} wide RGBA", "ImageScale", isc.upscale,
             {"image": "@img_rgba", "upscale_method": method, "width": 130, "height": 2, "crop": "disabled"}, ["IMAGE"])
    case("LatentUpscale wide (generic kernel)", "LatentUpscale", lu.upscale,
         {"samples": "@lat_b", "upscale_method": "bilinear", "width": 1040, "height": 64, "crop": "disabled"}, ["LATENT"])
    case("ImageScale lanczos clips", "ImageScale", isc.upscale,
         {"image": "@img_b", "upscale_method": "lanczos", "width": 11, "height": 6, "crop": "disabled"}, ["IMAGE"])
    case("ImageScale lanczos same size quantises", "ImageScale", isc.upscale,
         {"image": "@img_b", "upscale_method": "lanczos", "width": 7, "height": 5, "crop": "disabled"}, ["IMAGE"])
    case("ImageScale center", "ImageScale", isc.upscale,
         {"image": "@img_a", "upscale_method": "bicubic", "width": 8, "height": 8, "crop": "center"}, ["IMAGE"])
    case("ImageScale width 0", "ImageScale", isc.upscale,
         {"image": "@img_a", "upscale_method": "bilinear", "width": 0, "height": 12, "crop": "disabled"}, ["IMAGE"])
    case("ImageScale height 0", "ImageScale", isc.upscale,
         {"image": "@img_a", "upscale_method": "area", "width": 4, "height": 0, "crop": "center"}, ["IMAGE"])
    case("ImageScale 0x0", "ImageScale", isc.upscale,
         {"image": "@img_a", "upscale_method": "area", "width": 0, "height": 0, "crop": "disabled"}, ["IMAGE"])
    isb = nodes.ImageScaleBy()
    for method, s in [("bilinear", 1.7), ("area", 0.5), ("lanczos", 2.0), ("bicubic", 0.75), ("nearest-exact", 1.25)]:
        case(f"ImageScaleBy {method} {s}", "ImageScaleBy", isb.upscale,
             {"image": "@img_a", "upscale_method": method, "scale_by": s}, ["IMAGE"])
    tp = nodes_post_processing.ImageScaleToTotalPixels
    case("ImageScaleToTotalPixels", "ImageScaleToTotalPixels", tp.execute,
         {"image": "@img_small", "upscale_method": "bilinear", "megapixels": 0.01}, ["IMAGE"])
    ib = nodes.ImageBatch()
    case("ImageBatch resizes image2", "ImageBatch", ib.batch,
         {"image1": "@img_a", "image2": "@img_small"}, ["IMAGE"])
    case("ImageBatch same size", "ImageBatch", ib.batch,
         {"image1": "@img_a", "image2": "@img_a"}, ["IMAGE"])
    ic = nodes_images.ImageCrop()
    for w, h, x, y in [(4, 3, 2, 1), (20, 20, 5, 4), (3, 2, 30, 30)]:
        case(f"ImageCrop {w}x{h}+{x}+{y}", "ImageCrop", ic.crop,
             {"image": "@img_a", "width": w, "height": h, "x": x, "y": y}, ["IMAGE"])

    # ---- mask nodes -------------------------------------------------------------------------
    case("MaskToImage", "MaskToImage", nodes_mask.MaskToImage().mask_to_image, {"mask": "@mask_a"}, ["IMAGE"])
    for ch in ["red", "green", "blue"]:
        case(f"ImageToMask {ch}", "ImageToMask", nodes_mask.ImageToMask().image_to_mask,
             {"image": "@img_a", "channel": ch}, ["MASK"])
    case("ImageToMask alpha", "ImageToMask", nodes_mask.ImageToMask().image_to_mask,
         {"image": "@img_rgba", "channel": "alpha"}, ["MASK"])
    case("SolidMask", "SolidMask", nodes_mask.SolidMask().solid, {"value": 0.3, "width": 5, "height": 4}, ["MASK"])
    case("InvertMask", "InvertMask", nodes_mask.InvertMask().invert, {"mask": "@mask_a"}, ["MASK"])
    for x, y, w, h in [(2, 1, 4, 3), (5, 3, 10, 10)]:
        case(f"CropMask {w}x{h}+{x}+{y}", "CropMask", nodes_mask.CropMask().crop,
             {"mask": "@mask_a", "x": x, "y": y, "width": w, "height": h}, ["MASK"])
    gm = nodes_mask.GrowMask()
    for src in ["mask_bin", "mask_a"]:
        for e, t in [(2, True), (2, False), (-1, True), (-2, False), (0, True)]:
            case(f"GrowMask {src} {e} {t}", "GrowMask", gm.expand_mask,
                 {"mask": "@" + src, "expand": e, "tapered_corners": t}, ["MASK"])
    fm = nodes_mask.FeatherMask()
    for l, t, r, b in [(2, 1, 3, 2), (0, 0, 1, 0), (20, 9, 12, 30)]:
        case(f"FeatherMask {l} {t} {r} {b}", "FeatherMask", fm.feather,
             {"mask": "@mask_a", "left": l, "top": t, "right": r, "bottom": b}, ["MASK"])
    mc = nodes_mask.MaskComposite()
    for op in ["multiply", "add", "subtract", "and", "or", "xor"]:
        case(f"MaskComposite {op}", "MaskComposite", mc.combine,
             {"destination": "@mask_a", "source": "@mask_c", "x": 3, "y": 2, "operation": op}, ["MASK"])
        case(f"MaskComposite {op} rounding", "MaskComposite", mc.combine,
             {"destination": "@mask_half", "source": "@mask_half", "x": 0, "y": 0, "operation": op}, ["MASK"])
    case("MaskComposite clipped", "MaskComposite", mc.combine,
         {"destination": "@mask_a", "source": "@mask_c", "x": 7, "y": 4, "operation": "add"}, ["MASK"])
    for v in [0.5, 0.3]:
        case(f"ThresholdMask {v}", "ThresholdMask", nodes_mask.ThresholdMask().image_to_mask,
             {"mask": "@mask_a", "value": v}, ["MASK"])

    # ---- lanczos: Pillow's pass order and the premultiplied-alpha path -----------------------
    # Each case is ComfyUI's common_upscale(image.movedim(-1, 1), w, h, "lanczos", "disabled")
    # (what ImageScale runs). "order" records which pass Pillow ran first, found by comparing its
    # resize with the two single-pass chains (each one-axis resize is exactly one pass; RGBA and LA
    # chains run on the premultiplied RGBa / La image, as Image.resize does), so the test can
    # check that both orders are covered and that comfyrs' rule picks Pillow's.
    import numpy as np
    from PIL import Image

    def pillow_order(image, w, h):
        orders = set()
        for one in image:
            im = Image.fromarray(np.clip(255. * one.cpu().numpy(), 0, 255).astype(np.uint8))
            W, H = im.size
            whole = np.array(im.resize((w, h), resample=Image.Resampling.LANCZOS))
            if im.size == (w, h):
                orders.add("none")
                continue
            premul = {"RGBA": "RGBa", "LA": "La"}.get(im.mode)
            base = im.convert(premul) if premul else im

            def chain(first, then):
                out = base.resize(first, resample=Image.Resampling.LANCZOS)
                out = out.resize(then, resample=Image.Resampling.LANCZOS)
                return np.array(out.convert(im.mode) if premul else out)

            hf = np.array_equal(whole, chain((w, H), (w, h)))
            vf = np.array_equal(whole, chain((W, h), (w, h)))
            assert hf or vf, f"Pillow's {W}x{H} -> {w}x{h} matches neither pass order"
            orders.add("either" if hf and vf else "vertical-first" if vf else "horizontal-first")
        # An image of the batch on which both orders happen to agree says nothing.
        if len(orders) > 1:
            orders.discard("either")
        assert len(orders) == 1, orders
        return orders.pop()

    def lanczos_case(src, w, h):
        image = inputs[src][1]
        out = comfy.utils.common_upscale(image.movedim(-1, 1), w, h, "lanczos", "disabled")
        H, W, C = image.shape[1:]
        cases.append({"name": f"lanczos {src} {C}ch {W}x{H}->{w}x{h}", "node": "lanczos",
                      "args": {"image": "@" + src, "width": w, "height": h},
                      "order": pillow_order(image, w, h),
                      "outputs": [{"kind": "PLANES", **output_tensor(out, 4000)}]})

    # 13x11: grow one axis and shrink the other, shrink both on each side of Pillow's switch,
    # one axis only, grow both, 1x1 and the same size.
    rgb_sizes = [(17, 6), (12, 6), (11, 6), (11, 7), (10, 6), (9, 4), (12, 8), (12, 9), (12, 1),
                 (5, 1), (1, 1), (3, 2), (20, 17), (7, 15), (26, 11), (13, 6), (13, 11)]
    for w, h in rgb_sizes:
        lanczos_case("lz_rgb", w, h)
    for w, h in [(30, 2), (29, 2), (40, 3), (8, 2), (31, 4), (62, 10)]:
        lanczos_case("lz_wide", w, h)
    for w, h in [(5, 10), (3, 20), (2, 22), (12, 28), (4, 40), (6, 7)]:
        lanczos_case("lz_tall", w, h)
    for w, h in [(38, 12), (25, 19), (60, 29), (39, 28), (39, 27), (80, 60), (20, 15), (7, 5)]:
        lanczos_case("lz_big", w, h)
    for w, h in [(17, 6), (12, 8), (10, 6), (20, 17), (7, 15), (26, 11), (13, 6), (13, 11), (1, 1)]:
        lanczos_case("lz_rgba", w, h)
    for w, h in [(14, 4), (9, 6), (6, 4), (15, 12), (10, 9)]:
        lanczos_case("lz_la", w, h)

    case("ImageScale lanczos RGBA", "ImageScale", isc.upscale,
         {"image": "@lz_rgba", "upscale_method": "lanczos", "width": 17, "height": 6, "crop": "disabled"}, ["IMAGE"])
    case("ImageScale lanczos RGBA same size", "ImageScale", isc.upscale,
         {"image": "@lz_rgba", "upscale_method": "lanczos", "width": 13, "height": 11, "crop": "disabled"}, ["IMAGE"])
    case("ImageScale lanczos LA", "ImageScale", isc.upscale,
         {"image": "@lz_la", "upscale_method": "lanczos", "width": 14, "height": 4, "crop": "center"}, ["IMAGE"])
    case("ImageScaleBy lanczos RGBA 0.6", "ImageScaleBy", isb.upscale,
         {"image": "@lz_rgba", "upscale_method": "lanczos", "scale_by": 0.6}, ["IMAGE"])

    # ---- reshape_mask: a [B, 1, H, W] mask through torch's bilinear (both kernels) ------------
    def reshape_mask_case(src, shape):
        out = comfy.utils.reshape_mask(inputs[src][1], shape)
        cases.append({"name": f"reshape_mask {src} -> {shape}", "node": "reshape_mask",
                      "args": {"mask": "@" + src, "shape": list(shape)},
                      "outputs": [{"kind": "PLANES", **output_tensor(out, 4000)}]})

    for src, shape in [("mask_a", (2, 4, 16, 11)), ("mask_a", (2, 4, 70, 80)), ("mask_a", (3, 4, 5, 7)),
                       ("mask_a", (2, 4, 6, 9)), ("mask_big", (1, 4, 8, 8)), ("mask_big", (1, 1, 64, 64)),
                       ("mask_big", (1, 1, 100, 29)), ("mask_c", (1, 1, 64, 65))]:
        reshape_mask_case(src, shape)

    # ---- /object_info entries, as ComfyUI's server builds them --------------------------------
    classes = {
        "LatentUpscale": (nodes.LatentUpscale, "nodes"),
        "LatentUpscaleBy": (nodes.LatentUpscaleBy, "nodes"),
        "LatentFromBatch": (nodes.LatentFromBatch, "nodes"),
        "RepeatLatentBatch": (nodes.RepeatLatentBatch, "nodes"),
        "LatentComposite": (nodes.LatentComposite, "nodes"),
        "LatentBlend": (nodes.LatentBlend, "nodes"),
        "SetLatentNoiseMask": (nodes.SetLatentNoiseMask, "nodes"),
        "ImageScale": (nodes.ImageScale, "nodes"),
        "ImageScaleBy": (nodes.ImageScaleBy, "nodes"),
        "ImageBatch": (nodes.ImageBatch, "nodes"),
        "ImageCrop": (nodes_images.ImageCrop, "comfy_extras.nodes_images"),
        "MaskToImage": (nodes_mask.MaskToImage, "comfy_extras.nodes_mask"),
        "ImageToMask": (nodes_mask.ImageToMask, "comfy_extras.nodes_mask"),
        "SolidMask": (nodes_mask.SolidMask, "comfy_extras.nodes_mask"),
        "InvertMask": (nodes_mask.InvertMask, "comfy_extras.nodes_mask"),
        "CropMask": (nodes_mask.CropMask, "comfy_extras.nodes_mask"),
        "GrowMask": (nodes_mask.GrowMask, "comfy_extras.nodes_mask"),
        "FeatherMask": (nodes_mask.FeatherMask, "comfy_extras.nodes_mask"),
        "MaskComposite": (nodes_mask.MaskComposite, "comfy_extras.nodes_mask"),
        "ThresholdMask": (nodes_mask.ThresholdMask, "comfy_extras.nodes_mask"),
        "ImageScaleToTotalPixels": (nodes_post_processing.ImageScaleToTotalPixels,
                                    "comfy_extras.nodes_post_processing"),
    }
    display = dict(nodes.NODE_DISPLAY_NAME_MAPPINGS)
    display.update(getattr(nodes_mask, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    display.update(getattr(nodes_images, "NODE_DISPLAY_NAME_MAPPINGS", {}))
    object_info = {}
    for name, (cls, module) in classes.items():
        cls.RELATIVE_PYTHON_MODULE = module
        if hasattr(cls, "GET_NODE_INFO_V1"):
            object_info[name] = cls.GET_NODE_INFO_V1()
            continue
        types = cls.INPUT_TYPES()
        info = {
            "input": types,
            "input_order": {k: list(v.keys()) for k, v in types.items()},
            "output": list(cls.RETURN_TYPES),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES))),
            "output_name": list(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)),
            "name": name,
            "display_name": display.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "python_module": module,
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
        }
        if hasattr(cls, "OUTPUT_TOOLTIPS"):
            info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
        object_info[name] = info

    def commit():
        try:
            return subprocess.check_output(["git", "-C", comfy_dir, "rev-parse", "HEAD"], text=True).strip()
        except Exception:
            return "unknown"

    doc = {
        "generator": "tests/data/gen_image_nodes_ref.py",
        "comfyui_commit": commit(),
        "versions": {"torch": torch.__version__, "numpy": numpy.__version__,
                     "pillow": PIL.__version__, "scipy": scipy.__version__},
        "inputs": {k: ({"kind": kind, **latent(v)} if kind == "LATENT" else {"kind": kind, **tensor(v)})
                   for k, (kind, v) in inputs.items()},
        "cases": cases,
        "object_info": json.loads(json.dumps(object_info)),
    }
    with open(out_path, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {out_path}: {len(cases)} cases", file=sys.stderr)


if __name__ == "__main__":
    main()
