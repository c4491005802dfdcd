//! `comfy.utils.tiled_scale` (ComfyUI's `tiled_scale_multidim` over H and W): runs a model
//! on overlapping tiles and blends them with feathered masks, so the result is the same
//! numbers ComfyUI gets, tile for tile.
//!
//! Per image of the batch: one call when the image fits a tile; otherwise tile starts
//! `range(0, size − overlap, tile − overlap)`, each clamped to `≤ size − overlap`, of length
//! `min(tile, size − start)`. Each output tile gets a mask that ramps `(t+1)/feather` over
//! `feather = round(overlap·scale)` pixels at both ends of each dimension (skipped in a
//! dimension where the tile is not longer than the feather), applied as in-place f32
//! multiplies in ComfyUI's order (rows, then columns; at each `t` the leading edge, then the
//! trailing one). Output = Σ tile·mask / Σ mask.

use candle_core::{DType, Device, Result, Tensor};

/// Number of model calls [`tiled_scale`] makes per image (`get_tiled_scale_steps`).
pub fn tiled_scale_steps(width: usize, height: usize, tile: usize, overlap: usize) -> usize {
    let n = |size: usize| {
        if size <= tile {
            1
        } else {
            (size - overlap).div_ceil(tile - overlap)
        }
    };
    n(height) * n(width)
}

/// Tile starts and lengths along one dimension of `size`.
fn spans(size: usize, tile: usize, overlap: usize) -> Vec<(usize, usize)> {
    if size <= tile {
        return vec![(0, size)];
    }
    (0..size - overlap)
        .step_by(tile - overlap)
        .map(|it| {
            let pos = it.min(size - overlap);
            (pos, tile.min(size - pos))
        })
        .collect()
}

/// The multipliers each position of a length-`len` mask dimension receives, in order.
fn feather_factors(len: usize, feather: usize) -> Vec<Vec<f32>> {
    let mut f = vec![Vec::new(); len];
    if feather >= len {
        return f;
    }
    for t in 0..feather {
        let a = ((t + 1) as f64 / feather as f64) as f32;
        f[t].push(a);
        f[len - 1 - t].push(a);
    }
    f
}

/// Upscales `samples` [B, C, H, W] by `scale` through `function`, tile by tile
/// (`tile` × `tile` input tiles overlapping by `overlap`), into an f32 CPU tensor
/// [B, out_channels, H·scale, W·scale]. `function` gets [1, C, h, w] tiles and must return
/// [1, out_channels, h·scale, w·scale].
pub fn tiled_scale<E: From<candle_core::Error>>(
    samples: &Tensor,
    tile: usize,
    overlap: usize,
    scale: usize,
    out_channels: usize,
    mut function: impl FnMut(&Tensor) -> std::result::Result<Tensor, E>,
) -> std::result::Result<Tensor, E> {
    let (b, _, h, w) = samples.dims4()?;
    if tile <= overlap {
        return Err(candle_core::Error::Msg(format!(
            "tiled_scale: tile {tile} must be larger than the overlap {overlap}"
        ))
        .into());
    }
    let (oh, ow) = (h * scale, w * scale);
    let mut images = Vec::with_capacity(b);
    let check = |t: &Tensor, th: usize, tw: usize| -> Result<Tensor> {
        let want = [1, out_channels, th * scale, tw * scale];
        if t.dims() != want {
            candle_core::bail!(
                "the upscale model returned a {:?} tile for a {th}x{tw} input, expected {want:?}",
                t.dims()
            );
        }
        t.to_device(&Device::Cpu)?.to_dtype(DType::F32)
    };
    for bi in 0..b {
        let s = samples.narrow(0, bi, 1)?;
        if h <= tile && w <= tile {
            images.push(check(&function(&s)?, h, w)?);
            continue;
        }
        let plane = oh * ow;
        let mut out = vec![0f32; out_channels * plane];
        let mut div = vec![0f32; out_channels * plane];
        let feather = overlap * scale;
        for &(py, ly) in &spans(h, tile, overlap) {
            for &(px, lx) in &spans(w, tile, overlap) {
                let t = s.narrow(2, py, ly)?.narrow(3, px, lx)?;
                let ps = check(&function(&t)?, ly, lx)?;
                let ps = ps.flatten_all()?.to_vec1::<f32>()?;
                let (th, tw) = (ly * scale, lx * scale);
                let fy = feather_factors(th, feather);
                let fx = feather_factors(tw, feather);
                // The mask of one channel (all channels are the same).
                let mut mask = vec![1f32; th * tw];
                for (y, row) in mask.chunks_mut(tw).enumerate() {
                    for m in row.iter_mut() {
                        for a in &fy[y] {
                            *m *= a;
                        }
                    }
                    for (x, m) in row.iter_mut().enumerate() {
                        for a in &fx[x] {
                            *m *= a;
                        }
                    }
                }
                let (oy, ox) = (py * scale, px * scale);
                for c in 0..out_channels {
                    for y in 0..th {
                        let src = &ps[(c * th + y) * tw..][..tw];
                        let mrow = &mask[y * tw..][..tw];
                        let at = c * plane + (oy + y) * ow + ox;
                        let dst = &mut out[at..at + tw];
                        let dd = &mut div[at..at + tw];
                        for x in 0..tw {
                            dst[x] += src[x] * mrow[x];
                            dd[x] += mrow[x];
                        }
                    }
                }
            }
        }
        for (o, d) in out.iter_mut().zip(&div) {
            *o /= d;
        }
        images.push(Tensor::from_vec(
            out,
            (1, out_channels, oh, ow),
            &Device::Cpu,
        )?);
    }
    Ok(Tensor::cat(&images, 0)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_and_spans_as_comfyui() {
        // 520 wide with tile 512, overlap 32: starts [0, 480], the second 40 long.
        assert_eq!(spans(520, 512, 32), vec![(0, 512), (480, 40)]);
        assert_eq!(tiled_scale_steps(520, 300, 512, 32), 2);
        assert_eq!(tiled_scale_steps(1000, 1000, 512, 32), 9);
        assert_eq!(
            spans(46, 20, 8),
            vec![(0, 20), (12, 20), (24, 20), (36, 10)]
        );
    }

    #[test]
    fn feather_ramps_at_both_ends_and_overlaps_on_short_tiles() {
        let f = feather_factors(6, 2);
        assert_eq!(f[0], vec![0.5]);
        assert_eq!(f[1], vec![1.0]);
        assert!(f[2].is_empty());
        assert_eq!(f[5], vec![0.5]);
        // Shorter than two feathers: the middle positions get both ramps.
        let f = feather_factors(3, 2);
        assert_eq!(f[1], vec![1.0, 1.0]);
        assert_eq!(
            (f[0].as_slice(), f[2].as_slice()),
            ([0.5f32].as_slice(), [0.5f32].as_slice())
        );
        assert!(feather_factors(4, 4).iter().all(Vec::is_empty));
    }
}
