"""Goldens for comfyrs's T5-XXL text encoder and the Flux CLIP pair, computed by ComfyUI's
own modules (issue 13).

Run on CPU with the reference env (ComfyUI v0.3.64), from the comfyrs repository root after
`cargo run --bin gen_fixtures` (the tiny encoders are the committed fixture files):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_t5_goldens.py /path/to/comfyrs

ComfyUI runs with `--cpu` only, i.e. its default fp16 text-encoder storage (what comfyrs
reproduces by default); computation is f32 either way.

Writes tests/data/t5/:
  tokens.json      : `T5XXLTokenizer` (Flux: min_length 256; SD3: min_length 77)
                     `tokenize_with_weights` ids and weights for ~30 prompts (weighting
                     syntax, escapes, `embedding:` of a missing file, > 256 and > 512 tokens,
                     Unicode, empty, special-token text).
  buckets.json     : `T5Attention._relative_position_bucket` for relative positions
                     -1100..1100 (the whole bias table is a function of this vector).
  flux_pair.json + flux_pair.safetensors : `comfy.sd.CLIP` over `flux_clip(...)` with
                     `FluxTokenizer`, the tiny fixture files loaded through `load_sd`
                     (`t5xxl_model_config` / `clip_l_model_config` give ComfyUI's classes the
                     tiny sizes, as its own `t5xxl_model_config` option does): cond (T5) and
                     pooled (CLIP-L, unprojected) of `encode_from_tokens` for several prompts,
                     with the fp16 T5 and the scaled-fp8 T5, plain CLIPTextEncode tokens,
                     CLIPTextEncodeFlux's split tokens, and CLIPSetLastLayer(-2); plus a
                     plain-fp8 T5 (every tensor of tiny_t5xxl cast to float8_e4m3fn, with a
                     NaN at shared.weight[3, 0], as t5xxl_detect types a real fp8 file) whose
                     embeddings ComfyUI passes through nan_to_num.
"""
import json
import os
import sys
import tempfile

REPO = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else os.getcwd()
OUT_DIR = os.path.join(REPO, "tests", "data", "t5")
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import comfy.sd  # noqa: E402
import comfy.text_encoders.flux as flux  # noqa: E402
import comfy.text_encoders.sd3_clip as sd3_clip  # noqa: E402
from comfy.text_encoders.t5 import T5Attention  # noqa: E402

# An empty directory: `embedding:NAME` is looked up (and not found), as in ComfyUI.
EMB_DIR = tempfile.mkdtemp(prefix="t5_goldens_emb_")

LONG_300 = "word " * 300
LONG_SENTENCE = (
    "A highly detailed photograph of an old lighthouse on a rocky cliff at dusk, waves "
    "crashing below, seagulls circling, warm light in the windows, dramatic clouds. "
)

PROMPTS = [
    "a photo of a cat holding a sign",
    "",
    "A photo of a cat holding a sign that says hello world",
    "a (red:1.5) apple on a table",
    "((masterpiece)), best quality, (blurry:0.5)",
    "(a cat:0.5) and (a dog:1.3)",
    "(nested (deep:1.4) words) outside",
    "a \\(literal\\) paren and \\(another:1.2\\)",
    "(12:30 pm) meeting",
    "[square] brackets [stay]",
    "(unbalanced paren",
    "unbalanced) paren",
    "a dog:1.2 without parentheses",
    "café à Paris, naïve résumé",
    "東京の夜景、ネオンサイン",
    "emoji 🚀 rocket ✨ sparkles",
    "ñ ü ß Ω Ж ψ",
    "tabs\tand\nnewlines\r\nhere",
    "  double  spaces   and trailing  ",
    "UPPER lower MiXeD CaSe",
    "don't can't it's we'll",
    "1024x1024, 3.5 guidance; f/1.8!!! $100 #tag @user",
    "</s> <pad> <unk> <extra_id_0> literal specials",
    "a embedding:missing_ti cat",
    "embedding:missing_ti, leftover words",
    "a cat\nembedding:missing_two dog",
    LONG_300,
    LONG_SENTENCE * 14,
    "(" + LONG_SENTENCE * 3 + ":1.1) tail",
    "https://example.com/path?q=1&x=2",
]

SD3_PROMPTS = [
    "a photo of a cat holding a sign",
    "",
    "(a cat:0.5) and (a dog:1.3)",
    LONG_300,
]


def tokens_golden():
    flux_tok = flux.T5XXLTokenizer(embedding_directory=EMB_DIR)
    sd3_tok = sd3_clip.T5XXLTokenizer(embedding_directory=EMB_DIR)
    cases = []
    for tok, name, prompts in [(flux_tok, "flux", PROMPTS), (sd3_tok, "sd3", SD3_PROMPTS)]:
        for p in prompts:
            batches = tok.tokenize_with_weights(p)
            assert len(batches) == 1
            cases.append({
                "kind": name,
                "min_length": tok.min_length,
                "prompt": p,
                "ids": [int(t) for t, _ in batches[0]],
                "weights": [float(w) for _, w in batches[0]],
            })
    with open(os.path.join(OUT_DIR, "tokens.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False)


def buckets_golden():
    rel = torch.arange(-1100, 1101, dtype=torch.long)
    b = T5Attention._relative_position_bucket(rel, bidirectional=True, num_buckets=32,
                                              max_distance=128)
    with open(os.path.join(OUT_DIR, "buckets.json"), "w") as f:
        json.dump({"from": -1100, "buckets": [int(x) for x in b]}, f)


TINY_T5 = {"d_model": 32, "num_heads": 4, "d_kv": 8, "d_ff": 64, "num_layers": 2}
TINY_CLIP_L = {"hidden_size": 32, "intermediate_size": 128, "num_attention_heads": 4,
               "num_hidden_layers": 2}


def make_clip(t5_file, dtype_t5, scaled, t5_sd=None):
    class Target:
        pass
    target = Target()
    target.params = {}
    kw = {"dtype_t5": dtype_t5}
    if scaled:
        kw["t5xxl_scaled_fp8"] = torch.float8_e4m3fn
    target.clip = flux.flux_clip(**kw)
    target.tokenizer = flux.FluxTokenizer
    clip = comfy.sd.CLIP(target, embedding_directory=EMB_DIR, model_options={
        "t5xxl_model_config": TINY_T5, "clip_l_model_config": TINY_CLIP_L})
    fx = os.path.join(REPO, "fixtures", "models", "text_encoders")
    for f in ["tiny_clip_l.safetensors", t5_file]:
        sd = t5_sd if (f == t5_file and t5_sd is not None) else load_file(os.path.join(fx, f))
        m, u = clip.load_sd(sd)
        missing = [k for k in m if "text_projection" not in k]
        assert not missing, (f, missing)
    return clip


PAIR_PROMPTS = [
    "a photo of a cat holding a sign",
    "",
    "a (red:1.5) apple on a table, ((masterpiece)), (blurry:0.5)",
    "café à Paris 🚀",
    LONG_300,
]


def flux_pair_golden():
    tensors = {}
    cases = []
    for t5_file, dtype_t5, scaled, tag in [
        ("tiny_t5xxl.safetensors", torch.float16, False, "fp16"),
        ("tiny_t5xxl_fp8_e4m3fn_scaled.safetensors", torch.float16, True, "fp8_scaled"),
    ]:
        clip = make_clip(t5_file, dtype_t5, scaled)
        t5 = clip.cond_stage_model.t5xxl.transformer
        print(tag, "t5 weight dtypes:", sorted({str(p.dtype) for p in t5.parameters()}))
        for i, p in enumerate(PAIR_PROMPTS):
            tokens = clip.tokenize(p)
            cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
            key = f"{tag}.{i}"
            tensors[key + ".cond"] = cond.contiguous()
            tensors[key + ".pooled"] = pooled.contiguous()
            cases.append({"key": key, "t5": t5_file, "kind": "text", "prompt": p})
        # CLIPTextEncodeFlux: clip_l text for CLIP-L, t5xxl text for T5.
        tokens = clip.tokenize("a lighthouse at dusk")
        tokens["t5xxl"] = clip.tokenize("(stormy sea:1.2), dramatic clouds")["t5xxl"]
        cond, pooled = clip.encode_from_tokens(tokens, return_pooled=True)
        key = f"{tag}.split"
        tensors[key + ".cond"] = cond.contiguous()
        tensors[key + ".pooled"] = pooled.contiguous()
        cases.append({"key": key, "t5": t5_file, "kind": "split",
                      "clip_l": "a lighthouse at dusk",
                      "t5xxl": "(stormy sea:1.2), dramatic clouds"})
        # CLIPSetLastLayer(-2) applies to both members.
        c2 = clip.clone()
        c2.clip_layer(-2)
        cond, pooled = c2.encode_from_tokens(c2.tokenize("a photo of a cat"), return_pooled=True)
        key = f"{tag}.layer-2"
        tensors[key + ".cond"] = cond.contiguous()
        tensors[key + ".pooled"] = pooled.contiguous()
        cases.append({"key": key, "t5": t5_file, "kind": "text", "prompt": "a photo of a cat",
                      "clip_layer": -2})
    # Plain fp8 (t5xxl_fp8_e4m3fn layout) with one NaN in the token embedding of id 3.
    fx = os.path.join(REPO, "fixtures", "models", "text_encoders")
    sd = {k: v.to(torch.float8_e4m3fn) for k, v in
          load_file(os.path.join(fx, "tiny_t5xxl.safetensors")).items()}
    sd["shared.weight"][3, 0] = float("nan")
    clip = make_clip("tiny_t5xxl.safetensors", torch.float8_e4m3fn, False, t5_sd=sd)
    t5 = clip.cond_stage_model.t5xxl.transformer
    print("fp8 t5 weight dtypes:", sorted({str(p.dtype) for p in t5.parameters()}))
    p = "a photo of a cat holding a sign"
    cond, pooled = clip.encode_from_tokens(clip.tokenize(p), return_pooled=True)
    assert torch.isfinite(cond).all()
    tensors["fp8_nan.0.cond"] = cond.contiguous()
    tensors["fp8_nan.0.pooled"] = pooled.contiguous()
    cases.append({"key": "fp8_nan.0", "t5": "tiny_t5xxl.safetensors as fp8, NaN at shared[3,0]",
                  "kind": "text", "prompt": p})
    save_file(tensors, os.path.join(OUT_DIR, "flux_pair.safetensors"))
    with open(os.path.join(OUT_DIR, "flux_pair.json"), "w") as f:
        json.dump(cases, f, ensure_ascii=False, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    tokens_golden()
    buckets_golden()
    flux_pair_golden()
    print("wrote", OUT_DIR)
