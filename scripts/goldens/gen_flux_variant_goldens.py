"""Goldens for the Flux variants that are the same network with other inputs (issue 13):
Fill (+ DifferentialDiffusion), Canny/Depth, Kontext; plus DifferentialDiffusion's mask
schedule and ImageStitch. Computed by ComfyUI's own modules (v0.3.64) on CPU f32.

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_flux_variant_goldens.py /path/to/comfyrs

The models are the project's own tiny fixtures (`cargo run --bin gen_fixtures`):
`fixtures/models/diffusion_models/tiny_flux_fill.safetensors` (img_in over 96 channels),
`tiny_flux_canny.safetensors` (32) and `tiny_flux.safetensors` (16, for Kontext), built as
ComfyUI's `supported_models.FluxInpaint` / `Flux` with the fixture's widths (hidden 64, 4 heads
of 16 = axes [4, 6, 6], context 32, pooled 32, 1 double + 1 single block).

Writes tests/data/flux_variants/goldens.safetensors (+ goldens.json):
  * `fill.*`: a 3-step euler run through `comfy.sample.sample_custom` (CFGGuider, cfg 1,
    KSamplerX0Inpaint) of the Fill model with InpaintModelConditioning's conds
    (`concat_latent_image`, `concat_mask`), the noise mask, FluxGuidance 30; once plain
    (`fill.out`), once with DifferentialDiffusion strength 1 (`fill_dd.out`) and 0.5
    (`fill_dd05.out`).
  * `*_crexp.out` (fill, fill_dd, canny): the same runs with one change to ComfyUI: the
    timestep/guidance embedding's 128 frequencies `exp(-ln(10000)·i/128)` correctly rounded
    instead of torch's CPU exp (MKL VML), which is 1 ulp off on some of them. At guidance 30
    (t·1000 = 30000) that ulp moves the sinusoid by up to ~1e-3 and the 3-step result by
    ~5e-4; comfyrs rounds the frequencies correctly, so these runs check everything else to
    float precision.
  * `canny.*`: the Canny/Depth model with InstructPixToPixConditioning's
    `concat_latent_image` (an all-zero latent, 3 euler steps).
  * `depth_lora.*`: a BFL control LoRA (the layout of `flux1-depth-dev-lora.safetensors`:
    bare keys, `lora_A`/`lora_B` pairs for every linear, `lora_B.bias` on img_in, the QK-norm
    scales whole) for the tiny dev model, written to `tiny_flux_depth_lora.safetensors` here
    with seeded random values, applied by `comfy.sd.load_lora_for_models` (its
    `convert_lora_bfl_control`: img_in zero-padded to 32 input channels) and sampled like
    Canny with `concat_latent_image` at FluxGuidance 10 (`depth_lora.out`, and
    `depth_lora_crexp.out` as below).
  * `kontext.*`: the dev model with two `reference_latents` (offset and index methods).
  * `dd.*`: `DifferentialDiffusion.forward` for every sigma of a run, strengths 1, 0.5, 0 and
    0.25, under ModelSamplingFlux (shift 1.15) and SD1.5's ModelSamplingDiscrete (EPS), with
    a run ending above sigma_min.
  * `stitch.*`: `ImageStitch.stitch` in every direction, with and without size matching,
    spacing and its colours, an RGBA image and a batch mismatch.
"""
import json
import os
import sys

ROOT = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(ROOT, "tests/data/flux_variants")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.model_patcher  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
from comfy_extras.nodes_differential_diffusion import DifferentialDiffusion  # noqa: E402
import types  # noqa: E402

# nodes_images imports the server (for its save nodes' previews); ImageStitch does not use
# it, so a stand-in `server` module lets the file import outside a running ComfyUI.
if "server" not in sys.modules:
    _stub = types.ModuleType("server")
    _stub.PromptServer = type("PromptServer", (), {"instance": None})
    sys.modules["server"] = _stub
from comfy_extras.nodes_images import ImageStitch  # noqa: E402
import comfy.model_base  # noqa: E402

PARAMS = dict(
    out_channels=16,
    vec_in_dim=32,
    context_in_dim=32,
    hidden_size=64,
    mlp_ratio=4.0,
    num_heads=4,
    depth=1,
    depth_single_blocks=1,
    axes_dim=[4, 6, 6],
    theta=10000,
    patch_size=2,
    qkv_bias=True,
    guidance_embed=True,
    image_model="flux",
)
CPU = torch.device("cpu")


def model(fixture, in_channels):
    sd = load_file(os.path.join(ROOT, "fixtures/models/diffusion_models", fixture))
    cls = comfy.supported_models.FluxInpaint if in_channels == 96 else comfy.supported_models.Flux
    cfg = cls(dict(PARAMS, in_channels=in_channels))
    cfg.set_inference_dtype(torch.float32, None)
    m = cfg.get_model({})
    m.diffusion_model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return comfy.model_patcher.ModelPatcher(m, load_device=CPU, offload_device=CPU)


def with_dd(patcher, strength):
    p = patcher.clone()
    p.set_model_denoise_mask_function(
        lambda *a, **k: DifferentialDiffusion.forward(*a, **k, strength=strength))
    return p


def run(patcher, sigmas, noise, latent, positive, noise_mask=None):
    sampler = comfy.samplers.sampler_object("euler")
    return comfy.sample.sample_custom(
        patcher, noise, 1.0, sampler, sigmas, positive, positive, latent,
        noise_mask=noise_mask, seed=0)


def correctly_rounded_freqs():
    """Replaces the Flux model's timestep_embedding by ComfyUI's with exp rounded correctly."""
    import math
    import comfy.ldm.flux.layers as fl
    import comfy.ldm.flux.model as fm
    orig = fl.timestep_embedding

    def temb(t, dim, max_period=10000, time_factor=1000.0):
        t = time_factor * t
        half = dim // 2
        e = -math.log(max_period) * torch.arange(start=0, end=half, dtype=torch.float32) / half
        freqs = torch.exp(e.double()).float()
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb.to(t)

    fm.timestep_embedding = temb
    return lambda: setattr(fm, "timestep_embedding", orig)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    g = torch.Generator().manual_seed(2024)
    t = {}
    meta = {}
    h, w = 6, 8
    ctx = torch.randn(1, 5, 32, generator=g)
    y = torch.randn(1, 32, generator=g)
    t["cond.context"], t["cond.pooled"] = ctx, y

    with torch.no_grad():
        # ---- Fill ----
        fill = model("tiny_flux_fill.safetensors", 96)
        sigmas = comfy.samplers.calculate_sigmas(fill.model.model_sampling, "simple", 3)
        noise = torch.randn(1, 16, h, w, generator=g)
        latent = torch.randn(1, 16, h, w, generator=g)  # "orig_latent" (unscaled)
        concat = torch.randn(1, 16, h, w, generator=g)  # the masked image's latent
        # A soft pixel mask (as a feathered inpaint mask), [1, 1, H, W].
        mask = torch.rand(1, 1, h * 8, w * 8, generator=g)
        mask = torch.nn.functional.avg_pool2d(mask, 5, stride=1, padding=2, count_include_pad=False)
        t.update({"fill.sigmas": sigmas, "fill.noise": noise, "fill.latent": latent,
                  "fill.concat": concat, "fill.mask": mask})
        positive = [[ctx, {"pooled_output": y, "concat_latent_image": concat,
                           "concat_mask": mask, "guidance": 30.0}]]
        t["fill.out"] = run(fill, sigmas, noise, latent, positive, noise_mask=mask)
        t["fill_dd.out"] = run(with_dd(fill, 1.0), sigmas, noise, latent, positive, noise_mask=mask)
        t["fill_dd05.out"] = run(with_dd(fill, 0.5), sigmas, noise, latent, positive,
                                 noise_mask=mask)

        # ---- Canny / Depth ----
        canny = model("tiny_flux_canny.safetensors", 32)
        control = torch.randn(1, 16, h, w, generator=g)
        t["canny.concat"] = control
        positive = [[ctx, {"pooled_output": y, "concat_latent_image": control, "guidance": 30.0}]]
        t["canny.out"] = run(canny, sigmas, noise, torch.zeros(1, 16, h, w), positive)

        restore = correctly_rounded_freqs()
        t["canny_crexp.out"] = run(canny, sigmas, noise, torch.zeros(1, 16, h, w), positive)
        positive = [[ctx, {"pooled_output": y, "concat_latent_image": concat,
                           "concat_mask": mask, "guidance": 30.0}]]
        t["fill_crexp.out"] = run(fill, sigmas, noise, latent, positive, noise_mask=mask)
        t["fill_dd_crexp.out"] = run(with_dd(fill, 1.0), sigmas, noise, latent, positive,
                                     noise_mask=mask)
        restore()

        # ---- BFL control LoRA (Depth/Canny LoRA) on the dev model ----
        dev = model("tiny_flux.safetensors", 16)
        lg = torch.Generator().manual_seed(77)
        lora = {}
        for k, v in dev.model.diffusion_model.state_dict().items():
            if k.endswith("_norm.scale"):
                lora[k] = (1.0 + 0.1 * torch.randn(v.shape, generator=lg)).to(torch.bfloat16)
            elif k.endswith(".weight") and v.ndim == 2:
                base = k[: -len(".weight")]
                rows, cols = v.shape
                if base == "img_in":
                    cols = 2 * cols
                lora[f"{base}.lora_A.weight"] = (
                    0.1 * torch.randn(2, cols, generator=lg)).to(torch.bfloat16)
                lora[f"{base}.lora_B.weight"] = (
                    0.1 * torch.randn(rows, 2, generator=lg)).to(torch.bfloat16)
        lora["img_in.lora_B.bias"] = (0.05 * torch.randn(64, generator=lg)).to(torch.bfloat16)
        save_file(lora, os.path.join(OUT_DIR, "tiny_flux_depth_lora.safetensors"))
        lora = load_file(os.path.join(OUT_DIR, "tiny_flux_depth_lora.safetensors"))
        patched, _ = comfy.sd.load_lora_for_models(dev, None, lora, 1.0, 0.0)
        positive = [[ctx, {"pooled_output": y, "concat_latent_image": control, "guidance": 10.0}]]
        t["depth_lora.out"] = run(patched, sigmas, noise, torch.zeros(1, 16, h, w), positive)
        restore = correctly_rounded_freqs()
        t["depth_lora_crexp.out"] = run(patched, sigmas, noise, torch.zeros(1, 16, h, w),
                                        positive)
        restore()

        # ---- Kontext ----
        dev = model("tiny_flux.safetensors", 16)
        refs = [torch.randn(1, 16, 4, 6, generator=g), torch.randn(1, 16, 6, 4, generator=g)]
        t["kontext.ref0"], t["kontext.ref1"] = refs
        for method in ["offset", "index", "uxo"]:
            positive = [[ctx, {"pooled_output": y, "guidance": 2.5, "reference_latents": refs,
                               "reference_latents_method": method}]]
            t[f"kontext_{method}.out"] = run(dev, sigmas, noise, torch.zeros(1, 16, h, w),
                                             positive)

        # ---- DifferentialDiffusion's schedule ----
        dmask = torch.rand(1, 16, 3, 4, generator=g)
        dmask[0, 0, 0, :] = torch.tensor([0.0, 1.0, 0.5, 0.25])
        t["dd.mask"] = dmask
        flux_ms = fill.model.model_sampling
        sd15 = comfy.supported_models.SD15({})
        sd15_ms = comfy.model_base.model_sampling(sd15, comfy.model_base.ModelType.EPS)
        schedules = {
            "flux": (flux_ms, sigmas),
            "flux_partial": (flux_ms, sigmas[1:3].clone()),
            "sd15": (sd15_ms, comfy.samplers.calculate_sigmas(sd15_ms, "karras", 4)),
            "sd15_partial": (sd15_ms, comfy.samplers.calculate_sigmas(sd15_ms, "normal", 6)[2:5]),
        }
        meta["dd"] = {}
        for name, (ms, sig) in schedules.items():
            fake = type("M", (), {})()
            fake.inner_model = type("I", (), {})()
            fake.inner_model.model_sampling = ms
            t[f"dd.{name}.sigmas"] = sig
            meta["dd"][name] = {"sigma_min": float(ms.sigma_min)}
            for s in [1.0, 0.5, 0.0, 0.25]:
                outs = []
                for sg in sig:
                    outs.append(DifferentialDiffusion.forward(
                        sg.reshape(1), dmask, {"model": fake, "sigmas": sig}, strength=s))
                t[f"dd.{name}.s{s}"] = torch.stack(outs)

        # ---- ImageStitch ----
        a = torch.rand(2, 20, 24, 3, generator=g)
        b = torch.rand(1, 12, 18, 3, generator=g)
        rgba = torch.rand(1, 14, 10, 4, generator=g)
        t.update({"stitch.a": a, "stitch.b": b, "stitch.rgba": rgba})
        cases = []
        for d in ["right", "down", "left", "up"]:
            cases.append((d, True, 0, "white", "b"))
            cases.append((d, False, 0, "black", "b"))
            cases.append((d, False, 3, "red", "rgba"))
            cases.append((d, True, 4, "white", "rgba"))
        cases.append(("right", False, 2, "green", "b"))
        cases.append(("down", True, 6, "blue", "b"))
        meta["stitch"] = []
        st = ImageStitch()
        for k, (d, match, sw, color, other) in enumerate(cases):
            (out,) = st.stitch(a, d, match, sw, color, image2=t[f"stitch.{other}"])
            t[f"stitch.{k}"] = out
            meta["stitch"].append({"direction": d, "match_image_size": match,
                                   "spacing_width": sw, "spacing_color": color,
                                   "image2": other})

    save_file({k: v.clone().contiguous() for k, v in t.items()},
              os.path.join(OUT_DIR, "goldens.safetensors"))
    with open(os.path.join(OUT_DIR, "goldens.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote", OUT_DIR, sorted(t))


if __name__ == "__main__":
    main()
