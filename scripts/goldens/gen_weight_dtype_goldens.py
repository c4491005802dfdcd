"""Goldens for UNETLoader's `weight_dtype` (fp8 weight storage), made by ComfyUI's own modules.

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_weight_dtype_goldens.py \
        /path/to/comfyrs/fixtures/models/checkpoints/tiny_sdxl.safetensors \
        /path/to/comfyrs/tests/data/weight_dtype /path/to/comfyrs/tests/data/flux/tiny_flux.safetensors

What ComfyUI does (nodes.py `UNETLoader` -> comfy/sd.py `load_diffusion_model_state_dict`):
`weight_dtype` fp8_e4m3fn / fp8_e4m3fn_fast / fp8_e5m2 set `model_options["dtype"]`, which becomes
the UNet's weight dtype without consulting `unet_dtype`; the compute dtype is
`unet_manual_cast(fp8, cpu)` = float32, so `pick_operations(fp8, float32)` gives `manual_cast`
ops (`fp8_e4m3fn_fast` would pick fp8 matmul ops only where `supports_fp8_compute`, never on the
CPU: asserted below). The network is built with `dtype=fp8` and `load_state_dict` copies the
file's fp16 values into the fp8 parameters (torch's round-to-nearest-even `.to(float8)`); every
parameter, biases and norms included, is fp8 (asserted). Each op casts weight and bias to the
input's dtype (f32).

The UNet here is tiny_sdxl's (comfyrs's fixture, SDXL layout at tiny widths: ComfyUI's
`detect_unet_config` reads its config from the keys; `num_head_channels` 64 as SDXL's
`supported_models` sets it), built directly as `openaimodel.UNetModel` with the ops and dtype
`BaseModel.__init__` would give it.

Writes OUT/tiny_sdxl_unet.safetensors: the inputs (x [2,4,8,8], timesteps [2], context [2,5,80],
y [2,1584]) and the UNet's output for `default` (fp16 file -> f32 weights on CPU with
--force-fp32), `fp8_e4m3fn`, `fp8_e5m2`; plus `w.<dtype>.<key>` for a few weights as ComfyUI
holds them (the fp8 values widened to f32) so storage rounding is checked directly.

Writes OUT/tiny_flux.safetensors the same way for the tiny Flux of gen_flux_goldens.py
(`comfy.ldm.flux.model.Flux` at its config, fp16 file, weight dtypes default / fp8_e4m3fn /
fp8_e5m2; every parameter, the RMSNorm scales included, in the chosen dtype): inputs x
[2,16,6,8], timesteps, context [2,7,48], y [2,32], guidance, and `out.<dtype>`.

Writes OUT/stochastic_rounding.safetensors: `comfy.float.stochastic_rounding` of a [80, 48]
tensor into e4m3fn and e5m2 with the seed of a model key (how ComfyUI stores a LoRA-patched
weight of a model whose weight dtype is fp8).
"""
import os
import sys

CKPT = os.path.abspath(sys.argv[1])
OUT_DIR = os.path.abspath(sys.argv[2]) if len(sys.argv) > 2 else "tests/data/weight_dtype"
FLUX = os.path.abspath(sys.argv[3]) if len(sys.argv) > 3 else "tests/data/flux/tiny_flux.safetensors"
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.model_detection as md  # noqa: E402
import comfy.model_management as mm  # noqa: E402
import comfy.ops  # noqa: E402
from comfy.ldm.flux.model import Flux  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import UNetModel  # noqa: E402

FLUX_PARAMS = dict(
    in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=48, hidden_size=64,
    mlp_ratio=4.0, num_heads=4, depth=2, depth_single_blocks=2, axes_dim=[4, 6, 6],
    theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True,
)


def stochastic_goldens():
    """`comfy.float.stochastic_rounding` into both fp8 formats (what a LoRA-patched weight
    of an fp8-stored model goes back through), seeded with `string_to_seed(key)`."""
    import comfy.float
    from comfy.model_patcher import string_to_seed
    g = torch.Generator().manual_seed(5)
    value = torch.cat([
        torch.randn(64, 48, generator=g) * 0.05,
        torch.randn(8, 48, generator=g) * 300.0,
        torch.randn(8, 48, generator=g) * 1e-3,
    ])
    key = "diffusion_model.input_blocks.1.0.in_layers.2.weight"
    out = {"value": value, "seed": torch.tensor([string_to_seed(key)], dtype=torch.int64)}
    for name, dt in [("e4m3fn", torch.float8_e4m3fn), ("e5m2", torch.float8_e5m2)]:
        r = comfy.float.stochastic_rounding(value, dt, seed=string_to_seed(key))
        assert r.dtype == dt
        out[f"sr.{name}"] = r.float().contiguous()
    save_file(out, os.path.join(OUT_DIR, "stochastic_rounding.safetensors"))


def flux_goldens():
    sd = load_file(FLUX)
    assert all(v.dtype == torch.float16 for v in sd.values())
    cpu = torch.device("cpu")
    g = torch.Generator().manual_seed(4242)
    x = torch.randn(2, 16, 6, 8, generator=g)
    t = torch.tensor([0.73, 0.21])
    context = torch.randn(2, 7, 48, generator=g)
    y = torch.randn(2, 32, generator=g)
    guidance = torch.tensor([3.5, 1.0])
    out = {"x": x, "timesteps": t, "context": context, "y": y, "guidance": guidance}
    for name, dtype in [("default", None), ("fp8_e4m3fn", torch.float8_e4m3fn),
                        ("fp8_e5m2", torch.float8_e5m2)]:
        # Flux's supported dtypes are bf16/f16/f32; on CPU with --force-fp32: f32 weights.
        wdt = torch.float32 if dtype is None else dtype
        compute = mm.unet_manual_cast(wdt, cpu, [torch.bfloat16, torch.float16, torch.float32])
        ops = comfy.ops.pick_operations(wdt, compute, load_device=cpu)
        model = Flux(operations=ops, dtype=wdt, device="cpu", **FLUX_PARAMS)
        missing, unexpected = model.load_state_dict(sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        kinds = {p.dtype for p in model.state_dict().values()}
        assert kinds == {wdt}, kinds
        with torch.no_grad():
            res = model(x, t, context, y=y, guidance=guidance)
        out[f"out.{name}"] = res.float().contiguous()
        print("flux", name, "weight dtype", wdt, "compute", compute, "out std", float(res.std()))
    save_file(out, os.path.join(OUT_DIR, "tiny_flux.safetensors"))

PREFIX = "model.diffusion_model."
CHECK_KEYS = [
    "input_blocks.0.0.weight",
    "input_blocks.0.0.bias",
    "out.0.weight",
    "label_emb.0.2.weight",
    "input_blocks.3.1.transformer_blocks.0.attn1.to_q.weight",
    "input_blocks.3.1.transformer_blocks.0.norm1.bias",
]


def main():
    sd = load_file(CKPT)
    cfg = md.detect_unet_config(sd, PREFIX)
    cfg["num_head_channels"] = 64
    unet_sd = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    assert all(v.dtype == torch.float16 for v in unet_sd.values())
    cpu = torch.device("cpu")
    assert not mm.supports_fp8_compute(cpu)

    g = torch.Generator().manual_seed(2024)
    x = torch.randn(2, 4, 8, 8, generator=g)
    t = torch.tensor([999.0, 321.0])
    context = torch.randn(2, 5, 80, generator=g)
    y = torch.randn(2, 1584, generator=g)
    out = {"x": x, "timesteps": t, "context": context, "y": y}

    for name, dtype, fast in [
        ("default", None, False),
        ("fp8_e4m3fn", torch.float8_e4m3fn, False),
        ("fp8_e4m3fn_fast", torch.float8_e4m3fn, True),
        ("fp8_e5m2", torch.float8_e5m2, False),
    ]:
        if dtype is None:
            # CPU with --force-fp32: unet_dtype() is f32, no manual cast.
            wdt = mm.unet_dtype(model_params=0, supported_dtypes=[torch.float16, torch.float32],
                                weight_dtype=torch.float16)
            assert wdt == torch.float32, wdt
        else:
            wdt = dtype
        compute = mm.unet_manual_cast(wdt, cpu, [torch.float16, torch.float32])
        ops = comfy.ops.pick_operations(wdt, compute, load_device=cpu, fp8_optimizations=fast)
        if dtype is None:
            assert compute is None and ops is comfy.ops.disable_weight_init
        else:
            assert compute == torch.float32 and ops is comfy.ops.manual_cast, (compute, ops)
        c = dict(cfg)
        c["dtype"] = wdt
        model = UNetModel(**c, device="cpu", operations=ops)
        missing, unexpected = model.load_state_dict(unet_sd, strict=False)
        assert not missing and not unexpected, (missing, unexpected)
        kinds = {p.dtype for p in model.state_dict().values()}
        assert kinds == {wdt}, kinds
        with torch.no_grad():
            res = model(x, timesteps=t, context=context, y=y)
        out[f"out.{name}"] = res.float().contiguous()
        for k in CHECK_KEYS:
            out[f"w.{name}.{k}"] = model.state_dict()[k].float().contiguous()
        print(name, "weight dtype", wdt, "compute", compute, "out std", float(res.std()))
    save_file(out, os.path.join(OUT_DIR, "tiny_sdxl_unet.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    main()
    flux_goldens()
    stochastic_goldens()
