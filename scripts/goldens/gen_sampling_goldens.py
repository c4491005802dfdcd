#!/usr/bin/env python3
"""Writes the model-sampling goldens of comfyrs from ComfyUI's own modules:

* tests/data/sampling_sigmas_golden.json -- for every model-sampling kind (built the way ComfyUI
  builds it: `comfy.model_base.model_sampling(<supported model config>, <ModelType>)`, or by running
  the ModelSampling* node's own `patch`): table samples, sigma_min/max, timestep()/sigma() values,
  percent_to_sigma values, every scheduler of `comfy.samplers.SCHEDULER_NAMES` at 4/10/20 steps,
  BasicScheduler with denoise < 1, KSampler's sigma selection (discard-penultimate samplers,
  denoise) and SDTurboScheduler.
* tests/data/samplers_toy_const_golden.json -- ComfyUI's samplers on CONST (flow) model samplings
  with the toy denoiser x / (1 + sigma^2), exactly as tests/data/samplers_toy_golden.json was made
  for EPS (see /work/shared/parity/README.md, "The toy-denoiser goldens"): latent zeros [1,4,4,4],
  noise = comfy.sample.prepare_noise(latent, 0), extra_args {"seed": 0}, run through
  KSAMPLER.sample (noise_scaling with max_denoise at the start, inverse_noise_scaling at the end),
  scheduler "simple", 10 steps, KSampler's sigma selection per sampler.
* tests/data/samplers_toy_extra_golden.json -- the samplers added for issue 15 (CFG++ variants,
  heunpp2, dpm_fast / dpm_adaptive, res_multistep*, gradient_estimation*, er_sde, seeds_2/3,
  sa_solver*) the same way on an EPS (karras), a v-prediction (normal) and two CONST (simple)
  model samplings; the CFG++ samplers get a toy model with a distinct uncond (see ToyCfgWrap).

Usage (ComfyUI v0.3.64 source and torch are NOT part of this repository; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python /path/to/comfyrs/scripts/goldens/gen_sampling_goldens.py [OUT_DIR]
OUT_DIR defaults to tests/data of this repository. `--check-eps` also re-runs the EPS toy golden
and reports how many of its bits this machine's torch reproduces (informational).
"""
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.environ.get("COMFYUI", os.getcwd()))
_ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
sys.argv = [sys.argv[0]] + [a for a in sys.argv[1:] if a.startswith("--")] + ["--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
sys.argv = [sys.argv[0], "--cpu"]
import torch  # noqa: E402
import comfy.model_base  # noqa: E402
import comfy.model_sampling  # noqa: E402
import comfy.sample  # noqa: E402
import comfy.samplers  # noqa: E402
import comfy.supported_models  # noqa: E402
import comfy_extras.nodes_custom_sampler as ncs  # noqa: E402
import comfy_extras.nodes_model_advanced as nma  # noqa: E402
from comfy.model_base import ModelType  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def finite(v):
    """JSON has no inf / nan: such values are written as the strings "inf", "-inf", "nan"."""
    if isinstance(v, float) and not math.isfinite(v):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, (list, tuple)):
        return [finite(x) for x in v]
    if isinstance(v, dict):
        return {k: finite(x) for k, x in v.items()}
    return v


def f32hex(v):
    return struct.pack(">f", float(v)).hex()


def floats(t):
    return [float(v) for v in torch.as_tensor(t).flatten().tolist()]


class FakeInner:
    def __init__(self, ms, config):
        self.model_sampling = ms
        self.model_config = config


class FakePatcher:
    """Just enough of comfy.model_patcher.ModelPatcher for the ModelSampling* nodes and for
    the scheduler nodes / KSampler (`get_model_object("model_sampling")`)."""

    def __init__(self, ms, config=None):
        self.model = FakeInner(ms, config)
        self.patches = {}

    def clone(self):
        c = FakePatcher(self.model.model_sampling, self.model.model_config)
        c.patches = dict(self.patches)
        return c

    def add_object_patch(self, name, obj):
        self.patches[name] = obj

    def get_model_object(self, name):
        if name in self.patches:
            return self.patches[name]
        assert name == "model_sampling"
        return self.model.model_sampling


def config(cls, unet_config=None):
    return cls(dict(unet_config or {}))


def node_sampling(node_cls, fn, **kw):
    """Runs a ModelSampling* node's own patch on an SD1.5 model; returns its model sampling."""
    base = FakePatcher(comfy.model_base.model_sampling(config(comfy.supported_models.SD15), ModelType.EPS),
                       config(comfy.supported_models.SD15))
    out = getattr(node_cls(), fn)(base, **kw)[0]
    return out.get_model_object("model_sampling")


def kinds():
    sd15 = config(comfy.supported_models.SD15)
    sdxl = config(comfy.supported_models.SDXL)
    ms = comfy.model_base.model_sampling
    k = {
        # ModelSamplingDiscrete, scaled-linear betas 0.00085..0.012
        "discrete_eps": ms(sd15, ModelType.EPS),
        "discrete_v": ms(sd15, ModelType.V_PREDICTION),
        "sdxl_eps": ms(sdxl, ModelType.EPS),
        "discrete_v_zsnr": node_sampling(nma.ModelSamplingDiscrete, "patch", sampling="v_prediction", zsnr=True),
        "discrete_eps_zsnr": node_sampling(nma.ModelSamplingDiscrete, "patch", sampling="eps", zsnr=True),
        "discrete_lcm": node_sampling(nma.ModelSamplingDiscrete, "patch", sampling="lcm", zsnr=False),
        "discrete_x0": node_sampling(nma.ModelSamplingDiscrete, "patch", sampling="x0", zsnr=False),
        "discrete_img_to_img": node_sampling(nma.ModelSamplingDiscrete, "patch", sampling="img_to_img", zsnr=False),
        # ModelSamplingDiscreteFlow + CONST
        "flow_shift1_mult1": ms(config(comfy.supported_models.FluxSchnell), ModelType.FLOW),
        "flow_shift3_mult1000": ms(config(comfy.supported_models.SD3), ModelType.FLOW),
        "sd3_node_shift3": node_sampling(nma.ModelSamplingSD3, "patch", shift=3.0),
        "auraflow_node_shift1.73": node_sampling(nma.ModelSamplingAuraFlow, "patch_aura", shift=1.73),
        # ModelSamplingFlux + CONST
        "flux_1.15": ms(config(comfy.supported_models.Flux), ModelType.FLUX),
        "flux_node_256x256": node_sampling(nma.ModelSamplingFlux, "patch", max_shift=1.15, base_shift=0.5, width=256, height=256),
        "flux_node_128x128": node_sampling(nma.ModelSamplingFlux, "patch", max_shift=1.15, base_shift=0.5, width=128, height=128),
        "flux_node_768x1344": node_sampling(nma.ModelSamplingFlux, "patch", max_shift=1.15, base_shift=0.5, width=768, height=1344),
        "flux_node_1024x1024": node_sampling(nma.ModelSamplingFlux, "patch", max_shift=1.15, base_shift=0.5, width=1024, height=1024),
        # Continuous (node defaults)
        "continuous_edm_v": node_sampling(nma.ModelSamplingContinuousEDM, "patch", sampling="v_prediction", sigma_max=120.0, sigma_min=0.002),
        "continuous_edm_edm": node_sampling(nma.ModelSamplingContinuousEDM, "patch", sampling="edm", sigma_max=120.0, sigma_min=0.002),
        "continuous_edm_eps": node_sampling(nma.ModelSamplingContinuousEDM, "patch", sampling="eps", sigma_max=80.0, sigma_min=0.002),
        "continuous_edm_cosmos": node_sampling(nma.ModelSamplingContinuousEDM, "patch", sampling="cosmos_rflow", sigma_max=80.0, sigma_min=0.002),
        "continuous_v": node_sampling(nma.ModelSamplingContinuousV, "patch", sampling="v_prediction", sigma_max=500.0, sigma_min=0.03),
    }
    return k


def describe(ms):
    d = {"classes": [c.__name__ for c in type(ms).__mro__[1:3]]}
    for a in ("shift", "multiplier", "sigma_data", "zsnr"):
        if hasattr(ms, a):
            d[a] = getattr(ms, a)
    return d


def table_samples(ms):
    s = ms.sigmas
    n = len(s)
    idx = sorted(set(list(range(0, n, max(1, n // 97))) + [1, 2, n - 2, n - 1]))
    return {"len": n, "index": idx, "value": [float(s[i]) for i in idx]}


PERCENTS = [-0.5, 0.0, 1e-4, 0.1, 0.25, 0.5, 0.6, 0.75, 0.9, 0.9999, 1.0, 1.5]


def sigma_maps(ms):
    smin, smax = float(ms.sigma_min), float(ms.sigma_max)
    probe = [smax, smin, (smax + smin) / 2, 1.0, 0.5, 0.25, 0.1, float(ms.sigmas[len(ms.sigmas) // 3])]
    ts = []
    for p in probe:
        t = ms.timestep(torch.tensor(p, dtype=torch.float32))
        ts.append(float(t))
    tprobe = [float(t) for t in ts] + [0.0, 0.3, 0.5, 1.0, 3.5, 100.25, 500.5, 998.9]
    sig = []
    for t in tprobe:
        sig.append(float(ms.sigma(torch.tensor(t, dtype=torch.float32))))
    return {
        "timestep_of": probe, "timestep": ts,
        "sigma_of": tprobe, "sigma": sig,
        "percent": PERCENTS, "percent_to_sigma": [float(ms.percent_to_sigma(p)) for p in PERCENTS],
    }


def scheduler_goldens(ms):
    out = {}
    for name in comfy.samplers.SCHEDULER_NAMES:
        for steps in (4, 10, 20):
            try:
                out[f"{name}/{steps}"] = floats(comfy.samplers.calculate_sigmas(ms, name, steps))
            except Exception as e:
                out[f"{name}/{steps}"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def basic_scheduler(ms):
    model = FakePatcher(ms)
    out = {}
    for name in comfy.samplers.SCHEDULER_NAMES:
        for steps, denoise in ((10, 0.6), (4, 0.35)):
            out[f"{name}/{steps}/{denoise}"] = floats(ncs.BasicScheduler().get_sigmas(model, name, steps, denoise)[0])
    return out


def ksampler_sigmas(ms):
    model = FakePatcher(ms)
    out = {}
    for sampler in ("euler", "dpm_2", "uni_pc"):
        for sched in ("simple", "normal", "karras"):
            for steps, denoise in ((10, 1.0), (10, 0.5)):
                k = comfy.samplers.KSampler(model, steps, "cpu", sampler=sampler, scheduler=sched, denoise=denoise)
                out[f"{sampler}/{sched}/{steps}/{denoise}"] = floats(k.sigmas)
    return out


def sd_turbo(ms):
    model = FakePatcher(ms)
    out = {}
    for steps, denoise in ((1, 1.0), (4, 1.0), (10, 1.0), (2, 0.5), (4, 0.75), (3, 0.0)):
        try:
            out[f"{steps}/{denoise}"] = floats(ncs.SDTurboScheduler().get_sigmas(model, steps, denoise)[0])
        except Exception as e:  # ComfyUI fails for some kinds (e.g. cosmos_rflow): record that
            out[f"{steps}/{denoise}"] = {"error": f"{type(e).__name__}: {e}"}
    return out


def flux_node_shifts():
    out = {}
    for w, h in ((1024, 1024), (512, 512), (256, 256), (128, 128), (768, 1344), (16, 16), (8192, 8192)):
        for mx, base in ((1.15, 0.5), (2.0, 0.25)):
            ms = node_sampling(nma.ModelSamplingFlux, "patch", max_shift=mx, base_shift=base, width=w, height=h)
            out[f"{w}x{h}/{mx}/{base}"] = ms.shift
    return out


def sigmas_golden():
    res = {"kinds": {}, "flux_node_shift": flux_node_shifts()}
    for name, ms in kinds().items():
        res["kinds"][name] = {
            "describe": describe(ms),
            "sigma_min": float(ms.sigma_min), "sigma_max": float(ms.sigma_max),
            "table": table_samples(ms),
            "maps": sigma_maps(ms),
            "schedulers": scheduler_goldens(ms),
            "basic_scheduler": basic_scheduler(ms),
            "ksampler": ksampler_sigmas(ms),
            "sd_turbo": sd_turbo(ms),
        }
    return res


# ---- toy-denoiser sampler goldens ----

class ToyWrap:
    """The CFG-wrapped model as KSAMPLER sees it: model(x, sigma, model_options, seed) -> x0."""

    def __init__(self, ms):
        self.inner_model = FakeInner(ms, None)
        self.model_patcher = FakePatcher(ms)

    def __call__(self, x, sigma, model_options={}, seed=None, **kw):
        s = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
        return x / (1 + s * s)


def run_toy(ms, sampler, sigmas):
    latent = torch.zeros([1, 4, 4, 4])
    noise = comfy.sample.prepare_noise(latent, 0)
    wrap = ToyWrap(ms)
    s = comfy.samplers.sampler_object(sampler)
    out = s.sample(wrap, sigmas.clone(), {"seed": 0, "model_options": {}}, None, noise, latent, None, True)
    return noise, out


SUPPORTED = ["euler", "euler_ancestral", "heun", "dpm_2", "dpm_2_ancestral", "lms", "dpmpp_2s_ancestral",
             "dpmpp_sde", "dpmpp_sde_gpu", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_2m_sde_gpu", "dpmpp_2m_sde_heun",
             "dpmpp_2m_sde_heun_gpu", "dpmpp_3m_sde", "dpmpp_3m_sde_gpu", "ddpm", "lcm", "ipndm", "ipndm_v",
             "deis", "ddim", "uni_pc", "uni_pc_bh2"]


def toy_goldens(ms, scheduler, steps):
    model = FakePatcher(ms)
    res = {}
    for sampler in SUPPORTED:
        k = comfy.samplers.KSampler(model, steps, "cpu", sampler=sampler, scheduler=scheduler, denoise=1.0)
        sig = k.sigmas.clone()
        noise, out = run_toy(ms, sampler, sig)
        flat = out.flatten().tolist()
        res["noise_hex"] = [f32hex(v) for v in noise.flatten().tolist()]
        res[sampler] = {
            "sigmas": floats(k.sigmas),
            "sum": float(out.double().sum()),
            "first4": flat[:4],
            "hex": [f32hex(v) for v in flat],
        }
    return res


def machine():
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, torch {torch.__version__} CPU capability {torch.backends.cpu.get_cpu_capability()}"


def const_goldens():
    ks = kinds()
    return {
        "machine": machine(),
        "setup": "toy denoiser x/(1+sigma^2), latent zeros [1,4,4,4], prepare_noise seed 0, extra_args "
                 "seed 0, KSAMPLER.sample (noise_scaling / inverse_noise_scaling), KSampler sigmas "
                 "(scheduler simple, 10 steps, denoise 1.0)",
        "flux_1.15": toy_goldens(ks["flux_1.15"], "simple", 10),
        "flow_shift3_mult1000": toy_goldens(ks["flow_shift3_mult1000"], "simple", 10),
    }


# ---- the samplers added in issue 15: eps, v and flow tables ----

EXTRA = ["euler_cfg_pp", "euler_ancestral_cfg_pp", "heunpp2", "dpm_fast", "dpm_adaptive",
         "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp", "res_multistep", "res_multistep_cfg_pp",
         "res_multistep_ancestral", "res_multistep_ancestral_cfg_pp", "gradient_estimation",
         "gradient_estimation_cfg_pp", "er_sde", "seeds_2", "seeds_3", "sa_solver", "sa_solver_pece"]

# The CFG++ samplers read the unconditional prediction through a `sampler_post_cfg_function`:
# their toy model has a cond x / (1 + sigma^2), an uncond x / (2 + sigma^2) and this CFG scale,
# combined by ComfyUI's own `cfg_function` (which runs the post-CFG functions).
TOY_CFG = 1.5


class ToyCfgWrap(ToyWrap):
    def __call__(self, x, sigma, model_options={}, seed=None, **kw):
        s = sigma.reshape(sigma.shape[:1] + (1,) * (x.ndim - 1))
        cond = x / (1 + s * s)
        uncond = x / (2 + s * s)
        return comfy.samplers.cfg_function(self, cond, uncond, TOY_CFG, x, sigma, model_options=model_options)


def extra_table(ms, scheduler, steps):
    model = FakePatcher(ms)
    res = {"scheduler": scheduler, "steps": steps, "cfg_pp_scale": TOY_CFG}
    latent = torch.zeros([1, 4, 4, 4])
    for sampler in EXTRA:
        k = comfy.samplers.KSampler(model, steps, "cpu", sampler=sampler, scheduler=scheduler, denoise=1.0)
        noise = comfy.sample.prepare_noise(latent, 0)
        wrap = ToyCfgWrap(ms) if "cfg_pp" in sampler else ToyWrap(ms)
        s = comfy.samplers.sampler_object(sampler)
        out = s.sample(wrap, k.sigmas.clone(), {"seed": 0, "model_options": {}}, None, noise, latent, None, True)
        flat = out.flatten().tolist()
        res["noise_hex"] = [f32hex(v) for v in noise.flatten().tolist()]
        res[sampler] = {
            "sigmas": floats(k.sigmas),
            "sum": float(out.double().sum()),
            "first4": flat[:4],
            "hex": [f32hex(v) for v in flat],
        }
    return res


def extra_goldens():
    ks = kinds()
    return {
        "machine": machine(),
        "setup": "toy denoiser x/(1+sigma^2) (CFG++ samplers: cond x/(1+sigma^2), uncond x/(2+sigma^2), "
                 "cfg_function at cfg_pp_scale), latent zeros [1,4,4,4], prepare_noise seed 0, extra_args "
                 "seed 0, KSAMPLER.sample (noise_scaling / inverse_noise_scaling), KSampler sigmas, denoise 1.0",
        "discrete_eps": extra_table(ks["discrete_eps"], "karras", 10),
        "discrete_v": extra_table(ks["discrete_v"], "normal", 10),
        "flux_1.15": extra_table(ks["flux_1.15"], "simple", 10),
        "flow_shift3_mult1000": extra_table(ks["flow_shift3_mult1000"], "simple", 10),
    }


def check_eps():
    path = os.path.join(REPO, "tests", "data", "samplers_toy_golden.json")
    old = json.load(open(path))
    ms = kinds()["discrete_eps"]
    new = toy_goldens(ms, "karras", 10)
    for name in SUPPORTED:
        if name not in old:
            continue
        same = sum(a == b for a, b in zip(old[name]["hex"], new[name]["hex"]))
        print(f"EPS toy golden {name:22} {same}/64 bits equal on this machine")


def main():
    out_dir = _ARGS[0] if _ARGS else os.path.join(REPO, "tests", "data")
    torch.set_num_threads(1)
    with open(os.path.join(out_dir, "sampling_sigmas_golden.json"), "w") as f:
        json.dump(finite(sigmas_golden()), f, indent=0, allow_nan=False)
        f.write("\n")
    with open(os.path.join(out_dir, "samplers_toy_const_golden.json"), "w") as f:
        json.dump(finite(const_goldens()), f, indent=0, allow_nan=False)
        f.write("\n")
    with open(os.path.join(out_dir, "samplers_toy_extra_golden.json"), "w") as f:
        json.dump(finite(extra_goldens()), f, indent=0, allow_nan=False)
        f.write("\n")
    if "--check-eps" in sys.argv or os.environ.get("CHECK_EPS"):
        check_eps()


if __name__ == "__main__":
    main()
