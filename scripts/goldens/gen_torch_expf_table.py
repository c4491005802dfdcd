#!/usr/bin/env python3
"""Prints the inputs of the sinusoidal timestep embeddings (ComfyUI's `timestep_embedding`:
exp(-ln(max_period) * arange(half, dtype=float32) / half) in float32) at which torch's CPU
float32 `exp` differs from the correctly rounded result, as Rust `(x_bits, torch_bits)` pairs
for src/models/nn/torch_expf.rs. torch's vectorised exp (SLEEF, 1-ulp) is one ulp off at a
handful of these inputs; at FluxGuidance 30 (argument 30000 * freq) that ulp moves the
embedding by ~1e-3.

Usage: /work/ref/venv/bin/python scripts/goldens/gen_torch_expf_table.py
"""
import math
import struct

import numpy as np
import torch


def bits(x):
    return struct.unpack("<I", struct.pack("<f", float(x)))[0]


pairs = {}
for max_period in (10000,):
    # dim 256 (Flux time/guidance, SD3 t_embedder, SDXL's size embedding) and 320 (the SD1.x
    # and SDXL UNets' timestep embedding).
    for half in (128, 160):
        a = -math.log(max_period) * torch.arange(0, half, dtype=torch.float32) / half
        f = torch.exp(a)
        for x, y in zip(a.tolist(), f.tolist()):
            if np.float32(y) != np.float32(math.exp(x)):
                pairs[bits(x)] = bits(y)
print(f"// torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}")
for x, y in sorted(pairs.items()):
    print(f"    (0x{x:08x}, 0x{y:08x}),")
