"""A deterministic random-weight SD3.5-medium-style checkpoint at reduced depth, for full-size
parity of everything around the MMDiT (issue 14's "SD3.5 at a reduced depth that ComfyUI still
detects as SD3").

    cd /work/ref/ComfyUI && flock /tmp/bigmem.lock /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/parity/gen_sd35.py /work/models-big/checkpoints/sd35_depth8_random.safetensors

Layout of a ComfyUI SD3.5 all-in-one checkpoint, taken from ComfyUI's own classes on the meta
device: an MMDiT-X under `model.diffusion_model.` at depth 8 (hidden 512, 8 heads of 64; RMS
QK-norm; x-only self-attention in blocks 0-3; the real 384x384 position table, 2048-wide pooled
input, 4096-wide context), the full-size CLIP-L (`sd1_clip_config.json`) and CLIP-G
(`clip_config_bigg.json`) under `text_encoders.clip_{l,g}.transformer.`, and the full-size
16-channel VAE (SD3's: ch 128, ch_mult [1, 2, 4, 4], no quant convs) under
`first_stage_model.`; no T5 (a full T5-XXL is 9.5 GB). All fp16.

Values: seeded per key (torch.Generator seeded with crc32("sd35-random-v1:" + key)): weights of
rank >= 2 N(0, 1/fan_in), 1-d norm/scale weights 1 + N(0, 0.02), biases N(0, 0.01), token and
position embeddings N(0, 0.02), MMDiT `pos_embed` the real 2-d sin-cos table. The script checks
that ComfyUI's `model_detection` calls the MMDiT `SD3` and that its text-encoder detection finds
CLIP-L and CLIP-G.
"""
import json
import os
import sys
import zlib

PATH = sys.argv[1]
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.clip_model  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.modules.diffusionmodules import mmdit  # noqa: E402
from comfy.ldm.modules.diffusionmodules.model import Decoder, Encoder  # noqa: E402

DEPTH = 8
POS = 384


def meta_state_dict(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def layout():
    ops = comfy.ops.disable_weight_init
    out = {}
    with torch.device("meta"):
        net = mmdit.OpenAISignatureMMDITWrapper(
            input_size=None, patch_size=2, in_channels=16, out_channels=16, depth=DEPTH,
            adm_in_channels=2048,
            context_embedder_config={"target": "torch.nn.Linear",
                                     "params": {"in_features": 4096, "out_features": 64 * DEPTH}},
            num_patches=POS * POS, pos_embed_max_size=POS, qk_norm="rms",
            x_block_self_attn_layers=[0, 1, 2, 3], pos_embed_scaling_factor=None,
            dtype=torch.float16, device="meta", operations=ops)
        for k, s in meta_state_dict(net).items():
            out["model.diffusion_model." + k] = s
        here = os.path.join(os.getcwd(), "comfy")
        for name, cfg in [("clip_l", "sd1_clip_config.json"), ("clip_g", "clip_config_bigg.json")]:
            with open(os.path.join(here, cfg)) as f:
                config = json.load(f)
            m = comfy.clip_model.CLIPTextModel(config, torch.float16, "meta", ops)
            for k, s in meta_state_dict(m).items():
                out[f"text_encoders.{name}.transformer.{k}"] = s
        dd = dict(double_z=True, z_channels=16, resolution=256, in_channels=3, out_ch=3, ch=128,
                  ch_mult=[1, 2, 4, 4], num_res_blocks=2, attn_resolutions=[], dropout=0.0)
        for part, cls in [("encoder", Encoder), ("decoder", Decoder)]:
            m = cls(**dd)
            for k, s in meta_state_dict(m).items():
                out[f"first_stage_model.{part}.{k}"] = s
    return out


def value(key, shape):
    g = torch.Generator().manual_seed(zlib.crc32(("sd35-random-v1:" + key).encode()))
    if key.endswith("pos_embed"):
        t = torch.from_numpy(mmdit.get_2d_sincos_pos_embed(shape[2], POS)).float().unsqueeze(0)
    elif "embedding" in key and key.endswith(".weight"):
        t = 0.02 * torch.randn(shape, generator=g)
    elif key.endswith(".bias"):
        t = 0.01 * torch.randn(shape, generator=g)
    elif len(shape) == 1:
        t = 1.0 + 0.02 * torch.randn(shape, generator=g)
    else:
        fan_in = 1
        for d in shape[1:]:
            fan_in *= d
        t = torch.randn(shape, generator=g) / fan_in ** 0.5
    return t.to(torch.float16).contiguous()


def main():
    path = PATH
    shapes = layout()
    sd = {k: value(k, s) for k, s in sorted(shapes.items())}
    mc = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
    assert mc is not None and type(mc).__name__ == "SD3", mc
    print("ComfyUI detects", type(mc).__name__, json.dumps(
        {k: v for k, v in mc.unet_config.items() if k != "dtype"}))
    target = mc.clip_target(sd)
    print("clip target", target.clip.__name__)
    n = sum(v.numel() for v in sd.values())
    save_file(sd, path)
    print(f"wrote {path}: {len(sd)} tensors, {n} parameters, {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    main()
