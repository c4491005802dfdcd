//! ComfyUI's `bislerp` (comfy/utils.py): a separable resize that, instead of blending two
//! neighbouring channel vectors linearly, spherically interpolates their directions and
//! linearly interpolates their lengths. Width is resized first, then height.
//!
//! The neighbour indices and ratios come from torch's bilinear interpolation of the index ramp
//! (as ComfyUI computes them), so they match exactly; the slerp itself uses `acos`/`sin`, where
//! torch's vectorised float32 functions may differ from the C library's by an ulp.

use super::interpolate::{lerp2, linear_taps};
use super::Planes;

/// Per output position along one axis: the two source indices and the blend ratio
/// (`generate_bilinear_data`).
fn neighbours(old: usize, new: usize) -> Vec<(usize, usize, f32)> {
    let ramp_hi = |k: usize| {
        if k + 1 == old {
            k as f32
        } else {
            (k + 1) as f32
        }
    };
    // The ramp is a [1, 1, 1, old] tensor resized to (1, new): torch's channels-last bilinear
    // kernel when 1 + new <= 128 (fused source index), the generic one otherwise.
    linear_taps(old, new, new < 128)
        .into_iter()
        .map(|(i0, i1, l0, l1)| {
            let v1 = lerp2(i0 as f32, l0, i1 as f32, l1);
            let v2 = lerp2(ramp_hi(i0), l0, ramp_hi(i1), l1);
            (v1 as usize, v2 as usize, v1 - v1.floor())
        })
        .collect()
}

/// `slerp(b1, b2, r)` of two channel vectors, written into `out`.
fn slerp(b1: &[f32], b2: &[f32], r: f32, out: &mut [f32]) {
    // torch.norm over a short last dimension: a sequential, fused sum of squares.
    let norm = |b: &[f32]| b.iter().fold(0.0f32, |acc, v| v.mul_add(*v, acc)).sqrt();
    let (n1, n2) = (norm(b1), norm(b2));
    let unit = |v: f32, n: f32| if n == 0.0 { 0.0 } else { v / n };
    let dot = b1
        .iter()
        .zip(b2)
        .fold(0.0f32, |acc, (a, b)| acc + unit(*a, n1) * unit(*b, n2));
    let one_minus_r = 1.0 - r;
    if dot > (1.0f64 - 1e-5) as f32 {
        out.copy_from_slice(b1);
        return;
    }
    if dot < (1e-5f64 - 1.0) as f32 {
        for ((o, a), b) in out.iter_mut().zip(b1).zip(b2) {
            *o = a * one_minus_r + b * r;
        }
        return;
    }
    let omega = dot.acos();
    let so = omega.sin();
    let c1 = (one_minus_r * omega).sin() / so;
    let c2 = (r * omega).sin() / so;
    let length = n1 * one_minus_r + n2 * r;
    for ((o, a), b) in out.iter_mut().zip(b1).zip(b2) {
        *o = (c1 * unit(*a, n1) + c2 * unit(*b, n2)) * length;
    }
}

/// Resizes `src` to `height x width` with ComfyUI's bislerp.
pub fn bislerp(src: &Planes, width: usize, height: usize) -> Planes {
    assert!(
        width > 0 && height > 0 && src.h > 0 && src.w > 0,
        "bislerp: empty size"
    );
    let c = src.c;
    let (mut v1, mut v2, mut res) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
    // Width pass.
    let xs = neighbours(src.w, width);
    let mut mid = Planes::zeros(src.n, c, src.h, width);
    for b in 0..src.n {
        for y in 0..src.h {
            for (x, &(x1, x2, r)) in xs.iter().enumerate() {
                for ch in 0..c {
                    v1[ch] = src.data[src.at(b, ch, y, x1)];
                    v2[ch] = src.data[src.at(b, ch, y, x2)];
                }
                slerp(&v1, &v2, r, &mut res);
                for (ch, &v) in res.iter().enumerate() {
                    let i = mid.at(b, ch, y, x);
                    mid.data[i] = v;
                }
            }
        }
    }
    // Height pass.
    let ys = neighbours(src.h, height);
    let mut out = Planes::zeros(src.n, c, height, width);
    for b in 0..src.n {
        for (y, &(y1, y2, r)) in ys.iter().enumerate() {
            for x in 0..width {
                for ch in 0..c {
                    v1[ch] = mid.data[mid.at(b, ch, y1, x)];
                    v2[ch] = mid.data[mid.at(b, ch, y2, x)];
                }
                slerp(&v1, &v2, r, &mut res);
                for (ch, &v) in res.iter().enumerate() {
                    let i = out.at(b, ch, y, x);
                    out.data[i] = v;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbours_of_a_doubling() {
        // 2 -> 4: source positions 0, 0.25, 0.75, 1 (clamped).
        let n = neighbours(2, 4);
        assert_eq!(n[0], (0, 1, 0.0));
        assert_eq!(n[1], (0, 1, 0.25));
        assert_eq!(n[2], (0, 1, 0.75));
        assert_eq!(n[3], (1, 1, 0.0));
    }

    #[test]
    fn slerp_keeps_parallel_vectors_and_interpolates_length() {
        let mut out = [0.0; 2];
        slerp(&[1.0, 0.0], &[3.0, 0.0], 0.5, &mut out);
        assert_eq!(out, [1.0, 0.0]); // same direction: ComfyUI returns b1
        slerp(&[1.0, 0.0], &[0.0, 3.0], 0.5, &mut out);
        let h = std::f32::consts::FRAC_1_SQRT_2 * 2.0;
        assert!(
            (out[0] - h).abs() < 1e-6 && (out[1] - h).abs() < 1e-6,
            "{out:?}"
        );
    }
}
