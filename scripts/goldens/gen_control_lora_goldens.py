"""Goldens for comfyrs's Control-LoRA support (issue 14), computed by ComfyUI's own code on the
project's tiny fixture files.

Run on CPU with the reference env (ComfyUI v0.3.64; see /work/ref/README.txt), after
`cargo run --bin gen_fixtures`:

    cd /path/to/ComfyUI && /path/to/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_control_lora_goldens.py /path/to/comfyrs

`comfy.controlnet.load_controlnet` on fixtures/models/controlnet/tiny_control_lora_sd15 gives
ComfyUI's `ControlLora`; its `pre_run` against tiny_sd15 builds the cldm ControlNet from the
model's UNet weights, the file's weights and the low-rank up/down pairs. As in
gen_controlnet_goldens.py the tiny SD1 layout gets SD1's 8 heads (ComfyUI's fallback config
has 64 channels per head), here applied right after `pre_run` builds the network.

Writes tests/data/control_lora/:
  module.safetensors : the built ControlNet's forward on seeded `x`, `hint`, `t`, `context`:
      `middle.0`, `output.<i>`.
  sampling.safetensors : tiny_sd15 sampled with `comfy.samplers.sample` (euler, normal, 3
      steps, cfg 6, seed 42, latent [1, 4, 8, 8]) with the Control-LoRA through
      ControlNetApplyAdvanced (0.8, 0 → 1) and ControlNetApply (1.0), and without:
      `case.{none,advanced,apply}`, and the inputs.
"""
import os
import sys

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "control_lora")
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
import nodes  # noqa: E402

FIX = os.path.join(REPO, "fixtures", "models")


def sd1_heads(module):
    from comfy.ldm.modules.attention import CrossAttention
    for m in module.modules():
        if isinstance(m, CrossAttention):
            m.heads = 8
    return module


_real_pre_run = comfy.controlnet.ControlLora.pre_run


def pre_run(self, model, percent_to_timestep_function):
    _real_pre_run(self, model, percent_to_timestep_function)
    sd1_heads(self.control_model)


comfy.controlnet.ControlLora.pre_run = pre_run


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


def load_cl():
    cl = comfy.controlnet.load_controlnet(
        os.path.join(FIX, "controlnet", "tiny_control_lora_sd15.safetensors"))
    assert isinstance(cl, comfy.controlnet.ControlLora), type(cl)
    return cl


def module_goldens(model):
    cl = load_cl()
    cl.pre_run(model.model, model.model.model_sampling.percent_to_sigma)
    g = torch.Generator().manual_seed(29)
    x = torch.randn(2, 4, 8, 12, generator=g)
    hint = torch.rand(1, 3, 64, 96, generator=g)
    t = torch.tensor([999.0, 321.0])
    context = torch.randn(2, 77, 32, generator=g)
    with torch.no_grad():
        res = cl.control_model(x=x, hint=hint, timesteps=t, context=context)
    out = {"x": x, "hint": hint, "t": t, "context": context, "middle.0": res["middle"][0]}
    for i, o in enumerate(res["output"]):
        out[f"output.{i}"] = o
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "module.safetensors"))


def sampling_goldens(model):
    g = torch.Generator().manual_seed(37)
    pos = torch.randn(1, 77, 32, generator=g)
    neg = torch.randn(1, 77, 32, generator=g)
    hint = torch.rand(1, 48, 56, 3, generator=g)
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "normal", 3)
    P, N = [[pos, {}]], [[neg, {}]]
    cl = load_cl()
    cases = {
        "none": (P, N),
        "advanced": nodes.ControlNetApplyAdvanced().apply_controlnet(P, N, cl, hint, 0.8, 0.0, 1.0),
        "apply": (nodes.ControlNetApply().apply_controlnet(P, cl, hint, 1.0)[0], N),
    }
    out = {"pos": pos, "neg": neg, "hint": hint, "noise": noise, "sigmas": sigmas.float()}
    for name, (p, n) in cases.items():
        out[f"case.{name}"] = comfy.samplers.sample(
            model, noise, p, n, 6.0, "cpu", comfy.samplers.sampler_object("euler"), sigmas,
            latent_image=latent, disable_pbar=True, seed=42)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "sampling.safetensors"))


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = tiny_sd15_model()
    module_goldens(model)
    sampling_goldens(model)
    print("wrote", OUT_DIR)
