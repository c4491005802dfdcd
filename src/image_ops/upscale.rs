//! `comfy.utils.common_upscale`: optional centre crop to the target aspect ratio, then one of
//! the resampling methods.

use super::{bislerp, interpolate, lanczos, Interp, Planes, TorchLayout};

/// Every `upscale_method` a ComfyUI resize node offers (each node lists its own subset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpscaleMethod {
    NearestExact,
    Bilinear,
    Area,
    Bicubic,
    Bislerp,
    Lanczos,
}

impl UpscaleMethod {
    /// The combo choices of LatentUpscale / LatentUpscaleBy, in ComfyUI's order.
    pub const LATENT_NAMES: [&'static str; 5] =
        ["nearest-exact", "bilinear", "area", "bicubic", "bislerp"];
    /// The combo choices of ImageScale / ImageScaleBy / ImageScaleToTotalPixels.
    pub const IMAGE_NAMES: [&'static str; 5] =
        ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"];

    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "nearest-exact" => UpscaleMethod::NearestExact,
            "bilinear" => UpscaleMethod::Bilinear,
            "area" => UpscaleMethod::Area,
            "bicubic" => UpscaleMethod::Bicubic,
            "bislerp" => UpscaleMethod::Bislerp,
            "lanczos" => UpscaleMethod::Lanczos,
            _ => return None,
        })
    }
}

/// `crop`: `disabled` resizes the whole image, `center` first cuts it to the target aspect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crop {
    Disabled,
    Center,
}

impl Crop {
    pub const NAMES: [&'static str; 2] = ["disabled", "center"];
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "disabled" => Some(Crop::Disabled),
            "center" => Some(Crop::Center),
            _ => None,
        }
    }
}

/// Python's `round()` of a float: to nearest, ties to even.
pub fn py_round(v: f64) -> i64 {
    v.round_ties_even() as i64
}

/// The centre window of `src` with the aspect ratio of `width x height` (common_upscale's
/// `crop == "center"`; the margins are rounded like Python's `round`).
pub fn center_crop(src: &Planes, width: usize, height: usize) -> Planes {
    let (old_w, old_h) = (src.w as f64, src.h as f64);
    let old_aspect = old_w / old_h;
    let new_aspect = width as f64 / height as f64;
    let (mut x, mut y) = (0usize, 0usize);
    if old_aspect > new_aspect {
        x = py_round((old_w - old_w * (new_aspect / old_aspect)) / 2.0).max(0) as usize;
    } else if old_aspect < new_aspect {
        y = py_round((old_h - old_h * (old_aspect / new_aspect)) / 2.0).max(0) as usize;
    }
    let (w, h) = (src.w.saturating_sub(2 * x), src.h.saturating_sub(2 * y));
    src.window(y, x, h, w)
}

/// Resizes `src` to `width x height` like `comfy.utils.common_upscale`. `layout` is the memory
/// layout torch would see (it only changes bilinear's last bit, see [`TorchLayout`]). Errors
/// are plain sentences for the caller to attach to an input name.
pub fn common_upscale(
    src: &Planes,
    width: usize,
    height: usize,
    method: UpscaleMethod,
    crop: Crop,
    layout: TorchLayout,
) -> Result<Planes, String> {
    if width == 0 || height == 0 {
        return Err(format!(
            "the target size {width}x{height} is empty (both sides must be at least 1)"
        ));
    }
    if src.h == 0 || src.w == 0 {
        return Err(format!("the input is empty ({}x{})", src.w, src.h));
    }
    let cropped;
    let s = match crop {
        Crop::Disabled => src,
        Crop::Center => {
            cropped = center_crop(src, width, height);
            if cropped.h == 0 || cropped.w == 0 {
                return Err(format!(
                    "centre-cropping {}x{} to the aspect of {width}x{height} leaves nothing",
                    src.w, src.h
                ));
            }
            &cropped
        }
    };
    Ok(match method {
        UpscaleMethod::NearestExact => interpolate(s, height, width, Interp::NearestExact, layout),
        UpscaleMethod::Bilinear => interpolate(s, height, width, Interp::Bilinear, layout),
        UpscaleMethod::Area => interpolate(s, height, width, Interp::Area, layout),
        UpscaleMethod::Bicubic => interpolate(s, height, width, Interp::Bicubic, layout),
        UpscaleMethod::Bislerp => bislerp(s, width, height),
        UpscaleMethod::Lanczos => lanczos(s, width, height)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding() {
        assert_eq!(py_round(2.5), 2);
        assert_eq!(py_round(3.5), 4);
        assert_eq!(py_round(-0.5), 0);
        assert_eq!(py_round(7.4999), 7);
    }

    #[test]
    fn center_crop_margins() {
        let src = Planes::zeros(1, 1, 10, 20);
        // 2:1 -> 1:1 cuts 5 columns each side.
        let c = center_crop(&src, 8, 8);
        assert_eq!((c.h, c.w), (10, 10));
        // 2:1 -> 4:1 cuts rows: round((10 - 10 * 0.5) / 2) = round(2.5) = 2.
        let c = center_crop(&src, 40, 10);
        assert_eq!((c.h, c.w), (6, 20));
    }

    #[test]
    fn empty_targets_are_errors() {
        let src = Planes::zeros(1, 3, 4, 4);
        assert!(common_upscale(
            &src,
            0,
            3,
            UpscaleMethod::Bilinear,
            Crop::Disabled,
            TorchLayout::ChannelsFirst
        )
        .is_err());
        let gray = Planes::zeros(1, 1, 4, 4);
        let e = common_upscale(
            &gray,
            8,
            8,
            UpscaleMethod::Lanczos,
            Crop::Disabled,
            TorchLayout::ChannelsLast,
        )
        .unwrap_err();
        assert!(e.contains("3 (RGB)"), "{e}");
    }
}
