//! The attention of YOLO's PSA blocks as one operation with its own backward, for flex.
//!
//! Per image and head, from the `qkv` projection `[B, heads, 2·kd + hd, N]` (q in rows 0..kd, k
//! in kd..2kd, v after them, N = h·w positions):
//!   A = softmax_rows(s · QᵀK)  (N × N),   O = V·Aᵀ  (hd × N),
//! and backward, with dO:
//!   dV = dO·A,  dA = dOᵀ·V,  dS = A ⊙ (dA − rowsum(A ⊙ dA)),  dQ = s·K·dSᵀ,  dK = s·Q·dS.
//! Composed from burn's operations this is a scale, two transposes, two batched matmuls and a
//! softmax of exp, sum and division, each its own pass (the element-wise ones on one thread)
//! and each with its own backward. Here the forward is one task per image, head and block of
//! query rows (scores, softmax and output while the block is in cache) and the backward two
//! passes of such tasks: query-row blocks (dA, dS, dQ), then key-column blocks (dV, dK). Each
//! task writes its own columns of the result, so nothing is summed across tasks.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::grads::hand_to;
use super::host::{contiguous, gemm_raw, record, tensor, values, OutPtr, ShortRuns};
use super::simd::multiversion;

type Ad = Autodiff<Flex>;

/// Query rows (or key columns) per task.
const BLOCK: usize = 64;

/// softmax(s · QᵀK) applied to V for every image and head of `qkv` (`[B, heads, 2·kd + hd, N]`):
/// `[B, heads, hd, N]`. `None` when `qkv` is not an f32 flex tensor or its rows are not
/// 2·kd + hd; the caller then composes it from burn's operations.
pub fn attention(qkv: &Tensor<4>, kd: usize, hd: usize, scale: f32) -> Option<Tensor<4>> {
    let [b, heads, rows, n] = qkv.dims();
    if rows != 2 * kd + hd || kd == 0 || hd == 0 || n == 0 || qkv.dtype() != DType::F32 {
        return None;
    }
    let dims = Dims {
        pairs: b * heads,
        kd,
        hd,
        n,
    };
    let tracked = qkv.clone().try_into_primitive::<Ad>().ok();
    let x = match &tracked {
        Some(p) => contiguous(p.primitive())?,
        None => contiguous(&qkv.clone().try_into_primitive::<Flex>().ok()?)?,
    };
    let (out, a) = dims.forward(values(&x), scale);
    let out = tensor(out, [b, heads, hd, n]);
    Some(match tracked {
        Some(p) => {
            let state = || Saved {
                x,
                a: tensor(a, [dims.pairs * n * n]),
                dims,
                scale,
            };
            Tensor::from_primitive::<Ad>(record(AttentionBackward, [p.node()], state, out))
        }
        None => Tensor::from_primitive::<Flex>(out),
    })
}

/// The sizes: (image, head) pairs, key and value rows per head, positions.
#[derive(Clone, Copy, Debug)]
struct Dims {
    pairs: usize,
    kd: usize,
    hd: usize,
    n: usize,
}

multiversion! {
    /// Each row of `s` (length `n`) becomes softmax(scale · row), in place.
    fn softmax_rows(s: &mut [f32], n: usize, scale: f32) {
        for row in s.chunks_exact_mut(n) {
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v)) * scale;
            let mut sum = 0.0f32;
            for v in row.iter_mut() {
                *v = exp(*v * scale - max);
                sum += *v;
            }
            let inv = 1.0 / sum;
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

multiversion! {
    /// dS = scale · A ⊙ (dA − Σ_j A ⊙ dA), row by row, over dA in place.
    fn softmax_back_rows(a: &[f32], da: &mut [f32], n: usize, scale: f32) {
        for (ar, dr) in a.chunks_exact(n).zip(da.chunks_exact_mut(n)) {
            let dot: f32 = ar.iter().zip(dr.iter()).map(|(&p, &g)| p * g).sum();
            for (g, &p) in dr.iter_mut().zip(ar) {
                *g = scale * p * (*g - dot);
            }
        }
    }
}

impl Dims {
    /// Rows of one pair's slab of `qkv`.
    fn rows(&self) -> usize {
        2 * self.kd + self.hd
    }

    /// The (pair, first row) of every block of `BLOCK` query rows or key columns.
    fn blocks(&self) -> impl ParallelIterator<Item = (usize, usize)> {
        let per = self.n.div_ceil(BLOCK);
        (0..self.pairs * per)
            .into_par_iter()
            .short_runs()
            .map(move |t| (t / per, (t % per) * BLOCK))
    }

    /// (O `[pairs, hd, N]`, A `[pairs, N, N]`).
    fn forward(&self, x: &[f32], scale: f32) -> (Vec<f32>, Vec<f32>) {
        let Dims { pairs, kd, hd, n } = *self;
        let slab = self.rows() * n;
        // written whole by the tasks below, so not zero-filled first
        let mut a: Vec<f32> = Vec::with_capacity(pairs * n * n);
        let mut out: Vec<f32> = Vec::with_capacity(pairs * hd * n);
        let (ap, o) = (OutPtr(a.as_mut_ptr()), OutPtr(out.as_mut_ptr()));
        self.blocks().for_each(|(p, i0)| {
            let r = BLOCK.min(n - i0);
            let (q, k, v) = (
                &x[p * slab..],
                &x[p * slab + kd * n..],
                &x[p * slab + 2 * kd * n..],
            );
            let s = ap.at(p * n * n + i0 * n);
            // SAFETY: this task alone writes rows i0..i0 + r of pair p's A (r·n values, all
            // written by the product before the slice is made) and columns i0..i0 + r of its O.
            unsafe {
                // S[i, j] = Σ_d Q[d, i0 + i] K[d, j]
                gemm_raw(r, n, kd, s, n, &q[i0..], 1, n, k, n, 1);
                let s = std::slice::from_raw_parts_mut(s, r * n);
                softmax_rows(s, n, scale);
                // O[c, i0 + i] = Σ_j V[c, j] A[i, j]
                gemm_raw(hd, r, n, o.at(p * hd * n + i0), n, v, n, 1, s, 1, n);
            }
        });
        // SAFETY: the blocks cover every row of A and every column of O of every pair.
        unsafe {
            a.set_len(pairs * n * n);
            out.set_len(pairs * hd * n);
        }
        (out, a)
    }

    /// ∂L/∂qkv `[pairs, 2·kd + hd, N]` from ∂L/∂O, the input `x` and A.
    fn backward(&self, x: &[f32], a: &[f32], dout: &[f32], scale: f32) -> Vec<f32> {
        let Dims { pairs, kd, hd, n } = *self;
        let slab = self.rows() * n;
        // written whole by the two passes below, so not zero-filled first
        let mut dx: Vec<f32> = Vec::with_capacity(pairs * slab);
        let mut ds: Vec<f32> = Vec::with_capacity(pairs * n * n);
        let (d, dsp) = (OutPtr(dx.as_mut_ptr()), OutPtr(ds.as_mut_ptr()));
        // query-row blocks: dS (kept for dK), then dQ's columns
        self.blocks().for_each(|(p, i0)| {
            let r = BLOCK.min(n - i0);
            let (k, v) = (&x[p * slab + kd * n..], &x[p * slab + 2 * kd * n..]);
            let (dop, ap) = (&dout[p * hd * n..], &a[p * n * n..]);
            let s = dsp.at(p * n * n + i0 * n);
            // SAFETY: this task alone writes rows i0..i0 + r of pair p's dS (all r·n values,
            // by the product, before the slice is made) and columns i0..i0 + r of its q rows.
            unsafe {
                // dA[i, j] = Σ_c dO[c, i0 + i] V[c, j]
                gemm_raw(r, n, hd, s, n, &dop[i0..], 1, n, v, n, 1);
                let s = std::slice::from_raw_parts_mut(s, r * n);
                softmax_back_rows(&ap[i0 * n..(i0 + r) * n], s, n, scale);
                // dQ[d, i0 + i] = Σ_j K[d, j] dS[i, j]
                gemm_raw(kd, r, n, d.at(p * slab + i0), n, k, n, 1, s, 1, n);
            }
        });
        // SAFETY: the blocks above covered every row of dS.
        unsafe { ds.set_len(pairs * n * n) };
        // key-column blocks: dV and dK
        self.blocks().for_each(|(p, j0)| {
            let rj = BLOCK.min(n - j0);
            let q = &x[p * slab..];
            let (dop, ap, dsp) = (&dout[p * hd * n..], &a[p * n * n..], &ds[p * n * n..]);
            // SAFETY: this task alone writes columns j0..j0 + rj of pair p's k and v rows.
            unsafe {
                // dV[c, j] = Σ_i dO[c, i] A[i, j]
                let dv = d.at(p * slab + 2 * kd * n + j0);
                gemm_raw(hd, rj, n, dv, n, dop, n, 1, &ap[j0..], n, 1);
                // dK[d, j] = Σ_i Q[d, i] dS[i, j]
                let dk = d.at(p * slab + kd * n + j0);
                gemm_raw(kd, rj, n, dk, n, q, n, 1, &dsp[j0..], n, 1);
            }
        });
        // SAFETY: the two passes wrote every column of every q, k and v row of every pair.
        unsafe { dx.set_len(pairs * slab) };
        dx
    }
}

/// What the backward keeps: the input, the attention weights, the sizes and the scale.
#[derive(Clone, Debug)]
struct Saved {
    x: FlexTensor,
    a: FlexTensor,
    dims: Dims,
    scale: f32,
}

#[derive(Debug)]
struct AttentionBackward;

impl Backward<Flex, 1> for AttentionBackward {
    type State = Saved;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let s = &ops.state;
            let g = contiguous(&g).expect("f32 gradient");
            let dx = s
                .dims
                .backward(values(&s.x), values(&s.a), values(&g), s.scale);
            let shape = s.x.layout().shape().to_vec();
            hand_to!(grads, node, tensor(dx, shape));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::tensor::activation::softmax;
    use burn::tensor::Distribution;

    /// The same from burn's operations, scaled after the product as the reference model does.
    fn composed(qkv: Tensor<4>, kd: usize, hd: usize, scale: f32) -> Tensor<4> {
        let q = qkv.clone().narrow(2, 0, kd);
        let k = qkv.clone().narrow(2, kd, kd);
        let v = qkv.narrow(2, 2 * kd, hd);
        let attn = softmax(q.swap_dims(2, 3).matmul(k) * scale, 3);
        v.matmul(attn.swap_dims(2, 3))
    }

    #[test]
    fn matches_burn_composed_value_and_gradient() {
        let dev = crate::device();
        // N = 70: one full block of query rows and a partial one
        for (b, heads, kd, hd, n) in [(2, 2, 4, 8, 70), (1, 1, 2, 3, 5)] {
            let shape = [b, heads, 2 * kd + hd, n];
            let x0 = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.5), &dev);
            let w = Tensor::<4>::random([b, heads, hd, n], Distribution::Normal(0.0, 1.0), &dev);
            let scale = (kd as f32).powf(-0.5);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let o = if ours {
                    attention(&x, kd, hd, scale).expect("flex f32")
                } else {
                    composed(x.clone(), kd, hd, scale)
                };
                let g = x.grad(&(o.clone() * w.clone()).sum().backward()).unwrap();
                (values(o), values(g))
            };
            let (o1, g1) = run(true);
            let (o0, g0) = run(false);
            assert!(max_rel(&o1, &o0) < 1e-5, "output, n {n}");
            assert!(max_rel(&g1, &g0) < 1e-5, "∂L/∂qkv, n {n}");
        }
    }

    #[test]
    fn untracked_input_and_refusals() {
        let dev = crate::device();
        let x = Tensor::<4>::random([1, 2, 7, 9], Distribution::Normal(0.0, 1.0), &dev);
        assert!(attention(&x, 2, 4, 0.5).is_none(), "rows are not 2·kd + hd");
        let got = values(attention(&x, 2, 3, 0.5).expect("untracked flex"));
        assert!(max_rel(&got, &values(composed(x, 2, 3, 0.5))) < 1e-5);
    }
}
