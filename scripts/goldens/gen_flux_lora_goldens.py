"""Goldens for LoRA on Flux (issue 13), computed by ComfyUI's own functions.

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_flux_lora_goldens.py /path/to/comfyrs

The model is comfyrs's tiny Flux-dev all-in-one fixture
(`fixtures/models/checkpoints/tiny_flux_dev_fp8.safetensors`, hidden 64, 1 double + 1 single
block), its transformer built as ComfyUI's `model_base.Flux` (`supported_models.Flux` at the
tiny config: ComfyUI's detection only knows the real widths) twice: in f32 (ComfyUI's CPU
default for an fp8 file that fits in memory) and with fp8 e4m3fn weights (what it does when
the model does not fit, or on an fp8-capable GPU).

Writes to tests/data/flux_lora/:
  lora_{kohya,native,diffusers,misc,xlabs}.safetensors: seeded random LoRAs in each key format
      (kohya `lora_unet_*`; ComfyUI native `diffusion_model.*` incl. `linear1_qkv`, `.diff`,
      `.diff_b`, `.set_weight`; diffusers/PEFT `transformer.*` lora_A/lora_B as ai-toolkit and
      diffusers save them, incl. split q/k/v, `proj_mlp` and `norm_out.linear`; OneTrainer
      `lora_transformer_*` and LyCORIS `lycoris_*` with LoHa/LoKr; XLabs `*.processor.*`).
  key_map.json: ComfyUI's `model_lora_keys_unet` for the tiny Flux (targets as
      [key, [dim, offset, size] | null, "swap_scale_shift" | null]).
  goldens.safetensors + goldens.json:
      * `f32.{fmt}.{key}`: each patched weight (f32 model, strength 0.7), from
        `ModelPatcher.add_patches` + `patch_weight_to_device`; goldens.json lists per format
        the patched keys. XLabs goes through `lora_convert.convert_uso_lora`
        (ComfyUI applies it only to USO files, see comfyrs's `lora::file::convert_xlabs`).
      * `fp8.{fmt}.{key}`: the same on the fp8-weight model (strength 1.0): the bytes of the
        fp8 result of ComfyUI's seeded stochastic rounding (uint8).
      * `round.input`, `round.seed{A,B}`: `comfy.float.stochastic_rounding(input, e4m3fn,
        seed)` for two seeds (bytes), the seeds in goldens.json.
"""
import json
import os
import sys

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "."
OUT = os.path.join(ROOT, "tests/data/flux_lora")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.float  # noqa: E402
import comfy.lora  # noqa: E402
import comfy.lora_convert  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.utils  # noqa: E402

HIDDEN, MLP = 64, 256
PARAMS = dict(
    image_model="flux", in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32,
    hidden_size=HIDDEN, mlp_ratio=4.0, num_heads=4, depth=1, depth_single_blocks=1,
    axes_dim=[4, 6, 6], theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
)


def base_sd():
    ck = load_file(os.path.join(ROOT, "fixtures/models/checkpoints/tiny_flux_dev_fp8.safetensors"))
    p = "model.diffusion_model."
    return {k[len(p):]: v for k, v in ck.items() if k.startswith(p)}


def build(sd, fp8):
    cfg = comfy.supported_models.Flux(dict(PARAMS))
    if fp8:
        cfg.set_inference_dtype(torch.float8_e4m3fn, torch.float32)
    else:
        cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    m, u = model.diffusion_model.load_state_dict(
        {k: (v if fp8 else v.float()) for k, v in sd.items()}, strict=True)
    assert not m and not u
    dt = model.diffusion_model.img_in.weight.dtype
    assert dt == (torch.float8_e4m3fn if fp8 else torch.float32), dt
    return model


G = torch.Generator().manual_seed(2024)


def rnd(*shape, scale=0.1):
    return (torch.randn(shape, generator=G) * scale).to(torch.float16)


def lora_pair(sd, x, out, inp, rank=4, names=("lora_up.weight", "lora_down.weight"), alpha=None):
    sd[f"{x}.{names[0]}"] = rnd(out, rank)
    sd[f"{x}.{names[1]}"] = rnd(rank, inp)
    if alpha is not None:
        sd[f"{x}.alpha"] = torch.tensor(float(alpha))


def make_loras():
    H, M = HIDDEN, MLP
    kohya = {}
    for x, o, i in [
        ("lora_unet_double_blocks_0_img_attn_qkv", 3 * H, H),
        ("lora_unet_double_blocks_0_txt_attn_proj", H, H),
        ("lora_unet_double_blocks_0_img_mlp_0", M, H),
        ("lora_unet_double_blocks_0_txt_mod_lin", 6 * H, H),
        ("lora_unet_single_blocks_0_linear1", 3 * H + M, H),
        ("lora_unet_single_blocks_0_linear2", H, H + M),
        ("lora_unet_single_blocks_0_modulation_lin", 3 * H, H),
        ("lora_unet_final_layer_linear", 64, H),
        ("lora_unet_img_in", H, 64),
        ("lora_unet_guidance_in_in_layer", H, 256),
    ]:
        lora_pair(kohya, x, o, i, alpha=2.0)
    kohya["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"] = rnd(32, 4)
    kohya["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"] = rnd(4, 32)

    native = {}
    lora_pair(native, "diffusion_model.double_blocks.0.img_attn.proj", H, H, rank=8, alpha=4.0)
    lora_pair(native, "diffusion_model.double_blocks.0.txt_attn.qkv", 3 * H, H)
    lora_pair(native, "diffusion_model.single_blocks.0.linear1_qkv", 3 * H, H, alpha=1.0)
    lora_pair(native, "diffusion_model.txt_in", H, 32)
    native["diffusion_model.double_blocks.0.img_mod.lin.diff_b"] = rnd(6 * H)
    native["diffusion_model.double_blocks.0.img_mod.lin.diff"] = rnd(6 * H, H, scale=0.01)
    native["diffusion_model.double_blocks.0.img_attn.norm.query_norm.scale.diff"] = rnd(16)
    native["diffusion_model.single_blocks.0.norm.key_norm.scale.set_weight"] = rnd(16) + 1.0

    diffusers = {}
    ab = ("lora_B.weight", "lora_A.weight")
    t = "transformer."
    for x, o, i in [
        ("transformer_blocks.0.attn.to_q", H, H),
        ("transformer_blocks.0.attn.to_k", H, H),
        ("transformer_blocks.0.attn.to_v", H, H),
        ("transformer_blocks.0.attn.add_q_proj", H, H),
        ("transformer_blocks.0.attn.add_v_proj", H, H),
        ("transformer_blocks.0.attn.to_out.0", H, H),
        ("transformer_blocks.0.attn.to_add_out", H, H),
        ("transformer_blocks.0.ff.net.0.proj", M, H),
        ("transformer_blocks.0.ff_context.net.2", H, M),
        ("transformer_blocks.0.norm1.linear", 6 * H, H),
        ("single_transformer_blocks.0.attn.to_q", H, H),
        ("single_transformer_blocks.0.attn.to_k", H, H),
        ("single_transformer_blocks.0.attn.to_v", H, H),
        ("single_transformer_blocks.0.proj_mlp", M, H),
        ("single_transformer_blocks.0.proj_out", H, H + M),
        ("single_transformer_blocks.0.norm.linear", 3 * H, H),
        ("norm_out.linear", 2 * H, H),
        ("proj_out", 64, H),
        ("x_embedder", H, 64),
        ("context_embedder", H, 32),
        ("time_text_embed.timestep_embedder.linear_1", H, 256),
        ("time_text_embed.guidance_embedder.linear_2", H, H),
        ("time_text_embed.text_embedder.linear_1", H, 32),
    ]:
        lora_pair(diffusers, t + x, o, i, names=ab)

    misc = {}
    # OneTrainer and LyCORIS names, with LoHa and LoKr adapters on q/k slices.
    lora_pair(misc, "lora_transformer_single_transformer_blocks_0_attn_to_v", H, H, alpha=8.0)
    x = "lycoris_transformer_blocks_0_attn_to_k"
    for n, s in [("hada_w1_a", (H, 2)), ("hada_w1_b", (2, H)), ("hada_w2_a", (H, 2)), ("hada_w2_b", (2, H))]:
        misc[f"{x}.{n}"] = rnd(*s, scale=0.3)
    misc[f"{x}.alpha"] = torch.tensor(2.0)
    x = "lycoris_single_transformer_blocks_0_proj_mlp"
    misc[f"{x}.lokr_w1"] = rnd(4, 4, scale=0.3)
    misc[f"{x}.lokr_w2_a"] = rnd(M // 4, 2, scale=0.3)
    misc[f"{x}.lokr_w2_b"] = rnd(2, H // 4, scale=0.3)
    lora_pair(misc, "lycoris_norm_out_linear", 2 * H, H, alpha=4.0)

    xlabs = {}
    for b, names in [("double_blocks.0", [("qkv_lora1", 3 * H, H), ("qkv_lora2", 3 * H, H),
                                         ("proj_lora1", H, H), ("proj_lora2", H, H)]),
                     ("single_blocks.0", [("qkv_lora", 3 * H, H), ("proj_lora", H, H + M)])]:
        for n, o, i in names:
            lora_pair(xlabs, f"{b}.processor.{n}", o, i, names=("up.weight", "down.weight"))
    return {"kohya": kohya, "native": native, "diffusers": diffusers, "misc": misc, "xlabs": xlabs}


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
    return out, key_map


def main():
    os.makedirs(OUT, exist_ok=True)
    sd = base_sd()
    loras = make_loras()
    for name, l in loras.items():
        save_file({k: v.contiguous() for k, v in l.items()}, os.path.join(OUT, f"lora_{name}.safetensors"))
    goldens, meta = {}, {"patched": {}}
    for fp8, strength in [(False, 0.7), (True, 1.0)]:
        model = build(sd, fp8)
        tag = "fp8" if fp8 else "f32"
        for name, lora in loras.items():
            lora = {k: v.float() for k, v in lora.items()}
            if name == "xlabs":
                lora = comfy.lora_convert.convert_uso_lora(lora)
            out, _ = patched(model, lora, strength)
            assert out, name
            for k, v in out.items():
                goldens[f"{tag}.{name}.{k}"] = v.view(torch.uint8) if fp8 else v.float()
            if not fp8:
                meta["patched"][name] = sorted(out)
        if not fp8:
            km = comfy.lora.model_lora_keys_unet(model, {})
            with open(os.path.join(OUT, "key_map.json"), "w") as f:
                json.dump({k: target_json(v) for k, v in km.items()}, f, indent=0, sort_keys=True)
    # Stochastic rounding of a spread of magnitudes (zeros, fp8 subnormals, > 448).
    g = torch.Generator().manual_seed(7)
    x = torch.randn((48, 40), generator=g) * torch.logspace(-4, 3, 40)
    x[0, :4] = torch.tensor([0.0, -0.0, 1e-3, 500.0])
    goldens["round.input"] = x
    seeds = {"A": comfy.model_patcher.string_to_seed("diffusion_model.double_blocks.0.img_attn.qkv.weight"),
             "B": 12345}
    for n, s in seeds.items():
        goldens[f"round.seed{n}"] = comfy.float.stochastic_rounding(x, torch.float8_e4m3fn, seed=s).view(torch.uint8)
    meta["seeds"] = seeds
    save_file({k: v.contiguous() for k, v in goldens.items()}, os.path.join(OUT, "goldens.safetensors"))
    with open(os.path.join(OUT, "goldens.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
    print(len(goldens), "goldens")


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs its nodes
        main()
