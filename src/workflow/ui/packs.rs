//! Which custom-node pack provides a class, for workflows that do not say (UI workflows saved
//! by recent frontends carry `properties.cnr_id`, which is used first). A short table of the
//! most used packs' class names and naming conventions; the names are Comfy Registry ids.

/// Exact class names of popular packs.
const EXACT: &[(&str, &str)] = &[
    ("SetNode", "comfyui-kjnodes"),
    ("GetNode", "comfyui-kjnodes"),
    ("ImageResizeKJ", "comfyui-kjnodes"),
    ("ImageResizeKJv2", "comfyui-kjnodes"),
    ("ColorMatch", "comfyui-kjnodes"),
    ("GetImageSizeAndCount", "comfyui-kjnodes"),
    ("ImageConcanate", "comfyui-kjnodes"),
    ("INTConstant", "comfyui-kjnodes"),
    ("FloatConstant", "comfyui-kjnodes"),
    ("WanVideoSampler", "comfyui-wanvideowrapper"),
    ("FaceDetailer", "comfyui-impact-pack"),
    ("SAMLoader", "comfyui-impact-pack"),
    ("ImpactWildcardProcessor", "comfyui-impact-pack"),
    ("UltralyticsDetectorProvider", "comfyui-impact-subpack"),
    ("UltimateSDUpscale", "comfyui_ultimatesdupscale"),
    ("UltimateSDUpscaleNoUpscale", "comfyui_ultimatesdupscale"),
    ("AIO_Preprocessor", "comfyui_controlnet_aux"),
    ("DWPreprocessor", "comfyui_controlnet_aux"),
    ("OpenposePreprocessor", "comfyui_controlnet_aux"),
    ("DepthAnythingPreprocessor", "comfyui_controlnet_aux"),
    ("DepthAnythingV2Preprocessor", "comfyui_controlnet_aux"),
    ("LineArtPreprocessor", "comfyui_controlnet_aux"),
    ("Zoe-DepthMapPreprocessor", "comfyui_controlnet_aux"),
    ("RIFE VFI", "comfyui-frame-interpolation"),
    ("FILM VFI", "comfyui-frame-interpolation"),
];

/// Prefixes and suffixes packs put on every class name.
const PREFIXES: &[(&str, &str)] = &[
    ("VHS_", "comfyui-videohelpersuite"),
    ("easy ", "comfyui-easy-use"),
    ("IPAdapter", "comfyui_ipadapter_plus"),
    ("CR ", "comfyroll"),
    ("Florence2", "comfyui-florence2"),
    ("ReActor", "comfyui-reactor"),
    ("Anything Everywhere", "cg-use-everywhere"),
    ("mxSlider", "comfyui-mxtoolkit"),
    ("LayerMask: ", "comfyui_layerstyle"),
    ("LayerUtility: ", "comfyui_layerstyle"),
    ("LayerStyle: ", "comfyui_layerstyle"),
];
const SUFFIXES: &[(&str, &str)] = &[
    ("(rgthree)", "rgthree-comfy"),
    ("|pysssss", "comfyui-custom-scripts"),
    ("+", "comfyui_essentials"),
    (" [Crystools]", "comfyui-crystools"),
    (" (Efficient)", "efficiency-nodes-comfyui"),
    (" //Inspire", "comfyui-inspire-pack"),
];

/// The pack that provides `class_type`, when it is one of the well-known ones.
pub fn known_pack(class_type: &str) -> Option<&'static str> {
    if let Some((_, p)) = EXACT.iter().find(|(c, _)| *c == class_type) {
        return Some(*p);
    }
    PREFIXES
        .iter()
        .find(|(pre, _)| class_type.starts_with(pre))
        .or_else(|| SUFFIXES.iter().find(|(suf, _)| class_type.ends_with(suf)))
        .map(|(_, p)| *p)
}
