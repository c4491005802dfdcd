"""Goldens for comfyrs's SDXL pieces, computed by ComfyUI's own modules (issue 12).

Run on CPU with the reference env (ComfyUI v0.3.64):

    cd /work/ref/ComfyUI && /work/ref/venv/bin/python \
        /path/to/comfyrs/scripts/goldens/gen_sdxl_goldens.py /path/to/comfyrs/tests/data/sdxl

Writes:
  adm.safetensors + adm.json : `model_base.SDXL.encode_adm` and `SDXLRefiner.encode_adm`
      for a fixed seeded pooled vector [2, 1280] and several size / crop / target /
      aesthetic / prompt_type combinations. The methods are called on a minimal object that
      holds only what they use (`embedder = Timestep(256)`, `noise_augmentor`), not a model.
"""
import json
import os
import sys
import types

OUT_DIR = os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else "tests/data/sdxl"
sys.path.insert(0, os.getcwd())
sys.argv = [sys.argv[0], "--cpu", "--force-fp32", "--fp32-text-enc"]
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import comfy.model_base as mb  # noqa: E402
from comfy.ldm.modules.diffusionmodules.openaimodel import Timestep  # noqa: E402
from comfy.ldm.modules.encoders.noise_aug_modules import (  # noqa: E402
    CLIPEmbeddingNoiseAugmentation,
)


def adm_goldens():
    obj = types.SimpleNamespace(
        embedder=Timestep(256),
        noise_augmentor=CLIPEmbeddingNoiseAugmentation(
            noise_schedule_config={"timesteps": 1000, "beta_schedule": "squaredcos_cap_v2"},
            timestep_dim=1280,
        ),
    )
    g = torch.Generator().manual_seed(12)
    pooled = torch.randn(2, 1280, generator=g, dtype=torch.float32)
    base_cases = [
        {},
        {"width": 1024, "height": 1024},
        {"width": 832, "height": 1216, "crop_w": 0, "crop_h": 0},
        {"width": 4096, "height": 2048, "crop_w": 64, "crop_h": 128,
         "target_width": 1024, "target_height": 512},
        {"width": 1000, "height": 777, "crop_w": 3, "crop_h": 5, "target_width": 1001},
        {"width": 1024, "height": 1024, "prompt_type": "negative"},
    ]
    refiner_cases = [
        {},
        {"width": 1024, "height": 1024},
        {"width": 1024, "height": 1024, "prompt_type": "negative"},
        {"width": 1024, "height": 1024, "prompt_type": "positive"},
        {"width": 768, "height": 1344, "crop_w": 16, "crop_h": 32, "aesthetic_score": 7.25},
        {"width": 1024, "height": 1024, "prompt_type": "negative", "aesthetic_score": 1.1},
    ]
    tensors = {"pooled": pooled}
    meta = {"base": [], "refiner": []}
    for i, kw in enumerate(base_cases):
        y = mb.SDXL.encode_adm(obj, pooled_output=pooled, **kw)
        tensors[f"base.{i}"] = y.contiguous()
        meta["base"].append(kw)
    for i, kw in enumerate(refiner_cases):
        y = mb.SDXLRefiner.encode_adm(obj, pooled_output=pooled, **kw)
        tensors[f"refiner.{i}"] = y.contiguous()
        meta["refiner"].append(kw)
    save_file(tensors, os.path.join(OUT_DIR, "adm.safetensors"))
    with open(os.path.join(OUT_DIR, "adm.json"), "w") as f:
        json.dump(meta, f, indent=1)


if __name__ == "__main__":
    os.makedirs(OUT_DIR, exist_ok=True)
    torch.manual_seed(0)
    adm_goldens()
