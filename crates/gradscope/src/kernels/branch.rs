//! What a detection branch's loss reads from the raw head output, as one operation with its own
//! backward, for flex.
//!
//! The raw output is `[B, 4 + nc, A]`: box distances in channels 0..4, class logits after them.
//! The loss reads Σ BCE-with-logits of the class channels against constant target scores, and the
//! box distances of the assigned anchors. Composed from burn's operations that is two channel
//! slices, a transposing copy and a row selection forward; backward, two full-size zero-filled
//! gradients with their slice writes (each on one thread below 4 M values) and then their sum.
//! Here the forward reads the values in place and the backward writes the one gradient once, a
//! row of anchors per task: class rows g·(σ(x) − y) as [`super::bce`] does, box rows zero but at
//! the assigned anchors.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::bce::{grad_chunk, loss_chunk, CHUNK};
use super::grads::hand_to;
use super::host::{contiguous, filled, record, tensor, values};

type Ad = Autodiff<Flex>;

/// The two things a branch's loss reads from its raw head output.
pub struct BranchRead {
    /// Σ BCE-with-logits(class logits, target scores) over every image, class and anchor, `[1]`.
    pub cls: Tensor<1>,
    /// The box distances (channels 0..4) of the assigned anchors, `[F, 4]`, in `fg` order;
    /// `None` when no anchor is assigned.
    pub dist: Option<Tensor<2>>,
}

/// Reads `raw` (`[B, 4 + nc, A]`) for the loss: the class BCE sum against `scores` (`[B, nc, A]`,
/// image-major, constant) and the distances of the anchors `fg` (each `image · A + anchor`,
/// ascending). The scores come back as the error when `raw` is not an f32 flex tensor or the sizes
/// disagree; the caller then composes the same from burn's operations.
pub fn read_branch(
    raw: &Tensor<3>,
    scores: Vec<f32>,
    fg: Vec<usize>,
) -> Result<BranchRead, Vec<f32>> {
    let [b, c, a_n] = raw.dims();
    let ok = c > 4
        && scores.len() == b * (c - 4) * a_n
        && fg.windows(2).all(|w| w[0] < w[1])
        && fg.last().is_none_or(|&k| k < b * a_n);
    if !ok || raw.dtype() != DType::F32 {
        return Err(scores);
    }
    let tracked = raw.clone().try_into_primitive::<Ad>().ok();
    let flex = match &tracked {
        Some(p) => contiguous(p.primitive()),
        None => raw
            .clone()
            .try_into_primitive::<Flex>()
            .ok()
            .as_ref()
            .and_then(contiguous),
    };
    let Some(x) = flex else {
        return Err(scores);
    };
    let st = Layout {
        x,
        y: scores,
        fg,
        dims: [b, c, a_n],
    };
    let out = tensor(st.forward(), [1 + 4 * st.fg.len()]);
    let out = match tracked {
        Some(p) => Tensor::from_primitive::<Ad>(record(BranchBackward, [p.node()], || st, out)),
        None => Tensor::from_primitive::<Flex>(out),
    };
    let f = (out.dims()[0] - 1) / 4;
    Ok(BranchRead {
        cls: out.clone().narrow(0, 0, 1),
        dist: (f > 0).then(|| out.narrow(0, 1, 4 * f).reshape([f, 4])),
    })
}

/// The raw output, the target scores and the assigned anchors: the forward's inputs and what its
/// backward needs.
#[derive(Clone, Debug)]
struct Layout {
    x: FlexTensor,
    y: Vec<f32>,
    fg: Vec<usize>,
    dims: [usize; 3],
}

impl Layout {
    /// `[Σ BCE, then the assigned anchors' four distances each]`.
    fn forward(&self) -> Vec<f32> {
        let [_, c, a_n] = self.dims;
        let x = values(&self.x);
        let classes = (c - 4) * a_n;
        // each image's class block is contiguous: [nc, A] after its 4 box rows
        let sum: f64 = x
            .par_chunks(c * a_n)
            .zip(self.y.par_chunks(classes))
            .map(|(img, y)| {
                img[4 * a_n..]
                    .par_chunks(CHUNK)
                    .zip(y.par_chunks(CHUNK))
                    .map(|(xc, yc)| loss_chunk(xc, yc))
                    .sum::<f64>()
            })
            .sum();
        let mut out = Vec::with_capacity(1 + 4 * self.fg.len());
        out.push(sum as f32);
        for &k in &self.fg {
            let (i, a) = (k / a_n, k % a_n);
            out.extend((0..4).map(|j| x[(i * c + j) * a_n + a]));
        }
        out
    }

    /// ∂L/∂raw from ∂L/∂(Σ BCE) = `g[0]` and ∂L/∂distances = `g[1..]`.
    fn backward(&self, g: &[f32]) -> Vec<f32> {
        let [b, c, a_n] = self.dims;
        let (x, y, fg) = (values(&self.x), &self.y, &self.fg);
        // SAFETY: every row of A values is written whole: class rows by grad_chunk, box rows by
        // the fill before the assigned anchors are set.
        unsafe {
            filled(b * c * a_n, |dx| {
                dx.par_chunks_mut(a_n).enumerate().for_each(|(r, row)| {
                    let (i, ch) = (r / c, r % c);
                    if ch >= 4 {
                        let yr = &y[(i * (c - 4) + ch - 4) * a_n..][..a_n];
                        return grad_chunk(&x[r * a_n..][..a_n], yr, row, g[0]);
                    }
                    for v in row.iter_mut() {
                        v.write(0.0);
                    }
                    let first = fg.partition_point(|&k| k < i * a_n);
                    let last = fg.partition_point(|&k| k < (i + 1) * a_n);
                    for (n, &k) in fg[first..last].iter().enumerate() {
                        row[k - i * a_n].write(g[1 + 4 * (first + n) + ch]);
                    }
                });
            })
        }
    }
}

#[derive(Debug)]
struct BranchBackward;

impl Backward<Flex, 1> for BranchBackward {
    type State = Layout;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let g = contiguous(&g).expect("f32 gradient");
            let dx = ops.state.backward(values(&g));
            hand_to!(grads, node, tensor(dx, ops.state.dims.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::tensor::{Distribution, Int, TensorData};

    /// The same reads composed from burn's operations: slices, a transpose, a row selection.
    fn composed(raw: Tensor<3>, y: Tensor<3>, fg: &[usize]) -> (Tensor<1>, Tensor<2>) {
        let [b, c, a_n] = raw.dims();
        let x = raw.clone().slice([0..b, 4..c, 0..a_n]);
        let cls = (x.clone().clamp_min(0.0) - x.clone() * y + x.abs().neg().exp().log1p()).sum();
        let idx: Vec<i64> = fg.iter().map(|&k| k as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [fg.len()]), &raw.device());
        let dist = raw
            .slice([0..b, 0..4, 0..a_n])
            .swap_dims(1, 2)
            .reshape([b * a_n, 4])
            .select(0, idx);
        (cls, dist)
    }

    #[test]
    fn matches_burn_composed_value_and_gradient() {
        let dev = crate::device();
        // 2 images, 3 classes; A long enough for several BCE chunks per image
        let (b, nc, a_n) = (2, 3, 20_000);
        let raw0 = Tensor::<3>::random([b, 4 + nc, a_n], Distribution::Normal(0.0, 4.0), &dev);
        let y = Tensor::<3>::random([b, nc, a_n], Distribution::Uniform(0.0, 1.0), &dev);
        let fg = vec![3, 17, 19_999, a_n, a_n + 5_000, 2 * a_n - 1];
        let weights =
            Tensor::<2>::random([fg.len(), 4], Distribution::Normal(0.0, 1.0), &dev).detach();
        let run = |ours: bool| {
            let raw = raw0.clone().detach().require_grad();
            let (cls, dist) = if ours {
                let r = read_branch(&raw, values(y.clone()), fg.clone()).expect("flex f32");
                (r.cls, r.dist.expect("anchors assigned"))
            } else {
                composed(raw.clone(), y.clone(), &fg)
            };
            // a loss that weighs both reads differently
            let loss = cls.clone() * 0.3 + (dist.clone() * weights.clone()).sum();
            let g = raw.grad(&loss.backward()).unwrap();
            (values(cls), values(dist), values(g))
        };
        let (c1, d1, g1) = run(true);
        let (c0, d0, g0) = run(false);
        assert!(max_rel(&c1, &c0) < 1e-6, "Σ BCE {c1:?} vs {c0:?}");
        assert_eq!(d1, d0, "distances are read, not computed");
        assert!(max_rel(&g1, &g0) < 1e-6, "∂L/∂raw");
    }

    #[test]
    fn refuses_what_it_cannot_read_and_reads_untracked_tensors() {
        let dev = crate::device();
        let raw = Tensor::<3>::random([1, 6, 10], Distribution::Normal(0.0, 1.0), &dev);
        assert!(
            read_branch(&raw, vec![0.5; 19], vec![]).is_err(),
            "scores size"
        );
        assert!(
            read_branch(&raw, vec![0.5; 20], vec![4, 2]).is_err(),
            "fg not ascending"
        );
        assert!(
            read_branch(&raw, vec![0.5; 20], vec![10]).is_err(),
            "fg past the anchors"
        );
        let r = read_branch(&raw, vec![0.5; 20], vec![2, 9]).expect("untracked flex");
        let want = values(raw.clone().slice([0..1, 0..4, 9..10]).reshape([4]));
        assert_eq!(values(r.dist.expect("two anchors")).split_off(4), want);
        assert_eq!(values(r.cls).len(), 1);
        // no anchor assigned: the class sum alone
        let r = read_branch(&raw, vec![0.5; 20], vec![]).expect("untracked flex");
        assert!(r.dist.is_none());
        assert_eq!(values(r.cls).len(), 1);
    }
}
