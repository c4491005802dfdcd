#!/usr/bin/env python3
"""Writes tests/data/cond_batch_golden.json: ComfyUI's own conditioning pipeline
(comfy.samplers.process_conds + calc_cond_batch + cfg_function, comfy.conds, BaseModel's
extra_conds/concat_cond) run with a toy model instead of a UNet, so tests/cond_batch.rs can
check comfyrs's implementation without a model.

Usage (ComfyUI's source and torch are NOT part of this repository):
    COMFYUI=/path/to/ComfyUI /path/to/venv/bin/python tests/data/gen_cond_batch_golden.py

The toy model's denoised output for input x [n, 4, h, w] at sigma s, cross-attention context
[n, T, 8] and optional concat channels [n, 5, h, w] is
    x / (1 + s^2) + mean_T(context)[:, :4] (broadcast over h, w) + 0.25 * concat[:, :4] * concat[:, 4:5]
The token mean is invariant under ComfyUI's LCM repetition of shorter contexts (as attention is),
so batching must not change results beyond float rounding. tests/cond_batch.rs implements the same
toy model in Rust.
"""
import json
import math
import os
import sys

sys.path.insert(0, os.environ.get("COMFYUI", "/work/ref/ComfyUI"))

import torch  # noqa: E402
import comfy.cli_args  # noqa: E402

comfy.cli_args.args.cpu = True
import comfy.samplers  # noqa: E402
import comfy.sampler_helpers  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.latent_formats  # noqa: E402


class ToySampling(comfy.model_sampling.EPS, comfy.model_sampling.ModelSamplingDiscrete):
    pass


class Patcher:
    def prepare_state(self, *a, **k):
        pass

    def apply_hooks(self, hooks=None):
        return {}


class ToyModel:
    """Just enough of comfy.model_base.BaseModel for process_conds and calc_cond_batch."""

    extra_conds = comfy.model_base.BaseModel.extra_conds
    concat_cond = comfy.model_base.BaseModel.concat_cond
    encode_adm = comfy.model_base.BaseModel.encode_adm

    def __init__(self, inpaint):
        self.model_sampling = ToySampling(None)
        self.latent_format = comfy.latent_formats.SD15()
        self.current_patcher = Patcher()
        self.concat_keys = ()
        self.calls = []
        if inpaint:
            comfy.model_base.BaseModel.set_inpaint(self)

    def process_latent_in(self, latent):
        return self.latent_format.process_in(latent)

    def memory_required(self, input_shape, cond_shapes={}):
        return 0

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        self.calls.append(int(x.shape[0]))
        s = t.reshape(-1, 1, 1, 1)
        out = x / (1.0 + s * s)
        out = out + c_crossattn.mean(dim=1)[:, :4].reshape(x.shape[0], 4, 1, 1)
        if c_concat is not None:
            out = out + 0.25 * c_concat[:, :4] * c_concat[:, 4:5]
        return out


def pattern(shape, k):
    """Deterministic values: sin of a scaled element index (float32)."""
    n = math.prod(shape)
    idx = torch.arange(n, dtype=torch.float64)
    return torch.sin(idx * 0.37 + k).to(torch.float32).reshape(shape)


def flat(t):
    # float32 values: 9 significant digits identify each one.
    return [float("%.9g" % v) for v in t.flatten().tolist()]


def enc(t):
    return {"shape": list(t.shape), "data": flat(t)}


def cond_entry(tensor, opts):
    d = {}
    for k, v in opts.items():
        d[k] = v
    return [tensor, d]


def opts_json(opts):
    out = {}
    for k, v in opts.items():
        if isinstance(v, torch.Tensor):
            out[k] = enc(v)
        elif k == "area":
            out[k] = list(v)
        else:
            out[k] = v
    return out


def run_case(name, shape, sigma, cfg, positive, negative, inpaint=False, latent_image=None, denoise_mask=None):
    model = ToyModel(inpaint)
    noise = torch.zeros(shape)
    x = pattern(shape, 1.0) * 2.0
    if latent_image is None:
        latent_image = torch.zeros(shape)
    pos = comfy.sampler_helpers.convert_cond([cond_entry(t, o) for t, o in positive])
    neg = comfy.sampler_helpers.convert_cond([cond_entry(t, o) for t, o in negative]) if negative is not None else None
    conds = {"positive": pos}
    if neg is not None:
        conds["negative"] = neg
    mask = None
    if denoise_mask is not None:
        mask = comfy.sampler_helpers.prepare_mask(denoise_mask, shape, "cpu")
    conds = comfy.samplers.process_conds(model, noise, conds, "cpu", latent_image, mask, 0)
    ts = torch.full((shape[0],), sigma, dtype=torch.float32)
    uncond = conds.get("negative")
    if math.isclose(cfg, 1.0):
        uncond = None
    out = comfy.samplers.calc_cond_batch(model, [conds["positive"], uncond], x, ts, {})
    guided = comfy.samplers.cfg_function(model, out[0], out[1], cfg, x, ts, model_options={})
    return {
        "name": name,
        "shape": list(shape),
        "sigma": sigma,
        "cfg": cfg,
        "inpaint_model": inpaint,
        "x": flat(x),
        "latent_image": enc(latent_image),
        "denoise_mask": enc(denoise_mask) if denoise_mask is not None else None,
        "positive": [{"cond": enc(t), "opts": opts_json(o)} for t, o in positive],
        "negative": [{"cond": enc(t), "opts": opts_json(o)} for t, o in negative] if negative is not None else None,
        "model_batch_sizes": model.calls,
        "cond_out": flat(out[0]),
        "uncond_out": flat(out[1]),
        "guided": flat(guided),
    }


class IdentityVae:
    """A VAE whose encode returns its input, to read what VAEEncodeForInpaint and
    InpaintModelConditioning hand to the encoder."""
    downscale_ratio = 8

    def spacial_compression_encode(self):
        return 8

    def encode(self, pixels):
        return pixels.clone()


def inpaint_pixel_cases():
    import nodes
    out = []
    pixels = pattern((1, 21, 27, 3), 10.0).abs()
    mask = torch.zeros((1, 10, 13))
    mask[:, 2:6, 3:9] = 1.0
    mask[:, 7, 10] = 0.6
    for grow in (0, 3, 6):
        r = nodes.VAEEncodeForInpaint().encode(IdentityVae(), pixels, mask, grow)[0]
        out.append({"node": "VAEEncodeForInpaint", "grow_mask_by": grow, "pixels": enc(pixels), "mask": enc(mask),
                    "encoded": enc(r["samples"]), "noise_mask": enc(r["noise_mask"])})
    dummy = [[torch.zeros((1, 1, 8)), {}]]
    pos, neg, lat = nodes.InpaintModelConditioning().encode(dummy, dummy, pixels, IdentityVae(), mask, True)
    out.append({"node": "InpaintModelConditioning", "pixels": enc(pixels), "mask": enc(mask),
                "encoded": enc(pos[0][1]["concat_latent_image"]), "noise_mask": enc(lat["noise_mask"]),
                "concat_mask": enc(pos[0][1]["concat_mask"])})
    return out


def main():
    torch.manual_seed(0)
    ms = ToySampling(None)
    cases = []
    shape = (1, 4, 16, 16)
    p_plain = pattern((1, 3, 8), 2.0)
    p_area = pattern((1, 6, 8), 3.0)
    n_plain = pattern((1, 6, 8), 4.0)
    p_long = pattern((1, 48, 8), 5.0)

    # Areas (feathered), strengths, token lengths that batch (3 vs 6) and one that does not (3 vs 48),
    # and the opposite area the negative gets.
    cases.append(run_case("areas", shape, 3.0, 5.0,
        [(p_plain, {}), (p_area, {"area": (8, 8, 4, 6), "strength": 0.7, "set_area_to_bounds": False}),
         (p_long, {"area": (6, 12, 0, 0), "strength": 1.3})],
        [(n_plain, {})]))

    # Percentage areas, an area running over the border (clamped), a cond skipped by its timestep
    # range, and cfg 1 (uncond not evaluated).
    cases.append(run_case("percent_timestep_cfg1", shape, float(ms.percent_to_sigma(0.5)) * 1.5, 1.0,
        [(p_plain, {}), (p_area, {"area": ("percentage", 0.5, 0.25, 0.125, 0.375), "strength": 1.0}),
         (n_plain, {"area": (8, 8, 12, 12)}),
         (p_long, {"start_percent": 0.5, "end_percent": 1.0})],
        [(n_plain, {})]))

    # Timestep range that includes sigma; masks (pixel-size, resized), mask strength, mask bounds.
    mask_px = torch.zeros((1, 40, 40))
    mask_px[:, 9:28, 15:37] = 1.0
    soft = pattern((1, 16, 16), 6.0).abs()
    cases.append(run_case("masks", shape, 2.0, 7.5,
        [(p_plain, {"start_percent": 0.0, "end_percent": 0.6}),
         (p_area, {"mask": mask_px, "set_area_to_bounds": True, "mask_strength": 0.5, "strength": 2.0}),
         (p_long, {"mask": soft, "set_area_to_bounds": False, "mask_strength": 1.0})],
        [(n_plain, {}), (p_area, {"mask": mask_px, "set_area_to_bounds": False, "mask_strength": 0.8})]))

    # Batch of 2 with a mask of batch 1.
    cases.append(run_case("batch2", (2, 4, 8, 8), 1.5, 4.0,
        [(p_plain, {}), (p_area, {"mask": pattern((1, 8, 8), 7.0).abs(), "mask_strength": 1.0})],
        [(n_plain, {"area": (4, 4, 2, 2), "strength": 0.5})]))

    # Inpainting model: concat from the denoise mask + latent, and from InpaintModelConditioning's
    # concat_latent_image / concat_mask (pixel size).
    dmask = torch.zeros((1, 1, 32, 32))
    dmask[:, :, 10:25, 5:18] = 1.0
    latent_in = pattern(shape, 8.0)
    cli = pattern(shape, 9.0)
    cmask = torch.zeros((1, 1, 32, 32))
    cmask[:, :, 3:15, 16:32] = 1.0
    cases.append(run_case("inpaint_denoise_mask", shape, 4.0, 6.0,
        [(p_plain, {}), (p_area, {"area": (8, 8, 8, 0)})], [(n_plain, {})],
        inpaint=True, latent_image=latent_in, denoise_mask=dmask))
    cases.append(run_case("inpaint_concat", shape, 4.0, 6.0,
        [(p_plain, {"concat_latent_image": cli, "concat_mask": cmask})],
        [(n_plain, {"concat_latent_image": cli, "concat_mask": cmask})],
        inpaint=True, latent_image=latent_in, denoise_mask=dmask))
    cases.append(run_case("inpaint_no_mask", shape, 4.0, 6.0,
        [(p_plain, {})], [(n_plain, {})], inpaint=True, latent_image=latent_in))

    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cond_batch_golden.json")
    with open(out, "w") as f:
        json.dump({"generator": "tests/data/gen_cond_batch_golden.py", "comfyui": "a125cd84", "cases": cases,
                   "inpaint_pixels": inpaint_pixel_cases()}, f)
    print("wrote", out, [(c["name"], c["model_batch_sizes"]) for c in cases])


if __name__ == "__main__":
    main()
