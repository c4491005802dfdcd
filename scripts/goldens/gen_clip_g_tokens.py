"""CLIP-G (and CLIP-L) token ids of SDXL prompts, made by ComfyUI's own SDXL tokenizer
(`comfy.sdxl_clip.SDXLTokenizer.tokenize_with_weights`: bigG pads with 0, CLIP-L with EOS;
weights, emphasis, escapes, 77-token windows, textual inversions with the `clip_g`/`clip_l`
keys of an SDXL embedding file).

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_clip_g_tokens.py /path/to/comfyrs/tests/data/sdxl

Writes OUT/clip_g_tokens.json (a list of {prompt, g, l}; each of g and l a list of 77-token
windows of [id, weight], a textual-inversion vector written as ["emb", first value, weight])
and OUT/embeddings/tiny_sdxl_emb.safetensors (the embedding the prompts use: `clip_g` [2, 1280]
and `clip_l` [2, 768], seeded values, fp16).
"""
import json
import os
import sys

OUT_DIR = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "tests/data/sdxl"
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from comfy.sdxl_clip import SDXLTokenizer  # noqa: E402

LONG = ("a breathtaking matte painting of an ancient city carved into the cliffs above a "
        "turquoise sea, golden hour light, volumetric fog, highly detailed architecture, "
        "intricate stone bridges, hanging gardens, flocks of birds, distant sailing ships, "
        "dramatic clouds, cinematic composition, trending on artstation, 8k resolution, "
        "sharp focus, octane render, unreal engine, by greg rutkowski and alphonse mucha")

PROMPTS = [
    "",
    " ",
    "a photo of a cat",
    "A Photo Of A CAT, 4K, HDR!!!",
    "(masterpiece), best quality",
    "((masterpiece)), (((best quality)))",
    "(red:1.3) car on a (blue:0.7) road",
    "(a (nested:1.5) group) outside",
    "(weight with spaces : 1.25) and (no weight:abc)",
    "(a:1.2:1.3)",
    "(:1.2) leading colon",
    "(a:) empty weight",
    "(unbalanced (paren",
    "closing) without opening",
    "\\(escaped parens\\) and (real:1.1)",
    "[square brackets] are literal",
    "newline\nseparated\tand tabbed   spaces",
    "café naïve résumé — “quotes” and ‘apostrophes’",
    "日本語のプロンプト、東京タワー",
    "emoji 🐱🚀 and symbols ©®™ ½",
    "numbers 1234567890 3.14159 1e10 and hyphen-ated words",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    LONG,
    "(" + LONG + ":1.15)",
    LONG + ", " + LONG,
    " ".join(["word"] * 75),
    " ".join(["word"] * 76),
    "x " * 70 + "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "embedding:tiny_sdxl_emb a cat",
    "a cat embedding:tiny_sdxl_emb, in a hat",
    "(embedding:tiny_sdxl_emb:1.3) portrait",
    "a dog embedding:missing_embedding_name here",
    "a (cat\nembedding:tiny_sdxl_emb) sitting",
]


def windows(ws):
    out = []
    for w in ws:
        row = []
        for tok, weight in w:
            if isinstance(tok, torch.Tensor):
                row.append(["emb", float(tok.reshape(-1)[0]), float(weight)])
            else:
                row.append([int(tok), float(weight)])
        out.append(row)
    return out


def main():
    emb_dir = os.path.join(OUT_DIR, "embeddings")
    os.makedirs(emb_dir, exist_ok=True)
    g = torch.Generator().manual_seed(77)
    save_file(
        {
            "clip_g": (torch.randn(2, 1280, generator=g) * 0.02).half(),
            "clip_l": (torch.randn(2, 768, generator=g) * 0.02).half(),
        },
        os.path.join(emb_dir, "tiny_sdxl_emb.safetensors"),
    )
    tok = SDXLTokenizer(embedding_directory=[emb_dir])
    cases = []
    for p in PROMPTS:
        t = tok.tokenize_with_weights(p)
        cases.append({"prompt": p, "g": windows(t["g"]), "l": windows(t["l"])})
    with open(os.path.join(OUT_DIR, "clip_g_tokens.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    print(len(cases), "prompts;", sum(len(c["g"]) for c in cases), "bigG windows")


if __name__ == "__main__":
    main()
