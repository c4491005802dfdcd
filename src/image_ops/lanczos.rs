//! ComfyUI's `lanczos` upscale: each image is quantised to 8-bit RGB
//! (`clip(255 * x, 0, 255).astype(uint8)`), resized by PIL with `Image.LANCZOS`, and turned back
//! into floats as `u8 / 255`.
//!
//! The resize reproduces Pillow's `Resample.c`: a separable filter (horizontal pass, then
//! vertical), coefficients computed in double and normalised, then converted to 22-bit fixed
//! point, accumulated in 32-bit integers with a rounding bias and clipped to 0..=255.

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

/// Resizes RGB planes (`c == 3`; PIL's RGB mode) to `height x width` like ComfyUI's lanczos.
pub fn lanczos(src: &Planes, width: usize, height: usize) -> Planes {
    assert!(width > 0 && height > 0, "lanczos: empty size");
    let mut out = Planes::zeros(src.n, src.c, height, width);
    for b in 0..src.n {
        for ch in 0..src.c {
            let mut plane: Vec<u8> = src
                .plane(b, ch)
                .iter()
                .map(|&v| (255.0f32 * v).clamp(0.0, 255.0) as u8)
                .collect();
            let (mut rows, mut cols) = (src.h, src.w);
            if width != cols {
                plane = pass(&plane, rows, cols, width, true);
                cols = width;
            }
            if height != rows {
                plane = pass(&plane, rows, cols, height, false);
                rows = height;
            }
            debug_assert_eq!((rows, cols), (height, width));
            let o = out.at(b, ch, 0, 0);
            for (dst, &v) in out.data[o..o + rows * cols].iter_mut().zip(&plane) {
                *dst = v as f32 / 255.0;
            }
        }
    }
    out
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
        let out = lanczos(&src, 9, 7);
        // 0.5 -> 127 -> 127/255.
        assert!(out.data.iter().all(|&v| v == 127.0 / 255.0));
    }
}
