//! Which upscale architecture a state dict holds, and its hyperparameters, read from key
//! names and tensor shapes the way spandrel (the loader behind ComfyUI's
//! `UpscaleModelLoader`) reads them. Works on shapes only, so it is cheap to test.
//!
//! * ESRGAN / RRDBNet: the old layout (`model.0`, `model.1.sub.N.RDBk.convj.0`, ...) as is,
//!   the new BasicSR/Real-ESRGAN layout (`conv_first`, `body.N.rdbk.convj`, `conv_body`,
//!   `conv_upK`, `conv_hr`, `conv_last`) and the BSRGAN one (`RRDB_trunk`, `trunk_conv`,
//!   `upconvK`, `HRconv`) renamed to the old layout (spandrel's `_new_to_old_arch`). The
//!   scale is `2^((sequence length − 5) / 3)`; an input of 4× or 16× the output channels
//!   means Real-ESRGAN's pixel-unshuffle (x2 / x1 models), which divides the scale.
//! * SRVGGNetCompact (Real-ESRGAN Compact): `body.0` conv, PReLU, `num_conv` × (conv,
//!   PReLU), last conv to `out · scale²` channels, pixel shuffle.
//! * Anything else spandrel knows is named by its signature keys, so the error says which
//!   architecture the file is.

use std::collections::BTreeMap;

/// Tensor shapes by key.
pub type Shapes = BTreeMap<String, Vec<usize>>;

/// The recognised architectures with their hyperparameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Detected {
    Esrgan(EsrganConfig),
    Compact(CompactConfig),
}

/// An RRDBNet as spandrel builds it (old-layout key names after [`to_old_layout`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EsrganConfig {
    /// Channels `model.0` takes (after the pixel-unshuffle, when there is one).
    pub in_nc: usize,
    pub out_nc: usize,
    /// Feature channels (nf / num_feat).
    pub nf: usize,
    /// Growth channels of the dense blocks (gc / num_grow_ch; 32 in every released file).
    pub gc: usize,
    /// RRDB blocks (23 for the x4plus models, 6 for the anime variant).
    pub nb: usize,
    /// ×2 nearest-upsample + conv stages (the network's own scale is `2^upsamples`).
    pub upsamples: usize,
    /// Pixel-unshuffle factor of Real-ESRGAN's x2 (2) and x1 (4) models.
    pub shuffle: Option<usize>,
    /// Which key layout the file used ("old", "new" or "bsrgan"), for messages.
    pub layout: &'static str,
}

impl EsrganConfig {
    /// The image scale: the network's, divided by the unshuffle factor.
    pub fn scale(&self) -> usize {
        (1usize << self.upsamples) / self.shuffle.unwrap_or(1)
    }
    /// Channels of the images it takes.
    pub fn image_channels(&self) -> usize {
        self.in_nc / self.shuffle.map_or(1, |s| s * s)
    }
}

/// An SRVGGNetCompact (PReLU activations, as spandrel always builds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactConfig {
    pub in_nc: usize,
    pub out_nc: usize,
    pub nf: usize,
    pub num_conv: usize,
    pub scale: usize,
}

/// Why a state dict is not an upscale model comfyrs can run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DetectError {
    /// A known architecture comfyrs does not implement (spandrel's name for it).
    Unsupported(String),
    /// Recognised, but the tensors contradict the architecture.
    Malformed(String),
    /// Nothing known.
    Unknown(String),
}

impl std::fmt::Display for DetectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectError::Unsupported(arch) => write!(
                f,
                "this is a {arch} model; comfyrs runs ESRGAN (RRDBNet) and RealESRGAN Compact \
                 (SRVGGNetCompact) upscale models only"
            ),
            DetectError::Malformed(m) => write!(f, "{m}"),
            DetectError::Unknown(keys) => write!(
                f,
                "not a known upscale model architecture (first keys: {keys}); comfyrs runs \
                 ESRGAN (RRDBNet) and RealESRGAN Compact (SRVGGNetCompact) upscale models"
            ),
        }
    }
}

/// Signature keys of the other architectures spandrel 0.4 loads (its `detect` conditions;
/// the first match names the file's architecture in the error).
const OTHER_ARCHES: &[(&str, &[&str])] = &[
    (
        "ESRGAN+ (RRDB with 1x1 residual convs)",
        &["model.1.sub.0.RDB1.conv1x1.weight"],
    ),
    (
        "Swift-SRGAN",
        &[
            "initial.cnn.depthwise.weight",
            "final_conv.pointwise.weight",
        ],
    ),
    (
        "HAT",
        &[
            "relative_position_index_SA",
            "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
        ],
    ),
    ("ATD", &["relative_position_index_SA", "conv_first.weight"]),
    (
        "GRL",
        &["conv_first.weight", "norm_start.weight", "norm_end.weight"],
    ),
    (
        "Swin2SR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "patch_embed.proj.weight",
            "conv_first.weight",
            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
            "layers.0.residual_group.blocks.0.attn.logit_scale",
        ],
    ),
    (
        "SwinIR",
        &[
            "layers.0.residual_group.blocks.0.norm1.weight",
            "conv_first.weight",
        ],
    ),
    (
        "GFPGAN",
        &["toRGB.0.weight", "stylegan_decoder.style_mlp.1.weight"],
    ),
    (
        "RestoreFormer",
        &["quantize.embedding.weight", "encoder.conv_in.weight"],
    ),
    ("LaMa", &["model.model.1.bn_l.running_mean"]),
    (
        "OmniSR",
        &[
            "residual_layer.0.residual_layer.0.layer.0.fn.0.weight",
            "input.weight",
        ],
    ),
    ("SCUNet", &["m_head.0.weight", "m_tail.0.weight"]),
    (
        "FBCNN",
        &[
            "m_head.weight",
            "m_down1.0.res.0.weight",
            "m_down2.0.res.0.weight",
            "qf_pred.0.res.0.weight",
        ],
    ),
    ("DRUNet", &["m_head.weight", "m_down1.0.res.0.weight"]),
    (
        "Uformer",
        &["input_proj.proj.0.weight", "output_proj.proj.0.weight"],
    ),
    (
        "RGT",
        &[
            "conv_first.weight",
            "before_RG.1.weight",
            "layers.0.blocks.0.gamma",
        ],
    ),
    ("DAT", &["conv_first.weight", "before_RG.1.weight"]),
    (
        "CRAFT",
        &[
            "conv_first.weight",
            "layers.0.residual_group.hf_blocks.0.attn.temperature",
        ],
    ),
    ("KBNet", &["intro.weight", "encoders.0.0.attgamma"]),
    ("DITN", &["sft.weight", "UFONE.0.ITLs.0.attn.temperature"]),
    (
        "MMRealSR",
        &[
            "conv_first.weight",
            "conv_body.weight",
            "conv_up1.weight",
            "de_net.conv_first.weight",
        ],
    ),
    ("SPAN", &["conv_1.sk.weight", "block_1.c1_r.sk.weight"]),
    ("RealCUGAN", &["unet1.conv1.conv.0.weight"]),
    ("SAFMN", &["to_feat.weight", "feats.0.norm1.weight"]),
    (
        "SAFMN BCIE",
        &["to_feat.1.weight", "feats.0.layers.0.norm1.weight"],
    ),
    (
        "DCTLSA",
        &[
            "fea_conv.weight",
            "B1.body.0.transformer_body.0.blocks.0.attn.qkv.weight",
        ],
    ),
    (
        "FFTformer",
        &[
            "patch_embed.proj.weight",
            "encoder_level1.0.norm2.body.weight",
        ],
    ),
    ("NAFNet", &["intro.weight", "ending.weight"]),
    (
        "MixDehazeNet",
        &["patch_embed.proj.weight", "layer1.blocks.0.norm1.weight"],
    ),
    (
        "DnCNN",
        &["model.0.weight", "model.0.bias", "model.2.weight"],
    ),
    ("IPT", &["sub_mean.weight", "add_mean.weight"]),
    (
        "DRCT",
        &["conv_first.weight", "layers.0.swin1.norm1.weight"],
    ),
    ("PLKSR", &["feats.0.weight", "feats.1.lk.conv.weight"]),
    ("RetinexFormer", &["body.0.estimator.conv1.weight"]),
    (
        "HVI-CIDNet",
        &["HVE_block0.1.weight", "HVE_block1.prelu.weight"],
    ),
    ("SeemoRe", &["conv_1.weight", "norm.weight"]),
    ("MoSR", &["gblocks.0.weight", "gblocks.1.norm.weight"]),
    ("MoESR", &["in_to_dim.weight", "blocks.0.blocks.0.gamma"]),
    ("RCAN", &["head.0.weight", "tail.1.weight"]),
    (
        "FDAT",
        &["conv_first.weight", "groups.0.blocks.0.attn.bias"],
    ),
    ("AuraSR", &["mid_attn.layers.0.0.to_out.weight"]),
];

/// Largest `i` + 1 over keys `{prefix}.{i}.…` (spandrel's `get_seq_len`).
pub fn seq_len(shapes: &Shapes, prefix: &str) -> usize {
    let p = format!("{prefix}.");
    shapes
        .keys()
        .filter_map(|k| k.strip_prefix(&p))
        .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
        .map(|i| i + 1)
        .max()
        .unwrap_or(0)
}

fn has(shapes: &Shapes, k: &str) -> bool {
    shapes.contains_key(k)
}

/// Reads the architecture and hyperparameters of `shapes` (keys already canonical: wrapper
/// dicts and `module.` prefixes removed).
pub fn detect(shapes: &Shapes) -> Result<Detected, DetectError> {
    // spandrel checks Compact before ESRGAN; the new RRDB layout has no `body.0.weight`.
    if has(shapes, "body.0.weight") && has(shapes, "body.1.weight") {
        return detect_compact(shapes).map(Detected::Compact);
    }
    let esrgan_old =
        has(shapes, "model.0.weight") && has(shapes, "model.1.sub.0.RDB1.conv1.0.weight");
    let esrgan_new = [
        "conv_first.weight",
        "body.0.rdb1.conv1.weight",
        "conv_body.weight",
        "conv_last.weight",
    ]
    .iter()
    .all(|k| has(shapes, k));
    let bsrgan = [
        "conv_first.weight",
        "RRDB_trunk.0.RDB1.conv1.weight",
        "trunk_conv.weight",
        "conv_last.weight",
    ]
    .iter()
    .all(|k| has(shapes, k));
    if esrgan_old || esrgan_new || bsrgan {
        let layout = if esrgan_old {
            "old"
        } else if esrgan_new {
            "new"
        } else {
            "bsrgan"
        };
        let old = rename_to_old(shapes, layout);
        return detect_esrgan(&old, layout).map(Detected::Esrgan);
    }
    if let Some((name, _)) = OTHER_ARCHES
        .iter()
        .find(|(_, keys)| keys.iter().all(|k| has(shapes, k)))
    {
        return Err(DetectError::Unsupported((*name).to_string()));
    }
    let first: Vec<&str> = shapes.keys().take(4).map(String::as_str).collect();
    Err(DetectError::Unknown(if first.is_empty() {
        "none: the file holds no tensors".into()
    } else {
        first.join(", ")
    }))
}

fn shape<'a>(shapes: &'a Shapes, k: &str) -> Result<&'a [usize], DetectError> {
    shapes
        .get(k)
        .map(Vec::as_slice)
        .ok_or_else(|| DetectError::Malformed(format!("missing tensor {k}")))
}

/// `[out, in, k, k]` of a conv weight.
fn conv_shape(shapes: &Shapes, k: &str) -> Result<(usize, usize), DetectError> {
    match shape(shapes, k)? {
        [o, i, kh, kw] if kh == kw => Ok((*o, *i)),
        s => Err(DetectError::Malformed(format!(
            "{k} has shape {s:?}, expected a square conv kernel [out, in, k, k]"
        ))),
    }
}

fn detect_compact(shapes: &Shapes) -> Result<CompactConfig, DetectError> {
    let highest = seq_len(shapes, "body") - 1;
    let (nf, in_nc) = conv_shape(shapes, "body.0.weight")?;
    if highest < 2 || !highest.is_multiple_of(2) {
        return Err(DetectError::Malformed(format!(
            "RealESRGAN Compact: body has {} entries, expected an odd count (convs with PReLUs between)",
            highest + 1
        )));
    }
    let num_conv = (highest - 2) / 2;
    let (last_out, _) = conv_shape(shapes, &format!("body.{highest}.weight"))?;
    // spandrel's get_scale_and_output_channels: out channels from [in, 3, 4, 1].
    let (scale, out_nc) = [in_nc, 3, 4, 1]
        .iter()
        .find_map(|&c| {
            let q = last_out / c;
            let r = (q as f64).sqrt() as usize;
            (last_out % c == 0 && r * r == q).then_some((r, c))
        })
        .ok_or_else(|| {
            DetectError::Malformed(format!(
                "RealESRGAN Compact: the last conv has {last_out} channels, not scale² × 1, 3 or 4"
            ))
        })?;
    for i in 0..=num_conv {
        let k = format!("body.{}.weight", 2 * i + 1);
        if shape(shapes, &k)? != [nf] {
            return Err(DetectError::Malformed(format!(
                "RealESRGAN Compact: {k} is not a PReLU weight of {nf} channels"
            )));
        }
    }
    Ok(CompactConfig {
        in_nc,
        out_nc,
        nf,
        num_conv,
        scale,
    })
}

/// The old-layout name of a new/BSRGAN-layout key (spandrel's `_new_to_old_arch`), or
/// `None` for a key the old layout does not have. `nb` is the block count, `max_up` the
/// index of the last upsample conv.
fn old_name(k: &str, nb: usize, max_up: usize) -> Option<String> {
    let (stem, kind) = k.rsplit_once('.')?;
    if kind != "weight" && kind != "bias" {
        return None;
    }
    let direct = match stem {
        "conv_first" => Some("model.0".to_string()),
        "conv_body" | "trunk_conv" => Some(format!("model.1.sub.{nb}")),
        "conv_hr" | "HRconv" => Some(format!("model.{}", max_up + 2)),
        "conv_last" => Some(format!("model.{}", max_up + 4)),
        _ => None,
    };
    if direct.is_some() {
        return direct.map(|s| format!("{s}.{kind}"));
    }
    if let Some(n) = stem
        .strip_prefix("conv_up")
        .or_else(|| stem.strip_prefix("upconv"))
        .and_then(|n| n.parse::<usize>().ok())
    {
        return Some(format!("model.{}.{kind}", 3 * n));
    }
    // body.N.rdbK.convJ / RRDB_trunk.N.RDBK.convJ
    let parts: Vec<&str> = stem.split('.').collect();
    if let [head, n, rdb, conv] = parts.as_slice() {
        if (*head == "body" || *head == "RRDB_trunk") && n.parse::<usize>().is_ok() {
            let rdb = rdb
                .strip_prefix("rdb")
                .or_else(|| rdb.strip_prefix("RDB"))?;
            if conv.starts_with("conv") {
                return Some(format!("model.1.sub.{n}.RDB{rdb}.{conv}.0.{kind}"));
            }
        }
    }
    None
}

fn max_upconv(keys: impl Iterator<Item = impl AsRef<str>>) -> usize {
    keys.filter_map(|k| {
        let k = k.as_ref();
        let stem = k.rsplit_once('.')?.0;
        let n = stem
            .strip_prefix("conv_up")
            .or_else(|| stem.strip_prefix("upconv"))?;
        n.parse::<usize>().ok().map(|n| 3 * n)
    })
    .max()
    .unwrap_or(0)
}

fn block_count(shapes: &Shapes, head: &str) -> usize {
    seq_len(shapes, head)
}

/// The old-layout names of `keys` of a file in `layout` ("old" keeps them), as pairs
/// (file key, old-layout key); keys the old layout lacks are dropped, as spandrel does.
pub fn old_layout_names<'a>(
    keys: impl Iterator<Item = &'a String> + Clone,
    layout: &str,
) -> Vec<(String, String)> {
    if layout == "old" {
        return keys.map(|k| (k.clone(), k.clone())).collect();
    }
    let nb = keys
        .clone()
        .filter_map(|k| {
            let rest = k
                .strip_prefix("body.")
                .or_else(|| k.strip_prefix("RRDB_trunk."))?;
            rest.split('.').next()?.parse::<usize>().ok().map(|i| i + 1)
        })
        .max()
        .unwrap_or(0);
    let max_up = max_upconv(keys.clone());
    keys.filter_map(|k| old_name(k, nb, max_up).map(|o| (k.clone(), o)))
        .collect()
}

fn rename_to_old(shapes: &Shapes, layout: &str) -> Shapes {
    old_layout_names(shapes.keys(), layout)
        .into_iter()
        .map(|(k, o)| (o, shapes[&k].clone()))
        .collect()
}

fn detect_esrgan(old: &Shapes, layout: &'static str) -> Result<EsrganConfig, DetectError> {
    let len = seq_len(old, "model");
    let (nf, in_nc) = conv_shape(old, "model.0.weight")?;
    let (out_nc, _) = conv_shape(old, &format!("model.{}.weight", len.saturating_sub(1)))?;
    if len < 5 || !(len - 5).is_multiple_of(3) {
        return Err(DetectError::Malformed(format!(
            "ESRGAN: the model sequence has {len} entries; only ×2 upsample stages (scale 1, 2, 4, \
             8, ...) are supported"
        )));
    }
    let upsamples = (len - 5) / 3;
    let nb = block_count(old, "model.1.sub").saturating_sub(1);
    if nb == 0 {
        return Err(DetectError::Malformed("ESRGAN: no RRDB blocks".into()));
    }
    let (gc, _) = conv_shape(old, "model.1.sub.0.RDB1.conv1.0.weight")?;
    // Every tensor the network reads must be there with the shapes the hyperparameters imply.
    let mut want: Vec<(String, [usize; 2])> = vec![
        ("model.0".into(), [nf, in_nc]),
        (format!("model.1.sub.{nb}"), [nf, nf]),
    ];
    for b in 0..nb {
        for r in 1..=3 {
            for j in 1..=5 {
                let o = if j == 5 { nf } else { gc };
                want.push((
                    format!("model.1.sub.{b}.RDB{r}.conv{j}.0"),
                    [o, nf + (j - 1) * gc],
                ));
            }
        }
    }
    for u in 1..=upsamples {
        want.push((format!("model.{}", 3 * u), [nf, nf]));
    }
    want.push((format!("model.{}", 3 * upsamples + 2), [nf, nf]));
    want.push((format!("model.{}", 3 * upsamples + 4), [out_nc, nf]));
    for (name, [o, i]) in want {
        let k = format!("{name}.weight");
        let s = shape(old, &k)?;
        if s != [o, i, 3, 3] {
            return Err(DetectError::Malformed(format!(
                "ESRGAN ({layout} layout): {k} has shape {s:?}, expected [{o}, {i}, 3, 3]"
            )));
        }
        let b = format!("{name}.bias");
        if shape(old, &b)? != [o] {
            return Err(DetectError::Malformed(format!(
                "ESRGAN ({layout} layout): {b} is not [{o}]"
            )));
        }
    }
    // Real-ESRGAN's pixel-unshuffle inputs: 4× or 16× the output channels (spandrel's test).
    let shuffle = if in_nc == out_nc * 4 || in_nc == out_nc * 16 {
        Some(((in_nc / out_nc) as f64).sqrt() as usize)
    } else {
        None
    };
    if let Some(s) = shuffle {
        if (1usize << upsamples) < s {
            return Err(DetectError::Malformed(format!(
                "ESRGAN: pixel-unshuffle ×{s} with only {upsamples} upsample stages"
            )));
        }
    }
    Ok(EsrganConfig {
        in_nc,
        out_nc,
        nf,
        gc,
        nb,
        upsamples,
        shuffle,
        layout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(s: &mut Shapes, name: &str, o: usize, i: usize) {
        s.insert(format!("{name}.weight"), vec![o, i, 3, 3]);
        s.insert(format!("{name}.bias"), vec![o]);
    }

    /// An old-layout RRDBNet's shapes.
    fn old(in_nc: usize, nf: usize, gc: usize, nb: usize, ups: usize) -> Shapes {
        let mut s = Shapes::new();
        conv(&mut s, "model.0", nf, in_nc);
        for b in 0..nb {
            for r in 1..=3 {
                for j in 1..=5 {
                    let o = if j == 5 { nf } else { gc };
                    conv(
                        &mut s,
                        &format!("model.1.sub.{b}.RDB{r}.conv{j}.0"),
                        o,
                        nf + (j - 1) * gc,
                    );
                }
            }
        }
        conv(&mut s, &format!("model.1.sub.{nb}"), nf, nf);
        for u in 1..=ups {
            conv(&mut s, &format!("model.{}", 3 * u), nf, nf);
        }
        conv(&mut s, &format!("model.{}", 3 * ups + 2), nf, nf);
        conv(&mut s, &format!("model.{}", 3 * ups + 4), 3, nf);
        s
    }

    /// The same network in BasicSR's (Real-ESRGAN's) key names.
    fn new(in_nc: usize, nf: usize, gc: usize, nb: usize, ups: usize) -> Shapes {
        let mut s = Shapes::new();
        conv(&mut s, "conv_first", nf, in_nc);
        for b in 0..nb {
            for r in 1..=3 {
                for j in 1..=5 {
                    let o = if j == 5 { nf } else { gc };
                    conv(
                        &mut s,
                        &format!("body.{b}.rdb{r}.conv{j}"),
                        o,
                        nf + (j - 1) * gc,
                    );
                }
            }
        }
        conv(&mut s, "conv_body", nf, nf);
        for u in 1..=ups {
            conv(&mut s, &format!("conv_up{u}"), nf, nf);
        }
        conv(&mut s, "conv_hr", nf, nf);
        conv(&mut s, "conv_last", 3, nf);
        s
    }

    fn esrgan(s: &Shapes) -> EsrganConfig {
        match detect(s).unwrap() {
            Detected::Esrgan(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn ultrasharp_old_layout_is_x4_23_blocks() {
        let c = esrgan(&old(3, 64, 32, 23, 2));
        assert_eq!(
            (c.nf, c.gc, c.nb, c.scale(), c.shuffle, c.layout),
            (64, 32, 23, 4, None, "old")
        );
    }

    #[test]
    fn realesrgan_layouts_and_scales() {
        // RealESRGAN_x4plus, the anime 6-block variant, x2plus (unshuffle 2), x1 (unshuffle 4).
        let c = esrgan(&new(3, 64, 32, 23, 2));
        assert_eq!((c.nb, c.scale(), c.shuffle, c.layout), (23, 4, None, "new"));
        let c = esrgan(&new(3, 64, 32, 6, 2));
        assert_eq!((c.nb, c.scale()), (6, 4));
        let c = esrgan(&new(12, 64, 32, 23, 2));
        assert_eq!(
            (c.in_nc, c.scale(), c.shuffle, c.image_channels()),
            (12, 2, Some(2), 3)
        );
        let c = esrgan(&new(48, 64, 32, 23, 2));
        assert_eq!((c.scale(), c.shuffle), (1, Some(4)));
        // x8 (three upsample stages) and x1 without unshuffle, old layout.
        assert_eq!(esrgan(&old(3, 32, 16, 2, 3)).scale(), 8);
        assert_eq!(esrgan(&old(3, 32, 16, 2, 0)).scale(), 1);
    }

    #[test]
    fn new_layout_renames_like_spandrel() {
        let names: BTreeMap<String, String> = old_layout_names(new(3, 8, 4, 2, 2).keys(), "new")
            .into_iter()
            .collect();
        assert_eq!(names["conv_first.weight"], "model.0.weight");
        assert_eq!(
            names["body.1.rdb3.conv5.bias"],
            "model.1.sub.1.RDB3.conv5.0.bias"
        );
        assert_eq!(names["conv_body.weight"], "model.1.sub.2.weight");
        assert_eq!(names["conv_up1.weight"], "model.3.weight");
        assert_eq!(names["conv_up2.weight"], "model.6.weight");
        assert_eq!(names["conv_hr.weight"], "model.8.weight");
        assert_eq!(names["conv_last.bias"], "model.10.bias");
    }

    #[test]
    fn compact_realesr_general_x4v3() {
        let mut s = Shapes::new();
        conv(&mut s, "body.0", 64, 3);
        for i in 0..32 {
            s.insert(format!("body.{}.weight", 2 * i + 1), vec![64]);
            conv(&mut s, &format!("body.{}", 2 * i + 2), 64, 64);
        }
        s.insert("body.65.weight".into(), vec![64]);
        conv(&mut s, "body.66", 48, 64);
        assert_eq!(
            detect(&s).unwrap(),
            Detected::Compact(CompactConfig {
                in_nc: 3,
                out_nc: 3,
                nf: 64,
                num_conv: 32,
                scale: 4
            })
        );
    }

    #[test]
    fn other_architectures_are_named() {
        let mut s = Shapes::new();
        for k in [
            "conv_first.weight",
            "layers.0.residual_group.blocks.0.norm1.weight",
            "layers.0.residual_group.blocks.0.mlp.fc1.bias",
        ] {
            s.insert(k.into(), vec![1]);
        }
        assert_eq!(
            detect(&s).unwrap_err(),
            DetectError::Unsupported("SwinIR".into())
        );
        let mut s = Shapes::new();
        s.insert("conv_1.sk.weight".into(), vec![1]);
        s.insert("block_1.c1_r.sk.weight".into(), vec![1]);
        assert_eq!(
            detect(&s).unwrap_err(),
            DetectError::Unsupported("SPAN".into())
        );
        let mut s = Shapes::new();
        s.insert("foo.weight".into(), vec![1]);
        let e = detect(&s).unwrap_err();
        assert_eq!(e, DetectError::Unknown("foo.weight".into()));
        assert!(e
            .to_string()
            .starts_with("not a known upscale model architecture (first keys: foo.weight)"));
    }

    #[test]
    fn wrong_shapes_are_named() {
        let mut s = old(3, 8, 4, 2, 2);
        s.insert(
            "model.1.sub.1.RDB2.conv3.0.weight".into(),
            vec![4, 15, 3, 3],
        );
        assert_eq!(
            detect(&s).unwrap_err().to_string(),
            "ESRGAN (old layout): model.1.sub.1.RDB2.conv3.0.weight has shape [4, 15, 3, 3], \
             expected [4, 16, 3, 3]"
        );
        let mut s = old(3, 8, 4, 2, 2);
        s.remove("model.8.bias");
        assert_eq!(
            detect(&s).unwrap_err().to_string(),
            "missing tensor model.8.bias"
        );
    }
}
