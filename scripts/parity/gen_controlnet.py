#!/usr/bin/env python3
"""Write a deterministic random-weight full-size SD1.5 ControlNet (issue 14 parity).

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

Usage (the reference venv; needs torch for the layout and the check):
    cd /work/ref/ComfyUI && /work/ref/venv/bin/python scripts/parity/gen_controlnet.py OUT.safetensors
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


def check(path, comfy_dir):
    import comfy.controlnet
    cn = comfy.controlnet.load_controlnet(path)
    m = cn.control_model
    assert m.model_channels == 320 and m.num_heads == 8 and len(m.zero_convs) == 12, m
    print("ComfyUI loads it as an SD15 ControlNet (12 zero convs, 8 heads)", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--comfy-dir", default=os.getcwd())
    ap.add_argument("--seed", default="0")
    ap.add_argument("--zero-conv-gain", type=float, default=0.25)
    opts = ap.parse_args()
    lay = layout(opts.comfy_dir)
    gopts = argparse.Namespace(dtype="fp16", seed=opts.seed, weight_gain=1.0, embedding_std=0.02,
                               bias_std=0.01, norm_jitter=0.02, vae_encoder_out_gain=9.0, verbose=False)
    base_init = gen_sdxl.init_params

    def init(key, shape, o):
        mean, std = base_init(key, shape, o)
        if (".zero_convs." in key or ".middle_block_out." in key) and key.endswith(".weight"):
            std *= opts.zero_conv_gain
        return mean, std
    gen_sdxl.init_params = init
    info = gen_sdxl.generate(opts.out, lay, "controlnet_sd15", gopts)
    info["zero_conv_gain"] = opts.zero_conv_gain
    print(json.dumps(info))
    check(opts.out, opts.comfy_dir)


if __name__ == "__main__":
    main()
