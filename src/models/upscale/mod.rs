//! Image upscale models (ComfyUI's `UpscaleModelLoader` / `ImageUpscaleWithModel`, which
//! load through spandrel): reading the file (safetensors or a PyTorch zip `.pth`, with
//! spandrel's unwrapping of `params_ema`/`state_dict`/... and `module.` prefixes),
//! detecting the architecture from the state dict ([`detect`]), the networks
//! ([`rrdb`]: ESRGAN/RRDBNet in every key layout, [`srvgg`]: Real-ESRGAN Compact), and
//! ComfyUI's tiled inference ([`tiling`]). [`planes`] is the CPU convolution engine both
//! networks run on.
//!
//! On the CPU the weights are repacked to f32 at load (a few tens of MB at most); on other
//! devices they stay in the file's dtype, widened per conv. Inference is f32, as ComfyUI runs these models (spandrel builds them in f32 and
//! `ImageUpscaleWithModel` never casts).

pub mod detect;
pub mod fixture;
pub mod planes;
pub mod rrdb;
pub mod srvgg;
pub mod tiling;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::nn::weights_vb;
use super::{ModelError, Result, WeightMap};
use detect::{Detected, Shapes};
pub use rrdb::RrdbNet;
pub use srvgg::SrvggNet;

/// A loaded upscale network.
pub enum Network {
    Esrgan(RrdbNet),
    Compact(SrvggNet),
}

/// An upscale model: the network plus what `ImageUpscaleWithModel` needs to know.
pub struct UpscaleModel {
    pub net: Network,
    /// Output pixels per input pixel along each side.
    pub scale: usize,
    /// Channels of the images it takes and returns.
    pub in_channels: usize,
    pub out_channels: usize,
    /// Bytes of weights held.
    pub bytes: usize,
}

impl UpscaleModel {
    /// Builds the model a state dict describes (keys canonical, see [`canonicalize`]).
    pub fn from_weights(weights: WeightMap, device: &Device) -> Result<Self> {
        let shapes: Shapes = weights
            .iter()
            .map(|(k, t)| (k.clone(), t.dims().to_vec()))
            .collect();
        let detected =
            detect::detect(&shapes).map_err(|e| ModelError::NotSupported(e.to_string()))?;
        let bytes = weights
            .values()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum();
        let floats = |w: WeightMap| -> Result<WeightMap> {
            w.into_iter()
                .map(|(k, t)| {
                    let t = match t.dtype() {
                        DType::F32 | DType::F16 | DType::BF16 => t,
                        _ => t.to_dtype(DType::F32)?,
                    };
                    Ok((k, t.to_device(device)?))
                })
                .collect()
        };
        match detected {
            Detected::Esrgan(config) => {
                let mut weights = weights;
                let renamed: WeightMap = detect::old_layout_names(shapes.keys(), config.layout)
                    .into_iter()
                    .filter_map(|(k, old)| weights.remove(&k).map(|t| (old, t)))
                    .collect();
                let vb = weights_vb(floats(renamed)?, DType::F32, device);
                let (scale, in_channels, out_channels) =
                    (config.scale(), config.image_channels(), config.out_nc);
                Ok(UpscaleModel {
                    net: Network::Esrgan(RrdbNet::new(&vb, config)?),
                    scale,
                    in_channels,
                    out_channels,
                    bytes,
                })
            }
            Detected::Compact(config) => {
                if config.in_nc != config.out_nc {
                    return Err(ModelError::NotSupported(format!(
                        "RealESRGAN Compact with {} input and {} output channels (the network adds \
                         its upsampled input, so they must match)",
                        config.in_nc, config.out_nc
                    )));
                }
                let vb = weights_vb(floats(weights)?, DType::F32, device);
                let (scale, in_channels, out_channels) =
                    (config.scale, config.in_nc, config.out_nc);
                Ok(UpscaleModel {
                    net: Network::Compact(SrvggNet::new(&vb, config)?),
                    scale,
                    in_channels,
                    out_channels,
                    bytes,
                })
            }
        }
    }

    /// Reads and builds the model in `path`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::from_weights(canonicalize(read_state_dict(path)?), device)
    }

    /// spandrel's architecture name and tags, e.g. "ESRGAN 64nf 23nb (new layout)".
    pub fn describe(&self) -> String {
        match &self.net {
            Network::Esrgan(n) => {
                let c = n.config();
                let unshuffle = if c.shuffle.is_some() {
                    " unshuffle"
                } else {
                    ""
                };
                format!(
                    "ESRGAN x{} {}nf {}nb{unshuffle} ({} layout)",
                    self.scale, c.nf, c.nb, c.layout
                )
            }
            Network::Compact(n) => {
                let c = n.config();
                format!(
                    "RealESRGAN Compact x{} {}nf {}nc",
                    self.scale, c.nf, c.num_conv
                )
            }
        }
    }

    /// spandrel's `ImageModelDescriptor.__call__`, which ComfyUI runs on each tile: pads the
    /// image to the size the network needs (ESRGAN: at least 2 pixels, and a multiple of 4
    /// with a pixel-unshuffle; Compact: nothing), runs it, clamps to [0, 1] and crops the
    /// padding off.
    pub fn call(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (minimum, multiple) = match &self.net {
            Network::Esrgan(n) => {
                let m = if n.config().shuffle.is_some() { 4 } else { 1 };
                (2usize.div_ceil(m) * m, m)
            }
            Network::Compact(_) => (0, 1),
        };
        let (_, _, h, w) = x.dims4()?;
        let need = |n: usize| n.max(minimum).div_ceil(multiple) * multiple - n;
        let (ph, pw) = (need(h), need(w));
        let padded = ph > 0 || pw > 0;
        let input = if padded {
            pad_bottom_right(x, ph, pw)?
        } else {
            x.clone()
        };
        let y = self.forward(&input)?.clamp(0f32, 1f32)?;
        if padded {
            y.narrow(2, 0, h * self.scale)?.narrow(3, 0, w * self.scale)
        } else {
            Ok(y)
        }
    }

    /// The network alone: `x` [B, C, H, W] (f32) → [B, out, H·scale, W·scale].
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.net {
            Network::Esrgan(n) => n.forward(x),
            Network::Compact(n) => n.forward(x),
        }
    }
}

/// The wrapper keys spandrel looks inside, in its order (`canonicalize_state_dict`).
const WRAPPER_KEYS: &[&str] = &[
    "model_state_dict",
    "state_dict",
    "params_ema",
    "params-ema",
    "params",
    "model",
    "net",
];

/// Every tensor of a safetensors file, or of a PyTorch zip checkpoint (`.pth`, `.pt`,
/// `.ckpt`, `.bin`), looking inside the wrapper dicts training code saves
/// (`{"params_ema": {...}}` as Real-ESRGAN does). Weights keep their file dtype.
pub fn read_state_dict(path: &Path) -> Result<WeightMap> {
    let is_safetensors = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "safetensors" | "sft"));
    if is_safetensors {
        return super::checkpoint::load_safetensors(path, &Device::Cpu, DType::F32);
    }
    let unreadable = |e: candle_core::Error| {
        ModelError::NotSupported(format!(
            "{}: not a safetensors file nor a PyTorch zip checkpoint ({e})",
            path.display()
        ))
    };
    // Parse once for the format error; wrapper keys absent at the top level fail fast.
    candle_core::pickle::read_pth_tensor_info(path, false, Some("\0probe")).or_else(|e| {
        if e.to_string().contains("not found") {
            Ok(Vec::new())
        } else {
            Err(unreadable(e))
        }
    })?;
    for key in WRAPPER_KEYS {
        if let Ok(t) = candle_core::pickle::read_all_with_key(path, Some(key)) {
            if !t.is_empty() {
                return Ok(t.into_iter().collect());
            }
        }
    }
    let all = candle_core::pickle::read_all(path).map_err(unreadable)?;
    Ok(all.into_iter().collect::<HashMap<_, _>>())
}

/// Removes a `module.` or `netG.` prefix every key has (spandrel; ComfyUI's loader strips
/// `module.` from SwinIR files the same way).
pub fn canonicalize(mut weights: WeightMap) -> WeightMap {
    for prefix in ["module.", "netG."] {
        if !weights.is_empty() && weights.keys().all(|k| k.starts_with(prefix)) {
            weights = weights
                .into_iter()
                .map(|(k, v)| (k[prefix.len()..].to_string(), v))
                .collect();
        }
    }
    weights
}

/// torch's LeakyReLU: `x` where `x > 0`, else `slope · x` (as `max(x, slope·x)`, equal
/// for 0 < slope < 1).
pub(crate) fn leaky_relu(x: &Tensor, slope: f64) -> candle_core::Result<Tensor> {
    x.maximum(&(x * slope)?)
}

/// `torch.pixel_shuffle`: [B, C·r², H, W] → [B, C, H·r, W·r].
pub(crate) fn pixel_shuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let oc = c / (r * r);
    x.reshape((b, oc, r, r, h, w))?
        .permute((0, 1, 4, 2, 5, 3))?
        .reshape((b, oc, h * r, w * r))
}

/// `torch.pixel_unshuffle`: [B, C, H·r, W·r] → [B, C·r², H, W].
pub(crate) fn pixel_unshuffle(x: &Tensor, r: usize) -> candle_core::Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let (oh, ow) = (h / r, w / r);
    x.reshape((b, c, oh, r, ow, r))?
        .permute((0, 1, 3, 5, 2, 4))?
        .reshape((b, c * r * r, oh, ow))
}

/// Pads the bottom and right of `x` [B, C, H, W] by `pad_h` rows and `pad_w` columns as
/// spandrel's `pad_tensor` does: reflect (at most size − 1, torch's limit), then replicate
/// for the rest.
pub(crate) fn pad_bottom_right(
    x: &Tensor,
    pad_h: usize,
    pad_w: usize,
) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = |x: &Tensor, dim: usize, n: usize, p: usize| -> candle_core::Result<Tensor> {
        if p == 0 {
            return Ok(x.clone());
        }
        if n == 0 {
            candle_core::bail!("cannot pad an empty image");
        }
        let reflect = p.min(n - 1);
        // Rows n, n+1, ... mirror n−2, n−3, ...; then the last padded row repeats.
        let idx: Vec<u32> = (0..n + p)
            .map(|i| {
                let i = i.min(n + reflect - 1);
                if i < n {
                    i
                } else {
                    2 * (n - 1) - i
                }
            } as u32)
            .collect();
        let idx = Tensor::new(idx.as_slice(), x.device())?;
        x.contiguous()?.index_select(&idx, dim)
    };
    let y = pad(x, 2, h, pad_h)?;
    pad(&y, 3, w, pad_w)
}

/// `pad_to_multiple(x, m, mode="reflect")`: H and W padded up to multiples of `m`.
pub(crate) fn reflect_pad_to_multiple(x: &Tensor, m: usize) -> candle_core::Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pad = |n: usize| (m - n % m) % m;
    pad_bottom_right(x, pad(h), pad(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shuffle_round_trips_and_matches_torch_order() {
        let x = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let u = pixel_unshuffle(&x, 2).unwrap();
        // torch.pixel_unshuffle(arange(16).view(1,1,4,4), 2)[0, :, 0, 0] = [0, 1, 4, 5]
        assert_eq!(
            u.narrow(2, 0, 1)
                .unwrap()
                .narrow(3, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![0., 1., 4., 5.]
        );
        let back = pixel_shuffle(&u, 2).unwrap();
        assert_eq!(
            back.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            x.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }

    #[test]
    fn reflect_pad_mirrors_without_the_edge() {
        let x = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 1, 3))
            .unwrap();
        let y = reflect_pad_to_multiple(&x.repeat((1, 1, 3, 1)).unwrap(), 4).unwrap();
        assert_eq!(y.dims(), &[1, 1, 4, 4]);
        assert_eq!(
            y.narrow(2, 0, 1)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap(),
            vec![1., 2., 3., 2.]
        );
        // Past size − 1, the rest replicates the last padded column (spandrel's pad_tensor).
        let y = pad_bottom_right(&x, 0, 5).unwrap();
        assert_eq!(
            y.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            vec![1., 2., 3., 2., 1., 1., 1., 1.]
        );
    }
}
