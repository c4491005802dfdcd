//! Stored weight matrices (f16, bf16, fp8) multiplied on the CPU in f32 without a whole f32
//! copy of the weight.
//!
//! Widening a weight to f32 before one big gemm (ComfyUI's `manual_cast`) writes a 4-byte copy
//! of every value to memory and the gemm's packing reads it back: on SDXL that is ~10 GB of
//! memory traffic and ~2 s of a 512² step on the 2-core VM. Here the weight's rows are widened
//! a panel at a time into a per-thread buffer that stays in cache, and one single-threaded gemm
//! per panel computes the output columns (or rows) that panel feeds. Each output element is
//! still one gemm dot product over the whole inner dimension in the same order, so the numbers
//! are bit-identical to widening first (tested).

use super::cpu_gemm::{gemm_block, num_threads, Dest, Operand};
use candle_core::{CpuStorage, Storage, Tensor};
use rayon::prelude::*;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The values of a stored weight, row-major, as held in the tensor's storage.
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    F32(&'a [f32]),
    F16(&'a [half::f16]),
    BF16(&'a [half::bf16]),
    /// fp8 bytes and the exact f32 value of each of the 256 codes.
    Fp8(&'a [u8], &'static [f32; 256]),
}

impl Rows<'_> {
    /// Widens values `range` into `dst` (exact for every stored dtype).
    pub(crate) fn widen(&self, range: Range<usize>, dst: &mut [f32]) {
        use half::slice::HalfFloatSliceExt;
        match *self {
            Rows::F32(v) => dst.copy_from_slice(&v[range]),
            Rows::F16(v) => v[range].convert_to_f32_slice(dst),
            Rows::BF16(v) => v[range].convert_to_f32_slice(dst),
            Rows::Fp8(v, table) => {
                for (o, &b) in dst.iter_mut().zip(&v[range]) {
                    *o = table[b as usize];
                }
            }
        }
    }
}

/// Runs `f` on the values of `w` when it is a contiguous CPU tensor in a dtype [`Rows`]
/// covers (an fp8 e5m2 weight is its U8 bits, see `fp8::store_as`); None otherwise.
pub(crate) fn with_rows<R>(w: &Tensor, f: impl FnOnce(Rows<'_>) -> R) -> Option<R> {
    use crate::models::fp8::{table, Fp8Kind};
    if !w.device().is_cpu() || !w.is_contiguous() {
        return None;
    }
    let n = w.elem_count();
    let (st, l) = w.storage_and_layout();
    let range = l.start_offset()..l.start_offset() + n;
    let rows = match &*st {
        Storage::Cpu(CpuStorage::F32(v)) => Rows::F32(&v[range]),
        Storage::Cpu(CpuStorage::F16(v)) => Rows::F16(&v[range]),
        Storage::Cpu(CpuStorage::BF16(v)) => Rows::BF16(&v[range]),
        Storage::Cpu(CpuStorage::F8E4M3(v)) => {
            let v = &v[range];
            // SAFETY: float8's F8E4M3 is a `repr(transparent)` u8.
            let bytes = unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), v.len()) };
            Rows::Fp8(bytes, table(Fp8Kind::E4m3fn))
        }
        Storage::Cpu(CpuStorage::U8(v)) => Rows::Fp8(&v[range], table(Fp8Kind::E5m2)),
        _ => return None,
    };
    Some(f(rows))
}

thread_local! {
    /// Each thread's panel buffer, kept between calls: a fresh multi-MiB allocation per
    /// panel would cost page faults on every call.
    static PANEL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's panel buffer resized to `len` values (a fresh one if the
/// thread's is in use).
pub(crate) fn with_panel_buffer<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    PANEL.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0f32; len]),
    })
}

/// f32 values per widened panel (4 MiB): several panels per thread on every layer, each
/// small enough to stay in the caches between its widening and its gemm.
pub(crate) static PANEL_FLOATS: AtomicUsize = AtomicUsize::new(1 << 20);

/// Sets the panel size in f32 values (for benchmarks; the default is 1 Mi).
#[doc(hidden)]
pub fn set_panel_floats(n: usize) {
    PANEL_FLOATS.store(n.max(1), Ordering::Relaxed);
}

/// How a weight's rows are cut into panels: `count` panels of nearly equal size, panel `i`
/// being rows `bounds(i)`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PanelPlan {
    rows: usize,
    pub(crate) count: usize,
}

impl PanelPlan {
    /// Panels of a `rows × k` weight: at most about `floats` values each, a multiple of
    /// `threads` of them (equal work per thread), none under `min_rows` rows (see
    /// [`min_panel`]) unless the weight has fewer rows than that.
    pub(crate) fn new(
        rows: usize,
        k: usize,
        floats: usize,
        min_rows: usize,
        threads: usize,
    ) -> Self {
        let threads = threads.max(1);
        let budget = (floats / k.max(1)).max(1);
        let wanted = rows.div_ceil(threads * budget).max(1) * threads;
        let most = (rows / min_rows.max(1)).max(1);
        PanelPlan {
            rows,
            count: wanted.min(most),
        }
    }

    pub(crate) fn bounds(&self, i: usize) -> Range<usize> {
        self.rows * i / self.count..self.rows * (i + 1) / self.count
    }
}

/// The fewest weight rows a panel gemm may have so that `gemm` computes it exactly as it
/// computes the whole product (same inner blocking, so bit-identical sums): gemm 0.19 picks
/// other code paths, with other blockings of the inner dimension, for products of at most
/// 16×16 outputs, for a single row or column, and for both sides at most 64. `other` is the
/// size of the product's other output dimension.
pub(crate) fn min_panel(other: usize) -> usize {
    let mut least = 2;
    if other <= 64 {
        least = 65;
    }
    // m·n ≤ 256 takes the "horizontal" kernels.
    least.max(256 / other.max(1) + 1)
}

/// `dst[rows, n] (+)= x[rows, k] · Wᵀ` for a weight `w` [n, k] given as [`Rows`], widened a
/// panel of weight rows (output columns) at a time on every thread.
///
/// # Safety
/// `x` must address a valid `rows × k` matrix and `dst` a `rows × n` one not overlapping it,
/// accessed by nothing else meanwhile; `w` must hold `n · k` values.
pub(crate) unsafe fn linear_panels(
    rows: usize,
    n: usize,
    k: usize,
    dst: Dest,
    read_dst: bool,
    x: Operand,
    w: Rows<'_>,
) {
    let floats = PANEL_FLOATS.load(Ordering::Relaxed);
    unsafe { linear_panels_sized(rows, n, k, dst, read_dst, x, w, floats) }
}

/// [`linear_panels`] with panels of about `floats` values.
///
/// # Safety
/// As [`linear_panels`].
#[allow(clippy::too_many_arguments)]
unsafe fn linear_panels_sized(
    rows: usize,
    n: usize,
    k: usize,
    dst: Dest,
    read_dst: bool,
    x: Operand,
    w: Rows<'_>,
    floats: usize,
) {
    if rows == 0 || n == 0 {
        return;
    }
    let plan = PanelPlan::new(n, k, floats, min_panel(rows), num_threads());
    (0..plan.count).into_par_iter().for_each(|i| {
        let (dst, x) = (dst, x);
        let Range { start: r0, end: r1 } = plan.bounds(i);
        if r0 >= r1 {
            return;
        }
        with_panel_buffer((r1 - r0) * k, |buf| {
            w.widen(r0 * k..r1 * k, buf);
            // SAFETY: columns r0..r1 of dst are this task's alone; the panel is the
            // weight rows r0..r1, read transposed ([k, r1 − r0]).
            unsafe {
                gemm_block(
                    rows,
                    r1 - r0,
                    k,
                    dst.offset(r0),
                    read_dst,
                    x,
                    Operand {
                        ptr: buf.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                    1.0,
                )
            };
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::nn::cpu_gemm::par_gemm;

    #[test]
    fn plans_cover_the_rows_in_equal_shares() {
        for (rows, k, other) in [
            (1, 5, 100),
            (15, 3, 2),
            (640, 640, 2048),
            (10240, 1280, 512),
            (1280, 11520, 256),
            (77, 1 << 22, 1),
            (1280, 2048, 2),
        ] {
            let least = min_panel(other);
            let plan = PanelPlan::new(rows, k, 1 << 20, least, 2);
            let mut next = 0;
            for i in 0..plan.count {
                let r = plan.bounds(i);
                assert_eq!(r.start, next, "{rows}x{k}");
                assert!(r.len() >= least.min(rows), "{rows}x{k}: {r:?}");
                next = r.end;
            }
            assert_eq!(next, rows, "{rows}x{k}");
        }
    }

    /// Panels give exactly the numbers of the gemm on the widened weight, whatever the panel
    /// size (many panels, uneven ones, a single one), for many rows (the UNet's tokens) and
    /// a few (a time embedding), with inner dimensions on both sides of gemm's 512 block.
    #[test]
    fn panels_are_bit_identical_to_widening_first() {
        for (rows, n, k) in [(70, 300, 90), (130, 700, 1100), (2, 600, 700), (1, 900, 40)] {
            check_panels(rows, n, k);
        }
    }

    fn check_panels(rows: usize, n: usize, k: usize) {
        let x: Vec<f32> = (0..rows * k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.013)
            .collect();
        let w16: Vec<half::f16> = (0..n * k)
            .map(|i| half::f16::from_f32(((i * 53 % 97) as f32 - 48.0) * 0.021))
            .collect();
        let w32: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.1).collect();
        let xo = Operand {
            ptr: x.as_ptr(),
            rs: k as isize,
            cs: 1,
        };
        for read_dst in [false, true] {
            let mut want: Vec<f32> = (0..rows * n).map(|i| bias[i % n]).collect();
            // SAFETY: distinct buffers of the stated shapes.
            unsafe {
                par_gemm(
                    rows,
                    n,
                    k,
                    Dest {
                        ptr: want.as_mut_ptr(),
                        rs: n as isize,
                    },
                    read_dst,
                    xo,
                    Operand {
                        ptr: w32.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                    1.0,
                )
            };
            for floats in [1, 16 * k + 5, 1 << 20] {
                let mut got: Vec<f32> = (0..rows * n).map(|i| bias[i % n]).collect();
                unsafe {
                    linear_panels_sized(
                        rows,
                        n,
                        k,
                        Dest {
                            ptr: got.as_mut_ptr(),
                            rs: n as isize,
                        },
                        read_dst,
                        xo,
                        Rows::F16(&w16),
                        floats,
                    )
                };
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "panel budget {floats}, read_dst {read_dst}");
            }
        }
    }
}
