//! One patch on one weight and its math (numerics spec §7.2–7.3), all in f32.
//!
//! `strength` multiplies `alpha / rank` first (a Python float product), and that scalar,
//! rounded to f32, multiplies the delta: `W += f32(strength·alpha/rank) · Δ`. DoRA follows
//! ComfyUI's `weight_decompose`, including its use of the *unpatched* weight for the norm
//! when the scale is per output row.

use std::collections::HashMap;

use candle_core::{DType, Tensor, D};

use crate::models::nn::cpu_gemm::{par_gemm, Dest, Operand};
use crate::models::nn::{cpu_f32, is_cpu_f32};
use crate::models::{ModelError, Result};

/// The weight delta of one adapter.
#[derive(Clone, Debug)]
pub enum Adapter {
    /// LoRA / LoCon: `up [out, r(,1,1)] · down [r, in(,kh,kw)]`, optional Tucker `mid`.
    Lora {
        up: Tensor,
        down: Tensor,
        mid: Option<Tensor>,
    },
    /// LyCORIS LoHa: `(w1a·w1b) ⊙ (w2a·w2b)`, optional CP/Tucker cores `t1`, `t2`.
    LoHa {
        w1a: Tensor,
        w1b: Tensor,
        w2a: Tensor,
        w2b: Tensor,
        t: Option<(Tensor, Tensor)>,
    },
    /// LyCORIS LoKr: `kron(w1, w2)`, each factor whole or as `a·b` (w2 optionally Tucker).
    LoKr { w1: Factor, w2: Factor },
    /// A full delta (`.diff`, `.diff_b`, `.w_norm`, `.b_norm`): `W += strength · diff`.
    Diff(Tensor),
    /// A replacement (`.set_weight`): `W = set` (strength is not used, as in ComfyUI).
    Set(Tensor),
    /// A scale of the weight itself, `W *= factor` (ComfyUI's `add_patches({key: (None,)},
    /// 0.0, factor)`: a zero-strength patch with `strength_model = factor`, as the attention
    /// multiplier nodes add).
    Scale(f64),
}

/// A LoKr factor: given whole, or as the product `a · b` (with an optional Tucker core).
#[derive(Clone, Debug)]
pub enum Factor {
    Whole(Tensor),
    Product {
        a: Tensor,
        b: Tensor,
        t: Option<Tensor>,
    },
}

/// A patch for one target weight: the adapter, its `.alpha` and `.dora_scale`.
#[derive(Clone, Debug)]
pub struct Patch {
    pub adapter: Adapter,
    pub alpha: Option<f64>,
    pub dora_scale: Option<Tensor>,
    /// `.reshape_weight` of a LoRA pair: the weight is zero-padded to this shape before the
    /// delta is added (Flux control LoRAs widen `img_in` this way).
    pub reshape: Option<Vec<usize>>,
}

fn f32t(t: &Tensor) -> Result<Tensor> {
    Ok(t.to_dtype(DType::F32)?)
}

/// `einsum('i j k l, j r, i p -> p r k l', t, wb, wa)` (LoHa/LoKr Tucker rebuild).
fn tucker(t: &Tensor, wb: &Tensor, wa: &Tensor) -> Result<Tensor> {
    let (i, j, k, l) = t.dims4()?;
    let r = wb.dim(1)?;
    let p = wa.dim(1)?;
    // Σ_j t[i,j,k,l]·wb[j,r] → [i,k,l,r]
    let tj = t
        .permute((0, 2, 3, 1))?
        .contiguous()?
        .reshape((i * k * l, j))?;
    let m = tj
        .matmul(&f32t(wb)?.contiguous()?)?
        .reshape((i, k * l * r))?;
    // Σ_i wa[i,p]·m[i,…] → [p,k,l,r] → [p,r,k,l]
    let out = f32t(wa)?.t()?.contiguous()?.matmul(&m)?;
    Ok(out
        .reshape((p, k, l, r))?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// `torch.kron` for equal-rank 2-d or 4-d tensors.
fn kron(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    let ad = a.dims().to_vec();
    let bd = b.dims().to_vec();
    if ad.len() != bd.len() {
        return Err(ModelError::BadInput(format!(
            "kron of tensors with shapes {ad:?} and {bd:?}"
        )));
    }
    // a[i0,i1,..] b[j0,j1,..] → interleave dims: [i0, j0, i1, j1, ...]
    let mut a_shape = Vec::new();
    let mut b_shape = Vec::new();
    let mut out = Vec::new();
    for (x, y) in ad.iter().zip(&bd) {
        a_shape.extend([*x, 1]);
        b_shape.extend([1, *y]);
        out.push(x * y);
    }
    let prod = a
        .reshape(a_shape)?
        .broadcast_mul(&b.reshape(b_shape)?)?
        .reshape(out)?;
    Ok(prod)
}

impl Factor {
    /// The factor's matrix and, for a product, its rank (`b.shape[0]`).
    fn build(&self) -> Result<(Tensor, Option<usize>)> {
        match self {
            Factor::Whole(w) => Ok((f32t(w)?, None)),
            Factor::Product { a, b, t: None } => Ok((f32t(a)?.matmul(&f32t(b)?)?, Some(b.dim(0)?))),
            Factor::Product { a, b, t: Some(t) } => Ok((tucker(&f32t(t)?, b, a)?, Some(b.dim(0)?))),
        }
    }
}

impl Adapter {
    /// The unscaled delta, reshaped to `shape`, and the rank `alpha` divides by (None: alpha is
    /// ignored, the LoKr rule when neither factor is a product).
    pub fn delta(&self, shape: &[usize]) -> Result<(Tensor, Option<usize>)> {
        let (d, rank) = match self {
            Adapter::Lora { up, down, mid } => {
                let up = f32t(up)?;
                let mut down = f32t(down)?;
                if let Some(mid) = mid {
                    // ComfyUI's LoCon mid path: mm(down^T.flatten(1), mid^T.flatten(1)) reshaped
                    // to [in, r, kh, kw] and transposed back.
                    let mid = f32t(mid)?;
                    let (r, cin) = (down.dim(0)?, down.dim(1)?);
                    let (kh, kw) = (mid.dim(2)?, mid.dim(3)?);
                    let dt = down.transpose(0, 1)?.contiguous()?.flatten_from(1)?;
                    let mt = mid.transpose(0, 1)?.contiguous()?.flatten_from(1)?;
                    down = dt
                        .matmul(&mt)?
                        .reshape((cin, r, kh, kw))?
                        .transpose(0, 1)?
                        .contiguous()?;
                }
                let rank = down.dim(0)?;
                let d = up.flatten_from(1)?.matmul(&down.flatten_from(1)?)?;
                (d, Some(rank))
            }
            Adapter::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                t,
            } => {
                let (m1, m2) = match t {
                    Some((t1, t2)) => {
                        (tucker(&f32t(t1)?, w1b, w1a)?, tucker(&f32t(t2)?, w2b, w2a)?)
                    }
                    None => (
                        f32t(w1a)?.matmul(&f32t(w1b)?)?,
                        f32t(w2a)?.matmul(&f32t(w2b)?)?,
                    ),
                };
                ((m1 * m2)?, Some(w1b.dim(0)?))
            }
            Adapter::LoKr { w1, w2 } => {
                let (mut a, r1) = w1.build()?;
                let (b, r2) = w2.build()?;
                if b.rank() == 4 && a.rank() == 2 {
                    a = a.unsqueeze(2)?.unsqueeze(2)?;
                }
                // w2's rank wins when both are products.
                (kron(&a, &b)?, r2.or(r1))
            }
            Adapter::Diff(d) | Adapter::Set(d) => (f32t(d)?, None),
            Adapter::Scale(_) => {
                return Err(ModelError::BadInput("a weight scale has no delta".into()))
            }
        };
        if d.elem_count() != shape.iter().product::<usize>() {
            return Err(ModelError::BadInput(format!(
                "delta of shape {:?} does not fit a weight of shape {shape:?}",
                d.dims()
            )));
        }
        Ok((d.reshape(shape)?, rank))
    }

    /// Can this delta patch a weight of `shape`? Full diffs and replacements need the exact
    /// shape (ComfyUI skips them otherwise); factored deltas need the element count (they are
    /// reshaped).
    pub fn fits(&self, shape: &[usize]) -> Result<bool> {
        Ok(match self {
            Adapter::Diff(d) | Adapter::Set(d) => d.dims() == shape,
            Adapter::Scale(_) => true,
            _ => self.delta_elems()? == shape.iter().product::<usize>(),
        })
    }

    /// The element count of the delta without computing it.
    pub fn delta_elems(&self) -> Result<usize> {
        let n = |t: &Tensor| t.elem_count();
        Ok(match self {
            Adapter::Lora { up, down, mid } => {
                let out = up.dim(0)?;
                let per_in = match mid {
                    Some(m) => down.dim(1)? * m.dim(2)? * m.dim(3)?,
                    None => n(down) / down.dim(0)?,
                };
                out * per_in
            }
            Adapter::LoHa { w1a, w1b, t, .. } => match t {
                Some((t1, _)) => w1a.dim(1)? * w1b.dim(1)? * t1.dim(2)? * t1.dim(3)?,
                None => w1a.dim(0)? * w1b.dim(1)?,
            },
            Adapter::LoKr { w1, w2 } => {
                let f = |f: &Factor| -> Result<usize> {
                    Ok(match f {
                        Factor::Whole(w) => n(w),
                        Factor::Product { a, b, t: None } => a.dim(0)? * b.dim(1)?,
                        Factor::Product { a, b, t: Some(t) } => {
                            a.dim(1)? * b.dim(1)? * t.dim(2)? * t.dim(3)?
                        }
                    })
                };
                f(w1)? * f(w2)?
            }
            Adapter::Diff(d) | Adapter::Set(d) => n(d),
            Adapter::Scale(_) => 0,
        })
    }
}

/// `torch.cat([b, a])` for `a, b = t.chunk(2, dim=0)` (ComfyUI's `swap_scale_shift`).
fn swap_halves(t: &Tensor) -> Result<Tensor> {
    let n = t.dim(0)?;
    let first = n.div_ceil(2);
    Ok(Tensor::cat(
        &[&t.narrow(0, first, n - first)?, &t.narrow(0, 0, first)?],
        0,
    )?)
}

impl Patch {
    /// The same patch with its delta's two halves (along dim 0) swapped: ComfyUI's
    /// `swap_scale_shift` applied to the delta (Flux's `norm_out.linear`). The rows of a
    /// LoRA's delta are its `up` rows (and a LoHa's those of `w1a`/`w2a`), so those are
    /// swapped; Tucker LoHa and LoKr are not supported there.
    pub fn with_swapped_halves(&self) -> Result<Patch> {
        let adapter = match &self.adapter {
            Adapter::Lora { up, down, mid } => Adapter::Lora {
                up: swap_halves(up)?,
                down: down.clone(),
                mid: mid.clone(),
            },
            Adapter::LoHa {
                w1a,
                w1b,
                w2a,
                w2b,
                t: None,
            } => Adapter::LoHa {
                w1a: swap_halves(w1a)?,
                w1b: w1b.clone(),
                w2a: swap_halves(w2a)?,
                w2b: w2b.clone(),
                t: None,
            },
            Adapter::Diff(d) => Adapter::Diff(swap_halves(d)?),
            Adapter::Set(s) => Adapter::Set(s.clone()),
            Adapter::Scale(f) => Adapter::Scale(*f),
            _ => {
                return Err(ModelError::NotSupported(
                    "a Tucker LoHa or LoKr patch on a weight whose delta halves are swapped \
                     (Flux's norm_out.linear)"
                        .into(),
                ))
            }
        };
        Ok(Patch {
            adapter,
            alpha: self.alpha,
            dora_scale: self.dora_scale.clone(),
            reshape: self.reshape.clone(),
        })
    }

    /// ComfyUI's `calculate_weight` for this patch: the new f32 weight from the current one.
    pub fn apply(&self, weight: &Tensor, strength: f64) -> Result<Tensor> {
        let weight = f32t(weight)?;
        let weight = match &self.reshape {
            Some(shape) => pad_to_shape(&weight, shape)?,
            None => weight,
        };
        let shape = weight.dims().to_vec();
        if let Adapter::Scale(f) = self.adapter {
            // `weight *= strength_model` (float32), skipped at 1 as ComfyUI does.
            return Ok(if f == 1.0 { weight } else { (weight * f)? });
        }
        if let Adapter::Set(s) = &self.adapter {
            if s.dims() != shape.as_slice() {
                return Err(ModelError::BadInput(format!(
                    "set_weight of shape {:?} for a weight of shape {shape:?}",
                    s.dims()
                )));
            }
            return f32t(s);
        }
        if !self.adapter.fits(&shape)? {
            return Err(ModelError::BadInput(format!(
                "{} values for a weight of shape {shape:?}",
                self.adapter.delta_elems()?
            )));
        }
        if self.dora_scale.is_none() {
            if let Some(patched) = self.apply_lora_fused(&weight, strength)? {
                return Ok(patched);
            }
        }
        let (delta, rank) = self.adapter.delta(&shape)?;
        if let Adapter::Diff(_) = self.adapter {
            // ComfyUI skips a diff at strength 0.
            if strength == 0.0 {
                return Ok(weight);
            }
            return Ok((weight + (delta * strength)?)?);
        }
        let alpha = match (self.alpha, rank) {
            (Some(a), Some(r)) => a / r as f64,
            _ => 1.0,
        };
        match &self.dora_scale {
            Some(scale) => weight_decompose(scale, &weight, &delta, alpha, strength),
            None => Ok((weight + (delta * (strength * alpha))?)?),
        }
    }
}

impl Patch {
    /// Plain LoRA/LoCon (no Tucker core) on an f32 CPU weight: `W + s·α/r · up·down` as one
    /// gemm accumulating onto a copy of `W`. The unfused form allocates the delta, its scaled
    /// copy and the sum (three weight-sized buffers per patch, each paid again in page faults).
    /// `None` when the fast path does not apply.
    fn apply_lora_fused(&self, weight: &Tensor, strength: f64) -> Result<Option<Tensor>> {
        let Adapter::Lora {
            up,
            down,
            mid: None,
        } = &self.adapter
        else {
            return Ok(None);
        };
        if !is_cpu_f32(weight) {
            return Ok(None);
        }
        let (up, down) = (f32t(up)?.contiguous()?, f32t(down)?.contiguous()?);
        let out = up.dim(0)?;
        let rank = down.dim(0)?;
        if up.elem_count() != out * rank || !weight.elem_count().is_multiple_of(out.max(1)) {
            return Ok(None);
        }
        let cols = weight.elem_count() / out.max(1);
        if down.elem_count() != rank * cols {
            return Ok(None);
        }
        let alpha = self.alpha.map_or(1.0, |a| a / rank as f64);
        let weight = weight.contiguous()?;
        let mut data: Vec<f32> = weight.flatten_all()?.to_vec1()?;
        {
            let (us, ul) = up.storage_and_layout();
            let (ds, dl) = down.storage_and_layout();
            let u = cpu_f32(&us, ul.start_offset(), out * rank)?;
            let d = cpu_f32(&ds, dl.start_offset(), rank * cols)?;
            // SAFETY: data is [out, cols]; up [out, rank] and down [rank, cols] row-major.
            unsafe {
                par_gemm(
                    out,
                    cols,
                    rank,
                    Dest {
                        ptr: data.as_mut_ptr(),
                        rs: cols as isize,
                    },
                    true,
                    Operand {
                        ptr: u.as_ptr(),
                        rs: rank as isize,
                        cs: 1,
                    },
                    Operand {
                        ptr: d.as_ptr(),
                        rs: cols as isize,
                        cs: 1,
                    },
                    (strength * alpha) as f32,
                );
            }
        }
        Ok(Some(Tensor::from_vec(
            data,
            weight.dims(),
            weight.device(),
        )?))
    }
}

/// ComfyUI's `weight_decompose` (DoRA). `alpha` is alpha/rank without the strength.
pub fn weight_decompose(
    dora_scale: &Tensor,
    weight: &Tensor,
    delta: &Tensor,
    alpha: f64,
    strength: f64,
) -> Result<Tensor> {
    let dora_scale = f32t(dora_scale)?;
    let calc = (weight + (delta * alpha)?)?;
    let dims = weight.dims().to_vec();
    let (out, inp) = (dims[0], dims[1]);
    let ones = dims.len() - 1;
    let norm = if dora_scale.dim(0)? == out {
        // Per output row, of the unpatched weight (ComfyUI's behaviour).
        let mut s = vec![out];
        s.extend(std::iter::repeat_n(1, ones));
        weight
            .reshape((out, ()))?
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .reshape(s)?
    } else {
        // Per input column, of the patched weight.
        let mut s = vec![1, inp];
        s.extend(std::iter::repeat_n(1, ones - 1));
        calc.transpose(0, 1)?
            .contiguous()?
            .reshape((inp, ()))?
            .sqr()?
            .sum_keepdim(D::Minus1)?
            .sqrt()?
            .reshape(s)?
    };
    let norm = (norm + f32::EPSILON as f64)?;
    let scaled = dora_scale.broadcast_div(&norm)?;
    let calc = calc.broadcast_mul(&scaled)?;
    if strength != 1.0 {
        Ok((weight + ((calc - weight)? * strength)?)?)
    } else {
        Ok(calc)
    }
}

/// `pad_tensor_to_shape`: `w` in the top-left corner of zeros of `shape` (same rank, no
/// dimension smaller).
fn pad_to_shape(w: &Tensor, shape: &[usize]) -> Result<Tensor> {
    let dims = w.dims();
    if dims.len() != shape.len() || dims.iter().zip(shape).any(|(a, b)| a > b) {
        return Err(ModelError::BadInput(format!(
            "reshape_weight {shape:?} cannot hold a weight of shape {dims:?} (it must have the \
             same rank and be at least as large in every dimension)"
        )));
    }
    let mut out = w.clone();
    for (d, (&have, &want)) in dims.to_vec().iter().zip(shape).enumerate() {
        if want > have {
            let mut zshape = out.dims().to_vec();
            zshape[d] = want - have;
            let z = Tensor::zeros(zshape.as_slice(), out.dtype(), out.device())?;
            out = Tensor::cat(&[&out, &z], d)?;
        }
    }
    Ok(out)
}

/// The parts of a LoRA file ComfyUI reads for one key prefix `x`: returns the patches it
/// finds (target suffix "" = the weight, ".bias" = the matching bias) and marks the file
/// keys it used in `used`.
pub fn parse_patches(
    x: &str,
    file: &HashMap<String, Tensor>,
    used: &mut std::collections::HashSet<String>,
) -> Result<Vec<(&'static str, Patch)>> {
    let mut take = |name: String| -> Option<Tensor> {
        let t = file.get(&name).cloned();
        if t.is_some() {
            used.insert(name);
        }
        t
    };
    let alpha = match take(format!("{x}.alpha")) {
        Some(a) => Some(
            a.to_dtype(DType::F64)?
                .flatten_all()?
                .to_vec1::<f64>()?
                .first()
                .copied()
                .unwrap_or(1.0),
        ),
        None => None,
    };
    let dora_scale = take(format!("{x}.dora_scale"));
    let mut adapter = None;
    let mut reshape: Option<Vec<usize>> = None;
    // LoRA pairs, tried in ComfyUI's order.
    let pairs: [(String, String, Option<String>); 7] = [
        (
            format!("{x}.lora_up.weight"),
            format!("{x}.lora_down.weight"),
            Some(format!("{x}.lora_mid.weight")),
        ),
        (
            format!("{x}_lora.up.weight"),
            format!("{x}_lora.down.weight"),
            None,
        ),
        (
            format!("{x}.lora_B.weight"),
            format!("{x}.lora_A.weight"),
            None,
        ),
        (
            format!("{x}.lora.up.weight"),
            format!("{x}.lora.down.weight"),
            None,
        ),
        (format!("{x}.lora_B"), format!("{x}.lora_A"), None),
        (
            format!("{x}.lora_linear_layer.up.weight"),
            format!("{x}.lora_linear_layer.down.weight"),
            None,
        ),
        (
            format!("{x}.lora_B.default.weight"),
            format!("{x}.lora_A.default.weight"),
            None,
        ),
    ];
    for (up, down, mid) in pairs {
        if file.contains_key(&up) {
            let (Some(u), Some(d)) = (take(up.clone()), take(down.clone())) else {
                return Err(ModelError::BadInput(format!("{up} has no matching {down}")));
            };
            let mid = mid.and_then(&mut take);
            // `.reshape_weight` (zero-padding the model weight): Flux control LoRAs.
            if let Some(r) = take(format!("{x}.reshape_weight")) {
                let r = r.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
                reshape = Some(r.iter().map(|&v| v as usize).collect());
            }
            adapter = Some(Adapter::Lora {
                up: u,
                down: d,
                mid,
            });
            break;
        }
    }
    if file.contains_key(&format!("{x}.hada_w1_a")) {
        let get = |n: &str| {
            file.get(&format!("{x}.{n}"))
                .cloned()
                .ok_or_else(|| ModelError::BadInput(format!("LoHa {x} lacks .{n}")))
        };
        let t = match file.get(&format!("{x}.hada_t1")) {
            Some(t1) => Some((t1.clone(), get("hada_t2")?)),
            None => None,
        };
        let a = Adapter::LoHa {
            w1a: get("hada_w1_a")?,
            w1b: get("hada_w1_b")?,
            w2a: get("hada_w2_a")?,
            w2b: get("hada_w2_b")?,
            t,
        };
        for n in [
            "hada_w1_a",
            "hada_w1_b",
            "hada_w2_a",
            "hada_w2_b",
            "hada_t1",
            "hada_t2",
        ] {
            take(format!("{x}.{n}"));
        }
        adapter = Some(a);
    }
    let w1 = take(format!("{x}.lokr_w1"));
    let w2 = take(format!("{x}.lokr_w2"));
    let w1a = take(format!("{x}.lokr_w1_a"));
    let w1b = take(format!("{x}.lokr_w1_b"));
    let w2a = take(format!("{x}.lokr_w2_a"));
    let w2b = take(format!("{x}.lokr_w2_b"));
    let t2 = take(format!("{x}.lokr_t2"));
    if w1.is_some() || w2.is_some() || w1a.is_some() || w2a.is_some() {
        let factor =
            |whole: Option<Tensor>, a: Option<Tensor>, b: Option<Tensor>, t, n| match (whole, a, b)
            {
                (Some(w), _, _) => Ok(Factor::Whole(w)),
                (None, Some(a), Some(b)) => Ok(Factor::Product { a, b, t }),
                _ => Err(ModelError::BadInput(format!(
                    "LoKr {x} lacks its {n} factor"
                ))),
            };
        adapter = Some(Adapter::LoKr {
            w1: factor(w1, w1a, w1b, None, "w1")?,
            w2: factor(w2, w2a, w2b, t2, "w2")?,
        });
    }
    let mut out = Vec::new();
    let patch = |adapter, reshape: Option<Vec<usize>>| Patch {
        adapter,
        alpha,
        dora_scale: dora_scale.clone(),
        reshape,
    };
    if let Some(w_norm) = take(format!("{x}.w_norm")) {
        adapter = Some(Adapter::Diff(w_norm));
        if let Some(b_norm) = take(format!("{x}.b_norm")) {
            out.push((".bias", patch(Adapter::Diff(b_norm), None)));
        }
    }
    if let Some(diff) = take(format!("{x}.diff")) {
        adapter = Some(Adapter::Diff(diff));
    }
    if let Some(diff_b) = take(format!("{x}.diff_b")) {
        out.push((".bias", patch(Adapter::Diff(diff_b), None)));
    }
    if let Some(set) = take(format!("{x}.set_weight")) {
        adapter = Some(Adapter::Set(set));
    }
    if let Some(a) = adapter {
        // The padding belongs to the LoRA pair (a later diff/set replaces it, as in ComfyUI).
        let reshape = if matches!(a, Adapter::Lora { .. }) {
            reshape
        } else {
            None
        };
        out.insert(0, ("", patch(a, reshape)));
    }
    Ok(out)
}
