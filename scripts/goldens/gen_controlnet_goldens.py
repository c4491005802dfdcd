"""Goldens for comfyrs's ControlNet (issue 14), computed by ComfyUI's own code.

Run on CPU with the reference env (ComfyUI v0.3.64; see /work/ref/README.txt):

    cd /path/to/ComfyUI && /path/to/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_controlnet_goldens.py /path/to/comfyrs

Reads the project's tiny fixtures (`cargo run --bin gen_fixtures` writes them) and writes
tests/data/controlnet/:

  module.safetensors : `comfy.controlnet.load_controlnet` (ComfyUI's loader, which reads the
      tiny files' config from their keys) on tiny_controlnet_sd15 (`control_model.*` layout)
      and tiny_controlnet_sdxl (bare LDM names, with `label_emb`), then the cldm
      `ControlNet.forward` on seeded inputs: `<net>.x/hint/t/context[/y]` and the outputs
      `<net>.middle.0`, `<net>.output.<i>`.
  sampling.safetensors + sampling.json : tiny_sd15's UNet built by ComfyUI
      (`model_config_from_unet(..., use_base_if_no_match=True)` with the SD15 latent format),
      seeded random positive/negative cross-attention tensors, the ControlNet applied through
      the real `nodes.ControlNetApply` / `ControlNetApplyAdvanced` classes, and
      `comfy.samplers.sample` with euler over the "normal" schedule of 3 steps, cfg 6, noise
      `comfy.sample.prepare_noise(zeros, 42)`. One output latent per case (sampling.json).
  sampling_batch.safetensors : tiny_sd15, a latent batch of 2 with a hint batch of 2 (cfg 4,
      2 steps, seed 3): cases apply (ControlNetApply 1.0) / advanced (0.9, full range).
  sampling_sdxl.safetensors : the same for tiny_sdxl built as ComfyUI's SDXL model class
      (pooled outputs → ADM y, which the SDXL ControlNet takes too), cfg 5, 2 steps, seed 7:
      cases none / apply (ControlNetApply 0.8) / advanced (1.2, 0 → 0.6).
  canny.safetensors + canny.json : kornia's `canny` (what comfy_extras/nodes_canny.py calls)
      on a fixed synthetic image for several threshold pairs: `<case>.edges` [B, 1, H, W].
"""
import json
import os
import sys

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "controlnet")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402

import comfy.controlnet  # noqa: E402
import comfy.latent_formats  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_management  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import nodes  # noqa: E402

FIX = os.path.join(REPO, "fixtures", "models")


def sd1_heads(module):
    """The tiny SD1 layout matches no preset, so ComfyUI falls back to `BASE`, whose config
    has 64 channels per head; comfyrs builds it with SD1's 8 heads (the SD15 preset's
    `num_heads: 8`, which real SD1.5 UNets and ControlNets get). Use 8 heads here too."""
    from comfy.ldm.modules.attention import CrossAttention
    for m in module.modules():
        if isinstance(m, CrossAttention):
            m.heads = 8
    return module


def module_goldens():
    out = {}
    g = torch.Generator().manual_seed(7)
    for name, ctx, adm in [("sd15", 32, None), ("sdxl", 80, 48 + 6 * 256)]:
        cn = comfy.controlnet.load_controlnet(
            os.path.join(FIX, "controlnet", f"tiny_controlnet_{name}.safetensors"))
        model = cn.control_model.float()
        if adm is None:
            sd1_heads(model)
        x = torch.randn(2, 4, 8, 12, generator=g)
        hint = torch.rand(1, 3, 64, 96, generator=g)
        t = torch.tensor([999.0, 321.0])
        context = torch.randn(2, 77, ctx, generator=g)
        kw = {}
        tensors = {"x": x, "hint": hint, "t": t, "context": context}
        if adm is not None:
            y = torch.randn(2, adm, generator=g)
            kw["y"] = y
            tensors["y"] = y
        with torch.no_grad():
            res = model(x=x, hint=hint, timesteps=t, context=context, **kw)
        for k, v in tensors.items():
            out[f"{name}.{k}"] = v.contiguous()
        out[f"{name}.middle.0"] = res["middle"][0].contiguous()
        for i, o in enumerate(res["output"]):
            out[f"{name}.output.{i}"] = o.contiguous()
    save_file(out, os.path.join(OUT_DIR, "module.safetensors"))


def tiny_sd15_model():
    sd = load_file(os.path.join(FIX, "checkpoints", "tiny_sd15.safetensors"))
    prefix = "model.diffusion_model."
    mc = comfy.model_detection.model_config_from_unet(sd, prefix, use_base_if_no_match=True)
    mc.latent_format = comfy.latent_formats.SD15()
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, prefix)
    model.load_model_weights(sd, prefix)
    sd1_heads(model)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def sampling_goldens():
    g = torch.Generator().manual_seed(11)
    pos = torch.randn(1, 77, 32, generator=g)
    neg = torch.randn(1, 77, 32, generator=g)
    # Hints smaller than the 64x64 target and of another aspect: centre crop + nearest-exact.
    hint_a = torch.rand(1, 40, 48, 3, generator=g)
    hint_b = torch.rand(1, 64, 64, 3, generator=g)
    model = tiny_sd15_model()
    cn = comfy.controlnet.load_controlnet(
        os.path.join(FIX, "controlnet", "tiny_controlnet_sd15.safetensors"))
    sd1_heads(cn.control_model)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    P = [[pos, {}]]
    N = [[neg, {}]]
    apply = nodes.ControlNetApply()
    adv = nodes.ControlNetApplyAdvanced()
    cases = {}
    cases["none"] = (P, N)
    cases["apply_0.9"] = (apply.apply_controlnet(P, cn, hint_a, 0.9)[0], N)
    cases["advanced_0.8"] = adv.apply_controlnet(P, N, cn, hint_a, 0.8, 0.0, 1.0)
    cases["advanced_range"] = adv.apply_controlnet(P, N, cn, hint_a, 1.0, 0.2, 0.8)
    cases["advanced_late"] = adv.apply_controlnet(P, N, cn, hint_a, 1.0, 0.9, 1.0)
    p2 = apply.apply_controlnet(P, cn, hint_a, 1.0)[0]
    cases["apply_chain"] = (apply.apply_controlnet(p2, cn, hint_b, 0.5)[0], N)
    p3, n3 = adv.apply_controlnet(P, N, cn, hint_a, 0.7, 0.0, 1.0)
    cases["advanced_chain"] = adv.apply_controlnet(p3, n3, cn, hint_b, 1.3, 0.0, 0.5)
    out = {"pos": pos, "neg": neg, "hint_a": hint_a, "hint_b": hint_b, "noise": noise,
           "sigmas": sigmas.float()}
    meta = {"cfg": 6.0, "sampler": "euler", "seed": 42, "cases": list(cases.keys())}
    for name, (p, n) in cases.items():
        samples = comfy.samplers.sample(
            model, noise, p, n, 6.0, "cpu", comfy.samplers.sampler_object("euler"), sigmas,
            latent_image=latent, disable_pbar=True, seed=42)
        out[f"case.{name}"] = samples.contiguous()
    save_file(out, os.path.join(OUT_DIR, "sampling.safetensors"))
    with open(os.path.join(OUT_DIR, "sampling.json"), "w") as f:
        json.dump(meta, f, indent=1)


def sampling_batch_goldens():
    """A latent batch of 2 with a hint batch of 2: `broadcast_image_to` gives each latent its
    own hint image in every batched model call (cond and uncond together)."""
    g = torch.Generator().manual_seed(17)
    pos = torch.randn(1, 77, 32, generator=g)
    neg = torch.randn(1, 77, 32, generator=g)
    hints = torch.rand(2, 64, 64, 3, generator=g)
    model = tiny_sd15_model()
    cn = comfy.controlnet.load_controlnet(
        os.path.join(FIX, "controlnet", "tiny_controlnet_sd15.safetensors"))
    sd1_heads(cn.control_model)
    latent = torch.zeros(2, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 3)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2)
    P = [[pos, {}]]
    N = [[neg, {}]]
    cases = {
        "apply": (nodes.ControlNetApply().apply_controlnet(P, cn, hints, 1.0)[0], N),
        "advanced": nodes.ControlNetApplyAdvanced().apply_controlnet(P, N, cn, hints, 0.9, 0.0, 1.0),
    }
    out = {"pos": pos, "neg": neg, "hints": hints, "noise": noise, "sigmas": sigmas.float()}
    for name, (p, n) in cases.items():
        samples = comfy.samplers.sample(
            model, noise, p, n, 4.0, "cpu", comfy.samplers.sampler_object("euler"), sigmas,
            latent_image=latent, disable_pbar=True, seed=3)
        out[f"case.{name}"] = samples.contiguous()
    save_file(out, os.path.join(OUT_DIR, "sampling_batch.safetensors"))


def sampling_sdxl_goldens():
    """tiny_sdxl as ComfyUI's SDXL model class (ADM from the pooled output and the latent
    size), the tiny SDXL ControlNet, which takes that ADM vector y too."""
    import comfy.supported_models
    sd = load_file(os.path.join(FIX, "checkpoints", "tiny_sdxl.safetensors"))
    prefix = "model.diffusion_model."
    uc = comfy.model_detection.detect_unet_config(sd, prefix)
    mc = comfy.supported_models.SDXL(uc)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, prefix)
    model.load_model_weights(sd, prefix)
    model = comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))
    cn = comfy.controlnet.load_controlnet(
        os.path.join(FIX, "controlnet", "tiny_controlnet_sdxl.safetensors"))
    g = torch.Generator().manual_seed(13)
    pos = torch.randn(1, 77, 80, generator=g)
    neg = torch.randn(1, 77, 80, generator=g)
    pos_pooled = torch.randn(1, 48, generator=g)
    neg_pooled = torch.randn(1, 48, generator=g)
    hint = torch.rand(1, 64, 64, 3, generator=g)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 7)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 2)
    P = [[pos, {"pooled_output": pos_pooled}]]
    N = [[neg, {"pooled_output": neg_pooled}]]
    cases = {
        "none": (P, N),
        "apply": (nodes.ControlNetApply().apply_controlnet(P, cn, hint, 0.8)[0], N),
        "advanced": nodes.ControlNetApplyAdvanced().apply_controlnet(P, N, cn, hint, 1.2, 0.0, 0.6),
    }
    out = {"pos": pos, "neg": neg, "pos_pooled": pos_pooled, "neg_pooled": neg_pooled,
           "hint": hint, "noise": noise, "sigmas": sigmas.float()}
    for name, (p, n) in cases.items():
        samples = comfy.samplers.sample(
            model, noise, p, n, 5.0, "cpu", comfy.samplers.sampler_object("euler"), sigmas,
            latent_image=latent, disable_pbar=True, seed=7)
        out[f"case.{name}"] = samples.contiguous()
    save_file(out, os.path.join(OUT_DIR, "sampling_sdxl.safetensors"))


def canny_goldens():
    from kornia.filters import canny
    g = torch.Generator().manual_seed(5)
    h, w = 36, 44
    yy, xx = torch.meshgrid(torch.arange(h).float(), torch.arange(w).float(), indexing="ij")
    img = torch.zeros(2, h, w, 3)
    # A disc, a bright rectangle, a ramp and some noise: edges of every orientation.
    disc = (((yy - 18) ** 2 + (xx - 14) ** 2) < 81).float()
    rect = ((yy > 5) & (yy < 20) & (xx > 25) & (xx < 40)).float()
    img[0, :, :, 0] = 0.8 * disc + 0.1
    img[0, :, :, 1] = 0.6 * rect + 0.2 * disc
    img[0, :, :, 2] = xx / w * 0.5
    img[1] = torch.rand(h, w, 3, generator=g) * 0.3 + img[0] * 0.7
    img = img.clamp(0, 1)
    out = {"image": img.contiguous()}
    cases = [(0.4, 0.8), (0.1, 0.3), (0.05, 0.2), (0.2, 0.21)]
    for i, (lo, hi) in enumerate(cases):
        mag, edges = canny(img.movedim(-1, 1), lo, hi)
        out[f"{i}.edges"] = edges.contiguous()
        out[f"{i}.magnitude"] = mag.contiguous()
    save_file(out, os.path.join(OUT_DIR, "canny.safetensors"))
    with open(os.path.join(OUT_DIR, "canny.json"), "w") as f:
        json.dump({"cases": cases}, f, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    module_goldens()
    sampling_goldens()
    sampling_batch_goldens()
    sampling_sdxl_goldens()
    canny_goldens()
