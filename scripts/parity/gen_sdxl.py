#!/usr/bin/env python3
"""Write deterministic random-weight full-size SDXL base and refiner checkpoints.

The files have the single-file (SGM) layout of sd_xl_base_1.0 / sd_xl_refiner_1.0:

  base:    model.diffusion_model.*                         UNet (SDXL preset, 2.567 B params)
           first_stage_model.*                             VAE (with quant convs)
           conditioner.embedders.0.transformer.text_model.*  CLIP-L, HF names (+ embeddings.position_ids)
           conditioner.embedders.1.model.*                 OpenCLIP ViT-bigG text tower, in OpenCLIP's
                                                           own names (transformer.resblocks.N.attn.in_proj_*,
                                                           ln_1/ln_2, mlp.c_fc/c_proj, positional_embedding,
                                                           ln_final, text_projection [1280, 1280] used as
                                                           x @ P, logit_scale), so loaders must convert it
  refiner: model.diffusion_model.*                         UNet (SDXLRefiner preset, 2.260 B params)
           first_stage_model.*                             VAE
           conditioner.embedders.0.model.*                 OpenCLIP bigG as above

Layout (names and shapes)
-------------------------
Read from sdxl_layout.json / sdxl_refiner_layout.json next to this script. Those files are
written by `--comfy-dir DIR --write-layout`, which instantiates ComfyUI's own UNetModel (with the
exact configs of comfy/model_detection.py's SDXL / SDXL_refiner tables), AutoencoderKL and
clip_model.CLIPTextModel (CLIP-L, and bigG from comfy/clip_config_bigg.json) on torch's meta
device. The OpenCLIP names of bigG are written by this script and checked: ComfyUI's own
`utils.clip_text_transformers_convert` must turn them into exactly the keys and shapes of its
CLIPTextModel (text_projection transposed). It also checks that ComfyUI's detection
(`model_detection.model_config_from_unet`) picks the SDXL / SDXLRefiner model class for the UNet
layout. `--comfy-dir DIR` without --write-layout re-derives and compares. Generating needs only
numpy.

Values: exactly gen_sd15.py's scheme (see its docstring: per-key SHA-256 seed, splitmix64,
Box-Muller in float64, rounded once to fp16), with the domain string b"sdxl-random-v1\\0" instead
of b"sd15-random-v1\\0" and these rules:

  * weights with >= 2 dims:           mean 0, std = weight_gain / sqrt(fan_in), fan_in = prod(dims[1:])
  * token_embedding / position(al)_embedding: mean 0, std = 0.02
  * 1-D "*.weight" (GroupNorm/LayerNorm) and OpenCLIP ln_*.weight: mean 1, std = norm_jitter (0.02)
  * "*.bias" and OpenCLIP attn.in_proj_bias: mean 0, std = bias_std (0.01)
  * OpenCLIP logit_scale (0-d): ln(100) = 4.605170185988092 (the trained value's order)
  * CLIP-L embeddings.position_ids (int64 [1, 77]): 0..76
  * first_stage_model.encoder.conv_out: std times --vae-encoder-out-gain (default 9), as gen_sd15.py
    does, so that VAEEncode's latents have a realistic spread and img2img sees its input.

No DDPM schedule buffers (the SDXL files have none).

Usage:
  gen_sdxl.py base OUT.safetensors       [--seed S] [--dtype fp16|fp32]
  gen_sdxl.py refiner OUT.safetensors
  gen_sdxl.py --comfy-dir /work/ref/ComfyUI [--write-layout]     # (re)derive / check the layouts
"""
import argparse
import hashlib
import json
import math
import os
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LAYOUT_FILES = {"base": os.path.join(HERE, "sdxl_layout.json"),
                "refiner": os.path.join(HERE, "sdxl_refiner_layout.json")}
DOMAIN = b"sdxl-random-v1\0"

# comfy/model_detection.py (a125cd84), unet_config_from_diffusers_unet's SDXL / SDXL_refiner rows.
SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
    "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
    "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
    "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
SDXL_REFINER_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
    "legacy": False, "num_classes": "sequential", "adm_in_channels": 2560, "in_channels": 4,
    "model_channels": 384, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [0, 0, 4, 4, 4, 4, 0, 0],
    "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 4, "use_linear_in_transformer": True,
    "context_dim": 1280, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 4, 4, 4, 4, 4, 4, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}
VAE_DDCONFIG = {
    "double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
    "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0,
}
CLIP_L_CONFIG = {
    "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
    "hidden_act": "quick_gelu", "max_position_embeddings": 77, "vocab_size": 49408,
    "layer_norm_eps": 1e-05, "projection_dim": 768, "bos_token_id": 0, "eos_token_id": 49407, "pad_token_id": 1,
}
CLIP_L_PREFIX = "conditioner.embedders.0.transformer."
CLIP_G_PREFIX = {"base": "conditioner.embedders.1.model.", "refiner": "conditioner.embedders.0.model."}
EXPECTED_CLASS = {"base": "SDXL", "refiner": "SDXLRefiner"}


# ----------------------------------------------------------------------------- layout

def openclip_bigg_layout(width=1280, layers=32, vocab=49408, ctx=77, mlp=5120):
    """The OpenCLIP text tower keys of the SDXL files (names and shapes)."""
    out = {
        "token_embedding.weight": [vocab, width],
        "positional_embedding": [ctx, width],
        "ln_final.weight": [width],
        "ln_final.bias": [width],
        "text_projection": [width, width],
        "logit_scale": [],
    }
    for i in range(layers):
        p = "transformer.resblocks.%d." % i
        out[p + "ln_1.weight"] = [width]
        out[p + "ln_1.bias"] = [width]
        out[p + "attn.in_proj_weight"] = [3 * width, width]
        out[p + "attn.in_proj_bias"] = [3 * width]
        out[p + "attn.out_proj.weight"] = [width, width]
        out[p + "attn.out_proj.bias"] = [width]
        out[p + "ln_2.weight"] = [width]
        out[p + "ln_2.bias"] = [width]
        out[p + "mlp.c_fc.weight"] = [mlp, width]
        out[p + "mlp.c_fc.bias"] = [mlp]
        out[p + "mlp.c_proj.weight"] = [width, mlp]
        out[p + "mlp.c_proj.bias"] = [width]
    return out


def layout_from_comfy(comfy_dir, which):
    """{key: [shape, kind]} from ComfyUI's classes on the meta device, with the checks above."""
    comfy_dir = os.path.abspath(comfy_dir)
    if comfy_dir not in sys.path:
        sys.path.insert(0, comfy_dir)
    import torch
    import comfy.options  # noqa: F401
    from comfy.cli_args import args
    args.cpu = True
    import comfy.ops
    import comfy.utils
    import comfy.model_detection
    import comfy.clip_model
    from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel
    from comfy.ldm.models.autoencoder import AutoencoderKL

    ops = comfy.ops.disable_weight_init
    meta = torch.device("meta")
    unet_cfg = SDXL_UNET if which == "base" else SDXL_REFINER_UNET
    with open(os.path.join(comfy_dir, "comfy", "clip_config_bigg.json")) as f:
        bigg_cfg = json.load(f)
    with meta:
        unet = UNetModel(**unet_cfg, dtype=torch.float32, device=meta, operations=ops)
        vae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4)
        clip_g = comfy.clip_model.CLIPTextModel(bigg_cfg, torch.float32, meta, ops)
        clip_l = comfy.clip_model.CLIPTextModel(dict(CLIP_L_CONFIG), torch.float32, meta, ops) if which == "base" else None

    layout = {}
    unet_sd = {}
    for k, v in unet.state_dict().items():
        layout["model.diffusion_model." + k] = [list(v.shape), "float"]
        unet_sd["model.diffusion_model." + k] = v
    # ComfyUI's detection must pick the right model class for this UNet.
    mc = comfy.model_detection.model_config_from_unet(unet_sd, "model.diffusion_model.")
    got = type(mc).__name__ if mc is not None else None
    if got != EXPECTED_CLASS[which]:
        sys.exit("ComfyUI detects the %s UNet layout as %s, expected %s" % (which, got, EXPECTED_CLASS[which]))
    print("ComfyUI detects the %s UNet layout as %s" % (which, got), file=sys.stderr)

    for k, v in vae.state_dict().items():
        layout["first_stage_model." + k] = [list(v.shape), "float"]
    if clip_l is not None:
        for k, v in clip_l.state_dict().items():
            if k.startswith("text_model."):  # SDXL stores CLIPTextModel (no projection) for CLIP-L
                layout[CLIP_L_PREFIX + k] = [list(v.shape), "float"]
        layout[CLIP_L_PREFIX + "text_model.embeddings.position_ids"] = [[1, 77], "int64"]

    # bigG in OpenCLIP names; check ComfyUI's conversion maps them onto its CLIPTextModel.
    oc = openclip_bigg_layout(bigg_cfg["hidden_size"], bigg_cfg["num_hidden_layers"], bigg_cfg["vocab_size"],
                              bigg_cfg["max_position_embeddings"], bigg_cfg["intermediate_size"])
    sd = {"clip_g." + k: torch.empty(s, device=meta) for k, s in oc.items()}
    conv = comfy.utils.clip_text_transformers_convert(sd, "clip_g.", "clip_g.transformer.")
    conv = {k: list(v.shape) for k, v in conv.items()}
    want = {"clip_g.transformer." + k: list(v.shape) for k, v in clip_g.state_dict().items()}
    want["clip_g.logit_scale"] = []  # SDClipModel's own parameter, loaded from the file
    if conv != want:
        diff = sorted(set(conv) ^ set(want)) or [k for k in conv if conv[k] != want.get(k)]
        sys.exit("OpenCLIP bigG layout does not convert to ComfyUI's CLIPTextModel: %s" % diff[:10])
    print("OpenCLIP bigG layout converts to ComfyUI's CLIPTextModel (%d keys)" % len(conv), file=sys.stderr)
    for k, s in oc.items():
        layout[CLIP_G_PREFIX[which] + k] = [s, "float"]
    return dict(sorted(layout.items()))


def load_layout(path):
    with open(path) as f:
        return json.load(f)["tensors"]


def write_layout(path, layout, which):
    counts = {}
    for k in layout:
        p = ".".join(k.split(".")[:3]) if k.startswith("conditioner.") else k.split(".")[0]
        counts[p] = counts.get(p, 0) + 1
    comment = ("SDXL %s single-file checkpoint layout: key -> [shape, kind]; kind is 'float' (model weight) "
               "or 'int64' (position ids). Derived from ComfyUI's model classes by gen_sdxl.py --write-layout."
               % which)
    lines = ['{"comment": %s,' % json.dumps(comment),
             ' "counts_by_prefix": %s,' % json.dumps(counts, sort_keys=True),
             ' "tensors": {']
    items = list(layout.items())
    for i, (k, v) in enumerate(items):
        lines.append('  %s: %s%s' % (json.dumps(k), json.dumps(v), "," if i + 1 < len(items) else ""))
    lines.append(' }}')
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


# ----------------------------------------------------------------------------- values

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def key_seed(seed, key):
    h = hashlib.sha256(DOMAIN + seed.encode() + b"\0" + key.encode()).digest()
    return int.from_bytes(h[:8], "little")


def std_normals(seed64, start, count):
    """Standard normals number start .. start+count-1 of the stream seeded by seed64 (float64)."""
    n = np.arange(2 * start + 1, 2 * (start + count) + 1, dtype=np.uint64)  # n+1
    z = n * _GOLDEN
    z += np.uint64(seed64)
    z ^= z >> _S30
    z *= _M1
    z ^= z >> _S27
    z *= _M2
    z ^= z >> _S31
    z >>= _S11
    r = z.reshape(-1, 2)
    u1 = r[:, 0].astype(np.float64)
    u1 += 1.0
    u1 *= 2.0 ** -53
    u2 = r[:, 1].astype(np.float64)
    u2 *= 2.0 ** -53
    out = np.log(u1)
    out *= -2.0
    np.sqrt(out, out=out)
    u2 *= 2.0 * math.pi
    np.cos(u2, out=u2)
    out *= u2
    return out


VAE_ENCODER_OUT = ("first_stage_model.encoder.conv_out.weight", "first_stage_model.encoder.conv_out.bias")
LOGIT_SCALE = math.log(100.0)


def init_params(key, shape, opts):
    """(mean, std) for a float model tensor."""
    name = key.rsplit(".", 1)[-1]
    if name == "logit_scale":
        return LOGIT_SCALE, 0.0
    if (key.endswith("token_embedding.weight") or key.endswith("position_embedding.weight")
            or name == "positional_embedding"):
        mean, std = 0.0, opts.embedding_std
    elif name in ("bias", "in_proj_bias"):
        mean, std = 0.0, opts.bias_std
    elif len(shape) >= 2:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        mean, std = 0.0, opts.weight_gain / math.sqrt(fan_in)
    elif name == "weight":  # 1-D weight: GroupNorm / LayerNorm scale
        mean, std = 1.0, opts.norm_jitter
    else:
        raise ValueError("don't know how to initialise %s %s" % (key, shape))
    if key in VAE_ENCODER_OUT:
        std *= opts.vae_encoder_out_gain
    return mean, std


# ----------------------------------------------------------------------------- writer

ST_DTYPES = {"fp16": ("F16", "<f2", 2), "fp32": ("F32", "<f4", 4)}


def numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def generate(out_path, layout, which, opts):
    st_name, np_dtype, esize = ST_DTYPES[opts.dtype]
    keys = sorted(layout)
    header = {"__metadata__": {
        "format": "pt",
        "generator": "gen_sdxl.py sdxl-random-v1 " + which,
        "seed": opts.seed,
        "init": json.dumps({"weight_gain": opts.weight_gain, "embedding_std": opts.embedding_std,
                            "vae_encoder_out_gain": opts.vae_encoder_out_gain, "bias_std": opts.bias_std,
                            "norm_jitter": opts.norm_jitter}, sort_keys=True),
    }}
    offset = 0
    for k in keys:
        shape, kind = layout[k]
        dt, sz = ("I64", 8) if kind == "int64" else (st_name, esize)
        nbytes = numel(shape) * sz
        header[k] = {"dtype": dt, "shape": shape, "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * ((8 - len(hjson) % 8) % 8)

    tmp = out_path + ".tmp"
    t0 = time.time()
    sha = hashlib.sha256()
    chunk = 1 << 22
    with open(tmp, "wb") as f:
        def put(b):
            f.write(b)
            sha.update(b)
        put(struct.pack("<Q", len(hjson)))
        put(hjson)
        for i, k in enumerate(keys):
            shape, kind = layout[k]
            if kind == "int64":
                put(np.arange(numel(shape), dtype="<i8").tobytes())
                continue
            mean, std = init_params(k, shape, opts)
            n = numel(shape)
            if std == 0.0:
                put(np.full(n, mean, dtype=np.float64).astype(np_dtype).tobytes())
                continue
            s64 = key_seed(opts.seed, k)
            for start in range(0, n, chunk):
                cnt = min(chunk, n - start)
                v = std_normals(s64, start, cnt)
                v *= std
                if mean != 0.0:
                    v += mean
                put(v.astype(np_dtype).tobytes())
            if opts.verbose and (i % 200 == 0):
                print("  %4d/%d %s  %.1fs" % (i, len(keys), k, time.time() - t0), file=sys.stderr)
    os.replace(tmp, out_path)
    return {"path": out_path, "model": which, "tensors": len(keys), "bytes": 8 + len(hjson) + offset,
            "sha256": sha.hexdigest(), "seconds": round(time.time() - t0, 1), "dtype": opts.dtype}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("which", nargs="?", choices=["base", "refiner"])
    ap.add_argument("out", nargs="?", help="output .safetensors path")
    ap.add_argument("--comfy-dir", help="derive the layouts from ComfyUI's model classes (needs torch)")
    ap.add_argument("--write-layout", action="store_true", help="with --comfy-dir: (over)write the layout files")
    ap.add_argument("--dtype", choices=sorted(ST_DTYPES), default="fp16")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--weight-gain", type=float, default=1.0)
    ap.add_argument("--embedding-std", type=float, default=0.02)
    ap.add_argument("--bias-std", type=float, default=0.01)
    ap.add_argument("--norm-jitter", type=float, default=0.02)
    ap.add_argument("--vae-encoder-out-gain", type=float, default=9.0)
    ap.add_argument("-v", "--verbose", action="store_true")
    opts = ap.parse_args()

    if opts.comfy_dir:
        for which in (["base", "refiner"] if opts.which is None else [opts.which]):
            layout = layout_from_comfy(opts.comfy_dir, which)
            path = LAYOUT_FILES[which]
            if opts.write_layout:
                write_layout(path, layout, which)
                print("wrote %s (%d tensors)" % (path, len(layout)), file=sys.stderr)
            else:
                stored = load_layout(path)
                if stored != layout:
                    diff = sorted(set(stored) ^ set(layout)) or [k for k in layout if layout[k] != stored.get(k)]
                    sys.exit("layout from ComfyUI differs from %s, e.g. %s" % (path, diff[:10]))
                print("layout from ComfyUI matches %s (%d tensors)" % (path, len(layout)), file=sys.stderr)
    if opts.out:
        if opts.which is None:
            ap.error("say base or refiner")
        info = generate(opts.out, load_layout(LAYOUT_FILES[opts.which]), opts.which, opts)
        print(json.dumps(info))
    elif not opts.comfy_dir:
        ap.error("nothing to do: give base|refiner and an output path")


if __name__ == "__main__":
    main()
