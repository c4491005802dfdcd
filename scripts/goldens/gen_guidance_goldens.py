#!/usr/bin/env python3
"""Writes tests/data/guidance_golden.safetensors from ComfyUI's own code, run in-process (each
tensor named "<section>/<case>"; metadata "machine" says where it was made):

* "pre_cfg": the pre-CFG functions APG, FreSca and TCFG set (nodes_apg.py, nodes_fresca.py,
  nodes_tcfg.py), run as comfy.samplers.sampling_function runs them, then
  comfy.samplers.cfg_function, on fixed cond / uncond / x; APG over a sequence of sigmas
  (its momentum state, the reset when sigma rises), FreSca on odd and even sizes with
  cutoffs below and above half the size, the uncond-skipped case (cfg 1).
* "perp_neg": perp_neg() of nodes_perpneg.py on fixed predictions.
* "sampling": tiny_sd15 (fixtures/models) through comfy.samplers.sample (euler, "normal"
  3 steps, cfg 6 and 1, noise prepare_noise(zeros [1,4,8,8], 42)) with APG / FreSca / TCFG /
  PerpNeg patches, and PerpNegGuider's sample(), on seeded random cross-attention conds.
* "lcm_upscale": tiny_sd15 through comfy.samplers.sample with SamplerLCMUpscale's sampler
  (several ratios, step counts and methods).
* "downscale": tiny_sd15 through comfy.samplers.sample with PatchModelAddDownscale's patches
  (blocks, factors, σ ranges, before/after the skip, every method).
* "attn_multiply" / "clip_attn": tiny_sd15 sampled with the UNet attention multipliers, and
  its CLIP's conditioning for "a photo of a cat" with CLIPAttentionMultiply.
* "sag": tiny_sd15 sampled with SelfAttentionGuidance (square and non-square latents).
* "hypertile": tiny_sd15 sampled with HyperTile (tile sizes, swap sizes with and without a
  random choice, depths, a non-square latent).
* "slg": tiny_flux (fixtures/models/diffusion_models) through comfy.samplers.sample with
  SkipLayerGuidanceDiT / SkipLayerGuidanceDiTSimple.

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_guidance_goldens.py [OUT.safetensors]
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

TENSORS = {}


def put(name, t):
    TENSORS[name] = t.detach().float().contiguous().clone()


def out0(r):
    if hasattr(r, "result"):
        r = r.result
    return r[0]


class Recorder:
    """Records what a patch node sets on its model clone."""

    def __init__(self):
        self.model_options = {}

    def clone(self):
        return self

    def set_model_sampler_pre_cfg_function(self, f, disable_cfg1_optimization=False):
        self.model_options.setdefault("sampler_pre_cfg_function", []).append(f)


def run_pre_cfg(m, cond, uncond, x, sigma, scale, skipped):
    """sampling_function's pre-CFG loop, then cfg_function (no other patches)."""
    import comfy.samplers
    conds = [object(), None if skipped else object()]
    out = [cond.clone(), torch.zeros_like(uncond) if skipped else uncond.clone()]
    for fn in m.model_options.get("sampler_pre_cfg_function", []):
        args = {"conds": conds, "conds_out": out, "cond_scale": scale, "timestep": sigma,
                "input": x, "sigma": sigma, "model": None, "model_options": m.model_options}
        out = fn(args)
    return comfy.samplers.cfg_function(None, out[0], out[1], scale, x, sigma,
                                       model_options={}, cond=conds[0], uncond=conds[1])


def pre_cfg():
    import comfy_extras.nodes_apg as napg
    import comfy_extras.nodes_fresca as nfr
    import comfy_extras.nodes_tcfg as ntc
    gen = torch.Generator().manual_seed(71)
    shapes = {"even": [2, 4, 6, 8], "odd": [2, 4, 7, 5]}
    inputs = {}
    for sname, shape in shapes.items():
        t = {k: torch.randn(shape, generator=gen) for k in ("cond", "uncond", "x")}
        t["x"] = t["x"] * 3.0
        inputs[sname] = t
        for k, v in t.items():
            put(f"pre_cfg/inputs/{sname}/{k}", v)
    cases = {"TCFG": lambda: out0(ntc.TCFG.execute(Recorder()))}
    for low, high, cut in ((1.0, 1.25, 20), (0.5, 1.5, 2), (1.2, 0.8, 1), (1.0, 1.25, 3)):
        cases[f"FreSca/{low}/{high}/{cut}"] = (
            lambda low=low, high=high, cut=cut: out0(nfr.FreSca.execute(Recorder(), low, high, cut)))
    for sname, t in inputs.items():
        for name, make in cases.items():
            for scale in (1.0, 4.5):
                for skipped in (False, True):
                    out = run_pre_cfg(make(), t["cond"], t["uncond"], t["x"].clone(),
                                      torch.full([2], 7.25), scale, skipped)
                    put(f"pre_cfg/{sname}/{name}/{scale}/{int(skipped)}", out)
    # APG: one patched model over a sigma sequence (the state carries; sigma rises at the 4th).
    sigmas = [14.6, 7.25, 2.5, 9.0, 0.8]
    for eta, thr, mom in ((1.0, 5.0, 0.0), (0.0, 2.0, 0.5), (0.5, 0.0, -0.75), (1.0, 50.0, 1.0)):
        for sname, t in inputs.items():
            for skipped in (False, True):
                m = out0(napg.APG.execute(Recorder(), eta, thr, mom))
                for k, s in enumerate(sigmas):
                    cond = t["cond"] * (1.0 + 0.1 * k)
                    uncond = t["uncond"] - 0.05 * k
                    out = run_pre_cfg(m, cond, uncond, t["x"].clone(), torch.full([2], s), 4.5, skipped)
                    put(f"pre_cfg/{sname}/APG/{eta}/{thr}/{mom}/{int(skipped)}/{k}", out)


def perp_neg():
    import comfy_extras.nodes_perpneg as npn
    gen = torch.Generator().manual_seed(73)
    t = {k: torch.randn([2, 4, 5, 6], generator=gen) for k in ("pos", "neg", "empty", "x")}
    for k, v in t.items():
        put(f"perp_neg/inputs/{k}", v)
    for ns in (1.0, 0.0, 2.5):
        for cfg in (1.0, 6.0):
            put(f"perp_neg/{ns}/{cfg}", npn.perp_neg(t["x"], t["pos"], t["neg"], t["empty"], ns, cfg))


def sampling():
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_apg as napg
    import comfy_extras.nodes_fresca as nfr
    import comfy_extras.nodes_tcfg as ntc
    import comfy_extras.nodes_perpneg as npn
    from gen_toolbox2_goldens import tiny_sd15_model
    gen = torch.Generator().manual_seed(79)
    pos = torch.randn(1, 77, 32, generator=gen)
    neg = torch.randn(1, 77, 32, generator=gen)
    empty = torch.randn(1, 77, 32, generator=gen)
    base = tiny_sd15_model()
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    for k, v in (("pos", pos), ("neg", neg), ("empty", empty), ("noise", noise), ("sigmas", sigmas)):
        put(f"sampling/inputs/{k}", v)
    cases = {
        "none": lambda: base,
        "APG/1.0/5.0/0.0": lambda: out0(napg.APG.execute(base, 1.0, 5.0, 0.0)),
        "APG/0.5/1.0/0.5": lambda: out0(napg.APG.execute(base, 0.5, 1.0, 0.5)),
        "FreSca/1.0/1.25/20": lambda: out0(nfr.FreSca.execute(base, 1.0, 1.25, 20)),
        "FreSca/0.5/1.5/2": lambda: out0(nfr.FreSca.execute(base, 0.5, 1.5, 2)),
        "TCFG": lambda: out0(ntc.TCFG.execute(base)),
        "PerpNeg/1.0": lambda: out0(npn.PerpNeg.execute(base, [[empty, {}]], 1.0)),
        "PerpNeg/0.0": lambda: out0(npn.PerpNeg.execute(base, [[empty, {}]], 0.0)),
    }
    for name, make in cases.items():
        for cfg in (6.0, 1.0):
            out = comfy.samplers.sample(make(), noise, [[pos, {}]], [[neg, {}]], cfg, "cpu",
                                        comfy.samplers.sampler_object("euler"), sigmas,
                                        latent_image=latent, disable_pbar=True, seed=42)
            put(f"sampling/{name}/{cfg}", out)
    for ns in (1.0, 0.0, 2.0):
        for cfg in (6.0, 1.0):
            for model_name, model in (("none", base), ("TCFG", out0(ntc.TCFG.execute(base)))):
                guider = npn.Guider_PerpNeg(model)
                guider.set_conds([[pos, {}]], [[neg, {}]], [[empty, {}]])
                guider.set_cfg(cfg, ns)
                out = guider.sample(noise, latent, comfy.samplers.sampler_object("euler"), sigmas,
                                    disable_pbar=True, seed=42)
                put(f"sampling/PerpNegGuider/{model_name}/{ns}/{cfg}", out)


# tiny_flux's config (as scripts/goldens/gen_flux_variant_goldens.py builds it).
FLUX_PARAMS = dict(in_channels=16, out_channels=16, vec_in_dim=32, context_in_dim=32, hidden_size=64,
                   mlp_ratio=4.0, num_heads=4, depth=1, depth_single_blocks=1, axes_dim=[4, 6, 6],
                   theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True)


def lcm_upscale():
    """tiny_sd15 through comfy.samplers.sample with SamplerLCMUpscale's sampler ("normal" 4
    steps, cfg 6), torch's global generator where prepare_noise(zeros [1,4,8,8], 42) leaves
    it, as KSampler runs it."""
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_advanced_samplers as nas
    from gen_toolbox2_goldens import tiny_sd15_model
    base = tiny_sd15_model()
    pos, neg = TENSORS["sampling/inputs/pos"], TENSORS["sampling/inputs/neg"]
    latent = torch.zeros(1, 4, 8, 8)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 4)
    put("lcm_upscale/inputs/sigmas", sigmas)
    for ratio, steps, method in ((1.5, -1, "bislerp"), (2.0, 2, "nearest-exact"), (1.25, 0, "bilinear"),
                                 (2.0, 1, "bicubic"), (1.5, 3, "area"), (1.0, -1, "bislerp")):
        sampler = out0(nas.SamplerLCMUpscale.execute(ratio, steps, method))
        noise = comfy.sample.prepare_noise(latent, 42)
        out = comfy.samplers.sample(base, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu", sampler, sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"lcm_upscale/{ratio}/{steps}/{method}", out)


def downscale():
    """tiny_sd15 (latent [1,4,16,16]) through comfy.samplers.sample (euler, "normal" 3 steps,
    cfg 6) with PatchModelAddDownscale's patches (nodes_model_downscale.py)."""
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_model_downscale as nmd
    from gen_toolbox2_goldens import tiny_sd15_model
    base = tiny_sd15_model()
    pos, neg = TENSORS["sampling/inputs/pos"], TENSORS["sampling/inputs/neg"]
    latent = torch.zeros(1, 4, 16, 16)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    put("downscale/inputs/noise", noise)
    for block, factor, start, end, after, down, up in (
            (1, 2.0, 0.0, 0.35, True, "bicubic", "bicubic"),
            (1, 2.0, 0.0, 1.0, False, "bilinear", "nearest-exact"),
            (3, 1.5, 0.0, 1.0, True, "area", "bislerp"),
            (2, 3.0, 0.2, 0.8, True, "nearest-exact", "bilinear"),
            (3, 2.0, 0.0, 1.0, False, "bislerp", "area")):
        m = out0(nmd.PatchModelAddDownscale.execute(base, block, factor, start, end, after, down, up))
        out = comfy.samplers.sample(m, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"downscale/{block}/{factor}/{start}/{end}/{int(after)}/{down}/{up}", out)
    out = comfy.samplers.sample(base, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                comfy.samplers.sampler_object("euler"), sigmas,
                                latent_image=latent, disable_pbar=True, seed=42)
    put("downscale/none", out)


def attention_multiply():
    """tiny_sd15 sampled (as "sampling") with UNetSelfAttentionMultiply /
    UNetCrossAttentionMultiply / UNetTemporalAttentionMultiply (nodes_attention_multiply.py),
    and tiny_sd15's CLIP (sd1_clip at the fixture's size) encoding a prompt with and without
    CLIPAttentionMultiply."""
    import comfy.sample
    import comfy.samplers
    import comfy.sd
    import comfy.supported_models
    import comfy_extras.nodes_attention_multiply as nam
    from safetensors.torch import load_file
    from gen_toolbox2_goldens import tiny_sd15_model
    base = tiny_sd15_model()
    pos, neg = TENSORS["sampling/inputs/pos"], TENSORS["sampling/inputs/neg"]
    latent = torch.zeros(1, 4, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    cases = {
        "UNetSelfAttentionMultiply/1.2/0.8/1.5/0.7": lambda: out0(
            nam.UNetSelfAttentionMultiply.execute(base, 1.2, 0.8, 1.5, 0.7)),
        "UNetCrossAttentionMultiply/0.5/1.3/0.9/1.1": lambda: out0(
            nam.UNetCrossAttentionMultiply.execute(base, 0.5, 1.3, 0.9, 1.1)),
        "UNetTemporalAttentionMultiply/1.4/2.0/0.6/3.0": lambda: out0(
            nam.UNetTemporalAttentionMultiply.execute(base, 1.4, 2.0, 0.6, 3.0)),
    }
    for name, make in cases.items():
        out = comfy.samplers.sample(make(), noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"attn_multiply/{name}", out)
    import comfy.cli_args
    # The parity reference runs --fp32-text-enc: patched CLIP weights stay float32 (ComfyUI's
    # CPU default would store them as fp16).
    comfy.cli_args.args.fp32_text_enc = True
    sd = load_file(os.path.join(g.REPO, "fixtures", "models", "checkpoints", "tiny_sd15.safetensors"))
    mc = comfy.supported_models.SD15({})
    csd = mc.process_clip_state_dict(sd)
    opts = {"clip_l_model_config": {"hidden_size": 32, "intermediate_size": 128,
                                    "num_attention_heads": 4, "num_hidden_layers": 2}}
    clip = comfy.sd.CLIP(mc.clip_target(csd), embedding_directory=None, tokenizer_data=csd, model_options=opts)
    clip.load_sd(csd, full_model=True)
    for q, k, v, o in ((1.0, 1.0, 1.0, 1.0), (1.2, 0.8, 1.5, 0.7), (0.0, 1.0, 1.0, 1.0)):
        c = out0(nam.CLIPAttentionMultiply.execute(clip, q, k, v, o))
        cond = c.encode_from_tokens(c.tokenize("a photo of a cat"))
        put(f"clip_attn/{q}/{k}/{v}/{o}", cond)


def sag():
    """tiny_sd15 through comfy.samplers.sample (euler, "normal" 3 steps) with
    SelfAttentionGuidance's patches (nodes_sag.py), square and non-square latents, cfg 6 and 1
    (where it still evaluates the uncond)."""
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_sag as nsag
    from comfy.ldm.modules.attention import BasicTransformerBlock
    from gen_toolbox2_goldens import tiny_sd15_model
    base = tiny_sd15_model()
    # tiny_sd15_model() gives the attention modules SD1's 8 heads; the transformer blocks
    # report their heads to attention patches (SAG's) too.
    for mod in base.model.modules():
        if isinstance(mod, BasicTransformerBlock):
            mod.n_heads = 8
    pos, neg = TENSORS["sampling/inputs/pos"], TENSORS["sampling/inputs/neg"]
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    for h, w in ((8, 8), (16, 12)):
        latent = torch.zeros(1, 4, h, w)
        noise = comfy.sample.prepare_noise(latent, 42)
        for scale, blur, cfg in ((0.5, 2.0, 6.0), (1.5, 1.0, 1.0), (-1.0, 3.0, 6.0), (0.0, 2.0, 6.0)):
            m = out0(nsag.SelfAttentionGuidance.execute(base, scale, blur))
            out = comfy.samplers.sample(m, noise, [[pos, {}]], [[neg, {}]], cfg, "cpu",
                                        comfy.samplers.sampler_object("euler"), sigmas,
                                        latent_image=latent, disable_pbar=True, seed=42)
            put(f"sag/{h}/{w}/{scale}/{blur}/{cfg}", out)
        for cfg in (6.0, 1.0):
            out = comfy.samplers.sample(base, noise, [[pos, {}]], [[neg, {}]], cfg, "cpu",
                                        comfy.samplers.sampler_object("euler"), sigmas,
                                        latent_image=latent, disable_pbar=True, seed=42)
            put(f"sag/{h}/{w}/none/{cfg}", out)


def hypertile():
    """tiny_sd15 through comfy.samplers.sample (euler, "normal" 3 steps, cfg 6) with HyperTile's
    patches (nodes_hypertile.py), torch's global generator where prepare_noise(seed 42) leaves
    it (HyperTile's random_divisor draws from it)."""
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_hypertile as nht
    from gen_toolbox2_goldens import tiny_sd15_model
    base = tiny_sd15_model()
    pos, neg = TENSORS["sampling/inputs/pos"], TENSORS["sampling/inputs/neg"]
    sigmas = comfy.samplers.calculate_sigmas(base.get_model_object("model_sampling"), "normal", 3)
    # (tiny_sd15 has transformers at depth 1 and in the middle only.)
    for h, w, tile, swap, depth, scale in ((16, 16, 32, 1, 1, False), (16, 16, 32, 2, 1, False),
                                           (32, 32, 32, 3, 1, False), (32, 32, 32, 3, 2, True),
                                           (32, 32, 16, 4, 2, False), (16, 12, 32, 2, 1, False),
                                           (16, 16, 256, 2, 1, False), (16, 16, 32, 2, 0, False)):
        latent = torch.zeros(1, 4, h, w)
        m = out0(nht.HyperTile.execute(base, tile, swap, depth, scale))
        noise = comfy.sample.prepare_noise(latent, 42)
        out = comfy.samplers.sample(m, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"hypertile/{h}/{w}/{tile}/{swap}/{depth}/{int(scale)}", out)
    for h, w in ((16, 16), (16, 12), (32, 32)):
        latent = torch.zeros(1, 4, h, w)
        noise = comfy.sample.prepare_noise(latent, 42)
        out = comfy.samplers.sample(base, noise, [[pos, {}]], [[neg, {}]], 6.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"hypertile/{h}/{w}/none", out)


def tiny_flux_model():
    """tiny_flux (fixtures/models/diffusion_models) as model_base.Flux (dev config, f32)."""
    from safetensors.torch import load_file
    import comfy.model_patcher
    import comfy.supported_models
    sd = load_file(os.path.join(g.REPO, "fixtures", "models", "diffusion_models", "tiny_flux.safetensors"))
    cfg = comfy.supported_models.Flux(dict(FLUX_PARAMS))
    cfg.set_inference_dtype(torch.float32, None)
    model = cfg.get_model({})
    model.diffusion_model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return comfy.model_patcher.ModelPatcher(model, torch.device("cpu"), torch.device("cpu"))


def slg():
    import comfy.sample
    import comfy.samplers
    import comfy_extras.nodes_slg as nslg
    model = tiny_flux_model()
    cfg_model = model.model.model_config
    ctx_dim = model.model.diffusion_model.params.context_in_dim
    vec_dim = model.model.diffusion_model.params.vec_in_dim
    depth = model.model.diffusion_model.params.depth
    single = model.model.diffusion_model.params.depth_single_blocks
    gen = torch.Generator().manual_seed(83)
    pos = torch.randn(1, 6, ctx_dim, generator=gen)
    neg = torch.randn(1, 6, ctx_dim, generator=gen)
    pooled_p = torch.randn(1, vec_dim, generator=gen)
    pooled_n = torch.randn(1, vec_dim, generator=gen)
    latent = torch.zeros(1, cfg_model.latent_format.latent_channels, 8, 8)
    noise = comfy.sample.prepare_noise(latent, 42)
    sigmas = comfy.samplers.calculate_sigmas(model.get_model_object("model_sampling"), "simple", 3)
    for k, v in (("pos", pos), ("neg", neg), ("pooled_pos", pooled_p), ("pooled_neg", pooled_n),
                 ("noise", noise), ("sigmas", sigmas)):
        put(f"slg/inputs/{k}", v)
    put("slg/inputs/depths", torch.tensor([depth, single]))
    cases = {
        "none": lambda: model,
        "DiT/0/0/3.0/0.0/1.0/0.0": lambda: out0(nslg.SkipLayerGuidanceDiT.execute(
            model, 3.0, 0.0, 1.0, "0", "0", 0.0)),
        "DiT/0//2.0/0.0/0.5/0.7": lambda: out0(nslg.SkipLayerGuidanceDiT.execute(
            model, 2.0, 0.0, 0.5, "0", "", 0.7)),
        "DiT//0/1.5/0.2/1.0/0.0": lambda: out0(nslg.SkipLayerGuidanceDiT.execute(
            model, 1.5, 0.2, 1.0, "", "0", 0.0)),
        "Simple/0/0/0.0/1.0": lambda: out0(nslg.SkipLayerGuidanceDiTSimple.execute(
            model, 0.0, 1.0, "0", "0")),
        "Simple//0/0.0/0.5": lambda: out0(nslg.SkipLayerGuidanceDiTSimple.execute(
            model, 0.0, 0.5, "", "0")),
    }
    for name, make in cases.items():
        out = comfy.samplers.sample(make(), noise, [[pos, {"pooled_output": pooled_p, "guidance": 3.5}]],
                                    [[neg, {"pooled_output": pooled_n, "guidance": 3.5}]], 4.0, "cpu",
                                    comfy.samplers.sampler_object("euler"), sigmas,
                                    latent_image=latent, disable_pbar=True, seed=42)
        put(f"slg/{name}", out)


def main():
    from safetensors.torch import save_file
    out = OUT[0] if OUT else os.path.join(g.REPO, "tests", "data", "guidance_golden.safetensors")
    torch.set_num_threads(1)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        pre_cfg()
        perp_neg()
        sampling()
        lcm_upscale()
        downscale()
        attention_multiply()
        sag()
        hypertile()
        slg()
    save_file(TENSORS, out, metadata={"machine": json.dumps(g.machine())})


if __name__ == "__main__":
    main()
