#!/usr/bin/env python3
"""Writes tests/data/toolbox2_golden.json from ComfyUI's own node code, run in-process:

* "gits": GITSScheduler.execute (comfy_extras/nodes_gits.py) for every coeff of its table and
  a spread of steps (table rows and log-linear resampling beyond 20) and denoise values.
* "dual_cfg": Guider_DualCFG.predict_noise (comfy_extras/nodes_custom_sampler.py) and the
  plain CFGGuider's, on fixed cond1/cond2/negative model outputs (a model whose prediction
  is a fixed tensor per conditioning), for both styles and several cfg pairs including 1.0.
* "latent_nodes": LatentCompositeMasked, LatentConcat, LatentCut on fixed random latents.
* "image_nodes": ImageBlend (every mode, resized and RGBA second images), ImageBlur and
  ImageSharpen on fixed random images.
* "freeu_patch": FreeU / FreeU_V2's output_block_patch on fixed (h, hsp) pairs.
* "patch_sampling": tiny_sd15 (fixtures/models) sampled by comfy.samplers.sample unpatched
  and with FreeU / FreeU_V2 / PerturbedAttentionGuidance.
* "alpha_nodes": SplitImageWithAlpha, JoinImageWithAlpha, ImageColorToMask.

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_toolbox2_goldens.py [OUT.json]
"""
import json
import os
import sys

OUT = [a for a in sys.argv[1:] if not a.startswith("--")]
sys.argv = [sys.argv[0]]
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_sampling_goldens as g  # noqa: E402  (sets up ComfyUI's modules)
import torch  # noqa: E402
import comfy_extras.nodes_gits as ngits  # noqa: E402


def out0(r):
    if hasattr(r, "result"):
        r = r.result
    return r[0]


def gits():
    res = {}
    coeffs = [round(0.80 + 0.05 * k, 2) for k in range(15)]
    for coeff in coeffs:
        for steps in (2, 3, 10, 20, 21, 37):
            for denoise in (1.0, 0.6, 0.1, 0.0):
                res[f"{coeff}/{steps}/{denoise}"] = g.floats(out0(ngits.GITSScheduler.execute(coeff, steps, denoise)))
    return res


def dual_cfg():
    """Guider_DualCFG.predict_noise with calc_cond_batch replaced by fixed predictions per
    conditioning (zeros for a skipped one, as calc_cond_batch gives), plain and with the
    RescaleCFG 0.7 + CFGNorm 0.6 patches (set by the nodes' own patch functions)."""
    import comfy.samplers
    import comfy_extras.nodes_custom_sampler as ncs
    import comfy_extras.nodes_model_advanced as nma
    import comfy_extras.nodes_cfg as ncfg
    from gen_custom_sampling_goldens import Recorder
    gen = torch.Generator().manual_seed(7)
    preds = {k: torch.randn([2, 4, 5, 6], generator=gen) for k in ("negative", "cond2", "cond1")}
    x = torch.randn([2, 4, 5, 6], generator=gen) * 3.0
    res = {k: [g.f32hex(v) for v in t.flatten().tolist()] for k, t in preds.items()}
    res["x"] = [g.f32hex(v) for v in x.flatten().tolist()]
    res["shape"] = [2, 4, 5, 6]
    orig = comfy.samplers.calc_cond_batch

    def fake(model, conds, x_in, timestep, model_options):
        return [torch.zeros_like(x_in) if c is None else preds[c].clone() for c in conds]
    comfy.samplers.calc_cond_batch = fake
    try:
        patches = {"plain": Recorder(),
                   "RescaleCFG/0.7+CFGNorm/0.6": out0(ncfg.CFGNorm.execute(nma.RescaleCFG().patch(Recorder(), 0.7)[0], 0.6))}
        for pname, m in patches.items():
            for style in ("regular", "nested"):
                for c1, c2 in ((4.5, 2.0), (1.0, 1.0), (3.0, 1.0), (1.0, 6.0)):
                    guider = ncs.Guider_DualCFG(m)
                    guider.set_cfg(c1, c2, nested=(style == "nested"))
                    guider.conds = {"negative": "negative", "middle": "cond2", "positive": "cond1"}
                    guider.inner_model = None
                    for sigma in (0.8, 7.25):
                        t = torch.full([2], sigma)
                        out = guider.predict_noise(x.clone(), t, model_options=m.model_options)
                        res[f"{pname}/{style}/{c1}/{c2}/{sigma}"] = [g.f32hex(v) for v in out.flatten().tolist()]
    finally:
        comfy.samplers.calc_cond_batch = orig
    return res


def hx(t):
    return {"shape": list(t.shape), "data": [g.f32hex(v) for v in t.flatten().tolist()]}


def latent_nodes():
    """LatentCompositeMasked (nodes_mask.py), LatentConcat, LatentCut and LatentApplyOperation
    with LatentOperationTonemapReinhard (nodes_latent.py) on
    fixed random latents; "inputs" holds them, each case its output."""
    import comfy_extras.nodes_mask as nm
    import comfy_extras.nodes_latent as nl
    gen = torch.Generator().manual_seed(11)
    r = lambda *s: torch.randn(list(s), generator=gen)
    inputs = {"dest": r(2, 4, 8, 10), "source": r(1, 4, 5, 6), "mask": torch.rand([1, 12, 14], generator=gen),
              "a": r(2, 4, 6, 5), "bx": r(1, 4, 6, 3), "by": r(1, 4, 2, 5), "bt": r(1, 3, 6, 5)}
    res = {"inputs": {k: hx(v) for k, v in inputs.items()}, "cases": {}}
    lat = lambda k: {"samples": inputs[k].clone()}
    for x, y in ((0, 0), (16, 24), (72, 40), (200, 200), (13, 7)):
        for resize in (False, True):
            for mask in (None, "mask"):
                m = None if mask is None else inputs["mask"].clone()
                out = nm.LatentCompositeMasked().composite(lat("dest"), lat("source"), x, y, resize, m)[0]
                res["cases"][f"LatentCompositeMasked/{x}/{y}/{resize}/{mask}"] = hx(out["samples"])
    for dim in ("x", "-x", "y", "-y", "t", "-t"):
        b = "b" + dim[-1]
        out = out0(nl.LatentConcat.execute(lat("a"), lat(b), dim))
        res["cases"][f"LatentConcat/{dim}/{b}"] = hx(out["samples"])
    for mult in (1.0, 0.4, 3.0):
        op = out0(nl.LatentOperationTonemapReinhard.execute(mult))
        out = out0(nl.LatentApplyOperation.execute(lat("dest"), op))
        res["cases"][f"LatentApplyOperation/TonemapReinhard/{mult}"] = hx(out["samples"])
    for dim in ("x", "y", "t"):
        for index in (0, 2, -2, -10, 10):
            for amount in (1, 3, 100):
                out = out0(nl.LatentCut.execute(lat("a"), dim, index, amount))
                res["cases"][f"LatentCut/{dim}/{index}/{amount}"] = hx(out["samples"])
    return res


def image_nodes():
    """ImageBlend, ImageBlur, ImageSharpen (nodes_post_processing.py) and ImageAddNoise
    (nodes_images.py) on fixed random images."""
    import comfy_extras.nodes_post_processing as npp
    gen = torch.Generator().manual_seed(13)
    inputs = {"a": torch.rand([2, 9, 11, 3], generator=gen), "b": torch.rand([2, 9, 11, 3], generator=gen),
              "small": torch.rand([1, 6, 5, 3], generator=gen), "rgba": torch.rand([1, 9, 11, 4], generator=gen)}
    res = {"inputs": {k: hx(v) for k, v in inputs.items()}, "cases": {}}
    for mode in ("normal", "multiply", "screen", "overlay", "soft_light", "difference"):
        for factor in (0.5, 1.0, 0.23):
            for other in ("b", "small", "rgba"):
                out = out0(npp.Blend.execute(inputs["a"].clone(), inputs[other].clone(), factor, mode))
                res["cases"][f"ImageBlend/{mode}/{factor}/{other}"] = hx(out)
    for r in (1, 3, 4):
        for sigma in (1.0, 0.3, 4.5):
            res["cases"][f"ImageBlur/{r}/{sigma}"] = hx(out0(npp.Blur.execute(inputs["a"].clone(), r, sigma)))
            for alpha in (1.0, 0.0, 2.5):
                res["cases"][f"ImageSharpen/{r}/{sigma}/{alpha}"] = hx(out0(npp.Sharpen.execute(inputs["a"].clone(), r, sigma, alpha)))
    # nodes_images imports the server (for its save nodes' previews); ImageAddNoise does not
    # use it, so a stand-in `server` module lets the file import outside a running ComfyUI.
    import types
    if "server" not in sys.modules:
        stub = types.ModuleType("server")
        stub.PromptServer = type("PromptServer", (), {"instance": None})
        sys.modules["server"] = stub
    import comfy_extras.nodes_images as ni
    add_noise = ni.ImageAddNoise()
    for seed in (0, 5, 2 ** 40 + 3):
        for strength in (0.5, 1.0, 0.07):
            res["cases"][f"ImageAddNoise/{seed}/{strength}"] = hx(add_noise.repeat(inputs["a"].clone(), seed, strength)[0])
    return res


class FakeUnetModel:
    """What FreeU's patch reads (`model.model.model_config.unet_config`) and records."""

    def __init__(self, model_channels):
        import types
        self.model = types.SimpleNamespace(model_config=types.SimpleNamespace(
            unet_config={"model_channels": model_channels}))
        self.patch = None

    def clone(self):
        return self

    def set_model_output_block_patch(self, f):
        self.patch = f


def freeu_patch():
    """FreeU / FreeU_V2's output_block_patch (nodes_freelunch.py) on fixed h / hsp pairs for
    model_channels 32: 128 channels (b1, s1), 64 (b2, s2) and 96 (untouched), several sizes."""
    import comfy_extras.nodes_freelunch as nf
    gen = torch.Generator().manual_seed(17)
    res = {"inputs": {}, "cases": {}}
    shapes = {"c128": (2, 128, 3, 4), "c64": (1, 64, 6, 5), "c64_thin": (1, 64, 5, 1), "c96": (1, 96, 2, 2),
              "c128_one": (1, 128, 1, 1)}
    for name, shape in shapes.items():
        h = torch.randn(list(shape), generator=gen)
        hsp = torch.randn(list(shape), generator=gen) * 2.0
        res["inputs"][name] = {"h": hx(h), "hsp": hx(hsp)}
        for cls, params in (("FreeU", (1.1, 1.2, 0.9, 0.2)), ("FreeU_V2", (1.3, 1.4, 0.9, 0.2)),
                            ("FreeU_V2", (0.7, 2.0, 1.5, 0.0))):
            m = FakeUnetModel(32)
            getattr(nf, cls)().patch(m, *params)
            oh, ohsp = m.patch(h.clone(), hsp.clone(), {})
            key = f"{cls}/{'/'.join(str(v) for v in params)}/{name}"
            res["cases"][key] = {"h": hx(oh), "hsp": hx(ohsp)}
    return res


def tiny_sd15_model():
    """tiny_sd15's UNet as ComfyUI builds it (see gen_controlnet_goldens.py: the BASE config
    with SD1's 8 heads)."""
    from safetensors.torch import load_file
    import comfy.latent_formats
    import comfy.model_detection
    import comfy.model_patcher
    from comfy.ldm.modules.attention import CrossAttention
    sd = load_file(os.path.join(g.REPO, "fixtures", "models", "checkpoints", "tiny_sd15.safetensors"))
    prefix = "model.diffusion_model."
    mc = comfy.model_detection.model_config_from_unet(sd, prefix, use_base_if_no_match=True)
    mc.latent_format = comfy.latent_formats.SD15()
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, prefix)
    model.load_model_weights(sd, prefix)
    for mod in model.modules():
        if isinstance(mod, CrossAttention):
            mod.heads = 8
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def freeu_sampling():
    """tiny_sd15 through comfy.samplers.sample (euler, "normal" 3 steps, cfg 6, noise
    prepare_noise(zeros [1,4,8,8], 42)), unpatched and with FreeU / FreeU_V2 /
    PerturbedAttentionGuidance / LatentApplyOperationCFG (tonemap) applied by the nodes' own
    patch, on seeded random
    cross-attention conds."""
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_freelunch as nf
    import comfy_extras.nodes_pag as npag
    import comfy_extras.nodes_latent as nl
    gen = torch.Generator().manual_seed(19)
    pos = torch.randn(1, 77, 32, generator=gen)
    neg = torch.randn(1, 77, 32, generator=gen)
    base = tiny_sd15_model()
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    res = {"model_channels": base.model.model_config.unet_config["model_channels"],
           "pos": hx(pos), "neg": hx(neg), "noise": hx(noise), "sigmas": hx(sigmas.float()), "cases": {}}
    cases = {"none": base,
             "FreeU/1.1/1.2/0.9/0.2": nf.FreeU().patch(base, 1.1, 1.2, 0.9, 0.2)[0],
             "FreeU_V2/1.3/1.4/0.9/0.2": nf.FreeU_V2().patch(base, 1.3, 1.4, 0.9, 0.2)[0],
             "PAG/3.0": out0(npag.PerturbedAttentionGuidance.execute(base, 3.0)),
             "PAG/0.0": out0(npag.PerturbedAttentionGuidance.execute(base, 0.0)),
             "FreeU_V2/1.3/1.4/0.9/0.2+PAG/1.5": out0(npag.PerturbedAttentionGuidance.execute(
                 nf.FreeU_V2().patch(base, 1.3, 1.4, 0.9, 0.2)[0], 1.5)),
             "Tonemap/0.5": out0(nl.LatentApplyOperationCFG.execute(
                 base, out0(nl.LatentOperationTonemapReinhard.execute(0.5))))}
    for name, m in cases.items():
        out = comfy.samplers.sample(m, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        res["cases"][name] = hx(out)
    return res


def alpha_nodes():
    """SplitImageWithAlpha, JoinImageWithAlpha (nodes_compositing.py), ImageColorToMask
    (nodes_mask.py) on fixed images: RGB and RGBA, a mask of another size and batch, and a
    palette image whose colours hit exactly (plus 0.5/255 ties)."""
    import comfy_extras.nodes_compositing as nc
    import comfy_extras.nodes_mask as nm
    gen = torch.Generator().manual_seed(23)
    pal = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.5, 0.25], [0.2, 0.4, 0.6], [1.2, -0.1, 0.5 / 255]])
    idx = torch.randint(0, 4, (2, 5, 6), generator=gen)
    inputs = {"rgb": torch.rand([2, 5, 6, 3], generator=gen), "rgba": torch.rand([3, 5, 6, 4], generator=gen),
              "mask": torch.rand([2, 3, 4], generator=gen), "palette": pal[idx]}
    res = {"inputs": {k: hx(v) for k, v in inputs.items()}, "cases": {}}
    for name in ("rgb", "rgba"):
        img, mask = out0(nc.SplitImageWithAlpha.execute(inputs[name].clone())), None
        r = nc.SplitImageWithAlpha.execute(inputs[name].clone())
        r = r.result if hasattr(r, "result") else r
        res["cases"][f"SplitImageWithAlpha/{name}"] = {"image": hx(r[0]), "mask": hx(r[1])}
        res["cases"][f"JoinImageWithAlpha/{name}"] = hx(out0(nc.JoinImageWithAlpha.execute(inputs[name].clone(), inputs["mask"].clone())))
    for color in (0, 0xFF8040, 0x336699, 0xFF0000, 0xFF0001, 0x123456):
        res["cases"][f"ImageColorToMask/{color}"] = hx(nm.ImageColorToMask().image_to_mask(inputs["palette"].clone(), color)[0])
    return res


def main():
    out = OUT[0] if OUT else os.path.join(g.REPO, "tests", "data", "toolbox2_golden.json")
    torch.set_num_threads(1)
    data = {"machine": g.machine(), "gits": gits(), "dual_cfg": dual_cfg(),
            "latent_nodes": latent_nodes(), "image_nodes": image_nodes(),
            "freeu_patch": freeu_patch(), "patch_sampling": freeu_sampling(),
            "alpha_nodes": alpha_nodes()}
    with open(out, "w") as f:
        json.dump(g.finite(data), f, indent=0, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
