"""Goldens for comfyrs's T2I-Adapters (issue 14), computed by ComfyUI's own code on the
project's tiny fixture files.

Run on CPU with the reference env (ComfyUI v0.3.64; see /work/ref/README.txt), after
`cargo run --bin gen_fixtures`:

    cd /path/to/ComfyUI && /path/to/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_t2i_goldens.py /path/to/comfyrs

The tiny SDXL adapter is not committed (6 MB); this script writes it to a temporary file
with `cargo run --bin gen_fixtures -- --t2i-sdxl PATH`. ComfyUI's loader builds
`Adapter_light` with its real widths [320, 640, 1280, 1280]; the tiny light adapter has
[32, 64, 128, 128], so this script builds `Adapter_light` with those (the rest of
`load_t2i_adapter` is ComfyUI's: the same class, `load_state_dict` strict, `T2IAdapter`).

Writes tests/data/t2i/:
  module.safetensors + module.json : each adapter (`sd15`: tiny_t2i_sd15, `light`:
      tiny_t2i_light, `sdxl`: the tiny SDXL one, diffusers names) loaded by
      `comfy.controlnet.load_controlnet`, then its forward on a seeded hint at 64x64
      (`<name>.hint`): `<name>.<key>.<i>` for each non-None feature; module.json lists, per
      adapter, the length of each list and the indices that are None.
  sampling.safetensors : the adapters applied through the real nodes and
      `comfy.samplers.sample` (euler, normal): tiny_sdxl (as ComfyUI's SDXL class) with the
      SDXL adapter through ControlNetApplyAdvanced (0.9, 0 → 0.8) and ControlNetApply (1.1),
      cfg 5, 2 steps, seed 7, latent [1, 4, 8, 8]; tiny_sd15 with the sd15 adapter through
      ControlNetApply (1.0) and the light adapter through ControlNetApplyAdvanced (0.7),
      cfg 6, 2 steps, seed 3. `case.<name>`: the sampled latent; also the inputs.
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "t2i")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.controlnet  # noqa: E402
import comfy.latent_formats  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.model_patcher  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy.t2i_adapter.adapter as adapter  # noqa: E402
import nodes  # noqa: E402

FIX = os.path.join(REPO, "fixtures", "models")

_light_init = adapter.Adapter_light.__init__


def _tiny_light_init(self, channels=None, nums_rb=3, cin=64):
    _light_init(self, channels=[32, 64, 128, 128], nums_rb=nums_rb, cin=cin)


adapter.Adapter_light.__init__ = _tiny_light_init


def sdxl_adapter_file():
    if os.environ.get("T2I_SDXL"):  # already written by `gen_fixtures -- --t2i-sdxl PATH`
        return os.environ["T2I_SDXL"]
    tmp = tempfile.mkdtemp(prefix="t2i_goldens_")
    atexit.register(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, "tiny_t2i_sdxl.safetensors")
    subprocess.run(["cargo", "run", "--quiet", "--bin", "gen_fixtures", "--", "--t2i-sdxl",
                    path], cwd=REPO, check=True)
    return path


def sd1_heads(module):
    """As gen_controlnet_goldens.py: the tiny SD1 UNet gets SD1's 8 heads."""
    from comfy.ldm.modules.attention import CrossAttention
    for m in module.modules():
        if isinstance(m, CrossAttention):
            m.heads = 8
    return module


def module_goldens(files):
    g = torch.Generator().manual_seed(31)
    out, meta = {}, {}
    for name, path in files.items():
        t2i = comfy.controlnet.load_controlnet(path)
        cin = t2i.channels_in
        hint = torch.rand(1, cin, 64, 64, generator=g)
        out[f"{name}.hint"] = hint
        with torch.no_grad():
            res = t2i.t2i_model(hint)
        meta[name] = {"channels_in": cin, "unshuffle": t2i.t2i_model.unshuffle_amount}
        for key, lst in res.items():
            meta[name][key] = {"len": len(lst), "none": [i for i, x in enumerate(lst) if x is None]}
            for i, x in enumerate(lst):
                if x is not None:
                    out[f"{name}.{key}.{i}"] = x.contiguous()
    save_file(out, os.path.join(OUT_DIR, "module.safetensors"))
    with open(os.path.join(OUT_DIR, "module.json"), "w") as f:
        json.dump(meta, f, indent=1)


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


def tiny_sdxl_model():
    sd = load_file(os.path.join(FIX, "checkpoints", "tiny_sdxl.safetensors"))
    prefix = "model.diffusion_model."
    uc = comfy.model_detection.detect_unet_config(sd, prefix)
    mc = comfy.supported_models.SDXL(uc)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, prefix)
    model.load_model_weights(sd, prefix)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def sigmas_of(model, steps):
    return comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal",
                                           steps)


def sample(model, noise, p, n, cfg, steps, seed, latent):
    sigmas = sigmas_of(model, steps)
    return comfy.samplers.sample(model, noise, p, n, cfg, "cpu",
                                 comfy.samplers.sampler_object("euler"), sigmas,
                                 latent_image=latent, disable_pbar=True, seed=seed)


def sampling_goldens(files):
    out = {}
    apply, adv = nodes.ControlNetApply(), nodes.ControlNetApplyAdvanced()
    # SDXL.
    g = torch.Generator().manual_seed(13)
    pos = torch.randn(1, 77, 80, generator=g)
    neg = torch.randn(1, 77, 80, generator=g)
    pos_pooled = torch.randn(1, 48, generator=g)
    neg_pooled = torch.randn(1, 48, generator=g)
    hint = torch.rand(1, 64, 64, 3, generator=g)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 7)
    model = tiny_sdxl_model()
    t2i = comfy.controlnet.load_controlnet(files["sdxl"])
    P = [[pos, {"pooled_output": pos_pooled}]]
    N = [[neg, {"pooled_output": neg_pooled}]]
    out.update({"sdxl.pos": pos, "sdxl.neg": neg, "sdxl.pos_pooled": pos_pooled,
                "sdxl.neg_pooled": neg_pooled, "sdxl.hint": hint, "sdxl.noise": noise,
                "sdxl.sigmas": sigmas_of(model, 2).float()})
    cases = {
        "sdxl_none": (P, N),
        "sdxl_advanced": adv.apply_controlnet(P, N, t2i, hint, 0.9, 0.0, 0.8),
        "sdxl_apply": (apply.apply_controlnet(P, t2i, hint, 1.1)[0], N),
    }
    for name, (p, n) in cases.items():
        out[f"case.{name}"] = sample(model, noise, p, n, 5.0, 2, 7, latent)
    # SD1.5.
    g = torch.Generator().manual_seed(17)
    pos = torch.randn(1, 77, 32, generator=g)
    neg = torch.randn(1, 77, 32, generator=g)
    hint = torch.rand(1, 64, 64, 3, generator=g)
    noise = comfy.sample.prepare_noise(latent, 3)
    model = tiny_sd15_model()
    full = comfy.controlnet.load_controlnet(files["sd15"])
    light = comfy.controlnet.load_controlnet(files["light"])
    P, N = [[pos, {}]], [[neg, {}]]
    out.update({"sd15.pos": pos, "sd15.neg": neg, "sd15.hint": hint, "sd15.noise": noise,
                "sd15.sigmas": sigmas_of(model, 2).float()})
    cases = {
        "sd15_none": (P, N),
        "sd15_apply": (apply.apply_controlnet(P, full, hint, 1.0)[0], N),
        "sd15_light": adv.apply_controlnet(P, N, light, hint, 0.7, 0.0, 1.0),
    }
    for name, (p, n) in cases.items():
        out[f"case.{name}"] = sample(model, noise, p, n, 6.0, 2, 3, latent)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "sampling.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    files = {
        "sd15": os.path.join(FIX, "controlnet", "tiny_t2i_sd15.safetensors"),
        "light": os.path.join(FIX, "controlnet", "tiny_t2i_light.safetensors"),
        "sdxl": sdxl_adapter_file(),
    }
    module_goldens(files)
    sampling_goldens(files)
    print("wrote", OUT_DIR)
