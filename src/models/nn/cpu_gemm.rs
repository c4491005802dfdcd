//! f32 matrix products on the CPU, split across threads by hand.
//!
//! The `gemm` crate is close to peak on one core here (63-79 GFLOP/s of ~78 on this 2-core
//! EPYC), but its own multi-threading scales poorly on two cores (55-103 GFLOP/s, sometimes
//! slower than one thread). Cutting the output into one block per thread and running a
//! single-threaded gemm on each gives 123-141 GFLOP/s, on par with PyTorch's 135-150 on the
//! same shapes (BENCHMARKS.md). candle's CPU matmul uses the crate's own threading, so the
//! model layers that dominate a sampler step (convolutions, linear layers, attention) call
//! this instead.

use gemm::Parallelism;
use rayon::prelude::*;

/// A strided f32 matrix operand: element (i, j) is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Operand {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

/// The destination: element (i, j) is at `ptr + i·rs + j` (rows may be padded, columns are
/// adjacent).
#[derive(Clone, Copy)]
pub struct Dest {
    pub ptr: *mut f32,
    pub rs: isize,
}

impl Dest {
    /// The destination starting `elems` elements further on (same row stride).
    ///
    /// # Safety
    /// The result must stay inside the destination's allocation.
    pub unsafe fn offset(self, elems: usize) -> Dest {
        Dest {
            ptr: unsafe { self.ptr.add(elems) },
            rs: self.rs,
        }
    }
}

// The raw pointers only cross into the worker threads of one call, each of which writes a
// disjoint block of the destination.
unsafe impl Send for Operand {}
unsafe impl Sync for Operand {}
unsafe impl Send for Dest {}
unsafe impl Sync for Dest {}

/// Below this many multiply-adds one thread is faster than two.
const SPLIT_MIN_MACS: usize = 1 << 20;

pub fn num_threads() -> usize {
    candle_core::utils::get_num_threads().max(1)
}

/// `dst = (read_dst ? dst : 0) + scale · lhs[m, k] · rhs[k, n]`, on every thread.
///
/// # Safety
/// `lhs`, `rhs` and `dst` must address valid `m×k`, `k×n` and `m×n` matrices with the given
/// strides, `dst` must not overlap the operands, and nothing else may access `dst` meanwhile.
#[allow(clippy::too_many_arguments)]
pub unsafe fn par_gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: Dest,
    read_dst: bool,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
) {
    let threads = num_threads();
    if threads == 1 || m * n * k < SPLIT_MIN_MACS || (m < 2 && n < 2) {
        unsafe { gemm_block(m, n, k, dst, read_dst, lhs, rhs, scale) };
        return;
    }
    // Split the longer side of the output into one block per thread.
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let parts = threads.min(len);
    (0..parts).into_par_iter().for_each(|t| {
        // Whole-struct captures (closures would otherwise capture the bare pointer fields).
        let (dst, lhs, rhs) = (dst, lhs, rhs);
        let (a, b) = (len * t / parts, len * (t + 1) / parts);
        if a == b {
            return;
        }
        // SAFETY: each block is a disjoint part of `dst`; the offsets stay inside the
        // matrices the caller vouched for.
        unsafe {
            if split_rows {
                let d = dst.offset(a * dst.rs as usize);
                let l = Operand {
                    ptr: lhs.ptr.offset(a as isize * lhs.rs),
                    ..lhs
                };
                gemm_block(b - a, n, k, d, read_dst, l, rhs, scale);
            } else {
                let d = dst.offset(a);
                let r = Operand {
                    ptr: rhs.ptr.offset(a as isize * rhs.cs),
                    ..rhs
                };
                gemm_block(m, b - a, k, d, read_dst, lhs, r, scale);
            }
        }
    });
}

/// One single-threaded gemm call (the caller decides the threading).
///
/// # Safety
/// As [`par_gemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_block(
    m: usize,
    n: usize,
    k: usize,
    dst: Dest,
    read_dst: bool,
    lhs: Operand,
    rhs: Operand,
    scale: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.ptr,
            1,
            dst.rs,
            read_dst,
            lhs.ptr,
            lhs.cs,
            lhs.rs,
            rhs.ptr,
            rhs.cs,
            rhs.rs,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(m: usize, n: usize, k: usize, a: &[f32], b_t: &[f32]) -> Vec<f32> {
        let mut c = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|x| a[i * k + x] * b_t[j * k + x]).sum();
            }
        }
        c
    }

    #[test]
    fn split_products_match_a_plain_product() {
        for (m, n, k) in [(300, 7, 600), (5, 400, 700), (130, 129, 64), (1, 1, 3)] {
            let a: Vec<f32> = (0..m * k).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
            // rhs given transposed ([n, k] row-major), read through strides.
            let b_t: Vec<f32> = (0..n * k).map(|i| ((i * 5) % 11) as f32 - 5.0).collect();
            let want = naive(m, n, k, &a, &b_t);
            let mut got = vec![1f32; m * n];
            unsafe {
                par_gemm(
                    m,
                    n,
                    k,
                    Dest {
                        ptr: got.as_mut_ptr(),
                        rs: n as isize,
                    },
                    false,
                    Operand {
                        ptr: a.as_ptr(),
                        rs: k as isize,
                        cs: 1,
                    },
                    Operand {
                        ptr: b_t.as_ptr(),
                        rs: 1,
                        cs: k as isize,
                    },
                    1.0,
                )
            };
            assert_eq!(got, want, "{m}x{n}x{k}");
        }
    }
}
