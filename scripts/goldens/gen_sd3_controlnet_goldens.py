"""Goldens for comfyrs's SD3 / SD3.5 ControlNets (issue 14), computed by ComfyUI's own code on
the project's tiny fixture files.

Run on CPU with the reference env (ComfyUI v0.3.64; see /work/ref/README.txt), after
`cargo run --bin gen_fixtures`:

    cd /path/to/ComfyUI && /path/to/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_sd3_controlnet_goldens.py /path/to/comfyrs

Tiny widths: ComfyUI builds Stability's SD3.5 ControlNets (`ControlNetEmbedder`) with a
pooled-text width of 2048 hard-coded (`adm_in_channels=2048`); the tiny models' pooled width
is 80 (tiny CLIP-L 32 + CLIP-G 48), so this script passes 80 instead (nothing else changes).
The tiny 16-channel VAE (ch 32, ch_mult [1, 1, 1, 2], 1 res block) is built by `comfy.sd.VAE`
with those widths in its ddconfig (the real SD3 VAE's are 128 / [1, 2, 4, 4] / 2).

Writes tests/data/sd3_controlnet/:
  module.safetensors : each tiny ControlNet (fixtures/models/controlnet/tiny_sd35_controlnet_
      canny, tiny_sd35_controlnet_double_y, tiny_sd3_controlnet) loaded by
      `comfy.controlnet.load_controlnet`, `pre_run` against the tiny SD3.5-large MMDiT
      (fixtures/models/diffusion_models/tiny_sd35_large, which lends its x_embedder /
      y_embedder), then the control model's forward on seeded inputs `x`, `hint` (a latent),
      `t`, `context`, `y` ([2,16,6,8] and an odd [1,16,5,7] case `odd.*`): `<net>.output.<i>`
      and `<net>.odd.output.<i>`; plus `model.with_control` / `model.plain`: the MMDiT's
      forward with the canny net's residuals as `control` and without.
  hint.png : the control image the sampling cases load (LoadImage: uint8 / 255).
  sampling.safetensors + sampling.json : the tiny SD3.5-medium checkpoint (model, CLIP and
      VAE) with the nodes of the `sd3.5_large_canny_controlnet_example` template at 96x64:
      LoadImage → ImageScale (bilinear, center) → Canny (0.4, 0.8) → ControlNetApplyAdvanced
      (strength 0.66, 0..1, the checkpoint's VAE) on CLIPTextEncode / ConditioningZeroOut →
      KSampler (euler, simple, cfg 4.5) on EmptySD3LatentImage; cases `template` (as the
      template), `chain` (the template's conditioning, then ControlNetApplySD3 with the
      double-y net, 0.8, 0.2..0.9) and `sd3_diffusers` (the diffusers SD3 net through
      ControlNetApplyAdvanced 1.0, 0..1). `case.<name>`: the sampled latent; also
      `canny`: the Canny node's output image.
"""
import json
import os
import sys

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "sd3_controlnet")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.cldm.dit_embedder as dit_embedder  # noqa: E402
import comfy.controlnet  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.sd  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_canny import Canny  # noqa: E402
from comfy_extras.nodes_sd3 import ControlNetApplySD3, EmptySD3LatentImage  # noqa: E402

FIX = os.path.join(REPO, "fixtures", "models")
POOLED = 80
TE_OPTS = {
    "clip_l_model_config": {"hidden_size": 32, "intermediate_size": 128,
                            "num_attention_heads": 4, "num_hidden_layers": 3},
    "clip_g_model_config": {"hidden_size": 48, "intermediate_size": 192,
                            "num_attention_heads": 6, "num_hidden_layers": 3,
                            "projection_dim": 48},
}
NETS = {
    "sd35_canny": "tiny_sd35_controlnet_canny.safetensors",
    "sd35_double_y": "tiny_sd35_controlnet_double_y.safetensors",
    "sd3": "tiny_sd3_controlnet.safetensors",
}

_RealEmbedder = dit_embedder.ControlNetEmbedder


class TinyEmbedder(_RealEmbedder):
    def __init__(self, *a, **kw):
        kw["adm_in_channels"] = POOLED
        super().__init__(*a, **kw)


dit_embedder.ControlNetEmbedder = TinyEmbedder


def first(res):
    """The first output of a node call (tuple or v3 NodeOutput)."""
    return res.args[0] if hasattr(res, "args") else res[0]


def outputs(res):
    return res.args if hasattr(res, "args") else res


def load_cn(name):
    return comfy.controlnet.load_controlnet(os.path.join(FIX, "controlnet", NETS[name]))


def load_mmdit(name):
    sd = load_file(os.path.join(FIX, "diffusion_models", f"tiny_{name}.safetensors"))
    mc = comfy.model_detection.model_config_from_unet(sd, "")
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "")
    model.load_model_weights(sd, "")
    return model


def module_goldens():
    model = load_mmdit("sd35_large")
    g = torch.Generator().manual_seed(23)
    x = torch.randn(2, 16, 6, 8, generator=g)
    hint = torch.randn(2, 16, 6, 8, generator=g)
    t = torch.tensor([730.0, 210.0])
    ctx = torch.randn(2, 9, 4096, generator=g)
    y = torch.randn(2, POOLED, generator=g)
    xo = torch.randn(1, 16, 5, 7, generator=g)
    ho = torch.randn(1, 16, 5, 7, generator=g)
    out = {"x": x, "hint": hint, "t": t, "context": ctx, "y": y, "odd.x": xo, "odd.hint": ho}
    canny_out = None
    for name in NETS:
        cn = load_cn(name)
        cn.pre_run(model, model.model_sampling.percent_to_sigma)
        cm = cn.control_model.float()
        with torch.no_grad():
            res = cm(x=x, hint=hint, timesteps=t, context=ctx, y=y)["output"]
            odd = cm(x=xo, hint=ho, timesteps=t[:1], context=ctx[:1], y=y[:1])["output"]
        for i, o in enumerate(res):
            out[f"{name}.output.{i}"] = o.clone()
        for i, o in enumerate(odd):
            out[f"{name}.odd.output.{i}"] = o.clone()
        if name == "sd35_canny":
            canny_out = [o.clone() for o in res]
    dm = model.diffusion_model
    with torch.no_grad():
        out["model.plain"] = dm(x, t, context=ctx, y=y)
        out["model.with_control"] = dm(x, t, context=ctx, y=y, control={"output": canny_out})
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "module.safetensors"))


def tiny_vae(sd):
    real = comfy.sd.AutoencodingEngine

    def engine(**kw):
        for c in ("encoder_config", "decoder_config"):
            kw[c] = dict(kw[c], params=dict(kw[c]["params"], ch=32, ch_mult=[1, 1, 1, 2],
                                            num_res_blocks=1))
        return real(**kw)
    comfy.sd.AutoencodingEngine = engine
    try:
        vae = comfy.sd.VAE(sd=sd)
    finally:
        comfy.sd.AutoencodingEngine = real
    missing, unexpected = vae.first_stage_model.load_state_dict(sd, strict=False)
    assert not missing and not unexpected, (missing, unexpected)
    return vae


def hint_image():
    """An 80x72 picture with a disc, a bar and a gradient (edges for Canny), uint8."""
    h, w = 72, 80
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    disc = ((yy - 36) ** 2 + (xx - 28) ** 2) < 18 ** 2
    bar = (yy > 10) & (yy < 30) & (xx > 50) & (xx < 74)
    img[..., 0] = 40 + 180 * disc
    img[..., 1] = 30 + 200 * bar + 20 * disc
    img[..., 2] = xx * 3
    return np.clip(img, 0, 255).astype(np.uint8)


def sampling_goldens():
    ck = load_file(os.path.join(FIX, "checkpoints", "tiny_sd35_medium.safetensors"))
    model, clip, _, _ = comfy.sd.load_state_dict_guess_config(
        ck, output_vae=False, output_clip=True, te_model_options=TE_OPTS)
    p = "first_stage_model."
    vae = tiny_vae({k[len(p):]: v for k, v in ck.items() if k.startswith(p)})
    arr = hint_image()
    Image.fromarray(arr).save(os.path.join(OUT_DIR, "hint.png"))
    image = torch.from_numpy(arr).float().unsqueeze(0) / 255.0
    w, h = 96, 64
    scaled = nodes.ImageScale().upscale(image, "bilinear", w, h, "center")[0]
    edges = first(Canny.execute(scaled, 0.4, 0.8))
    text = ("happy cute anime fox girl with massive fluffy fennec ears and blonde fluffy hair "
            "long hair blue eyes wearing a red scarf a pink sweater and blue jeans\n\n"
            "standing in a beautiful forest with mountains\n\n")
    pos = nodes.CLIPTextEncode().encode(clip, text)[0]
    neg = nodes.ConditioningZeroOut().zero_out(pos)[0]
    latent = first(EmptySD3LatentImage.execute(w, h, 1))
    adv = nodes.ControlNetApplyAdvanced()
    canny_cn, double_cn, sd3_cn = load_cn("sd35_canny"), load_cn("sd35_double_y"), load_cn("sd3")
    tp, tn = adv.apply_controlnet(pos, neg, canny_cn, edges, 0.66, 0.0, 1.0, vae=vae)
    cp, cn = outputs(ControlNetApplySD3.execute(tp, tn, double_cn, edges, 0.8, 0.2, 0.9, vae=vae))
    dp, dn = adv.apply_controlnet(pos, neg, sd3_cn, edges, 1.0, 0.0, 1.0, vae=vae)
    seed, steps, cfg = 5, 3, 4.5
    cases = {"template": (tp, tn), "chain": (cp, cn), "sd3_diffusers": (dp, dn)}
    out = {"canny": edges.contiguous()}
    for name, (pp, nn) in cases.items():
        (res,) = nodes.common_ksampler(model, seed, steps, cfg, "euler", "simple", pp, nn, latent)
        out[f"case.{name}"] = res["samples"].contiguous()
    save_file(out, os.path.join(OUT_DIR, "sampling.safetensors"))
    meta = {"width": w, "height": h, "seed": seed, "steps": steps, "cfg": cfg,
            "sampler": "euler", "scheduler": "simple", "text": text,
            "cases": list(cases.keys())}
    with open(os.path.join(OUT_DIR, "sampling.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(2)
    module_goldens()
    sampling_goldens()
    print("wrote", OUT_DIR)
