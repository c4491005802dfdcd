#!/usr/bin/env python3
"""Write deterministic LoRA files for the full-size SD1.5 layout (numpy only).

Two files, both covering the UNet and the CLIP-L text encoder, with magnitudes large enough
that the image visibly changes (each delta is about half the size of the weight it patches):

  sd15_kohya_r32.safetensors  kohya-ss naming: `lora_unet_<diffusers module>` and
      `lora_te_text_model_encoder_layers_N_<module>`, rank 32, `.alpha` 16 (scale 0.5).
      UNet: every attention projection (to_q/k/v/out.0 of attn1 and attn2), ff.net.0.proj,
      ff.net.2, proj_in/proj_out of all 16 SpatialTransformers, plus LoCon on the 3x3 conv1 of
      every down/up resnet. CLIP: q/k/v/out_proj, mlp.fc1/fc2 of all 12 layers.
  sd15_peft_r32.safetensors   PEFT / diffusers naming: `unet.<diffusers module>.lora_A/lora_B.weight`
      and `text_encoder.text_model.encoder.layers.N.<module>.lora_A/lora_B.weight`, rank 32, no
      alpha. Attention projections are written the way PEFT writes them (`...attn1.to_q`, no
      `processor`): ComfyUI's key map does not know that form, so those keys are reported as not
      loaded and only ff / proj_in / proj_out / resnet conv / text-encoder keys patch.

Values: numpy's PCG64 generator seeded per tensor with crc32 of its key (standard normals,
float64) scaled as below and stored as float16:
  down / lora_A:  std 1 / sqrt(fan_in)
  up / lora_B:    std GAIN / sqrt(rank)     (GAIN 0.6 kohya, 0.3 PEFT)
Usage: python3 scripts/gen_sd15_lora.py OUT_DIR
"""

import json
import struct
import sys
import zlib
from pathlib import Path

import numpy as np

RANK = 32


def normal(key, shape, std):
    rng = np.random.Generator(np.random.PCG64(zlib.crc32(key.encode())))
    return (rng.standard_normal(shape) * std).astype(np.float16)


def write_safetensors(path, tensors):
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        b = a.tobytes()
        dtype = {np.float16: "F16", np.float32: "F32"}[a.dtype.type]
        header[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def unet_modules():
    """(diffusers module name, weight shape) for the modules the LoRAs patch."""
    mods = []
    chans = [320, 640, 1280, 1280]

    def transformer(prefix, c, ctx_in=768):
        mods.append((f"{prefix}.proj_in", [c, c, 1, 1]))
        mods.append((f"{prefix}.proj_out", [c, c, 1, 1]))
        t = f"{prefix}.transformer_blocks.0"
        for a, kv_in in (("attn1", c), ("attn2", ctx_in)):
            mods.append((f"{t}.{a}.to_q", [c, c]))
            mods.append((f"{t}.{a}.to_k", [c, kv_in]))
            mods.append((f"{t}.{a}.to_v", [c, kv_in]))
            mods.append((f"{t}.{a}.to_out.0", [c, c]))
        mods.append((f"{t}.ff.net.0.proj", [c * 8, c]))
        mods.append((f"{t}.ff.net.2", [c, c * 4]))

    prev = 320
    for x in range(4):
        c = chans[x]
        for i in range(2):
            cin = prev if i == 0 else c
            mods.append((f"down_blocks.{x}.resnets.{i}.conv1", [c, cin, 3, 3]))
            if x < 3:
                transformer(f"down_blocks.{x}.attentions.{i}", c)
        prev = c
    transformer("mid_block.attentions.0", 1280)
    # Up blocks: resnet input channels = previous output + skip.
    skips = [320, 320, 320, 320, 640, 640, 640, 1280, 1280, 1280, 1280, 1280]
    rev = [1280, 1280, 640, 320]
    h = 1280
    for x in range(4):
        c = rev[x]
        for i in range(3):
            cin = h + skips.pop()
            mods.append((f"up_blocks.{x}.resnets.{i}.conv1", [c, cin, 3, 3]))
            if x > 0:
                transformer(f"up_blocks.{x}.attentions.{i}", c)
            h = c
    return mods


CLIP_MODULES = [
    ("self_attn.q_proj", "self_attn_q_proj", [768, 768]),
    ("self_attn.k_proj", "self_attn_k_proj", [768, 768]),
    ("self_attn.v_proj", "self_attn_v_proj", [768, 768]),
    ("self_attn.out_proj", "self_attn_out_proj", [768, 768]),
    ("mlp.fc1", "mlp_fc1", [3072, 768]),
    ("mlp.fc2", "mlp_fc2", [768, 3072]),
]


def factors(key, shape, gain, down_name, up_name):
    out_c, fan_in = shape[0], int(np.prod(shape[1:]))
    conv = len(shape) == 4
    down_shape = [RANK] + shape[1:] if conv else [RANK, shape[1]]
    up_shape = [out_c, RANK, 1, 1] if conv else [out_c, RANK]
    return {
        f"{key}.{down_name}": normal(f"{key}.{down_name}", down_shape, 1.0 / np.sqrt(fan_in)),
        f"{key}.{up_name}": normal(f"{key}.{up_name}", up_shape, gain / np.sqrt(RANK)),
    }


def kohya():
    t = {}
    for name, shape in unet_modules():
        key = "lora_unet_" + name.replace(".", "_")
        t.update(factors(key, shape, 0.6, "lora_down.weight", "lora_up.weight"))
        t[f"{key}.alpha"] = np.array(16.0, dtype=np.float16)
    for b in range(12):
        for _, kohya_name, shape in CLIP_MODULES:
            key = f"lora_te_text_model_encoder_layers_{b}_{kohya_name}"
            t.update(factors(key, shape, 0.6, "lora_down.weight", "lora_up.weight"))
            t[f"{key}.alpha"] = np.array(16.0, dtype=np.float16)
    return t


def peft():
    t = {}
    for name, shape in unet_modules():
        t.update(factors(f"unet.{name}", shape, 0.3, "lora_A.weight", "lora_B.weight"))
    for b in range(12):
        for module, _, shape in CLIP_MODULES:
            key = f"text_encoder.text_model.encoder.layers.{b}.{module}"
            t.update(factors(key, shape, 0.3, "lora_A.weight", "lora_B.weight"))
    return t


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    out.mkdir(parents=True, exist_ok=True)
    for name, make in (("sd15_kohya_r32.safetensors", kohya), ("sd15_peft_r32.safetensors", peft)):
        t = make()
        write_safetensors(out / name, t)
        print(f"{out / name}: {len(t)} tensors")


if __name__ == "__main__":
    main()
