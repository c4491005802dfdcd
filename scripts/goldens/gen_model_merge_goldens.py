#!/usr/bin/env python3
"""Writes tests/data/model_merge/goldens.safetensors: merged weights computed by ComfyUI's own
merge nodes (comfy_extras/nodes_model_merging*.py) on ComfyUI's ModelPatcher, patched with its
own `patch_weight_to_device` (comfy.lora.calculate_weight), on the tiny SD1.5 fixture.

Model A is fixtures/models/checkpoints/tiny_sd15.safetensors as ComfyUI holds it with
--force-fp32 (every weight upcast to f32). Model B is A + 0.05 * randn: one torch generator
seeded 1234 draws each weight's noise in sorted key order (the test makes the same B with
comfyrs' torch-compatible RNG). Tensors are named "<case>/<key>"; the metadata "cases" maps each
case to the node chain that made it.

Usage (ComfyUI v0.3.64 source and torch; see /work/ref/README.txt):
    cd /path/to/ComfyUI && /path/to/venv/bin/python gen_model_merge_goldens.py [OUT.safetensors]
"""
import json
import os
import sys

OUT = [a for a in sys.argv[1:] if not a.startswith("--")]
REPO = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
sys.argv = [sys.argv[0], "--cpu", "--force-fp32"]
sys.path.insert(0, os.getcwd())
import comfy.options  # noqa: E402
comfy.options.enable_args_parsing()
import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
import comfy.model_patcher  # noqa: E402
from comfy_extras import nodes_model_merging as mm  # noqa: E402
from comfy_extras import nodes_model_merging_model_specific as mms  # noqa: E402

UNET = "model.diffusion_model."
CLIP = "cond_stage_model."
# Weights compared (diffusion keys below "model.", CLIP keys in full): one per kind of block.
UNET_KEYS = [
    "diffusion_model.time_embed.0.weight",
    "diffusion_model.input_blocks.0.0.weight",
    "diffusion_model.input_blocks.1.0.in_layers.2.weight",
    "diffusion_model.input_blocks.3.1.proj_in.weight",
    "diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight",
    "diffusion_model.output_blocks.0.0.skip_connection.bias",
    "diffusion_model.output_blocks.1.2.conv.bias",
    "diffusion_model.out.2.weight",
    "diffusion_model.out.0.bias",
]
CLIP_KEYS = [
    "cond_stage_model.transformer.text_model.embeddings.position_embedding.weight",
    "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
    "cond_stage_model.transformer.text_model.final_layer_norm.bias",
]


class Holder(torch.nn.Module):
    """A module tree holding `sd` under its dotted names (what ModelPatcher walks)."""

    def __init__(self, sd):
        super().__init__()
        for k, v in sd.items():
            mod = self
            *path, leaf = k.split(".")
            for p in path:
                if not hasattr(mod, p):
                    mod.add_module(p, torch.nn.Module())
                mod = getattr(mod, p)
            mod.register_parameter(leaf, torch.nn.Parameter(v.clone(), requires_grad=False))


class Clip:
    """comfy.sd.CLIP's merge surface: clone / add_patches / get_key_patches on a patcher."""

    def __init__(self, patcher):
        self.patcher = patcher

    def clone(self):
        return Clip(self.patcher.clone())

    def add_patches(self, *a, **k):
        return self.patcher.add_patches(*a, **k)

    def get_key_patches(self):
        return self.patcher.get_key_patches()


def patcher(sd):
    return comfy.model_patcher.ModelPatcher(Holder(sd), torch.device("cpu"), torch.device("cpu"))


def weights(p, keys):
    """The patched value of each key as ComfyUI computes it when loading the model."""
    out = {}
    for k in keys:
        p.patch_weight_to_device(k)
        out[k] = comfy.utils.get_attr(p.model, k).detach().float().clone()
    p.unpatch_model()
    return out


def main():
    ckpt = load_file(os.path.join(REPO, "fixtures", "models", "checkpoints", "tiny_sd15.safetensors"))
    a = {k: v.float() for k, v in ckpt.items() if v.is_floating_point()}
    gen = torch.Generator().manual_seed(1234)
    b = {k: a[k] + 0.05 * torch.randn(a[k].shape, generator=gen) for k in sorted(a)}
    unet = lambda sd: patcher({k[len("model."):]: v for k, v in sd.items() if k.startswith(UNET)})  # noqa: E731
    # comfyrs stores text-encoder weights as fp16 (ComfyUI's CPU storage) and keeps merged
    # ones in f32 (as with --fp32-text-enc): the CLIP bases go through fp16 first.
    clip = lambda sd: Clip(patcher({k: v.half().float() for k, v in sd.items() if k.startswith(CLIP)}))  # noqa: E731
    A, B = unet(a), unet(b)
    cA, cB = clip(a), clip(b)
    sd1 = {k: round(0.03 * i, 2) for i, k in enumerate(mms.ModelMergeSD1.INPUT_TYPES()["required"]) if k not in ("model1", "model2")}
    cases = {
        "simple_0.3": lambda: mm.ModelMergeSimple().merge(A, B, 0.3)[0],
        "simple_0": lambda: mm.ModelMergeSimple().merge(A, B, 0.0)[0],
        "simple_1": lambda: mm.ModelMergeSimple().merge(A, B, 1.0)[0],
        "blocks": lambda: mm.ModelMergeBlocks().merge(A, B, input=0.2, middle=0.7, out=0.9)[0],
        "blocks_out_first": lambda: mm.ModelMergeBlocks().merge(A, B, out=0.9, input=0.2, middle=0.7)[0],
        "subtract_1.7": lambda: mm.ModelSubtract().merge(A, B, 1.7)[0],
        "add": lambda: mm.ModelAdd().merge(A, B)[0],
        # model 2 carries its own merge (nested patches), model 1 a previous one (order)
        "nested": lambda: mm.ModelMergeSimple().merge(A, mm.ModelSubtract().merge(B, A, 0.5)[0], 0.6)[0],
        "chain": lambda: mm.ModelAdd().merge(mm.ModelMergeSimple().merge(A, B, 0.25)[0], B)[0],
        "sd1": lambda: mms.ModelMergeSD1().merge(A, B, **sd1)[0],
    }
    tensors, meta = {}, {}
    for name, f in cases.items():
        for k, v in weights(f(), UNET_KEYS).items():
            tensors[f"{name}/{k}"] = v.contiguous()
        meta[name] = "unet"
    clip_cases = {
        "clip_simple_0.4": lambda: mm.CLIPMergeSimple().merge(cA, cB, 0.4)[0],
        "clip_subtract_0.8": lambda: mm.CLIPSubtract().merge(cA, cB, 0.8)[0],
        "clip_add": lambda: mm.CLIPAdd().merge(cA, cB)[0],
    }
    for name, f in clip_cases.items():
        for k, v in weights(f().patcher, CLIP_KEYS).items():
            tensors[f"{name}/{k}"] = v.contiguous()
        meta[name] = "clip"
    meta["sd1_ratios"] = sd1
    out = OUT[0] if OUT else os.path.join(REPO, "tests", "data", "model_merge", "goldens.safetensors")
    save_file(tensors, out, metadata={"cases": json.dumps(meta), "machine": "ComfyUI a125cd84, torch " + torch.__version__ + ", CPU"})
    print(f"{len(tensors)} tensors -> {out}")


if __name__ == "__main__":
    main()
