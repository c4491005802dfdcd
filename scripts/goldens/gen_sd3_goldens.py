"""Goldens for comfyrs's SD3 / SD3.5 support (issue 14), computed by ComfyUI's own code on
the project's tiny fixture files.

Run on CPU with the reference env (ComfyUI v0.3.64; see /work/ref/README.txt), after
`cargo run --bin gen_fixtures`:

    cd /path/to/ComfyUI && /path/to/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_sd3_goldens.py /path/to/comfyrs

ComfyUI runs with `--cpu --force-fp32` (diffusion model in f32) and its default fp16
text-encoder storage (the fixtures are fp16 already, so this is what f32 storage gives too).
The tiny MMDiTs have depth 2 (hidden 128 = 64 x depth), so ComfyUI detects them with its own
rules; the tiny text encoders get their sizes through ComfyUI's `clip_l_model_config` /
`clip_g_model_config` / `t5xxl_model_config` options.

Writes tests/data/sd3/:
  module.safetensors + module.json : for each tiny MMDiT (fixtures/models/diffusion_models/
      tiny_sd3_medium, tiny_sd35_large, tiny_sd35_medium), `model_detection.
      model_config_from_unet` (the detected unet_config is in module.json) and the model
      class ComfyUI builds from it, then `forward` on seeded inputs: `<v>.out` (x [2,16,6,8],
      timesteps [730, 210], context [2,9,4096], y [2,80]), `<v>.odd` (x [1,16,5,7]: circular
      padding, crop), `<v>.noy` (y None: no y_embedder term); and `step.denoised`:
      `model_base.SD3.apply_model` of the SD3.5-medium file at sigma 0.6 (ModelSamplingDiscrete
      Flow shift 3, CONST prediction), through `extra_conds`; `sd35_large_fp8_scaled.out`: the
      scaled-fp8 copy of the SD3.5-large file loaded by `load_diffusion_model_state_dict`
      (UNETLoader), same inputs as `<v>.out`.
  text.safetensors + text.json : SD3 conditioning (`encode_from_tokens`, cond and pooled;
      each cond stored as its channels 0..128 and 768..896, with its shape and the largest
      |value| of the other channels in text.json):
      * `ckpt.<i>`: the tiny checkpoint's CLIP (CLIP-L + CLIP-G, loaded by
        `load_state_dict_guess_config`) on several prompts (weights, long prompts);
      * `sd3node.<case>`: `CLIPTextEncodeSD3` with empty / different prompts and both
        `empty_padding` values;
      * `layer-2`: CLIPSetLastLayer(-2);
      * `triple.*` / `triple_node.*` / `g_t5.*`: TripleCLIPLoader's set (CLIP-L + CLIP-G +
        T5-XXL) and CLIP-G + T5-XXL with a T5 of SD3's real width 4096 (1 block, 2048-token
        vocabulary: fixture.rs `tiny_t5xxl_wide_bytes`, written through `cargo run --bin
        gen_fixtures -- --sd3-wide-t5`), so its output concatenates after the CLIP tokens;
      * `only_l.*`, `only_g.*`, `only_t5.*`: `sd3_clip` with one member (CLIPLoader type sd3:
        the checkpoint's 3-layer CLIP-L, tiny_clip_g, tiny_t5xxl), the member's weights loaded
        into it directly (ComfyUI's file routing needs the real
        depths; comfyrs routes by structure, tested separately).
  sampling.safetensors + sampling.json : the tiny checkpoint through ComfyUI's KSampler
      (`nodes.common_ksampler`, fix_empty_latent_channels included) on an
      EmptySD3LatentImage-shaped zero latent [1,16,8,12] with CLIPTextEncode prompts:
      `template` (euler, sgm_uniform, 4 steps, cfg 4.01, seed 42), `shift5` (ModelSamplingSD3
      shift 5, dpmpp_2m, simple, 3 steps, cfg 3, seed 7), `zero_neg` (the SD3 template's
      negative: ConditioningZeroOut for 10%..100% combined with the encoded negative for
      0..10%, euler, sgm_uniform, 4 steps, cfg 4.5, seed 3), `triple` (prompts encoded by
      the TripleCLIPLoader set with the wide T5, euler, sgm_uniform, 3 steps, cfg 5.45,
      seed 11), `slg` (the template with SkipLayerGuidanceSD3 layers "0", scale 3, 1%..50%).
"""
import atexit
import json
import os
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "sd3")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.ldm.modules.attention as attn  # noqa: E402
import comfy.model_detection  # noqa: E402
import comfy.sd  # noqa: E402
import comfy.text_encoders.sd3_clip as sd3_clip  # noqa: E402
import nodes  # noqa: E402
from comfy_extras.nodes_model_advanced import ModelSamplingSD3  # noqa: E402
from comfy_extras.nodes_sd3 import CLIPTextEncodeSD3, SkipLayerGuidanceSD3  # noqa: E402

assert attn.optimized_attention is attn.attention_sub_quad, attn.optimized_attention

FIX = os.path.join(REPO, "fixtures", "models")
TE_OPTS = {
    "clip_l_model_config": {"hidden_size": 32, "intermediate_size": 128,
                            "num_attention_heads": 4, "num_hidden_layers": 3},
    "clip_g_model_config": {"hidden_size": 48, "intermediate_size": 192,
                            "num_attention_heads": 6, "num_hidden_layers": 3,
                            "projection_dim": 48},
    "t5xxl_model_config": {"d_ff": 64, "d_kv": 8, "d_model": 32, "num_heads": 4,
                           "num_layers": 2},
}
WIDE_T5 = {"d_ff": 32, "d_kv": 8, "d_model": 4096, "num_heads": 2, "num_layers": 1,
           "vocab_size": 2048}
VARIANTS = ["sd3_medium", "sd35_large", "sd35_medium"]


def wide_t5_file():
    """The uncommitted 4096-wide tiny T5 (fixture.rs `tiny_t5xxl_wide_bytes`), written by
    the project's own generator."""
    tmp = tempfile.mkdtemp(prefix="sd3_goldens_")
    atexit.register(shutil.rmtree, tmp, True)
    path = os.path.join(tmp, "tiny_t5xxl_wide.safetensors")
    subprocess.run(["cargo", "run", "--quiet", "--bin", "gen_fixtures", "--", "--sd3-wide-t5",
                    path], cwd=REPO, check=True)
    return path


def json_safe(cfg):
    out = {}
    for k, v in cfg.items():
        if isinstance(v, torch.dtype):
            v = str(v)
        out[k] = v
    return out


def load_mmdit(name):
    sd = load_file(os.path.join(FIX, "diffusion_models", f"tiny_{name}.safetensors"))
    mc = comfy.model_detection.model_config_from_unet(sd, "")
    assert mc is not None and type(mc).__name__ == "SD3", (name, mc)
    mc.set_inference_dtype(torch.float32, None)
    model = mc.get_model(sd, "")
    model.load_model_weights(sd, "")
    return mc, model


def module_goldens():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 16, 6, 8, generator=g)
    t = torch.tensor([730.0, 210.0])
    ctx = torch.randn(2, 9, 4096, generator=g)
    y = torch.randn(2, 80, generator=g)
    xo = torch.randn(1, 16, 5, 7, generator=g)
    out = {"x": x, "t": t, "context": ctx, "y": y, "x_odd": xo}
    meta = {}
    for v in VARIANTS:
        mc, model = load_mmdit(v)
        dm = model.diffusion_model
        meta[v] = json_safe(mc.unet_config)
        with torch.no_grad():
            out[f"{v}.out"] = dm(x, t, context=ctx, y=y)
            out[f"{v}.odd"] = dm(xo, t[:1], context=ctx[:1], y=y[:1])
            out[f"{v}.noy"] = dm(x, t, context=ctx, y=None)
        if v == "sd35_medium":
            sigma = torch.tensor([0.6])
            xs = x[:1]
            conds = model.extra_conds(pooled_output=y[:1], cross_attn=ctx[:1], noise=xs,
                                      device=torch.device("cpu"))
            kw = {k: c.cond for k, c in conds.items() if k != "c_crossattn"}
            with torch.no_grad():
                out["step.denoised"] = model.apply_model(
                    xs, sigma, c_crossattn=conds["c_crossattn"].cond, **kw)
            meta["step"] = {"sigma": 0.6, "shift": float(model.model_sampling.shift),
                            "multiplier": float(model.model_sampling.multiplier)}
    # The scaled-fp8 file through UNETLoader's path (`load_diffusion_model_state_dict`:
    # scaled_fp8 marker popped, scaled fp8 Linear ops).
    sd = load_file(os.path.join(FIX, "diffusion_models", "tiny_sd35_large_fp8_scaled.safetensors"))
    patcher = comfy.sd.load_diffusion_model_state_dict(sd)
    dm = patcher.model.diffusion_model
    lin = dm.joint_blocks[0].x_block.attn.qkv
    meta["fp8_scaled"] = {"weight_dtype": str(lin.weight.dtype),
                          "ops": type(lin).__module__ + "." + type(lin).__qualname__}
    with torch.no_grad():
        out["sd35_large_fp8_scaled.out"] = dm(x, t, context=ctx, y=y)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "module.safetensors"))
    with open(os.path.join(OUT_DIR, "module.json"), "w") as f:
        json.dump(meta, f, indent=1)


def load_checkpoint(output_model=True):
    sd = load_file(os.path.join(FIX, "checkpoints", "tiny_sd35_medium.safetensors"))
    model, clip, _, _ = comfy.sd.load_state_dict_guess_config(
        sd, output_vae=False, output_clip=True, output_model=output_model,
        te_model_options=TE_OPTS)
    return model, clip


def member_sd(member, wide_t5=None):
    if member == "l":
        # The checkpoint's 3-layer CLIP-L (tiny_clip_l has 2, too few for a penultimate
        # layer in ComfyUI's SDClipModel).
        pre = "text_encoders.clip_l.transformer."
        ck = load_file(os.path.join(FIX, "checkpoints", "tiny_sd35_medium.safetensors"))
        sd = {k[len(pre):]: v for k, v in ck.items() if k.startswith(pre)}
    elif member == "t5" and wide_t5 is not None:
        sd = load_file(wide_t5)
    else:
        f = {"g": "tiny_clip_g", "t5": "tiny_t5xxl"}[member]
        sd = load_file(os.path.join(FIX, "text_encoders", f"{f}.safetensors"))
    return sd


def members_clip(members, wide_t5=None):
    """sd3_clip with the given members (CLIPLoader / DualCLIPLoader / TripleCLIPLoader type
    sd3), each fixture file loaded into its member."""
    class Target:
        pass
    target = Target()
    target.params = {}
    kw = {"clip_l": "l" in members, "clip_g": "g" in members, "t5": "t5" in members}
    if "t5" in members:
        kw["dtype_t5"] = torch.float16
    target.clip = sd3_clip.sd3_clip(**kw)
    target.tokenizer = sd3_clip.SD3Tokenizer
    opts = dict(TE_OPTS)
    if wide_t5 is not None:
        opts["t5xxl_model_config"] = WIDE_T5
    clip = comfy.sd.CLIP(target, model_options=opts)
    for member in members:
        m = {"l": "clip_l", "g": "clip_g", "t5": "t5xxl"}[member]
        missing, _ = getattr(clip.cond_stage_model, m).load_sd(member_sd(member, wide_t5))
        assert not [k for k in missing if "text_projection" not in k and "position_ids" not in k], missing
    return clip


def one_member_clip(member):
    return members_clip([member])


TRIPLE_PROMPTS = ["a lighthouse at dusk", "", "(a lighthouse:1.2) at dusk, word word"]
TRIPLE_NODE_CASES = [
    ("t5_split", "a lighthouse", "a lighthouse at dusk", "word word word", "none"),
    ("t5_empty_none", "a lighthouse", "a lighthouse", "", "none"),
    ("t5_empty_pad", "a lighthouse", "a lighthouse", "", "empty_prompt"),
]


def check_vocab(clip, texts):
    for t in texts:
        ids = [tok[0] for tok in clip.tokenize(t)["t5xxl"][0]]
        assert max(ids) < WIDE_T5["vocab_size"], (t, ids)


TEXT_PROMPTS = [
    "a photo of a cat holding a sign",
    "",
    "a (red:1.5) apple on a table, ((masterpiece)), (blurry:0.5)",
    "word " * 100,
]

SD3_NODE_CASES = [
    ("all_none", "a lighthouse", "a lighthouse at dusk", "(stormy sea:1.2)", "none"),
    ("empty_l_none", "", "a lighthouse at dusk", "waves", "none"),
    ("empty_l_pad", "", "a lighthouse at dusk", "waves", "empty_prompt"),
    ("empty_all_none", "", "", "", "none"),
    ("empty_all_pad", "", "", "", "empty_prompt"),
    ("long_g", "short", "word " * 90, "t5 text", "none"),
]


HEAD = 128
MID = 768


class Compact(dict):
    """Stores a cond [1, T, 4096] as its channels [0, HEAD) (`.cond`) and [MID, MID + HEAD)
    (`.cond_mid`): the tiny encoders' outputs live there (CLIP-L 32 + CLIP-G 48 channels,
    T5's 32, or CLIP-G alone after ComfyUI's 768 zero channels for a missing CLIP-L). The
    json records the full shape and the largest |value| of all other channels (zero
    padding), which the test checks too."""

    def __init__(self, meta):
        super().__init__()
        self.meta = meta

    def __setitem__(self, key, value):
        if key.endswith(".cond"):
            rest = value.clone()
            rest[..., :HEAD] = 0
            if value.shape[-1] > MID:
                super().__setitem__(key + "_mid", value[..., MID:MID + HEAD])
                rest[..., MID:MID + HEAD] = 0
            self.meta[key] = {"shape": list(value.shape),
                              "tail_max_abs": float(rest.abs().max())}
            value = value[..., :HEAD]
        super().__setitem__(key, value)


def text_goldens():
    cond_meta = {}
    out = Compact(cond_meta)
    cases = []
    _, clip = load_checkpoint(output_model=False)
    for i, p in enumerate(TEXT_PROMPTS):
        cond, pooled = clip.encode_from_tokens(clip.tokenize(p), return_pooled=True)
        out[f"ckpt.{i}.cond"], out[f"ckpt.{i}.pooled"] = cond, pooled
        cases.append({"key": f"ckpt.{i}", "kind": "ckpt", "prompt": p})
    for name, l, g, t5, pad in SD3_NODE_CASES:
        res = CLIPTextEncodeSD3.execute(clip, l, g, t5, pad)
        c = res.args[0] if hasattr(res, "args") else res[0]
        out[f"sd3node.{name}.cond"] = c[0][0]
        out[f"sd3node.{name}.pooled"] = c[0][1]["pooled_output"]
        cases.append({"key": f"sd3node.{name}", "kind": "sd3node", "clip_l": l, "clip_g": g,
                      "t5xxl": t5, "empty_padding": pad})
    c2 = clip.clone()
    c2.clip_layer(-2)
    cond, pooled = c2.encode_from_tokens(c2.tokenize("a photo of a cat"), return_pooled=True)
    out["layer-2.cond"], out["layer-2.pooled"] = cond, pooled
    cases.append({"key": "layer-2", "kind": "ckpt", "prompt": "a photo of a cat",
                  "clip_layer": -2})
    for member in ["l", "g", "t5"]:
        mclip = one_member_clip(member)
        for i, p in enumerate(TEXT_PROMPTS[:3]):
            cond, pooled = mclip.encode_from_tokens(mclip.tokenize(p), return_pooled=True)
            key = f"only_{member}.{i}"
            out[key + ".cond"], out[key + ".pooled"] = cond, pooled
            cases.append({"key": key, "kind": f"only_{member}", "prompt": p})
    # TripleCLIPLoader: CLIP-L + CLIP-G + the 4096-wide T5; and CLIP-G + T5 (DualCLIPLoader).
    wide = wide_t5_file()
    for tag, members in [("triple", ["l", "g", "t5"]), ("g_t5", ["g", "t5"])]:
        tclip = members_clip(members, wide)
        check_vocab(tclip, TRIPLE_PROMPTS + [c[3] for c in TRIPLE_NODE_CASES])
        for i, p in enumerate(TRIPLE_PROMPTS):
            cond, pooled = tclip.encode_from_tokens(tclip.tokenize(p), return_pooled=True)
            key = f"{tag}.{i}"
            out[key + ".cond"], out[key + ".pooled"] = cond, pooled
            cases.append({"key": key, "kind": tag, "prompt": p})
        if tag == "triple":
            for name, l, g, t5, pad in TRIPLE_NODE_CASES:
                res = CLIPTextEncodeSD3.execute(tclip, l, g, t5, pad)
                c = res.args[0] if hasattr(res, "args") else res[0]
                key = f"triple_node.{name}"
                out[key + ".cond"], out[key + ".pooled"] = c[0][0], c[0][1]["pooled_output"]
                cases.append({"key": key, "kind": "triple_node", "clip_l": l, "clip_g": g,
                              "t5xxl": t5, "empty_padding": pad})
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT_DIR, "text.safetensors"))
    with open(os.path.join(OUT_DIR, "text.json"), "w") as f:
        json.dump({"head": HEAD, "cases": cases, "conds": cond_meta}, f, ensure_ascii=False,
                  indent=1)


def sampling_goldens():
    model, clip = load_checkpoint()
    enc = nodes.CLIPTextEncode()
    pos = enc.encode(clip, "a photo of a cat holding a sign")[0]
    neg = enc.encode(clip, "blurry, low quality")[0]
    latent = {"samples": torch.zeros(1, 16, 8, 12)}
    out = {}
    meta = {"positive": "a photo of a cat holding a sign", "negative": "blurry, low quality",
            "latent": [1, 16, 8, 12], "cases": {}}

    def run(name, m, seed, steps, cfg, sampler, scheduler, p, n, **extra):
        (res,) = nodes.common_ksampler(m, seed, steps, cfg, sampler, scheduler, p, n, latent)
        out[f"case.{name}"] = res["samples"]
        meta["cases"][name] = dict(seed=seed, steps=steps, cfg=cfg, sampler=sampler,
                                   scheduler=scheduler, **extra)

    run("template", model, 42, 4, 4.01, "euler", "sgm_uniform", pos, neg)
    (m5,) = ModelSamplingSD3().patch(model, 5.0)
    run("shift5", m5, 7, 3, 3.0, "dpmpp_2m", "simple", pos, neg, shift=5.0)
    zero = nodes.ConditioningZeroOut().zero_out(neg)[0]
    a = nodes.ConditioningSetTimestepRange().set_range(zero, 0.1, 1.0)[0]
    b = nodes.ConditioningSetTimestepRange().set_range(neg, 0.0, 0.1)[0]
    zneg = nodes.ConditioningCombine().combine(a, b)[0]
    run("zero_neg", model, 3, 4, 4.5, "euler", "sgm_uniform", pos, zneg)
    # SkipLayerGuidanceSD3 on joint block 0 between 1% and 50% (sigmas 0.9966..0.75: the
    # 2nd and 3rd of the 4 sgm_uniform steps).
    res = SkipLayerGuidanceSD3.execute(model, "0", 3.0, 0.01, 0.5)
    slg_model = res.args[0] if hasattr(res, "args") else res[0]
    run("slg", slg_model, 42, 4, 4.01, "euler", "sgm_uniform", pos, neg,
        slg={"layers": "0", "scale": 3.0, "start_percent": 0.01, "end_percent": 0.5})
    # TripleCLIPLoader's conditioning (T5 tokens after the CLIP tokens) on the same model.
    tclip = members_clip(["l", "g", "t5"], wide_t5_file())
    tpos = enc.encode(tclip, "a lighthouse at dusk")[0]
    tneg = enc.encode(tclip, "")[0]
    meta["triple_positive"], meta["triple_negative"] = "a lighthouse at dusk", ""
    run("triple", model, 11, 3, 5.45, "euler", "sgm_uniform", tpos, tneg)
    save_file({k: v.contiguous() for k, v in out.items()},
              os.path.join(OUT_DIR, "sampling.safetensors"))
    with open(os.path.join(OUT_DIR, "sampling.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    module_goldens()
    text_goldens()
    sampling_goldens()
    print("wrote", OUT_DIR)
