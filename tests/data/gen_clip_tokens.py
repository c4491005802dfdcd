#!/usr/bin/env python3
"""Reference token ids for tests/models_tokenizer.rs.

Uses transformers' (slow) CLIPTokenizer (4.57.1, no ftfy: ComfyUI's default
environment) built from OpenAI's bpe_simple_vocab_16e6.txt.gz (shipped in the
open-clip-torch wheel): vocab = 256 byte symbols, the same with </w>, the
first 48894 merges, <|startoftext|>, <|endoftext|>. The windowing/weighting
below follows ComfyUI's SDTokenizer.tokenize_with_weights (sd1_clip.py) as
described in the numerics spec §8.1-8.2.

  python3 gen_clip_tokens.py VOCAB_DIR > clip_tokens.json
VOCAB_DIR holds vocab.json and merges.txt made from the BPE file.
"""
import json, re, sys
from transformers import CLIPTokenizer

tok = CLIPTokenizer(sys.argv[1] + "/vocab.json", sys.argv[1] + "/merges.txt")

def parse_parentheses(s):
    result, cur, lvl = [], "", 0
    for c in s:
        if c == "(":
            if lvl == 0:
                if cur: result.append(cur)
                cur = "("
            else: cur += c
            lvl += 1
        elif c == ")":
            lvl -= 1
            if lvl == 0:
                result.append(cur + ")"); cur = ""
            else: cur += c
        else: cur += c
    if cur: result.append(cur)
    return result

def token_weights(s, w):
    out = []
    for x in parse_parentheses(s):
        weight = w
        if len(x) >= 2 and x[-1] == ")" and x[0] == "(":
            x = x[1:-1]
            xx = x.rfind(":")
            weight *= 1.1
            if xx > 0:
                try:
                    weight = float(x[xx+1:]); x = x[:xx]
                except ValueError:
                    pass
            out += token_weights(x, weight)
        else:
            out += [(x, w)]
    return out

def tokenize_with_weights(text):
    text = text.replace("\\)", "\0\1").replace("\\(", "\0\2")
    groups = []
    for seg, w in token_weights(text, 1.0):
        seg = seg.replace("\0\1", ")").replace("\0\2", "(")
        for word in [seg]:  # no embedding directory in these prompts
            if word == "": continue
            groups.append([(t, w) for t in tok(word)["input_ids"][1:-1]])
    batches, batch = [], [(49406, 1.0)]
    batches.append(batch)
    for g in groups:
        large = len(g) >= 8
        while g:
            if len(g) + len(batch) > 76:
                rem = 77 - len(batch) - 1
                if large:
                    batch.extend(g[:rem]); batch.append((49407, 1.0)); g = g[rem:]
                else:
                    batch.append((49407, 1.0)); batch.extend([(49407, 1.0)] * rem)
                batch = [(49406, 1.0)]; batches.append(batch)
            else:
                batch.extend(g); g = []
    batch.append((49407, 1.0))
    batch.extend([(49407, 1.0)] * (77 - len(batch)))
    return batches

PROMPTS = [
    "a photo of a cat",
    "",
    "A Photo OF a CAT, highly detailed; 8k!!! (masterpiece:1.2) [blurry]",
    "(red:1.5) apple, ((green)) pear, (blue (sky:0.5) water)",
    "a \\(literal\\) parenthesis and an (unclosed one",
    "café naïve résumé — “quotes” ‘single’ 東京タワー 🐱🚀 ÀÉÎ",
    "don't we'll they're I've it's CAN'T 3.14159 1,000,000 x2 h2o",
    "tab\there\nnewline  multiple   spaces\u00a0nbsp",
    "<|endoftext|> token and #hashtag @user http://example.com/a?b=c",
    "(12:30 pm) (weird:abc) (:1.3) (x:1.3:0.7)",
    " ".join(["word%d" % i for i in range(60)]),
    "a " * 74 + "cat dog",
    ", ".join(["a beautiful landscape painting with mountains and rivers"] * 4),
    "short " * 70 + "(averyveryverylongwordthatsplitsintomanytokens:1.1) end",
]

out = []
for p in PROMPTS:
    raw = tok(p)["input_ids"][1:-1]
    windows = tokenize_with_weights(p)
    out.append({"prompt": p, "plain_ids": raw,
                "windows": [[[t, w] for t, w in b] for b in windows]})
json.dump(out, sys.stdout, ensure_ascii=False, indent=None)
