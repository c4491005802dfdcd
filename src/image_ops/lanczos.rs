//! ComfyUI's `lanczos` upscale: each image is quantised to 8 bits
//! (`clip(255 * x, 0, 255).astype(uint8)`), made a PIL image with `Image.fromarray`, resized by
//! PIL with `Image.LANCZOS`, and turned back into floats as `u8 / 255`.
//!
//! The resize reproduces Pillow's `Resample.c`: a separable filter, coefficients computed in
//! double and normalised, then converted to 22-bit fixed point, accumulated in 32-bit integers
//! with a rounding bias and clipped to 0..=255 after each pass. Which pass runs first is
//! Pillow's choice ([`lanczos_vertical_first`]); it matters because the intermediate image is
//! rounded to 8 bits.
//!
//! `fromarray` makes an LA image of 2 channels, RGB of 3 and RGBA of 4 (and fails on any other
//! count). For LA and RGBA, `Image.resize` premultiplies the colour by alpha (`RGBa` / `La`),
//! resizes, and divides it out again, with the integer rounding of Pillow's `Convert.c`.

use super::Planes;

const PRECISION_BITS: u32 = 32 - 8 - 2;
const LANCZOS_SUPPORT: f64 = 3.0;

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        return 1.0;
    }
    let x = x * std::f64::consts::PI;
    x.sin() / x
}

fn lanczos_filter(x: f64) -> f64 {
    if (-LANCZOS_SUPPORT..LANCZOS_SUPPORT).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for resizing `in_size` samples to
/// `out_size`: per output position the first source index and its fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = LANCZOS_SUPPORT * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero.
            let xmin = ((center - support + 0.5) as i64).max(0);
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) - xmin;
            let mut k: Vec<f64> = (0..xmax.max(0))
                .map(|x| lanczos_filter(((x + xmin) as f64 - center + 0.5) * ss))
                .collect();
            let ww: f64 = k.iter().sum();
            if ww != 0.0 {
                k.iter_mut().for_each(|w| *w /= ww);
            }
            let one = (1u32 << PRECISION_BITS) as f64;
            let fixed = k
                .iter()
                .map(|&w| {
                    if w < 0.0 {
                        (-0.5 + w * one) as i32
                    } else {
                        (0.5 + w * one) as i32
                    }
                })
                .collect();
            (xmin as usize, fixed)
        })
        .collect()
}

fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// One separable pass over a `rows x cols` 8-bit plane along columns (`horizontal`) or rows.
fn pass(src: &[u8], rows: usize, cols: usize, out_len: usize, horizontal: bool) -> Vec<u8> {
    let in_len = if horizontal { cols } else { rows };
    let coeffs = coefficients(in_len, out_len);
    let (out_rows, out_cols) = if horizontal {
        (rows, out_len)
    } else {
        (out_len, cols)
    };
    let mut out = vec![0u8; out_rows * out_cols];
    for r in 0..out_rows {
        for c in 0..out_cols {
            let (start, k) = &coeffs[if horizontal { c } else { r }];
            let mut acc: i32 = 1 << (PRECISION_BITS - 1);
            for (j, w) in k.iter().enumerate() {
                let v = if horizontal {
                    src[r * cols + start + j]
                } else {
                    src[(start + j) * cols + c]
                };
                acc += v as i32 * w;
            }
            out[r * out_cols + c] = clip8(acc);
        }
    }
    out
}

/// Whether Pillow 13 runs the vertical pass before the horizontal one when resizing
/// `in_w x in_h` to `out_w x out_h`: when the height shrinks by more than twice as many rows as
/// the width loses columns (`in_h - out_h > 2 (in_w - out_w)`; always, then, when the width
/// grows or stays). The Pillow source at hand predates 13.0.0, so this rule was established
/// against Pillow 13.0.0 itself: all resizes between sizes with sides 1 to 9, random sizes up to
/// 160, both sides of the switch at aspect ratios from 1:50 to 50:1 and images up to 1000 times
/// taller than wide (see docs/image_nodes.md). Pillow 12.1 and older always ran the horizontal
/// pass first (12.2 and 12.3 did not for images over 100 times taller than wide).
pub fn lanczos_vertical_first(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> bool {
    let shrink_h = in_h as i64 - out_h as i64;
    let shrink_w = in_w as i64 - out_w as i64;
    out_h < in_h && shrink_h > 2 * shrink_w
}

/// Resizes one 8-bit plane like Pillow's `ImagingResample` with the LANCZOS filter.
fn resize_plane(plane: Vec<u8>, (w, h): (usize, usize), (out_w, out_h): (usize, usize)) -> Vec<u8> {
    let horizontal = |p: Vec<u8>, rows: usize| {
        if out_w != w {
            pass(&p, rows, w, out_w, true)
        } else {
            p
        }
    };
    let vertical = |p: Vec<u8>, cols: usize| {
        if out_h != h {
            pass(&p, h, cols, out_h, false)
        } else {
            p
        }
    };
    if lanczos_vertical_first(w, h, out_w, out_h) {
        horizontal(vertical(plane, w), out_h)
    } else {
        vertical(horizontal(plane, h), out_w)
    }
}

/// `MULDIV255` of Pillow's `ImagingUtils.h`: `round(a * b / 255)` in integers.
fn muldiv255(a: u8, b: u8) -> u8 {
    let t = a as u32 * b as u32 + 128;
    (((t >> 8) + t) >> 8) as u8
}

/// Pillow's `rgbA2rgba` / `lA2la` for one colour plane: colour times alpha.
fn premultiply(color: &mut [u8], alpha: &[u8]) {
    for (c, &a) in color.iter_mut().zip(alpha) {
        *c = muldiv255(*c, a);
    }
}

/// Pillow's `rgba2rgbA` / `la2lA`: colour divided by alpha (truncated, clipped at 255); alpha 0
/// and 255 leave the colour as it is.
fn unpremultiply(color: &mut [u8], alpha: &[u8]) {
    for (c, &a) in color.iter_mut().zip(alpha) {
        if a != 0 && a != 255 {
            *c = ((255 * *c as u32) / a as u32).min(255) as u8;
        }
    }
}

/// Resizes images of 2 (LA), 3 (RGB) or 4 (RGBA) channels to `width x height` like ComfyUI's
/// lanczos. Any other channel count is an error (`Image.fromarray` refuses it in ComfyUI); the
/// message is a sentence for the caller to attach to an input name.
pub fn lanczos(src: &Planes, width: usize, height: usize) -> Result<Planes, String> {
    if !(2..=4).contains(&src.c) {
        return Err(format!(
            "lanczos works on images of 2 (LA), 3 (RGB) or 4 (RGBA) channels, like PIL; this one has {}",
            src.c
        ));
    }
    if width == 0 || height == 0 || src.w == 0 || src.h == 0 {
        return Err(format!(
            "lanczos cannot resize {}x{} to {width}x{height}",
            src.w, src.h
        ));
    }
    let quantise = |v: &f32| (255.0f32 * v).clamp(0.0, 255.0) as u8;
    // Image.resize returns a copy for the same size, before any premultiplication.
    let same_size = (src.w, src.h) == (width, height);
    let has_alpha = src.c != 3 && !same_size;
    let mut out = Planes::zeros(src.n, src.c, height, width);
    for b in 0..src.n {
        let mut planes: Vec<Vec<u8>> = (0..src.c)
            .map(|ch| src.plane(b, ch).iter().map(quantise).collect())
            .collect();
        let alpha_at = src.c - 1;
        if has_alpha {
            let (color, alpha) = planes.split_at_mut(alpha_at);
            color.iter_mut().for_each(|c| premultiply(c, &alpha[0]));
        }
        let mut planes: Vec<Vec<u8>> = planes
            .into_iter()
            .map(|p| resize_plane(p, (src.w, src.h), (width, height)))
            .collect();
        if has_alpha {
            let (color, alpha) = planes.split_at_mut(alpha_at);
            color.iter_mut().for_each(|c| unpremultiply(c, &alpha[0]));
        }
        for (ch, plane) in planes.iter().enumerate() {
            let o = out.at(b, ch, 0, 0);
            for (dst, &v) in out.data[o..o + width * height].iter_mut().zip(plane) {
                *dst = v as f32 / 255.0;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_are_normalised_fixed_point() {
        for (i, o) in [(10, 23), (23, 10), (5, 5), (1, 4)] {
            for (start, k) in coefficients(i, o) {
                assert!(start + k.len() <= i);
                let s: i64 = k.iter().map(|&w| w as i64).sum();
                assert!((s - (1 << PRECISION_BITS)).abs() <= k.len() as i64, "{s}");
            }
        }
    }

    #[test]
    fn flat_image_stays_flat_and_is_quantised() {
        let src = Planes::new(1, 3, 4, 5, vec![0.5; 60]);
        let out = lanczos(&src, 9, 7).unwrap();
        // 0.5 -> 127 -> 127/255.
        assert!(out.data.iter().all(|&v| v == 127.0 / 255.0));
    }

    #[test]
    fn pass_order_switches_where_pillow_does() {
        // 7x5 -> 11x4 grows the width: vertical first.
        assert!(lanczos_vertical_first(7, 5, 11, 4));
        // 13x11 -> 12x9 loses 2 rows and 1 column (2 > 2 fails); -> 12x8 loses 3 rows.
        assert!(!lanczos_vertical_first(13, 11, 12, 9));
        assert!(lanczos_vertical_first(13, 11, 12, 8));
        // Growing the height, or both sides, is horizontal first.
        assert!(!lanczos_vertical_first(4, 4, 3, 6));
        assert!(!lanczos_vertical_first(4, 4, 8, 8));
    }

    #[test]
    fn premultiplication_rounds_like_pillow() {
        assert_eq!(muldiv255(255, 255), 255);
        assert_eq!(muldiv255(200, 128), 100); // 100.39 -> 100
        assert_eq!(muldiv255(1, 128), 1); // 0.502 -> 1
        assert_eq!(muldiv255(77, 0), 0);
        let mut c = vec![100, 100, 200, 9];
        unpremultiply(&mut c, &[128, 0, 255, 3]);
        assert_eq!(c, vec![199, 100, 200, 255]); // 25500/128 = 199; 2295/3 clipped to 255
    }

    #[test]
    fn other_channel_counts_are_errors() {
        for c in [1, 5] {
            let e = lanczos(&Planes::zeros(1, c, 4, 4), 8, 8).unwrap_err();
            assert!(e.contains("2 (LA), 3 (RGB) or 4 (RGBA)"), "{e}");
        }
    }
}
