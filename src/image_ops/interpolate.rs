//! `torch.nn.functional.interpolate(x, size=(h, w), mode=...)` on CPU float32, with torch's
//! defaults (`align_corners=False`, `antialias=False`, scales from the sizes).
//!
//! Index and weight tables follow ATen's `UpSample.h` / `UpSampleKernel.cpp` and
//! `AdaptiveAveragePooling.cpp` operation for operation in float32, including where torch's
//! x86-64 build contracts `a * b + c` into a fused multiply-add (found by comparing with torch
//! 2.8 on random data: the tests hold every mode bit-exact), so the results are torch's bit for
//! bit.

use super::Planes;
use candle_core::Tensor;

/// The interpolate modes ComfyUI passes through to torch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interp {
    NearestExact,
    Bilinear,
    Bicubic,
    /// `adaptive_avg_pool2d`.
    Area,
}

/// The memory layout of the tensor ComfyUI hands to torch. ComfyUI's IMAGE reaches
/// `interpolate` as `image.movedim(-1, 1)` of a contiguous `[B, H, W, C]` tensor, which torch
/// sees as channels-last; latents and masks are channels-first. Only bilinear depends on it
/// (see [`bilinear_kernel_is_channels_last`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TorchLayout {
    ChannelsFirst,
    ChannelsLast,
}

/// torch has two float bilinear kernels that round differently: a channels-last one, used when
/// the input is channels-last with more than 3 channels or when `out_h + out_w <= 128` (or on a
/// single thread with 3 channels), and a generic one otherwise. comfyrs assumes torch runs
/// with more than one thread, as ComfyUI does on any multi-core machine.
pub fn bilinear_kernel_is_channels_last(
    channels: usize,
    layout: TorchLayout,
    out_h: usize,
    out_w: usize,
) -> bool {
    (layout == TorchLayout::ChannelsLast && channels > 3) || out_h + out_w <= 128
}

/// `compute_scales_value` without an explicit scale: `(float)input / output`.
fn scale(input: usize, output: usize) -> f32 {
    input as f32 / output as f32
}

/// `area_pixel_compute_source_index` with `align_corners=False`: `scale * (dst + 0.5) - 0.5`.
/// torch's CPU build contracts this into a fused multiply-add in some kernels (`fused`) and
/// not in others; which one each kernel does was established against torch 2.8.
fn source_index(scale: f32, dst: usize, cubic: bool, fused: bool) -> f32 {
    let d = dst as f32 + 0.5;
    let src = if fused {
        scale.mul_add(d, -0.5)
    } else {
        scale * d - 0.5
    };
    if !cubic && src < 0.0 {
        0.0
    } else {
        src
    }
}

/// `guard_index_and_lambda`: the integer index (at most `size - 1`) and the clamped fraction.
fn guard_index_and_lambda(real: f32, size: usize) -> (i64, f32) {
    let index = (real.floor() as i64).min(size as i64 - 1);
    let lambda = (real - index as f32).clamp(0.0, 1.0);
    (index, lambda)
}

/// Linear taps along one axis: `(i0, i1, lambda0, lambda1)` per output position
/// (`compute_source_index_and_lambda`); `fused` as in [`source_index`].
pub(crate) fn linear_taps(
    input: usize,
    output: usize,
    fused: bool,
) -> Vec<(usize, usize, f32, f32)> {
    let s = scale(input, output);
    (0..output)
        .map(|d| {
            if input == output {
                return (d, d, 1.0, 0.0);
            }
            let real = source_index(s, d, false, fused);
            let (i0, l1) = guard_index_and_lambda(real, input);
            let i0 = i0 as usize;
            let i1 = if i0 < input - 1 { i0 + 1 } else { i0 };
            (i0, i1, 1.0 - l1, l1)
        })
        .collect()
}

/// `a * wa + b * wb` as torch's compiled code evaluates it: `fma(a, wa, b * wb)`.
#[inline]
pub(crate) fn lerp2(a: f32, wa: f32, b: f32, wb: f32) -> f32 {
    a.mul_add(wa, b * wb)
}

/// A 4-tap weighted sum as torch's `Interpolate` loop evaluates it (`out = t0*w0; out += ...`,
/// contracted): `fma(t3, w3, fma(t2, w2, fma(t0, w0, t1 * w1)))`.
#[inline]
fn sum4(t: [f32; 4], w: &[f32; 4]) -> f32 {
    let acc = lerp2(t[0], w[0], t[1], w[1]);
    t[3].mul_add(w[3], t[2].mul_add(w[2], acc))
}

/// `cubic_convolution1` and `cubic_convolution2` of ATen (A = -0.75).
fn cubic1(x: f32, a: f32) -> f32 {
    ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
}
fn cubic2(x: f32, a: f32) -> f32 {
    ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
}

/// Cubic taps along one axis: four clamped indices and their weights per output position.
fn cubic_taps(input: usize, output: usize) -> Vec<([usize; 4], [f32; 4])> {
    let s = scale(input, output);
    const A: f32 = -0.75;
    (0..output)
        .map(|d| {
            let real = source_index(s, d, true, true);
            let (index, t) = guard_index_and_lambda(real, input);
            let x2 = 1.0 - t;
            let w = [
                cubic2(t + 1.0, A),
                cubic1(t, A),
                cubic1(x2, A),
                cubic2(x2 + 1.0, A),
            ];
            let mut idx = [0usize; 4];
            for (j, slot) in idx.iter_mut().enumerate() {
                *slot = (index - 1 + j as i64).clamp(0, input as i64 - 1) as usize;
            }
            (idx, w)
        })
        .collect()
}

/// `nearest_neighbor_exact_compute_source_index`: `floorf((dst + 0.5) * scale)` where the
/// product is taken in double and rounded to float before the floor, as in ATen.
fn nearest_exact_taps(input: usize, output: usize) -> Vec<usize> {
    let s = scale(input, output) as f64;
    (0..output)
        .map(|d| {
            let v = ((d as f64 + 0.5) * s) as f32;
            (v.floor() as usize).min(input - 1)
        })
        .collect()
}

/// Adaptive average pooling windows: `[start, end)` per output position.
fn area_windows(input: usize, output: usize) -> Vec<(usize, usize)> {
    (0..output)
        .map(|a| (a * input / output, ((a + 1) * input).div_ceil(output)))
        .collect()
}

/// Resizes every plane of `src` to `out_h x out_w` like torch's interpolate. Both sizes must be
/// at least 1 (torch refuses empty outputs; callers check and name the input).
pub fn interpolate(
    src: &Planes,
    out_h: usize,
    out_w: usize,
    mode: Interp,
    layout: TorchLayout,
) -> Planes {
    assert!(
        out_h > 0 && out_w > 0 && src.h > 0 && src.w > 0,
        "interpolate: empty size"
    );
    let mut out = Planes::zeros(src.n, src.c, out_h, out_w);
    let mut o = 0;
    match mode {
        Interp::NearestExact => {
            let (ys, xs) = (
                nearest_exact_taps(src.h, out_h),
                nearest_exact_taps(src.w, out_w),
            );
            for b in 0..src.n {
                for ch in 0..src.c {
                    let p = src.plane(b, ch);
                    for &y in &ys {
                        for &x in &xs {
                            out.data[o] = p[y * src.w + x];
                            o += 1;
                        }
                    }
                }
            }
        }
        Interp::Bilinear => {
            let cl = bilinear_kernel_is_channels_last(src.c, layout, out_h, out_w);
            // The channels-last kernel fuses the source index, the generic one does not.
            let (ys, xs) = (linear_taps(src.h, out_h, cl), linear_taps(src.w, out_w, cl));
            for b in 0..src.n {
                for ch in 0..src.c {
                    let p = src.plane(b, ch);
                    for &(y0, y1, h0, h1) in &ys {
                        let (r0, r1) = (&p[y0 * src.w..], &p[y1 * src.w..]);
                        for &(x0, x1, w0, w1) in &xs {
                            out.data[o] = if cl {
                                // i00*w00 + i01*w01 + i10*w10 + i11*w11, weights h*w.
                                let v = lerp2(r0[x0], h0 * w0, r0[x1], h0 * w1);
                                let v = r1[x0].mul_add(h1 * w0, v);
                                r1[x1].mul_add(h1 * w1, v)
                            } else {
                                let t0 = lerp2(r0[x0], w0, r0[x1], w1);
                                let t1 = lerp2(r1[x0], w0, r1[x1], w1);
                                lerp2(t0, h0, t1, h1)
                            };
                            o += 1;
                        }
                    }
                }
            }
        }
        Interp::Bicubic => {
            let (ys, xs) = (cubic_taps(src.h, out_h), cubic_taps(src.w, out_w));
            for b in 0..src.n {
                for ch in 0..src.c {
                    let p = src.plane(b, ch);
                    for (yi, yw) in &ys {
                        for (xi, xw) in &xs {
                            let row = |y: usize| {
                                let r = &p[y * src.w..];
                                sum4([r[xi[0]], r[xi[1]], r[xi[2]], r[xi[3]]], xw)
                            };
                            out.data[o] =
                                sum4([row(yi[0]), row(yi[1]), row(yi[2]), row(yi[3])], yw);
                            o += 1;
                        }
                    }
                }
            }
        }
        Interp::Area => {
            let (ys, xs) = (area_windows(src.h, out_h), area_windows(src.w, out_w));
            for b in 0..src.n {
                for ch in 0..src.c {
                    let p = src.plane(b, ch);
                    for &(y0, y1) in &ys {
                        for &(x0, x1) in &xs {
                            let mut sum = 0.0f32;
                            for y in y0..y1 {
                                for x in x0..x1 {
                                    sum += p[y * src.w + x];
                                }
                            }
                            out.data[o] = sum / (y1 - y0) as f32 / (x1 - x0) as f32;
                            o += 1;
                        }
                    }
                }
            }
        }
    }
    out
}

/// `interpolate(x, size=(h, w), mode="bilinear")` of a channels-first `[N, C, H, W]` tensor:
/// what ComfyUI does to noise masks (`reshape_mask`), conditioning masks and inpaint masks
/// (`[N, 1, H, W]`, where torch's kernel choice only depends on the output size) and to latents.
/// The one bilinear resize of comfyrs; IMAGE tensors go through [`interpolate`] with
/// [`TorchLayout::ChannelsLast`] instead. Empty sizes are errors (torch refuses them too).
pub fn bilinear_nchw(x: &Tensor, h: usize, w: usize) -> candle_core::Result<Tensor> {
    let (_, _, ih, iw) = x.dims4()?;
    if ih == 0 || iw == 0 || h == 0 || w == 0 {
        candle_core::bail!("cannot resize {ih}x{iw} to {h}x{w} (every side must be at least 1)");
    }
    let src = Planes::from_nchw(x)?;
    interpolate(&src, h, w, Interp::Bilinear, TorchLayout::ChannelsFirst).to_nchw()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_sizes_copy() {
        let src = Planes::new(1, 2, 3, 4, (0..24).map(|v| v as f32 * 0.37).collect());
        for mode in [
            Interp::NearestExact,
            Interp::Bilinear,
            Interp::Bicubic,
            Interp::Area,
        ] {
            for layout in [TorchLayout::ChannelsFirst, TorchLayout::ChannelsLast] {
                assert_eq!(interpolate(&src, 3, 4, mode, layout), src, "{mode:?}");
            }
        }
    }

    #[test]
    fn cubic_weights_sum_to_one_and_clamp_indices() {
        for (i, o) in [(4, 9), (9, 4), (1, 5), (7, 7)] {
            for (idx, w) in cubic_taps(i, o) {
                assert!(idx.iter().all(|&k| k < i));
                assert!((w.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn area_windows_cover_the_input() {
        assert_eq!(area_windows(5, 3), vec![(0, 2), (1, 4), (3, 5)]);
        assert_eq!(area_windows(2, 4), vec![(0, 1), (0, 1), (1, 2), (1, 2)]);
    }
}
