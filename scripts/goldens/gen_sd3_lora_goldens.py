"""Goldens for LoRA on SD3/SD3.5 MMDiT (issue 14), computed by ComfyUI's own functions.

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_sd3_lora_goldens.py /path/to/comfyrs

The model is the MMDiT of comfyrs's tiny SD3.5-medium checkpoint
(`fixtures/models/checkpoints/tiny_sd35_medium.safetensors`: depth 2, hidden 128, RMS QK norm,
MMDiT-X `attn2` in block 0, block 1 the last with a pre-only context block), detected and
built by ComfyUI (`model_detection.model_config_from_unet` → `model_base.SD3`) in f32.

Writes to tests/data/sd3_lora/:
  lora_{diffusers,peft,kohya,onetrainer,native}.safetensors: seeded random LoRAs in each key
      form ComfyUI's SD3 branch of `model_lora_keys_unet` knows: diffusers/ai-toolkit
      `transformer.*` lora_A/lora_B (split q/k/v of both streams and of `attn2`,
      `norm_out.linear` and the last block's `norm1_context.linear`, which ComfyUI swaps),
      PEFT `base_model.model.*`, kohya `lora_unet_*` (LDM names), OneTrainer
      `lora_transformer_*` and SimpleTuner `lycoris_*` (with a LoHa), ComfyUI native
      `diffusion_model.*` (incl. `.diff` on a QK-norm scale).
  key_map.json: ComfyUI's `model_lora_keys_unet` for the tiny model (targets as
      [key, [dim, offset, size] | null, "swap_scale_shift" | null]).
  goldens.safetensors + goldens.json: `{fmt}.{key}` each patched weight (strength 0.8) from
      `ModelPatcher.add_patches` + `patch_weight_to_device`; goldens.json lists per format
      the patched keys.
"""
import json
import os
import sys

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "."
OUT = os.path.join(ROOT, "tests/data/sd3_lora")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.lora  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.utils  # noqa: E402

H, M = 128, 512


def build():
    ck = load_file(os.path.join(ROOT, "fixtures/models/checkpoints/tiny_sd35_medium.safetensors"))
    p = "model.diffusion_model."
    sd = {k[len(p):]: v.float() for k, v in ck.items() if k.startswith(p)}
    mc = comfy.model_detection.model_config_from_unet(sd, "")
    assert mc is not None and type(mc).__name__ == "SD3", mc
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "")
    model.load_model_weights(sd, "")
    return model


G = torch.Generator().manual_seed(3535)


def rnd(*shape, scale=0.1):
    return (torch.randn(shape, generator=G) * scale).to(torch.float16)


def lora_pair(sd, x, out, inp, rank=4, names=("lora_B.weight", "lora_A.weight"), alpha=None):
    sd[f"{x}.{names[0]}"] = rnd(out, rank)
    sd[f"{x}.{names[1]}"] = rnd(rank, inp)
    if alpha is not None:
        sd[f"{x}.alpha"] = torch.tensor(float(alpha))


def make_loras():
    diffusers = {}
    for x, o, i in [
        ("transformer_blocks.0.attn.to_q", H, H),
        ("transformer_blocks.0.attn.to_k", H, H),
        ("transformer_blocks.0.attn.to_v", H, H),
        ("transformer_blocks.0.attn.add_k_proj", H, H),
        ("transformer_blocks.0.attn.add_v_proj", H, H),
        ("transformer_blocks.0.attn2.to_q", H, H),
        ("transformer_blocks.0.attn2.to_out.0", H, H),
        ("transformer_blocks.0.attn.to_out.0", H, H),
        ("transformer_blocks.0.attn.to_add_out", H, H),
        ("transformer_blocks.0.ff.net.0.proj", M, H),
        ("transformer_blocks.0.ff_context.net.2", H, M),
        ("transformer_blocks.0.norm1.linear", 9 * H, H),
        ("transformer_blocks.0.norm1_context.linear", 6 * H, H),
        ("transformer_blocks.1.norm1_context.linear", 2 * H, H),
        ("transformer_blocks.1.attn.add_q_proj", H, H),
        ("norm_out.linear", 2 * H, H),
        ("proj_out", 64, H),
        ("time_text_embed.timestep_embedder.linear_1", H, 256),
        ("time_text_embed.text_embedder.linear_2", H, H),
    ]:
        lora_pair(diffusers, "transformer." + x, o, i)
    # The conv patch embedding as a LoRA over its flattened kernel (a LoCon-style 4-d pair).
    diffusers["transformer.pos_embed.proj.lora_B.weight"] = rnd(H, 4, 1, 1)
    diffusers["transformer.pos_embed.proj.lora_A.weight"] = rnd(4, 16, 2, 2)

    peft = {}
    lora_pair(peft, "base_model.model.transformer_blocks.1.attn.to_v", H, H, alpha=2.0)
    lora_pair(peft, "base_model.model.transformer_blocks.1.ff.net.2", H, M, alpha=8.0)

    kohya = {}
    for x, o, i in [
        ("lora_unet_joint_blocks_0_x_block_attn_qkv", 3 * H, H),
        ("lora_unet_joint_blocks_1_context_block_adaLN_modulation_1", 2 * H, H),
        ("lora_unet_final_layer_linear", 64, H),
        ("lora_unet_y_embedder_mlp_0", H, 80),
    ]:
        lora_pair(kohya, x, o, i, names=("lora_up.weight", "lora_down.weight"), alpha=2.0)

    onetrainer = {}
    lora_pair(onetrainer, "lora_transformer_transformer_blocks_1_attn_to_k", H, H,
              names=("lora_up.weight", "lora_down.weight"), alpha=4.0)
    lora_pair(onetrainer, "lora_transformer_norm_out_linear", 2 * H, H,
              names=("lora_up.weight", "lora_down.weight"), alpha=1.0)
    x = "lycoris_transformer_blocks_0_attn_add_q_proj"
    for n, s in [("hada_w1_a", (H, 2)), ("hada_w1_b", (2, H)), ("hada_w2_a", (H, 2)), ("hada_w2_b", (2, H))]:
        onetrainer[f"{x}.{n}"] = rnd(*s, scale=0.3)
    onetrainer[f"{x}.alpha"] = torch.tensor(2.0)

    native = {}
    lora_pair(native, "diffusion_model.joint_blocks.1.x_block.attn.proj", H, H, rank=8,
              names=("lora_up.weight", "lora_down.weight"), alpha=4.0)
    native["diffusion_model.joint_blocks.0.x_block.attn.ln_q.diff"] = rnd(64)
    native["diffusion_model.joint_blocks.0.context_block.mlp.fc1.diff_b"] = rnd(M)
    return {"diffusers": diffusers, "peft": peft, "kohya": kohya, "onetrainer": onetrainer,
            "native": native}


def target_json(v):
    if isinstance(v, str):
        return [v, None, None]
    if len(v) > 2:
        return [v[0], None, v[2].__name__]
    return [v[0], list(v[1]), None]


def patched(model, lora, strength):
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    loaded = comfy.lora.load_lora(lora, key_map, log_missing=False)
    mp = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    mp.add_patches(loaded, strength)
    out = {}
    for key in sorted(mp.patches):
        mp.patch_weight_to_device(key)
        out[key] = comfy.utils.get_attr(model, key).detach().clone()
    mp.unpatch_model()
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    model = build()
    loras = make_loras()
    goldens, meta = {}, {"patched": {}}
    for name, lora in loras.items():
        save_file({k: v.contiguous() for k, v in lora.items()}, os.path.join(OUT, f"lora_{name}.safetensors"))
        out = patched(model, {k: v.float() for k, v in lora.items()}, 0.8)
        assert out, name
        for k, v in out.items():
            goldens[f"{name}.{k}"] = v.float()
        meta["patched"][name] = sorted(out)
    km = comfy.lora.model_lora_keys_unet(model, {})
    with open(os.path.join(OUT, "key_map.json"), "w") as f:
        json.dump({k: target_json(v) for k, v in km.items()}, f, indent=0, sort_keys=True)
    save_file({k: v.contiguous() for k, v in goldens.items()}, os.path.join(OUT, "goldens.safetensors"))
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    print(len(goldens), "goldens;", {k: len(v) for k, v in meta["patched"].items()})


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs its nodes
        main()
