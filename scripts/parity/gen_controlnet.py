#!/usr/bin/env python3
"""Write a deterministic random-weight full-size SD1.5 ControlNet, or an SDXL "small"
ControlNet in the diffusers layout (issue 14 parity).

Layout: ComfyUI's own `comfy.cldm.cldm.ControlNet` built on the meta device with the SD15
UNet config of `comfy/model_detection.py` (model_channels 320, channel_mult [1, 2, 4, 4],
2 res blocks, transformer depth 1, context 768, 8 heads) and `hint_channels` 3, every key under
`control_model.` (lllyasviel's `.pth` layout, 361 M parameters). The script checks that
ComfyUI's `load_controlnet_state_dict` detects the written file as that network.

Values: gen_sdxl.py's scheme (per-key SHA-256 seed, splitmix64, Box-Muller in float64, rounded
once to fp16; weights std weight_gain/sqrt(fan_in), biases std 0.01, norm scales 1 ± 0.02) with
the domain string b"sd15-controlnet-random-v1\\0". The zero convs (`zero_convs.*`,
`middle_block_out.*`) get std `--zero-conv-gain`/sqrt(fan_in) (default 0.25): a trained
ControlNet's residuals are small next to the UNet's activations, and full-size random ones would
drown the image.

`--preset sdxl_small`: ComfyUI's `SDXL_small_cnet` config (model_channels 320, channel_mult
[1, 2, 4], no transformer blocks, a depth-0 SpatialTransformer in the middle, ADM 2816; 160 M
params), written under the diffusers names ComfyUI's loader maps back (the inverse of its
`unet_to_diffusers` + `controlnet_down_blocks`/`controlnet_mid_block`/`controlnet_cond_embedding`
renames), domain b"sdxl-small-controlnet-random-v1\0". The check: ComfyUI's
`unet_config_from_diffusers_unet` must pick the SDXL_small_cnet preset and `load_controlnet`
must load every key.

Usage (the reference venv; needs torch for the layout and the check):
    cd /work/ref/ComfyUI && /work/ref/venv/bin/python scripts/parity/gen_controlnet.py \
        [--preset sd15|sdxl_small] OUT.safetensors
"""
import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_sdxl  # noqa: E402

gen_sdxl.DOMAIN = b"sd15-controlnet-random-v1\0"


def layout(comfy_dir):
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import torch
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.ops
    from comfy.cldm.cldm import ControlNet
    cfg = {'use_checkpoint': False, 'image_size': 32, 'use_spatial_transformer': True,
           'legacy': False, 'adm_in_channels': None, 'in_channels': 4, 'model_channels': 320,
           'num_res_blocks': [2, 2, 2, 2], 'transformer_depth': [1, 1, 1, 1, 1, 1, 0, 0],
           'channel_mult': [1, 2, 4, 4], 'transformer_depth_middle': 1,
           'use_linear_in_transformer': False, 'context_dim': 768, 'num_heads': 8,
           'transformer_depth_output': [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
           'use_temporal_attention': False, 'use_temporal_resblock': False}
    with torch.device("meta"):
        net = ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **cfg)
    return {"control_model." + k: [list(v.shape), "float"] for k, v in net.state_dict().items()}


SDXL_SMALL = {'use_checkpoint': False, 'image_size': 32, 'use_spatial_transformer': True,
              'legacy': False, 'num_classes': 'sequential', 'adm_in_channels': 2816, 'in_channels': 4,
              'model_channels': 320, 'num_res_blocks': [2, 2, 2], 'transformer_depth': [0, 0, 0, 0, 0, 0],
              'channel_mult': [1, 2, 4], 'transformer_depth_middle': 0, 'use_linear_in_transformer': True,
              'num_head_channels': 64, 'context_dim': 1, 'transformer_depth_output': [0] * 9,
              'use_temporal_attention': False, 'use_temporal_resblock': False}


def layout_sdxl_small(comfy_dir):
    """The SDXL_small_cnet network's keys under their diffusers names."""
    sys.path.insert(0, comfy_dir)
    sys.argv = [sys.argv[0], "--cpu"]
    import torch
    import comfy.options
    comfy.options.enable_args_parsing()
    import comfy.ops
    import comfy.utils
    from comfy.cldm.cldm import ControlNet
    with torch.device("meta"):
        net = ControlNet(hint_channels=3, operations=comfy.ops.disable_weight_init, **SDXL_SMALL)
    ldm = {k: list(v.shape) for k, v in net.state_dict().items()}
    to_ldm = dict(comfy.utils.unet_to_diffusers(SDXL_SMALL))
    to_ldm["controlnet_mid_block.weight"] = "middle_block_out.0.weight"
    to_ldm["controlnet_mid_block.bias"] = "middle_block_out.0.bias"
    for i in range(len(net.zero_convs)):
        for sfx in ("weight", "bias"):
            to_ldm["controlnet_down_blocks.%d.%s" % (i, sfx)] = "zero_convs.%d.0.%s" % (i, sfx)
    hint = sorted({int(k.split(".")[1]) for k in ldm if k.startswith("input_hint_block.")})
    for n, idx in enumerate(hint):
        name = ("controlnet_cond_embedding.conv_in" if n == 0 else
                "controlnet_cond_embedding.conv_out" if n == len(hint) - 1 else
                "controlnet_cond_embedding.blocks.%d" % (n - 1))
        for sfx in ("weight", "bias"):
            to_ldm["%s.%s" % (name, sfx)] = "input_hint_block.%d.%s" % (idx, sfx)
    inv = {}
    for d, l in to_ldm.items():
        if l in ldm:
            inv.setdefault(l, d)
    missing = sorted(set(ldm) - set(inv))
    assert not missing, missing[:10]
    return {inv[k]: [shape, "float"] for k, shape in ldm.items()}


def check_sdxl_small(path):
    import comfy.controlnet
    import comfy.model_detection
    import comfy.utils
    sd = comfy.utils.load_torch_file(path, safe_load=True)
    cfg = comfy.model_detection.unet_config_from_diffusers_unet(sd)
    assert cfg is not None and cfg["transformer_depth"] == [0] * 6 and cfg["context_dim"] == 1, cfg
    cn = comfy.controlnet.load_controlnet(path)
    m = cn.control_model
    assert m.model_channels == 320 and len(m.zero_convs) == 9 and m.num_classes == "sequential", m
    print("ComfyUI detects SDXL_small_cnet and loads it (9 zero convs, ADM)", file=sys.stderr)


def check(path, comfy_dir):
    import comfy.controlnet
    cn = comfy.controlnet.load_controlnet(path)
    m = cn.control_model
    assert m.model_channels == 320 and m.num_heads == 8 and len(m.zero_convs) == 12, m
    print("ComfyUI loads it as an SD15 ControlNet (12 zero convs, 8 heads)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--preset", choices=["sd15", "sdxl_small"], default="sd15")
    ap.add_argument("--comfy-dir", default=os.getcwd())
    ap.add_argument("--seed", default="0")
    ap.add_argument("--zero-conv-gain", type=float, default=0.25)
    opts = ap.parse_args()
    if opts.preset == "sdxl_small":
        gen_sdxl.DOMAIN = b"sdxl-small-controlnet-random-v1\0"
        lay = layout_sdxl_small(opts.comfy_dir)
    else:
        lay = layout(opts.comfy_dir)
    gopts = argparse.Namespace(dtype="fp16", seed=opts.seed, weight_gain=1.0, embedding_std=0.02,
                               bias_std=0.01, norm_jitter=0.02, vae_encoder_out_gain=9.0, verbose=False)
    base_init = gen_sdxl.init_params

    def init(key, shape, o):
        mean, std = base_init(key, shape, o)
        zero = (".zero_convs." in key or ".middle_block_out." in key
                or key.startswith("controlnet_down_blocks.") or key.startswith("controlnet_mid_block."))
        if zero and key.endswith(".weight"):
            std *= opts.zero_conv_gain
        return mean, std
    gen_sdxl.init_params = init
    info = gen_sdxl.generate(opts.out, lay, "controlnet_" + opts.preset, gopts)
    info["zero_conv_gain"] = opts.zero_conv_gain
    print(json.dumps(info))
    if opts.preset == "sdxl_small":
        check_sdxl_small(opts.out)
    else:
        check(opts.out, opts.comfy_dir)


if __name__ == "__main__":
    main()
