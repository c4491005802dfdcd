#!/usr/bin/env python3
"""Writes tests/data/toolbox3_golden.safetensors from ComfyUI's own code, run in-process (each
tensor named "<section>/<case>"; the metadata's "errors" maps the cases where ComfyUI raises
to its message, "machine" says where it was made):

* "tiled_scale": comfy.utils.tiled_scale (tiled_scale_multidim) with exactly computable tile
  functions (8x nearest upscale of an affine map; every 8th pixel, as a downscale) on fixed
  random inputs: the tile positions, the feathered masks and the blend, bit for bit.
* "vae_tiled": the VAE of tiny_sd15 (fixtures/models) as comfy.sd.VAE builds it (its ddconfig
  set to the fixture's small widths), through the VAEDecodeTiled / VAEEncodeTiled node
  functions for several tile sizes and overlaps, and the plain VAEDecode / VAEEncode.
* "rebatch": RebatchLatents / RebatchImages (nodes_rebatch.py) on fixed latents with and
  without noise masks and batch_index, and on image lists (metadata "meta": each output's
  batch_index and whether it kept a noise mask).

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_toolbox3_goldens.py [OUT.safetensors]
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
ERRORS = {}
META = {}


def put(name, t):
    TENSORS[name] = t.detach().float().contiguous().clone()


def attempt(name, f):
    """Stores f()'s tensor as `name`, or ComfyUI's error message when it raises."""
    try:
        put(name, f())
    except RuntimeError as e:
        ERRORS[name] = str(e)


def tiled_scale():
    """comfy.utils.tiled_scale on [2, 3, H, W] inputs. "up": the tile function is an 8x
    nearest upscale of 1.75·a − 0.25; "down": every 8th pixel of 2·a − 1 (upscale_amount
    1/8, as VAE encoding uses it). Tiles and overlaps include Python's round-half-even cases."""
    import comfy.utils
    gen = torch.Generator().manual_seed(31)
    up_in = torch.rand([2, 3, 9, 7], generator=gen)
    down_in = torch.rand([1, 3, 96, 80], generator=gen)

    def up(a):
        return (a * 1.75 - 0.25).repeat_interleave(8, 2).repeat_interleave(8, 3)

    def down(a):
        return (a * 2.0 - 1.0)[:, :, ::8, ::8]

    put("tiled_scale/inputs/up", up_in)
    put("tiled_scale/inputs/down", down_in)
    for tx, ty, ov in ((4, 8, 2), (8, 4, 3), (5, 5, 1), (16, 16, 2), (3, 4, 0)):
        attempt(f"tiled_scale/up/{tx}/{ty}/{ov}", lambda: comfy.utils.tiled_scale(
            up_in.clone(), up, tx, ty, ov, upscale_amount=8, out_channels=3))
    for tx, ty, ov in ((64, 32, 20), (32, 64, 12), (48, 40, 4), (128, 128, 16), (40, 24, 0), (64, 32, 16),
                       (32, 64, 8), (48, 40, 8), (36, 44, 4)):
        # some place a tile past the output's edge (an error of torch's narrow)
        attempt(f"tiled_scale/down/{tx}/{ty}/{ov}", lambda: comfy.utils.tiled_scale(
            down_in.clone(), down, tx, ty, ov, upscale_amount=1 / 8, out_channels=3))


def tiny_vae():
    """tiny_sd15's VAE through comfy.sd.VAE: its SD branch with the fixture's widths."""
    from safetensors.torch import load_file
    import comfy.sd
    ckpt = load_file(os.path.join(g.REPO, "fixtures", "models", "checkpoints", "tiny_sd15.safetensors"))
    p = "first_stage_model."
    sd = {k[len(p):]: v for k, v in ckpt.items() if k.startswith(p)}
    ch = sd["encoder.conv_in.weight"].shape[0]
    ch_mult, lvl = [], 0
    while f"encoder.down.{lvl}.block.0.conv1.weight" in sd:
        ch_mult.append(sd[f"encoder.down.{lvl}.block.0.conv1.weight"].shape[0] // ch)
        lvl += 1
    nrb = 0
    while f"encoder.down.0.block.{nrb}.conv1.weight" in sd:
        nrb += 1
    real = comfy.sd.AutoencoderKL

    def kl(**kw):
        kw["ddconfig"] = dict(kw["ddconfig"], ch=ch, ch_mult=ch_mult, num_res_blocks=nrb)
        return real(**kw)
    assert "post_quant_conv.weight" in sd  # the AutoencoderKL branch of comfy.sd.VAE
    comfy.sd.AutoencoderKL = kl
    try:
        vae = comfy.sd.VAE(sd=sd)
    finally:
        comfy.sd.AutoencoderKL = real
    vae.first_stage_model.load_state_dict(sd, strict=True)  # every key used, none missing
    return vae


def vae_tiled():
    import nodes
    vae = tiny_vae()
    gen = torch.Generator().manual_seed(37)
    latent = torch.randn([2, 4, 10, 9], generator=gen)
    image = torch.rand([2, 100, 86, 3], generator=gen)
    put("vae_tiled/inputs/latent", latent)
    put("vae_tiled/inputs/image", image)
    put("vae_tiled/decode/plain", nodes.VAEDecode().decode(vae, {"samples": latent.clone()})[0])
    for ts, ov in ((64, 16), (96, 64), (128, 32), (160, 0), (512, 64)):
        attempt(f"vae_tiled/decode/{ts}/{ov}", lambda: nodes.VAEDecodeTiled().decode(
            vae, {"samples": latent.clone()}, ts, ov, 64, 8)[0])
    put("vae_tiled/encode/plain", nodes.VAEEncode().encode(vae, image.clone())[0]["samples"])
    for ts, ov in ((128, 32), (64, 0), (192, 64), (128, 20), (512, 64)):
        attempt(f"vae_tiled/encode/{ts}/{ov}", lambda: nodes.VAEEncodeTiled().encode(
            vae, image.clone(), ts, ov, 64, 8)[0]["samples"])


def rebatch():
    """RebatchLatents and RebatchImages on fixed lists: latents of two sizes, with and without
    noise masks (one with fewer mask items than samples) and batch_index; batch sizes 1-4.
    META["rebatch"] holds each output's batch_index and whether it has a noise mask."""
    import comfy_extras.nodes_rebatch as nr
    gen = torch.Generator().manual_seed(41)
    lat = [{"samples": torch.randn([3, 4, 4, 5], generator=gen)},
           {"samples": torch.randn([2, 4, 4, 5], generator=gen),
            "noise_mask": torch.rand([1, 1, 32, 40], generator=gen)},
           {"samples": torch.randn([2, 4, 6, 5], generator=gen)},
           {"samples": torch.randn([1, 4, 6, 5], generator=gen), "batch_index": [7]},
           {"samples": torch.randn([2, 4, 4, 5], generator=gen)}]
    for k, l in enumerate(lat):
        put(f"rebatch/inputs/latent{k}", l["samples"])
        if "noise_mask" in l:
            put(f"rebatch/inputs/latent{k}_mask", l["noise_mask"])
    imgs = [torch.rand([3, 4, 5, 3], generator=gen), torch.rand([2, 4, 5, 3], generator=gen)]
    for k, im in enumerate(imgs):
        put(f"rebatch/inputs/image{k}", im)
    META["rebatch"] = {}
    for bs in (1, 2, 3, 4):
        out = nr.LatentRebatch.execute([dict(l) for l in lat], [bs])
        out = out.result[0] if hasattr(out, "result") else out[0]
        META["rebatch"][f"latents/{bs}"] = [{"batch_index": o["batch_index"], "mask": "noise_mask" in o} for o in out]
        for j, o in enumerate(out):
            put(f"rebatch/latents/{bs}/{j}/samples", o["samples"])
            if "noise_mask" in o:
                put(f"rebatch/latents/{bs}/{j}/noise_mask", o["noise_mask"])
        out = nr.ImageRebatch.execute([im.clone() for im in imgs], [bs])
        out = out.result[0] if hasattr(out, "result") else out[0]
        META["rebatch"][f"images/{bs}"] = len(out)
        for j, o in enumerate(out):
            put(f"rebatch/images/{bs}/{j}", o)


def latent_files():
    """SaveLatent writes tests/data/toolbox3_v0.latent (a fixed latent, prompt and
    extra_pnginfo); tests/data/toolbox3_legacy.latent is a legacy file (float16
    latent_tensor, no version marker). LoadLatent's output for both is stored."""
    import shutil
    import tempfile
    import folder_paths
    import nodes
    gen = torch.Generator().manual_seed(43)
    latent = torch.randn([2, 4, 3, 5], generator=gen)
    legacy = (torch.randn([1, 4, 6, 4], generator=gen) * 0.18215).half()
    data = os.path.join(g.REPO, "tests", "data")
    with tempfile.TemporaryDirectory() as d:
        folder_paths.set_output_directory(d)
        folder_paths.set_input_directory(data)
        prompt = {"1": {"class_type": "SaveLatent", "inputs": {"filename_prefix": "t/x"}}}
        extra = {"workflow": {"nodes": [], "version": 0.4}, "note": "ü"}
        ui = nodes.SaveLatent().save({"samples": latent}, "t/x", prompt, extra)
        META["latent_files"] = {"ui": ui["ui"], "prompt": prompt, "extra_pnginfo": extra}
        shutil.copy(os.path.join(d, "t", "x_00001_.latent"), os.path.join(data, "toolbox3_v0.latent"))
    from safetensors.torch import save_file
    save_file({"latent_tensor": legacy}, os.path.join(data, "toolbox3_legacy.latent"))
    put("latent_files/saved", latent)
    for name in ("v0", "legacy"):
        put(f"latent_files/{name}", nodes.LoadLatent().load(f"toolbox3_{name}.latent")[0]["samples"])


def porter_duff():
    """PorterDuffImageComposite.execute for every mode on fixed images and masks (some mask
    regions exactly 0 and 1, so alphas of 0 hit the 1e-5 threshold), same-size and with the
    destination alpha and the source resized (bicubic, center crop)."""
    import comfy_extras.nodes_compositing as nc
    gen = torch.Generator().manual_seed(47)
    inp = {"src": torch.rand([2, 5, 6, 3], generator=gen), "dst": torch.rand([2, 5, 6, 3], generator=gen),
           "src_a": torch.rand([2, 5, 6], generator=gen), "dst_a": torch.rand([2, 5, 6], generator=gen),
           "small_src": torch.rand([1, 4, 5, 3], generator=gen), "small_src_a": torch.rand([1, 3, 4], generator=gen),
           "small_dst_a": torch.rand([1, 4, 4], generator=gen)}
    inp["src_a"][:, :2, :2] = 1.0
    inp["dst_a"][:, :2, 1:3] = 1.0
    inp["src_a"][:, 3:, :] = 0.0
    for k, v in inp.items():
        put(f"porter_duff/inputs/{k}", v)
    for mode in nc.PorterDuffMode:
        for case, args in (("same", ("src", "src_a", "dst", "dst_a")),
                           ("resized", ("small_src", "small_src_a", "dst", "small_dst_a"))):
            r = nc.PorterDuffImageComposite.execute(*[inp[a].clone() for a in args], mode.name)
            r = r.result if hasattr(r, "result") else r
            put(f"porter_duff/{case}/{mode.name}/image", r[0])
            put(f"porter_duff/{case}/{mode.name}/mask", r[1])


def morphology():
    """Morphology.execute (kornia) for every operation and odd, even and larger-than-image
    kernel sizes on fixed RGB and RGBA images."""
    import comfy_extras.nodes_morphology as nm
    gen = torch.Generator().manual_seed(53)
    inp = {"rgb": torch.rand([2, 7, 9, 3], generator=gen), "rgba": torch.rand([1, 6, 5, 4], generator=gen)}
    for k, v in inp.items():
        put(f"morphology/inputs/{k}", v)
    for name, img in inp.items():
        for op in ("erode", "dilate", "open", "close", "gradient", "bottom_hat", "top_hat"):
            for ks in (3, 4, 5, 11):
                r = nm.Morphology.execute(img.clone(), op, ks)
                r = r.result if hasattr(r, "result") else r
                put(f"morphology/{name}/{op}/{ks}", r[0])


def epsilon_scaling():
    """comfy.samplers.cfg_function with the post-CFG function "Epsilon Scaling" sets (alone
    and after RescaleCFG 0.7), on fixed cond / uncond / x, for two factors, cfg 1 and 4.5."""
    import comfy.samplers
    import comfy_extras.nodes_eps as ne
    import comfy_extras.nodes_model_advanced as nma
    from gen_custom_sampling_goldens import Recorder
    gen = torch.Generator().manual_seed(59)
    t = {k: torch.randn([2, 4, 5, 6], generator=gen) for k in ("cond", "uncond", "x")}
    t["x"] = t["x"] * 3.0
    for k, v in t.items():
        put(f"eps/inputs/{k}", v)

    def eps(m, f):
        r = ne.EpsilonScaling.execute(m, f)
        return r.result[0] if hasattr(r, "result") else r[0]
    for f in (1.005, 0.77):
        for name, m in ((f"Eps/{f}", eps(Recorder(), f)),
                        (f"RescaleCFG/0.7+Eps/{f}", eps(nma.RescaleCFG().patch(Recorder(), 0.7)[0], f))):
            for scale in (1.0, 4.5):
                for sigma in (0.8, 7.25):
                    out = comfy.samplers.cfg_function(None, t["cond"].clone(), t["uncond"].clone(), scale,
                                                      t["x"].clone(), torch.full([2], sigma),
                                                      model_options=m.model_options)
                    put(f"eps/{name}/{scale}/{sigma}", out)


def guidance_patches():
    """comfy.samplers.cfg_function with Mahiro's post-CFG function and RenormCFG's CFG
    function (a model of 4 input channels) on fixed cond / uncond / x (batch 1, as RenormCFG
    needs), cfg 1 and 4.5, σ on both sides of cfg_trunc."""
    import types
    import comfy.samplers
    import comfy_extras.nodes_mahiro as nmh
    import comfy_extras.nodes_lumina2 as nl2
    from gen_custom_sampling_goldens import Recorder
    gen = torch.Generator().manual_seed(61)
    t = {k: torch.randn([1, 4, 5, 6], generator=gen) for k in ("cond", "uncond", "x")}
    for k, v in t.items():
        put(f"guidance/inputs/{k}", v)

    def model():
        m = Recorder()
        m.model = types.SimpleNamespace(diffusion_model=types.SimpleNamespace(in_channels=4))
        return m

    def first(r):
        return r.result[0] if hasattr(r, "result") else r[0]
    cases = {"Mahiro": first(nmh.Mahiro.execute(model()))}
    for trunc, renorm in ((100.0, 1.0), (100.0, 0.0), (3.0, 1.0), (100.0, 0.3)):
        cases[f"RenormCFG/{trunc}/{renorm}"] = first(nl2.RenormCFG.execute(model(), trunc, renorm))
    for name, m in cases.items():
        for scale in (1.0, 4.5):
            for sigma in (0.8, 7.25):
                out = comfy.samplers.cfg_function(None, t["cond"].clone(), t["uncond"].clone(), scale,
                                                  t["x"].clone(), torch.full([1], sigma),
                                                  model_options=m.model_options)
                put(f"guidance/{name}/{scale}/{sigma}", out)


def latent_sharpen():
    """LatentApplyOperation with LatentOperationSharpen (nodes_latent.py) on fixed latents,
    several radii / sigmas / alphas (the radius below the latent's size: reflect padding)."""
    import comfy_extras.nodes_latent as nl

    def first(r):
        return r.result[0] if hasattr(r, "result") else r[0]
    gen = torch.Generator().manual_seed(67)
    lat = torch.randn([2, 4, 12, 11], generator=gen)
    put("latent_sharpen/inputs/latent", lat)
    for radius, sigma, alpha in ((9, 1.0, 0.1), (1, 0.5, 2.0), (3, 2.5, 0.0), (5, 1.0, 5.0)):
        op = first(nl.LatentOperationSharpen.execute(radius, sigma, alpha))
        out = first(nl.LatentApplyOperation.execute({"samples": lat.clone()}, op))["samples"]
        put(f"latent_sharpen/{radius}/{sigma}/{alpha}", out)


def main():
    from safetensors.torch import save_file
    out = OUT[0] if OUT else os.path.join(g.REPO, "tests", "data", "toolbox3_golden.safetensors")
    torch.set_num_threads(1)
    with torch.inference_mode():  # as ComfyUI's executor runs nodes
        tiled_scale()
        vae_tiled()
        rebatch()
        latent_files()
        porter_duff()
        morphology()
        epsilon_scaling()
        guidance_patches()
        latent_sharpen()
    save_file(TENSORS, out, metadata={"machine": json.dumps(g.machine()), "errors": json.dumps(ERRORS, sort_keys=True),
                                      "meta": json.dumps(META, sort_keys=True)})


if __name__ == "__main__":
    main()
