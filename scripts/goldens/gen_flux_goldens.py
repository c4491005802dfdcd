"""Goldens for comfyrs's Flux.1 transformer, computed by ComfyUI's own modules (issue 13).

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_flux_goldens.py /path/to/comfyrs/tests/data/flux

ComfyUI's `comfy.ldm.flux.model.Flux` is built directly at a tiny config (hidden 64, 4 heads
of 16 = axes_dim [4, 6, 6], mlp_ratio 4, vec_in_dim 32, context_in_dim 48, in/out channels
16, 2 double + 2 single blocks, guidance_embed on) with `comfy.ops.disable_weight_init`
(ComfyUI's CPU f32 ops) and seeded random weights. The CPU attention kernel is ComfyUI's
default there (`attention_sub_quad`, asserted below).

Writes:
  tiny_flux.safetensors : the weights in the real BFL key layout (bare keys, as a
      `diffusion_models/` file), stored as fp16 (the model computes in f32 with those values).
  goldens.safetensors + goldens.json : inputs and outputs:
      * `pe.grid`: `EmbedND(ids)` for 3 text tokens and a 5x7 image grid (process_img ids);
      * `temb`: `timestep_embedding(t, 256)` for a few t;
      * `dev.*`: forward of the dev model (x [2,16,6,8], context [2,7,48], y [2,32],
        timesteps [0.73, 0.21], guidance [3.5, 1.0]);
      * `dev_odd.*`: an odd latent [1,16,5,7] (circular padding to the patch size, crop);
      * `dev_noguid.*`: guidance None (FluxDisableGuidance);
      * `schnell.*`: the same weights without `guidance_in` (guidance_embed off);
      * `kontext_offset.*` / `kontext_index.*`: ref_latents [[1,16,4,6], [1,16,2,4]] with
        the two reference-latent methods;
      * `step.*`: one denoised prediction through ComfyUI's `model_base.Flux` (dev config,
        ModelSamplingFlux shift 1.15): `extra_conds` (guidance default 3.5, pooled -> y) and
        `apply_model` at sigma 0.6;
      * `concat.*`: `model_base.Flux.concat_cond` (the extra input channels) of a Fill model
        (in_channels 96: image + 8x8-folded mask) and a Canny/Depth model (in_channels 32:
        image only), with and without `concat_latent_image` / `concat_mask`, a latent batch
        of 2 [2,16,6,8], a [1,16,3,5] image (center-cropped, bilinear) and a [1,1,40,56]
        pixel mask.
"""
import json
import os
import sys
import types

OUT_DIR = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "tests/data/flux"
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.ldm.modules.attention as attn  # noqa: E402
import comfy.ops  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy.ldm.flux.layers import EmbedND, timestep_embedding  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402

assert attn.optimized_attention is attn.attention_sub_quad, attn.optimized_attention

PARAMS = dict(
    in_channels=16,
    out_channels=16,
    vec_in_dim=32,
    context_in_dim=48,
    hidden_size=64,
    mlp_ratio=4.0,
    num_heads=4,
    depth=2,
    depth_single_blocks=2,
    axes_dim=[4, 6, 6],
    theta=10000,
    patch_size=2,
    qkv_bias=True,
    guidance_embed=True,
)


def random_state_dict(model):
    g = torch.Generator().manual_seed(1234)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith(".scale"):
            t = 1.0 + 0.1 * torch.randn(v.shape, generator=g)
        elif k.endswith(".bias"):
            t = 0.05 * torch.randn(v.shape, generator=g)
        else:
            fan_in = v.shape[1] if v.ndim > 1 else 1
            t = torch.randn(v.shape, generator=g) / fan_in ** 0.5
        sd[k] = t.to(torch.float16)
    return sd


def build(sd, guidance_embed):
    p = dict(PARAMS, guidance_embed=guidance_embed)
    m = Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **p)
    sd = {k: v for k, v in sd.items() if guidance_embed or not k.startswith("guidance_in.")}
    missing, unexpected = m.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    assert not missing and not unexpected
    return m.eval()


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    proto = Flux(operations=comfy.ops.disable_weight_init, dtype=torch.float32, **PARAMS)
    sd = random_state_dict(proto)
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(OUT_DIR, "tiny_flux.safetensors"))
    dev = build(sd, True)
    schnell = build(sd, False)

    g = torch.Generator().manual_seed(99)
    t = {}
    meta = {"params": PARAMS}

    # Rotary table: 3 text tokens + a 5x7 image grid, as _forward builds the ids.
    x57 = torch.zeros(1, 16, 10, 14)
    _, img_ids = dev.process_img(x57)
    ids = torch.cat((torch.zeros(1, 3, 3), img_ids), dim=1)
    t["pe.ids"] = ids
    t["pe.grid"] = EmbedND(dim=16, theta=10000, axes_dim=[4, 6, 6])(ids).contiguous()

    ts = torch.tensor([0.0, 0.001, 0.5, 0.73, 1.0, 3.5, 1000.0], dtype=torch.float32)
    t["temb.t"] = ts
    t["temb.out"] = timestep_embedding(ts, 256)

    with torch.no_grad():
        x = torch.randn(2, 16, 6, 8, generator=g)
        ctx = torch.randn(2, 7, 48, generator=g)
        y = torch.randn(2, 32, generator=g)
        ts = torch.tensor([0.73, 0.21])
        gd = torch.tensor([3.5, 1.0])
        t.update({"dev.x": x, "dev.context": ctx, "dev.y": y, "dev.t": ts, "dev.guidance": gd})
        t["dev.out"] = dev(x, ts, ctx, y=y, guidance=gd)
        t["dev_noguid.out"] = dev(x, ts, ctx, y=y, guidance=None)
        t["schnell.out"] = schnell(x, ts, ctx, y=y, guidance=None)

        xo = torch.randn(1, 16, 5, 7, generator=g)
        t["dev_odd.x"] = xo
        t["dev_odd.out"] = dev(xo, ts[:1], ctx[:1], y=y[:1], guidance=gd[:1])

        refs = [torch.randn(1, 16, 4, 6, generator=g), torch.randn(1, 16, 2, 4, generator=g)]
        t["kontext.ref0"], t["kontext.ref1"] = refs
        xk = x[:1]
        for method in ["offset", "index", "uxo"]:
            t[f"kontext_{method}.out"] = dev(
                xk, ts[:1], ctx[:1], y=y[:1], guidance=gd[:1], ref_latents=refs,
                ref_latents_method=method)

        # One step through model_base.Flux (dev config) with ModelSamplingFlux.
        unet_config = dict(PARAMS, image_model="flux")
        cfg = comfy.supported_models.Flux(unet_config)
        cfg.set_inference_dtype(torch.float32, None)
        model = cfg.get_model({})
        model.diffusion_model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
        sigma = torch.tensor([0.6])
        xs = x[:1]
        conds = model.extra_conds(
            pooled_output=y[:1], cross_attn=ctx[:1], noise=xs, device=torch.device("cpu"))
        kw = {k: v.cond for k, v in conds.items() if k != "c_crossattn"}
        meta["step"] = {
            "shift": float(model.model_sampling.shift),
            "sigma": 0.6,
            "guidance": float(kw["guidance"][0]),
        }
        t["step.denoised"] = model.apply_model(
            xs, sigma, c_crossattn=conds["c_crossattn"].cond, **kw)

        # concat_cond of Fill (96 input channels) and Canny/Depth (32).
        noise = torch.randn(2, 16, 6, 8, generator=g)
        image = torch.randn(1, 16, 3, 5, generator=g)
        mask = (torch.rand(1, 1, 40, 56, generator=g) > 0.5).float()
        dmask = torch.rand(2, 16, 6, 8, generator=g)
        t.update({"concat.noise": noise, "concat.image": image, "concat.mask": mask,
                  "concat.denoise_mask": dmask})
        for inc in [96, 32]:
            obj = types.SimpleNamespace(
                diffusion_model=types.SimpleNamespace(
                    img_in=types.SimpleNamespace(weight=torch.zeros(64, inc * 4)), patch_size=2),
                model_config=types.SimpleNamespace(unet_config={"in_channels": inc, "out_channels": 16}),
                process_latent_in=model.process_latent_in,
            )
            cpu = torch.device("cpu")
            cc = comfy.model_base.Flux.concat_cond
            t[f"concat.{inc}.plain"] = cc(obj, noise=noise, device=cpu)
            t[f"concat.{inc}.image_mask"] = cc(
                obj, noise=noise, device=cpu, concat_latent_image=image, concat_mask=mask)
            t[f"concat.{inc}.denoise_mask"] = cc(
                obj, noise=noise, device=cpu, concat_latent_image=image, denoise_mask=dmask)

    save_file({k: v.contiguous() for k, v in t.items()}, os.path.join(OUT_DIR, "goldens.safetensors"))
    with open(os.path.join(OUT_DIR, "goldens.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT_DIR, sorted(t))


if __name__ == "__main__":
    main()
