//! comfyrs: a ComfyUI-compatible workflow executor.
