"""Goldens for src/models/fp8.rs, made by torch 2.8 (the conversions ComfyUI v0.3.64 relies on).

Run: cd /work/ref/ComfyUI && /work/ref/venv/bin/python /path/to/scripts/goldens/gen_fp8_goldens.py OUTDIR
Writes OUTDIR/fp8_goldens.json: both 256-entry decode tables (as f32 bit patterns) and the
encoded byte of edge and random f32 inputs (given as f32 bit patterns) for e4m3fn and e5m2.
"""
import json
import sys

import torch

out = sys.argv[1] if len(sys.argv) > 1 else "tests/data/fp8"


def bits(t):
    # exact f32 bit patterns (NaN sign and payload kept)
    return [v & 0xFFFFFFFF for v in t.contiguous().view(torch.int32).tolist()]


kinds = {"e4m3fn": torch.float8_e4m3fn, "e5m2": torch.float8_e5m2}
res = {}
all_bytes = torch.arange(256, dtype=torch.uint8)
edge = [0.0, -0.0, 1.0, -1.0, 448.0, -448.0, 464.0, 463.99, 464.01, 479.99, 480.0, -480.0, 500.0,
        57344.0, 61439.0, 61440.0, 65535.0, 65536.0, 1e10, -1e10,
        float("inf"), float("-inf"), float("nan"), -float("nan"),
        2.0 ** -6, 2.0 ** -7, 2.0 ** -9, 2.0 ** -10, 2.0 ** -11, 3 * 2.0 ** -11, 2.0 ** -12,
        2.0 ** -14, 2.0 ** -16, 2.0 ** -17, 2.0 ** -18, 3 * 2.0 ** -18, 1e-30, 1e-45,
        1.0625, 1.1875, 1.125, 1.25, 1.375, 0.3, -0.3, 3.14159]
edge_t = torch.tensor(edge, dtype=torch.float32)
g = torch.Generator().manual_seed(1234)
rnd = torch.cat([
    torch.randn(2000, generator=g),
    torch.randn(1000, generator=g) * 300.0,
    torch.randn(1000, generator=g) * 40000.0,
    torch.randn(1000, generator=g) * 1e-3,
    (torch.rand(1000, generator=g) - 0.5) * 2 ** -5,
])
inputs = torch.cat([edge_t, rnd.to(torch.float32)])
# every f16 value too (the f16 path of torch converts through f32)
all_f16 = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(torch.float16)
for name, dt in kinds.items():
    dec = all_bytes.view(dt).to(torch.float32)
    enc = inputs.to(dt).view(torch.uint8)
    enc16 = all_f16.to(dt).view(torch.uint8)
    res[name] = {
        "decode_f32_bits": bits(dec),
        "encode_f16_all": enc16.tolist(),
        "encode_bytes": enc.tolist(),
    }
res["inputs_f32_bits"] = bits(inputs)
res["torch_version"] = torch.__version__
with open(f"{out}/fp8_goldens.json", "w") as f:
    json.dump(res, f)
print("wrote", f"{out}/fp8_goldens.json")
