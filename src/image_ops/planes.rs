//! `[N, C, H, W]` float32 buffers and conversions from and to the node tensors.

use candle_core::{DType, Device, Result, Tensor};

/// A batch of `n` images of `c` channels, `h` rows and `w` columns, stored channel-first
/// (`data[((b * c + ch) * h + y) * w + x]`), the layout torch's interpolate works in.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub data: Vec<f32>,
}

impl Planes {
    pub fn new(n: usize, c: usize, h: usize, w: usize, data: Vec<f32>) -> Self {
        assert_eq!(data.len(), n * c * h * w, "Planes: buffer size");
        Planes { n, c, h, w, data }
    }

    pub fn zeros(n: usize, c: usize, h: usize, w: usize) -> Self {
        Planes::new(n, c, h, w, vec![0.0; n * c * h * w])
    }

    /// Index of `(b, ch, y, x)` in `data`.
    #[inline]
    pub fn at(&self, b: usize, ch: usize, y: usize, x: usize) -> usize {
        ((b * self.c + ch) * self.h + y) * self.w + x
    }

    /// One `h x w` plane (image `b`, channel `ch`).
    pub fn plane(&self, b: usize, ch: usize) -> &[f32] {
        let s = self.at(b, ch, 0, 0);
        &self.data[s..s + self.h * self.w]
    }

    /// A 4-d `[N, C, H, W]` tensor (LATENT samples) as planes.
    pub fn from_nchw(t: &Tensor) -> Result<Self> {
        let (n, c, h, w) = t.dims4()?;
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Planes::new(n, c, h, w, data))
    }

    /// An IMAGE tensor `[B, H, W, C]` as planes (ComfyUI's `image.movedim(-1, 1)`).
    pub fn from_nhwc(t: &Tensor) -> Result<Self> {
        Planes::from_nchw(&t.permute((0, 3, 1, 2))?.contiguous()?)
    }

    /// A MASK tensor `[..., H, W]` as `[N, 1, H, W]` planes (`mask.reshape(-1, 1, H, W)`).
    pub fn from_mask(t: &Tensor) -> Result<Self> {
        let dims = t.dims();
        if dims.len() < 2 {
            candle_core::bail!("a MASK needs at least 2 dimensions, got {dims:?}");
        }
        let (h, w) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let data = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let n = data.len().checked_div(h * w).unwrap_or(0);
        Ok(Planes::new(n, 1, h, w, data))
    }

    pub fn to_nchw(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.n, self.c, self.h, self.w), &Device::Cpu)
    }

    /// Back to an IMAGE tensor `[B, H, W, C]` (contiguous).
    pub fn to_nhwc(&self) -> Result<Tensor> {
        self.to_nchw()?.permute((0, 2, 3, 1))?.contiguous()
    }

    /// A single-channel batch as a MASK tensor `[N, H, W]`.
    pub fn to_mask(&self) -> Result<Tensor> {
        Tensor::from_slice(&self.data, (self.n * self.c, self.h, self.w), &Device::Cpu)
    }

    /// The `rows x cols` window starting at `(y, x)` of every plane (a tensor `narrow`).
    pub fn window(&self, y: usize, x: usize, rows: usize, cols: usize) -> Planes {
        assert!(
            y + rows <= self.h && x + cols <= self.w,
            "Planes::window out of range"
        );
        let mut data = Vec::with_capacity(self.n * self.c * rows * cols);
        for b in 0..self.n {
            for ch in 0..self.c {
                for r in 0..rows {
                    let s = self.at(b, ch, y + r, x);
                    data.extend_from_slice(&self.data[s..s + cols]);
                }
            }
        }
        Planes::new(self.n, self.c, rows, cols, data)
    }
}
