#!/usr/bin/env python3
"""Independent numpy (float64) reference of the tiny fixture's CLIP text
model, UNet and VAE decoder, written from the LDM/ComfyUI definitions
(numerics spec §5.3, §6, §8.4, §9). Writes tests/data/tiny_reference.json
for tests/models_numerics.rs.

  python3 tests/data/ref_tiny_numpy.py
"""
import json, struct, os
import numpy as np

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
raw = open(os.path.join(ROOT, "fixtures/models/checkpoints/tiny_sd15.safetensors"), "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
hdr = json.loads(raw[8:8 + n])
W = {}
for k, v in hdr.items():
    if k == "__metadata__": continue
    a, b = v["data_offsets"]
    dt = {"F16": np.float16, "I64": np.int64}[v["dtype"]]
    W[k] = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dt).reshape(v["shape"]).astype(np.float64)

def ln(x, p, eps=1e-5):
    m = x.mean(-1, keepdims=True); v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / np.sqrt(v + eps) * W[p + ".weight"] + W[p + ".bias"]

def lin(x, p, bias=True):
    y = x @ W[p + ".weight"].T
    return y + W[p + ".bias"] if bias else y

def softmax(x):
    x = x - x.max(-1, keepdims=True); e = np.exp(x); return e / e.sum(-1, keepdims=True)

def mha(q, k, v, heads):
    b, n, c = q.shape; d = c // heads
    q = q.reshape(b, n, heads, d).transpose(0, 2, 1, 3)
    k = k.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    v = v.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    return q, k, v, d

# ---------------------------------------------------------------- CLIP
def clip(ids, skip):
    P = "cond_stage_model.transformer.text_model."
    x = W[P + "embeddings.token_embedding.weight"][ids][None] + W[P + "embeddings.position_embedding.weight"][:len(ids)]
    T = len(ids); mask = np.triu(np.full((T, T), -np.finfo(np.float32).max), 1)
    hidden = []
    for i in range(2):
        L = P + "encoder.layers.%d." % i
        h = ln(x, L + "layer_norm1")
        q, k, v, d = mha(lin(h, L + "self_attn.q_proj"), lin(h, L + "self_attn.k_proj"), lin(h, L + "self_attn.v_proj"), 4)
        a = softmax(q @ k.transpose(0, 1, 3, 2) * d ** -0.5 + mask) @ v
        x = x + lin(a.transpose(0, 2, 1, 3).reshape(1, T, -1), L + "self_attn.out_proj")
        h = lin(ln(x, L + "layer_norm2"), L + "mlp.fc1")
        h = h * (1 / (1 + np.exp(-1.702 * h)))
        x = x + lin(h, L + "mlp.fc2")
        hidden.append(x)
    final = ln(x, P + "final_layer_norm")
    return ln(hidden[skip], P + "final_layer_norm"), final

ids = [49406, 320, 1125, 539, 320, 2368] + [49407] * 71
cond, final = clip(ids, -1)
cond2, _ = clip(ids, -2)
pooled = final[0, 6]
empty, _ = clip([49406] + [49407] * 76, -1)
# "a photo of a (cat:1.5)": position 5 weighted 1.5 around the empty prompt
weighted = cond.copy()
weighted[0, 5] = (cond[0, 5] - empty[0, 5]) * 1.5 + empty[0, 5]

# ---------------------------------------------------------------- conv helpers
def conv(x, p, stride=1, pad=None):
    w = W[p + ".weight"]; k = w.shape[-1]
    pad = k // 2 if pad is None else pad
    if pad: x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("bchwij,ocij->bohw", win, w) + W[p + ".bias"][None, :, None, None]

def gn(x, p, eps):
    b, c, h, w = x.shape
    g = x.reshape(b, 32, -1); m = g.mean(-1, keepdims=True); v = ((g - m) ** 2).mean(-1, keepdims=True)
    g = ((g - m) / np.sqrt(v + eps)).reshape(b, c, h, w)
    return g * W[p + ".weight"][None, :, None, None] + W[p + ".bias"][None, :, None, None]

silu = lambda x: x / (1 + np.exp(-x))
up2 = lambda x: x.repeat(2, 2).repeat(2, 3)

# ---------------------------------------------------------------- UNet
U = "model.diffusion_model."
from math import erf
gelu = np.vectorize(lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2))))

def resblock(x, emb, p):
    h = conv(silu(gn(x, p + "in_layers.0", 1e-5)), p + "in_layers.2")
    h = h + lin(silu(emb), p + "emb_layers.1")[:, :, None, None]
    h = conv(silu(gn(h, p + "out_layers.0", 1e-5)), p + "out_layers.3")
    skip = conv(x, p + "skip_connection", pad=0) if (p + "skip_connection.weight") in W else x
    return skip + h

def attn(x, ctx, p, heads):
    q, k, v, d = mha(lin(x, p + "to_q", False), lin(ctx, p + "to_k", False), lin(ctx, p + "to_v", False), heads)
    o = softmax(q @ k.transpose(0, 1, 3, 2) * d ** -0.5) @ v
    return lin(o.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[1], -1), p + "to_out.0")

def st(x, ctx, p):
    b, c, hh, ww = x.shape
    h = conv(gn(x, p + "norm", 1e-6), p + "proj_in", pad=0).reshape(b, c, -1).transpose(0, 2, 1)
    t = p + "transformer_blocks.0."
    h = attn(ln(h, t + "norm1"), ln(h, t + "norm1"), t + "attn1.", 8) + h
    h = attn(ln(h, t + "norm2"), ctx, t + "attn2.", 8) + h
    f = lin(ln(h, t + "norm3"), t + "ff.net.0.proj"); a, g = np.split(f, 2, -1)
    h = lin(a * gelu(g), t + "ff.net.2") + h
    h = conv(h.transpose(0, 2, 1).reshape(b, c, hh, ww), p + "proj_out", pad=0)
    return h + x

def unet(x, t, ctx):
    half = 16
    freqs = np.exp(-np.log(10000) * np.arange(half) / half)
    args = t[:, None] * freqs[None]
    temb = np.concatenate([np.cos(args), np.sin(args)], -1)
    emb = lin(silu(lin(temb, U + "time_embed.0")), U + "time_embed.2")
    hs = []
    h = conv(x, U + "input_blocks.0.0"); hs.append(h)
    h = resblock(h, emb, U + "input_blocks.1.0."); hs.append(h)
    h = conv(h, U + "input_blocks.2.0.op", stride=2); hs.append(h)
    h = st(resblock(h, emb, U + "input_blocks.3.0."), ctx, U + "input_blocks.3.1."); hs.append(h)
    h = resblock(h, emb, U + "middle_block.0.")
    h = st(h, ctx, U + "middle_block.1.")
    h = resblock(h, emb, U + "middle_block.2.")
    h = np.concatenate([h, hs.pop()], 1)
    h = st(resblock(h, emb, U + "output_blocks.0.0."), ctx, U + "output_blocks.0.1.")
    h = np.concatenate([h, hs.pop()], 1)
    h = st(resblock(h, emb, U + "output_blocks.1.0."), ctx, U + "output_blocks.1.1.")
    h = conv(up2(h), U + "output_blocks.1.2.conv")
    h = np.concatenate([h, hs.pop()], 1)
    h = resblock(h, emb, U + "output_blocks.2.0.")
    h = np.concatenate([h, hs.pop()], 1)
    h = resblock(h, emb, U + "output_blocks.3.0.")
    return conv(silu(gn(h, U + "out.0", 1e-5)), U + "out.2")

def det_input(shape, scale):
    n = int(np.prod(shape)); i = np.arange(n, dtype=np.float64)
    return (np.sin(i * 0.37 + 0.1) * scale).astype(np.float32).astype(np.float64).reshape(shape)

x = det_input((1, 4, 8, 8), 1.0)
eps = unet(x, np.array([999.0]), cond)
eps_w = unet(x, np.array([261.0]), weighted)

# ---------------------------------------------------------------- VAE decoder
V = "first_stage_model."
def vres(x, p):
    h = conv(silu(gn(x, p + "norm1", 1e-6)), p + "conv1")
    h = conv(silu(gn(h, p + "norm2", 1e-6)), p + "conv2")
    s = conv(x, p + "nin_shortcut", pad=0) if (p + "nin_shortcut.weight") in W else x
    return s + h

def vattn(x, p):
    b, c, hh, ww = x.shape
    h = gn(x, p + "norm", 1e-6)
    q = conv(h, p + "q", pad=0).reshape(b, c, -1).transpose(0, 2, 1)
    k = conv(h, p + "k", pad=0).reshape(b, c, -1)
    v = conv(h, p + "v", pad=0).reshape(b, c, -1)
    a = softmax(q @ k * c ** -0.5)
    o = (v @ a.transpose(0, 2, 1)).reshape(b, c, hh, ww)
    return x + conv(o, p + "proj_out", pad=0)

def decode(z):
    D = V + "decoder."
    h = conv(conv(z, V + "post_quant_conv", pad=0), D + "conv_in")
    h = vres(vattn(vres(h, D + "mid.block_1."), D + "mid.attn_1."), D + "mid.block_2.")
    for i in [3, 2, 1, 0]:
        for j in range(2):
            h = vres(h, D + "up.%d.block.%d." % (i, j))
        if i != 0:
            h = conv(up2(h), D + "up.%d.upsample.conv" % i)
    h = conv(silu(gn(h, D + "norm_out", 1e-6)), D + "conv_out")
    return np.clip((h + 1) / 2, 0, 1).transpose(0, 2, 3, 1)

img = decode(det_input((1, 4, 8, 8), 2.0))

def flat(a): return [float(v) for v in np.asarray(a, dtype=np.float64).ravel()]
out = {"cond": flat(cond), "cond_skip2": flat(cond2), "pooled": flat(pooled), "cond_weighted": flat(weighted),
       "eps_t999": flat(eps), "eps_t261_weighted": flat(eps_w), "image": flat(img)}
json.dump(out, open(os.path.join(ROOT, "tests/data/tiny_reference.json"), "w"))
print({k: (len(v), float(np.std(v))) for k, v in out.items()})
