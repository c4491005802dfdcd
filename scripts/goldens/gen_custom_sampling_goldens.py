#!/usr/bin/env python3
"""Writes tests/data/custom_sampling_golden.json from ComfyUI's own custom-sampling nodes
(comfy_extras/nodes_custom_sampler.py, nodes_align_your_steps.py, nodes_optimalsteps.py,
nodes_advanced_samplers.py), run in-process on fixed inputs:

* "schedulers": each scheduler node's get_sigmas / execute for several parameter sets;
* "sigma_edits": SplitSigmas, SplitSigmasDenoise, FlipSigmas, SetFirstSigma,
  ExtendIntermediateSigmas on fixed tables;
* "add_noise": AddNoise (RandomNoise seed 5) on the SD1.5 EPS sampling and latent format, for a
  random and a zero latent and three sigma tables;
* "cfg_patches": RescaleCFG, CFGNorm and CFGZeroStar patch functions (from the nodes' own
  patch) run through comfy.samplers.cfg_function on fixed cond/uncond/x tensors;
* "percent_to_sigma": SamplingPercentToSigma on SD1.5 EPS and Flux model samplings;
* "samplers": each sampler node's SAMPLER with non-default inputs, run exactly like the toy
  goldens of gen_sampling_goldens.py (toy denoiser x/(1+sigma^2); CFG++ samplers with the
  uncond x/(2+sigma^2) at cfg 1.5) on the SD1.5 EPS (karras) and Flux 1.15 (simple) samplings,
  10 steps, seed 0.

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_custom_sampling_goldens.py [OUT.json]
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
import comfy.samplers  # noqa: E402
import comfy.sample  # noqa: E402
import comfy_extras.nodes_custom_sampler as ncs  # noqa: E402
import comfy_extras.nodes_align_your_steps as nays  # noqa: E402
import comfy_extras.nodes_optimalsteps as nos  # noqa: E402
import comfy_extras.nodes_advanced_samplers as nas  # noqa: E402


def out0(r):
    """A node's first output (V1 tuple or V3 NodeOutput)."""
    if hasattr(r, "result"):
        r = r.result
    return r[0]


def schedulers():
    ms = g.kinds()
    eps = g.FakePatcher(ms["discrete_eps"])
    flux = g.FakePatcher(ms["flux_1.15"])
    res = {}
    for steps in (1, 4, 10):
        for smax, smin in ((14.614642, 0.0291675), (1.0, 0.01)):
            for rho in (7.0, 3.5):
                res[f"KarrasScheduler/{steps}/{smax}/{smin}/{rho}"] = g.floats(out0(ncs.KarrasScheduler().get_sigmas(steps, smax, smin, rho)))
            res[f"ExponentialScheduler/{steps}/{smax}/{smin}"] = g.floats(out0(ncs.ExponentialScheduler().get_sigmas(steps, smax, smin)))
            for rho in (1.0, 2.5):
                res[f"PolyexponentialScheduler/{steps}/{smax}/{smin}/{rho}"] = g.floats(out0(ncs.PolyexponentialScheduler().get_sigmas(steps, smax, smin, rho)))
            for mu, beta in ((0.0, 0.5), (-1.0, 1.3)):
                res[f"LaplaceScheduler/{steps}/{smax}/{smin}/{mu}/{beta}"] = g.floats(out0(ncs.LaplaceScheduler().get_sigmas(steps, smax, smin, mu, beta)))
        for bd, bm, e in ((19.9, 0.1, 0.001), (10.0, 0.5, 0.01)):
            res[f"VPScheduler/{steps}/{bd}/{bm}/{e}"] = g.floats(out0(ncs.VPScheduler().get_sigmas(steps, bd, bm, e)))
        for name, m in (("eps", eps), ("flux", flux)):
            for a, b in ((0.6, 0.6), (0.5, 0.7)):
                res[f"BetaSamplingScheduler/{name}/{steps}/{a}/{b}"] = g.floats(out0(ncs.BetaSamplingScheduler().get_sigmas(m, steps, a, b)))
    for steps in (3, 4, 10, 20, 37):
        for denoise in (1.0, 0.6, 0.0):
            for t in ("SD1", "SDXL", "SVD"):
                res[f"AlignYourStepsScheduler/{t}/{steps}/{denoise}"] = g.floats(out0(nays.AlignYourStepsScheduler.execute(t, steps, denoise)))
            for t in ("FLUX", "Wan", "Chroma"):
                res[f"OptimalStepsScheduler/{t}/{steps}/{denoise}"] = g.floats(out0(nos.OptimalStepsScheduler.execute(t, steps, denoise)))
    return res


TABLES = {
    "karras10": g.floats(comfy.samplers.calculate_sigmas(g.kinds()["discrete_eps"], "karras", 10)),
    "simple5": g.floats(comfy.samplers.calculate_sigmas(g.kinds()["flux_1.15"], "simple", 5)),
    "short": [3.0, 0.0],
    "one": [2.5],
    "empty": [],
}


def sigma_edits():
    res = {"tables": TABLES}
    for tn, tv in TABLES.items():
        t = torch.FloatTensor(tv)
        for step in (0, 1, 3, 20):
            a, b = ncs.SplitSigmas().get_sigmas(t, step)
            res[f"SplitSigmas/{tn}/{step}"] = [g.floats(a), g.floats(b)]
        for d in (1.0, 0.5, 0.33, 0.0):
            a, b = ncs.SplitSigmasDenoise().get_sigmas(t, d)
            res[f"SplitSigmasDenoise/{tn}/{d}"] = [g.floats(a), g.floats(b)]
        res[f"FlipSigmas/{tn}"] = g.floats(out0(ncs.FlipSigmas().get_sigmas(t.clone())))
        if len(tv):
            res[f"SetFirstSigma/{tn}"] = g.floats(out0(ncs.SetFirstSigma().set_first_sigma(t, 136.0)))
        for steps, start, end, sp in ((2, -1.0, 12.0, "linear"), (4, -1.0, 0.5, "cosine"), (3, 5.0, 0.0, "sine"), (1, -1.0, 0.0, "linear")):
            res[f"ExtendIntermediateSigmas/{tn}/{steps}/{start}/{end}/{sp}"] = g.floats(out0(ncs.ExtendIntermediateSigmas().extend(t, steps, start, end, sp)))
    return res


def percent_to_sigma():
    ms = g.kinds()
    res = {}
    for name in ("discrete_eps", "flux_1.15"):
        m = g.FakePatcher(ms[name])
        for p in (0.0, 0.2, 0.5, 0.8, 1.0):
            for actual in (False, True):
                res[f"{name}/{p}/{actual}"] = float(out0(ncs.SamplingPercentToSigma().get_sigma(m, p, actual)))
    return res


class LatentPatcher(g.FakePatcher):
    """FakePatcher plus the SD1.5 latent format's process_latent_in/out (AddNoise)."""

    def get_model_object(self, name):
        import comfy.latent_formats
        fmt = comfy.latent_formats.SD15()
        if name == "process_latent_in":
            return fmt.process_in
        if name == "process_latent_out":
            return fmt.process_out
        return super().get_model_object(name)


def add_noise():
    ms = g.kinds()["discrete_eps"]
    model = LatentPatcher(ms)
    gen = torch.Generator().manual_seed(77)
    lat = torch.randn([1, 4, 4, 4], generator=gen)
    res = {"latent": [g.f32hex(v) for v in lat.flatten().tolist()]}
    for lname, l in (("random", lat), ("zeros", torch.zeros([1, 4, 4, 4]))):
        for tname in ("karras10", "one", "empty"):
            noise = ncs.Noise_RandomNoise(5)
            out = ncs.AddNoise().add_noise(model, noise, torch.FloatTensor(TABLES[tname]), {"samples": l})
            res[f"{lname}/{tname}"] = [g.f32hex(v) for v in out0(out)["samples"].flatten().tolist()] if isinstance(out, tuple) else [g.f32hex(v) for v in out["samples"].flatten().tolist()]
    return res


class Recorder:
    """Records what a patch node sets on its model clone."""

    def __init__(self):
        self.model_options = {}

    def clone(self):
        return self

    def set_model_sampler_cfg_function(self, f, disable_cfg1_optimization=False):
        self.model_options["sampler_cfg_function"] = f

    def set_model_sampler_post_cfg_function(self, f, disable_cfg1_optimization=False):
        self.model_options.setdefault("sampler_post_cfg_function", []).append(f)


def cfg_patches():
    import comfy_extras.nodes_model_advanced as nma
    import comfy_extras.nodes_cfg as ncfg
    gen = torch.Generator().manual_seed(99)
    cond = torch.randn([2, 4, 5, 6], generator=gen)
    uncond = torch.randn([2, 4, 5, 6], generator=gen)
    x = torch.randn([2, 4, 5, 6], generator=gen) * 3.0
    res = {"cond": [g.f32hex(v) for v in cond.flatten().tolist()],
           "uncond": [g.f32hex(v) for v in uncond.flatten().tolist()],
           "x": [g.f32hex(v) for v in x.flatten().tolist()], "shape": list(cond.shape)}
    cases = {
        "RescaleCFG/0.7": lambda: nma.RescaleCFG().patch(Recorder(), 0.7)[0],
        "RescaleCFG/0.0": lambda: nma.RescaleCFG().patch(Recorder(), 0.0)[0],
        "RescaleCFG/1.0": lambda: nma.RescaleCFG().patch(Recorder(), 1.0)[0],
        "CFGNorm/1.0": lambda: out0(ncfg.CFGNorm.execute(Recorder(), 1.0)),
        "CFGNorm/0.6": lambda: out0(ncfg.CFGNorm.execute(Recorder(), 0.6)),
        "CFGZeroStar": lambda: out0(ncfg.CFGZeroStar.execute(Recorder())),
        "RescaleCFG/0.7+CFGNorm/0.6": lambda: out0(ncfg.CFGNorm.execute(nma.RescaleCFG().patch(Recorder(), 0.7)[0], 0.6)),
    }
    for name, make in cases.items():
        m = make()
        for scale in (1.0, 4.5):
            for sigma in (0.8, 7.25):
                t = torch.full([2], sigma)
                out = comfy.samplers.cfg_function(None, cond.clone(), uncond.clone(), scale, x.clone(), t,
                                                  model_options=m.model_options)
                res[f"{name}/{scale}/{sigma}"] = [g.f32hex(v) for v in out.flatten().tolist()]
    return res


def sampler_cases(model):
    return {
        "SamplerEulerAncestral/0.5/0.8": ncs.SamplerEulerAncestral().get_sampler(0.5, 0.8),
        "SamplerEulerAncestral/0.0/1.0": ncs.SamplerEulerAncestral().get_sampler(0.0, 1.0),
        "SamplerEulerAncestralCFGPP/0.6/0.7": ncs.SamplerEulerAncestralCFGPP().get_sampler(0.6, 0.7),
        "SamplerDPMPP_2S_Ancestral/0.5/1.2": ncs.SamplerDPMPP_2S_Ancestral().get_sampler(0.5, 1.2),
        "SamplerLMS/2": ncs.SamplerLMS().get_sampler(2),
        "SamplerDPMPP_3M_SDE/0.5/0.9/cpu": ncs.SamplerDPMPP_3M_SDE().get_sampler(0.5, 0.9, "cpu"),
        "SamplerDPMPP_2M_SDE/heun/0.7/1.1/gpu": ncs.SamplerDPMPP_2M_SDE().get_sampler("heun", 0.7, 1.1, "gpu"),
        "SamplerDPMPP_2M_SDE/midpoint/0.0/1.0/cpu": ncs.SamplerDPMPP_2M_SDE().get_sampler("midpoint", 0.0, 1.0, "cpu"),
        "SamplerDPMPP_SDE/0.5/0.9/0.3/cpu": ncs.SamplerDPMPP_SDE().get_sampler(0.5, 0.9, 0.3, "cpu"),
        "SamplerDPMAdaptative/2/0.1/0.01/0.1/0.1/0.9/0.1/0.8/0.0/1.0": ncs.SamplerDPMAdaptative().get_sampler(2, 0.1, 0.01, 0.1, 0.1, 0.9, 0.1, 0.8, 0.0, 1.0),
        "SamplerDPMAdaptative/3/0.05/0.0078/0.05/0.0/1.0/0.0/0.81/0.5/1.0": ncs.SamplerDPMAdaptative().get_sampler(3, 0.05, 0.0078, 0.05, 0.0, 1.0, 0.0, 0.81, 0.5, 1.0),
        "SamplerER_SDE/ER-SDE/2/1.0/0.8": ncs.SamplerER_SDE().get_sampler("ER-SDE", 2, 1.0, 0.8),
        "SamplerER_SDE/Reverse-time SDE/3/0.5/1.0": ncs.SamplerER_SDE().get_sampler("Reverse-time SDE", 3, 0.5, 1.0),
        "SamplerER_SDE/ODE/1/1.0/1.0": ncs.SamplerER_SDE().get_sampler("ODE", 1, 1.0, 1.0),
        "SamplerSASolver/0.7/0.1/0.9/0.9/2/3/False/True": ncs.SamplerSASolver().get_sampler(model, 0.7, 0.1, 0.9, 0.9, 2, 3, False, True),
        "SamplerSASolver/1.0/0.2/0.8/1.0/3/4/True/False": ncs.SamplerSASolver().get_sampler(model, 1.0, 0.2, 0.8, 1.0, 3, 4, True, False),
        "SamplerEulerCFGpp/regular": nas.SamplerEulerCFGpp.execute("regular"),
        "SamplerEulerCFGpp/alternative": nas.SamplerEulerCFGpp.execute("alternative"),
    }


def run_sampler(ms, sampler, sigmas, cfg_pp):
    latent = torch.zeros([1, 4, 4, 4])
    noise = comfy.sample.prepare_noise(latent, 0)
    wrap = g.ToyCfgWrap(ms) if cfg_pp else g.ToyWrap(ms)
    out = sampler.sample(wrap, sigmas.clone(), {"seed": 0, "model_options": {}}, None, noise, latent, None, True)
    return [g.f32hex(v) for v in out.flatten().tolist()]


def samplers():
    ms = g.kinds()
    res = {"cfg_pp_scale": g.TOY_CFG}
    for table, sched in (("discrete_eps", "karras"), ("flux_1.15", "simple")):
        m = ms[table]
        model = g.FakePatcher(m)
        sigmas = comfy.samplers.calculate_sigmas(m, sched, 10)
        res[table] = {"scheduler": sched, "sigmas": g.floats(sigmas)}
        for name, s in sampler_cases(model).items():
            s = out0(s)
            cfg_pp = "CFGPP" in name or "CFGpp" in name
            res[table][name] = run_sampler(m, s, sigmas, cfg_pp)
    return res


def main():
    out = OUT[0] if OUT else os.path.join(g.REPO, "tests", "data", "custom_sampling_golden.json")
    torch.set_num_threads(1)
    data = {"machine": g.machine(), "schedulers": schedulers(), "sigma_edits": sigma_edits(),
            "percent_to_sigma": percent_to_sigma(), "samplers": samplers(), "add_noise": add_noise(),
            "cfg_patches": cfg_patches()}
    with open(out, "w") as f:
        json.dump(g.finite(data), f, indent=0, allow_nan=False)
        f.write("\n")


if __name__ == "__main__":
    main()
