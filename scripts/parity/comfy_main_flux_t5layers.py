"""Start ComfyUI's main.py with ComfyUI's own `t5xxl_model_config` option set, so a T5-XXL file
with fewer than 24 blocks loads with that many blocks (comfy/sd1_clip.py reads
model_options["t5xxl_model_config"] into the T5 config; no stock loader node sets it, and without
it DualCLIPLoader builds 24 blocks and leaves the missing ones uninitialised).

    cd /work/ref/ComfyUI && python comfy_main_flux_t5layers.py N [main.py arguments...]

Used by comfy_run.py --t5xxl-layers N for the reduced-T5 Flux parity case.
"""
import os
import runpy
import sys

layers = int(sys.argv.pop(1))
sys.argv[0] = "main.py"
sys.path.insert(0, os.getcwd())

# As main.py does first: parse the command line, so model_management (imported by sd3_clip)
# sees --cpu instead of probing for CUDA with default arguments.
import comfy.options  # noqa: E402

comfy.options.enable_args_parsing()
import comfy.text_encoders.sd3_clip as sd3_clip  # noqa: E402

_init = sd3_clip.T5XXLModel.__init__


def _init_with_layers(self, *args, model_options={}, **kwargs):
    model_options = {**model_options, "t5xxl_model_config": {"num_layers": layers}}
    _init(self, *args, model_options=model_options, **kwargs)


sd3_clip.T5XXLModel.__init__ = _init_with_layers
print("comfy_main_flux_t5layers: T5-XXL built with num_layers", layers, flush=True)
runpy.run_path("main.py", run_name="__main__")
