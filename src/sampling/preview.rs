//! Latent previews while a sampler runs, as ComfyUI's `latent2rgb` previewer draws them
//! (`latent_preview.py`): the step's denoised latent mapped to RGB by a fixed 4×3 matrix, then
//! fitted into `max_size`² and sent as a JPEG (quality 95) in a WebSocket binary frame.
//!
//! ComfyUI draws no previews unless started with `--preview-method`; comfyrs the same. `auto`
//! means latent2rgb, as in ComfyUI without a TAESD decoder; TAESD itself is not run here.

use crate::image_ops::py_round;
use crate::models::LatentFormat;
use candle_core::{DType, Tensor};
use image::RgbImage;
use std::str::FromStr;

/// How previews are drawn (`--preview-method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreviewMethod {
    /// No previews (ComfyUI's default).
    #[default]
    None,
    /// The latent mapped to RGB by [`SD1_LATENT_RGB_FACTORS`] (`auto` and `latent2rgb`).
    Latent2Rgb,
}

impl FromStr for PreviewMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(PreviewMethod::None),
            "auto" | "latent2rgb" => Ok(PreviewMethod::Latent2Rgb),
            "taesd" => Err(
                "TAESD previews need a TAESD decoder, which comfyrs does not run; use auto or latent2rgb"
                    .into(),
            ),
            other => Err(format!(
                "unknown preview method {other:?}; allowed: none, auto, latent2rgb"
            )),
        }
    }
}

/// What a run draws previews with (`Environment::previews`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreviewSettings {
    pub method: PreviewMethod,
    /// Previews are fitted into `max_size × max_size` (ComfyUI's `--preview-size`, 512).
    pub max_size: u32,
}

impl Default for PreviewSettings {
    fn default() -> Self {
        PreviewSettings {
            method: PreviewMethod::None,
            max_size: 512,
        }
    }
}

impl PreviewSettings {
    pub fn enabled(&self) -> bool {
        self.method != PreviewMethod::None
    }
}

/// The first image of `x0` ([B, C, H, W], sampler space) as an H×W RGB image: each pixel's
/// channels times the format's factors plus its bias, then `((v + 1) / 2).clamp(0, 1) · 255`
/// truncated to a byte (ComfyUI's `Latent2RGBPreviewer`).
pub fn latent_to_rgb(x0: &Tensor, format: &LatentFormat) -> candle_core::Result<RgbImage> {
    let (_, c, h, w) = x0.dims4()?;
    let factors = format.rgb_factors;
    if c != factors.len() {
        candle_core::bail!(
            "latent preview: the {} format has {} channels, the latent {c}",
            format.name,
            factors.len()
        );
    }
    let bias = format.rgb_bias.unwrap_or([0.0; 3]);
    let first: Vec<f32> = x0.get(0)?.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
    let plane = h * w;
    let mut img = RgbImage::new(w as u32, h as u32);
    for (p, px) in img.pixels_mut().enumerate() {
        for (rgb, out) in px.0.iter_mut().enumerate() {
            let v: f32 = (0..c)
                .map(|ch| first[ch * plane + p] * factors[ch][rgb])
                .sum::<f32>()
                + bias[rgb];
            *out = (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8;
        }
    }
    Ok(img)
}

/// PIL's `ImageOps.contain(img, (max, max))`: the largest size with the image's aspect ratio
/// that fits the square (smaller images are scaled up), resampled bilinearly.
pub fn contain(img: &RgbImage, max_size: u32) -> RgbImage {
    let (w, h) = (img.width().max(1), img.height().max(1));
    let (mut tw, mut th) = (max_size, max_size);
    let (im_ratio, dest_ratio) = (w as f64 / h as f64, 1.0);
    if im_ratio > dest_ratio {
        th = py_round(h as f64 / w as f64 * max_size as f64) as u32;
    } else if im_ratio < dest_ratio {
        tw = py_round(w as f64 / h as f64 * max_size as f64) as u32;
    }
    let (tw, th) = (tw.max(1), th.max(1));
    if (tw, th) == (img.width(), img.height()) {
        return img.clone();
    }
    image::imageops::resize(img, tw, th, image::imageops::FilterType::Triangle)
}

/// The JPEG (quality 95) of the preview of `x0`, fitted into `max_size`².
pub fn preview_jpeg(x0: &Tensor, format: &LatentFormat, max_size: u32) -> Result<Vec<u8>, String> {
    let img = latent_to_rgb(x0, format).map_err(|e| e.to_string())?;
    let img = contain(&img, max_size);
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn latent_to_rgb_applies_the_factors_per_pixel() {
        // Two pixels: all channels 1.0, and channel 3 alone at -1.0.
        let data = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, -1.0];
        let x0 = Tensor::from_slice(&data, (1, 4, 1, 2), &Device::Cpu).unwrap();
        let sd15 = LatentFormat::sd15();
        let img = latent_to_rgb(&x0, &sd15).unwrap();
        let byte = |v: f32| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8;
        let sums: Vec<f32> = (0..3)
            .map(|c| sd15.rgb_factors.iter().map(|f| f[c]).sum())
            .collect();
        assert_eq!(
            img.get_pixel(0, 0).0,
            [byte(sums[0]), byte(sums[1]), byte(sums[2])]
        );
        let f3 = sd15.rgb_factors[3];
        assert_eq!(
            img.get_pixel(1, 0).0,
            [byte(-f3[0]), byte(-f3[1]), byte(-f3[2])]
        );
        assert_eq!(img.get_pixel(1, 0).0, [154, 160, 219]);
    }

    #[test]
    fn sdxl_previews_add_the_bias() {
        let x0 = Tensor::zeros((1, 4, 1, 1), DType::F32, &Device::Cpu).unwrap();
        let img = latent_to_rgb(&x0, &LatentFormat::sdxl()).unwrap();
        let byte = |v: f32| (((v + 1.0) / 2.0).clamp(0.0, 1.0) * 255.0) as u8;
        assert_eq!(
            img.get_pixel(0, 0).0,
            [byte(0.1084), byte(-0.0175), byte(-0.0011)]
        );
    }

    #[test]
    fn contain_keeps_the_aspect_ratio_like_pil() {
        let img = RgbImage::new(64, 48);
        assert_eq!(contain(&img, 512).dimensions(), (512, 384));
        let img = RgbImage::new(30, 64);
        // 30 / 64 · 512 = 240
        assert_eq!(contain(&img, 512).dimensions(), (240, 512));
        let img = RgbImage::new(8, 8);
        assert_eq!(contain(&img, 512).dimensions(), (512, 512));
    }

    #[test]
    fn methods_parse_like_the_flag() {
        assert_eq!("auto".parse(), Ok(PreviewMethod::Latent2Rgb));
        assert_eq!("none".parse(), Ok(PreviewMethod::None));
        assert!("taesd"
            .parse::<PreviewMethod>()
            .unwrap_err()
            .contains("TAESD"));
        assert!("x"
            .parse::<PreviewMethod>()
            .unwrap_err()
            .contains("allowed"));
    }

    #[test]
    fn preview_is_a_jpeg_of_the_fitted_size() {
        let x0 = Tensor::zeros((2, 4, 8, 6), DType::F32, &Device::Cpu).unwrap();
        let jpeg = preview_jpeg(&x0, &LatentFormat::sd15(), 64).unwrap();
        let back = image::load_from_memory_with_format(&jpeg, image::ImageFormat::Jpeg).unwrap();
        assert_eq!((back.width(), back.height()), (48, 64));
    }
}
