//! σ, tanh and SiLU as single operations with their own backward, for flex.
//!
//! flex computes σ with a scalar `expf` per element, and burn's autodiff builds the backward from
//! several element-wise passes; here the forward is one vectorised pass and the backward one
//! pass: σ' = s(1−s) and tanh' = 1−t² from the kept output, SiLU' = s(1 + x(1−s)) from the input.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::grads::hand_to;
use super::host::{contiguous, filled, record, tensor, values, ShortRuns};
use super::moments;
use super::simd::multiversion;
use super::tap::GradSlot;

type Ad = Autodiff<Flex>;

/// The activations with a fused kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sigmoid,
    Tanh,
    Silu,
}

/// Below this many elements one thread does the whole pass (rayon's hand-off costs more). Two
/// chunks are worth it: the passes are bound by memory, and a 128×256 activation of the MLP
/// benchmark on one thread was 0.3 ms of its 5.4 ms step (split: 3% faster step).
const PARALLEL_MIN: usize = 2 * CHUNK;
const CHUNK: usize = 1 << 14;

multiversion! {
    fn forward_slice(x: &[f32], out: &mut [MaybeUninit<f32>], kind: Kind) {
        assert_eq!(x.len(), out.len());
        let it = out.iter_mut().zip(x);
        match kind {
            Kind::Sigmoid => it.for_each(|(o, &v)| { o.write(sigmoid(v)); }),
            Kind::Tanh => it.for_each(|(o, &v)| { o.write(tanh(v)); }),
            Kind::Silu => it.for_each(|(o, &v)| { o.write(v * sigmoid(v)); }),
        }
    }
}

multiversion! {
    /// `kept` is the output for σ and tanh, the input for SiLU.
    fn backward_slice(kept: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>], kind: Kind) {
        assert!(kept.len() == out.len() && g.len() == out.len());
        let it = out.iter_mut().zip(kept).zip(g);
        match kind {
            Kind::Sigmoid => it.for_each(|((o, &s), &g)| { o.write(g * s * (1.0 - s)); }),
            Kind::Tanh => it.for_each(|((o, &t), &g)| { o.write(g * (1.0 - t * t)); }),
            Kind::Silu => it.for_each(|((o, &x), &g)| {
                let s = sigmoid(x);
                o.write(g * s * (1.0 + x * (1.0 - s)));
            }),
        }
    }
}

fn forward_host(x: &[f32], kind: Kind) -> Vec<f32> {
    // SAFETY: forward_slice writes every element of each chunk, and the chunks cover `out`.
    unsafe {
        filled(x.len(), |out| {
            if x.len() < PARALLEL_MIN {
                forward_slice(x, out, kind);
            } else {
                out.par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .short_runs()
                    .for_each(|(o, v)| forward_slice(v, o, kind));
            }
        })
    }
}

fn backward_host(kept: &[f32], g: &[f32], kind: Kind) -> Vec<f32> {
    // SAFETY: backward_slice writes every element of each chunk, and the chunks cover `out`.
    unsafe {
        filled(kept.len(), |out| {
            if kept.len() < PARALLEL_MIN {
                backward_slice(kept, g, out, kind);
            } else {
                out.par_chunks_mut(CHUNK)
                    .zip(kept.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .short_runs()
                    .for_each(|(o, (k, g))| backward_slice(k, g, o, kind));
            }
        })
    }
}

/// One task of [`backward_measured`]: the input gradient written and the output gradient's
/// blocks summed ([`moments::blocks`]) while they are still in L1.
fn backward_measured_slice(
    kept: &[f32],
    g: &[f32],
    out: &mut [MaybeUninit<f32>],
    kind: Kind,
) -> Vec<(f32, f32)> {
    const GROUP: usize = 4 * moments::BLOCK;
    let mut sums = Vec::with_capacity(g.len().div_ceil(moments::BLOCK));
    for ((k, gg), o) in kept
        .chunks(GROUP)
        .zip(g.chunks(GROUP))
        .zip(out.chunks_mut(GROUP))
    {
        backward_slice(k, gg, o, kind);
        moments::blocks(gg, &mut sums);
    }
    sums
}

/// [`backward_host`] that also takes the incoming gradient's [`moments::finite_moments`] (the
/// bits a separate pass over it gives).
fn backward_measured(kept: &[f32], g: &[f32], kind: Kind) -> (Vec<f32>, moments::Finite) {
    let mut sums = Vec::new();
    // SAFETY: backward_measured_slice writes every element of each chunk, and the chunks cover
    // `out`.
    let dx = unsafe {
        filled(kept.len(), |out| {
            if kept.len() <= CHUNK {
                sums = backward_measured_slice(kept, g, out, kind);
            } else {
                // chunks are whole blocks, so the blocks' sums concatenate in order
                let parts: Vec<Vec<(f32, f32)>> = out
                    .par_chunks_mut(CHUNK)
                    .zip(kept.par_chunks(CHUNK).zip(g.par_chunks(CHUNK)))
                    .short_runs()
                    .map(|(o, (k, g))| backward_measured_slice(k, g, o, kind))
                    .collect();
                sums = parts.concat();
            }
        })
    };
    (dx, moments::finite_moments(g, Some(moments::fold(&sums))))
}

/// What [`apply_measured`] saw while it wrote the output: the [`moments::block`] sums of every
/// [`moments::BLOCK`] values of its input and of its output, in order ([`moments::fold`] makes
/// them [`moments::sum_and_sq`]'s bits), and how many finite outputs lie outside the open
/// interval it was given.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Seen {
    pub input: Vec<(f32, f32)>,
    pub output: Vec<(f32, f32)>,
    pub outside: usize,
}

/// One task of [`forward_measured`]: a few blocks at a time, the output written and both
/// summed while they are still in L1 (a separate pass read them again from L2 or memory).
fn forward_measured_slice(
    x: &[f32],
    out: &mut [MaybeUninit<f32>],
    kind: Kind,
    bounds: Option<(f32, f32)>,
) -> Seen {
    const GROUP: usize = 4 * moments::BLOCK;
    let mut seen = Seen::default();
    for (xg, og) in x.chunks(GROUP).zip(out.chunks_mut(GROUP)) {
        forward_slice(xg, og, kind);
        // SAFETY: forward_slice has just written every element of `og`.
        let og: &[f32] = unsafe { &*(og as *const [MaybeUninit<f32>] as *const [f32]) };
        moments::blocks(xg, &mut seen.input);
        moments::blocks(og, &mut seen.output);
        if let Some((lo, hi)) = bounds {
            seen.outside += moments::count_outside(og, lo, hi);
        }
    }
    seen
}

/// [`forward_host`] that also measures its input and output ([`Seen`]).
fn forward_measured(x: &[f32], kind: Kind, bounds: Option<(f32, f32)>) -> (Vec<f32>, Seen) {
    let mut seen = Seen::default();
    // SAFETY: forward_measured_slice writes every element of each chunk, and the chunks cover
    // `out`.
    let out = unsafe {
        filled(x.len(), |out| {
            // split from two chunks on: measuring makes the pass worth a hand-off sooner
            if x.len() <= CHUNK {
                seen = forward_measured_slice(x, out, kind, bounds);
            } else {
                // chunks are whole blocks, so the blocks' sums concatenate in order
                let parts: Vec<Seen> = out
                    .par_chunks_mut(CHUNK)
                    .zip(x.par_chunks(CHUNK))
                    .short_runs()
                    .map(|(o, v)| forward_measured_slice(v, o, kind, bounds))
                    .collect();
                for p in parts {
                    seen.input.extend(p.input);
                    seen.output.extend(p.output);
                    seen.outside += p.outside;
                }
            }
        })
    };
    (out, seen)
}

#[derive(Debug)]
struct ActBackward;

#[derive(Clone, Debug)]
struct ActState {
    kept: FlexTensor,
    kind: Kind,
    /// Where a measured activation's backward leaves its incoming gradient's moments.
    slot: Option<GradSlot>,
}

impl Backward<Flex, 1> for ActBackward {
    type State = ActState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let st = ops.state;
        let g = contiguous(&g).expect("f32 gradient");
        let (kept, gv) = (values(&st.kept), values(&g));
        let dx = match &st.slot {
            Some(slot) => {
                let (dx, m) = backward_measured(kept, gv, st.kind);
                slot.set_moments(m, gv.len());
                dx
            }
            None if node.is_some() => backward_host(kept, gv, st.kind),
            None => return,
        };
        if let Some(node) = node {
            hand_to!(grads, node, tensor(dx, st.kept.layout().shape().to_vec()));
        }
    }
}

/// `kind(x)` fused on flex, or `None` when `x` is not an f32 flex tensor.
pub fn apply<const D: usize>(x: &Tensor<D>, kind: Kind) -> Option<Tensor<D>> {
    if let Ok(xp) = x.clone().try_into_primitive::<Ad>() {
        let shape = xp.primitive().layout().shape().to_vec();
        let xc = contiguous(xp.primitive())?;
        let out_t = tensor(forward_host(values(&xc), kind), shape);
        let kept = match kind {
            Kind::Silu => xc,
            _ => out_t.clone(),
        };
        let state = || ActState {
            kept,
            kind,
            slot: None,
        };
        let result = record(ActBackward, [xp.node()], state, out_t);
        return Some(Tensor::from_primitive::<Ad>(result));
    }
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    let shape = xp.layout().shape().to_vec();
    let out = forward_host(values(&contiguous(&xp)?), kind);
    Some(Tensor::from_primitive::<Flex>(tensor(out, shape)))
}

/// What [`apply_measured`] returns: the activation, what its forward saw, and the slot that
/// will hold the moments of the gradient reaching it (`None` when no gradient can: the input is
/// not tracked).
pub type MeasuredAct<const D: usize> = (Tensor<D>, Seen, Option<GradSlot>);

/// [`apply`] that measures what it reads and writes on the way ([`Seen`]; `bounds`: the
/// interval outside which an output counts), and in its backward the moments of the gradient
/// it receives, ∂L/∂out (without a separate node or pass): for a probe point on the
/// activation's output.
pub fn apply_measured<const D: usize>(
    x: &Tensor<D>,
    kind: Kind,
    bounds: Option<(f32, f32)>,
) -> Option<MeasuredAct<D>> {
    let xp = x.clone().try_into_primitive::<Ad>().ok()?;
    let shape = xp.primitive().layout().shape().to_vec();
    let xc = contiguous(xp.primitive())?;
    let (out, seen) = forward_measured(values(&xc), kind, bounds);
    let out_t = tensor(out, shape);
    let kept = match kind {
        Kind::Silu => xc,
        _ => out_t.clone(),
    };
    let mut slot = None;
    let state = || {
        let s = GradSlot::default();
        slot = Some(s.clone());
        ActState {
            kept,
            kind,
            slot: Some(s),
        }
    };
    let result = record(ActBackward, [xp.node()], state, out_t);
    Some((Tensor::from_primitive::<Ad>(result), seen, slot))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_abs, values};
    use super::*;
    use burn::tensor::activation;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn fused_activations_match_burn_values_and_gradients() {
        let dev = crate::device();
        for n in [37usize, 70_001] {
            let x0 = Tensor::<2>::random([n, 3], Distribution::Normal(0.0, 3.0), &dev);
            let w = Tensor::<2>::random([n, 3], Distribution::Normal(0.0, 1.0), &dev);
            for kind in [Kind::Sigmoid, Kind::Tanh, Kind::Silu] {
                let run = |ours: bool| {
                    let x = x0.clone().detach().require_grad();
                    let y = if ours {
                        apply(&x, kind).unwrap()
                    } else {
                        match kind {
                            Kind::Sigmoid => activation::sigmoid(x.clone()),
                            Kind::Tanh => activation::tanh(x.clone()),
                            Kind::Silu => activation::silu(x.clone()),
                        }
                    };
                    let g = (y.clone() * w.clone()).sum().backward();
                    (values(y), values(x.grad(&g).unwrap()))
                };
                let (y1, g1) = run(true);
                let (y2, g2) = run(false);
                let worst = max_abs;
                assert!(
                    worst(&y1, &y2) < 2e-6,
                    "{kind:?} n {n}: y {}",
                    worst(&y1, &y2)
                );
                assert!(
                    worst(&g1, &g2) < 2e-6,
                    "{kind:?} n {n}: dx {}",
                    worst(&g1, &g2)
                );
            }
        }
    }

    #[test]
    fn plain_flex_tensors_take_the_fused_forward() {
        let dev = burn::tensor::Device::flex();
        let x = Tensor::<1>::from_data(TensorData::new(vec![0.0f32, 2.0, -3.0], [3]), &dev);
        let y = apply(&x, Kind::Sigmoid).unwrap();
        let v = y
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let want = [
            0.5,
            1.0 / (1.0 + (-2.0f32).exp()),
            1.0 / (1.0 + 3.0f32.exp()),
        ];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-7);
        }
    }

    /// The measured forward writes what the plain one does, and its sums are a separate pass's
    /// bits, below and past the parallel size and with a partial last block.
    #[test]
    fn the_measured_forward_is_the_forward_and_a_separate_pass() {
        let dev = crate::device();
        for n in [37usize, 70_001] {
            let x =
                Tensor::<2>::random([n, 3], Distribution::Normal(0.0, 3.0), &dev).require_grad();
            for kind in [Kind::Sigmoid, Kind::Tanh, Kind::Silu] {
                let bounds = Some((0.01f32, 0.99f32));
                let (y, seen, _) = apply_measured(&x, kind, bounds).unwrap();
                let plain = values(apply(&x, kind).unwrap());
                let got = values(y);
                assert_eq!(got, plain, "{kind:?} n {n}");
                let input = values(x.clone());
                let bits = |(a, b): (f64, f64)| (a.to_bits(), b.to_bits());
                assert_eq!(
                    bits(moments::fold(&seen.input)),
                    bits(moments::sum_and_sq(&input))
                );
                assert_eq!(
                    bits(moments::fold(&seen.output)),
                    bits(moments::sum_and_sq(&got))
                );
                let outside = got
                    .iter()
                    .filter(|&&v| v.is_finite() && (v <= 0.01 || v >= 0.99))
                    .count();
                assert_eq!(seen.outside, outside, "{kind:?} n {n}");
            }
        }
    }
    /// A measured activation's backward leaves the moments of the gradient it receives in its
    /// slot, the bits of a separate pass over that gradient (also non-finite ones), and hands on
    /// the plain backward's input gradient; an untracked input gets no slot.
    #[test]
    fn the_measured_backward_keeps_the_incoming_gradients_moments() {
        let dev = crate::device();
        for (n, poison) in [
            (37usize, None),
            (70_001, None),
            (70_001, Some(f32::INFINITY)),
        ] {
            let x0 = Tensor::<2>::random([n, 3], Distribution::Normal(0.0, 3.0), &dev);
            let mut wv = values(Tensor::<2>::random(
                [n, 3],
                Distribution::Normal(0.0, 1.0),
                &dev,
            ));
            if let Some(p) = poison {
                wv[5] = p;
            }
            let w = Tensor::<2>::from_data(TensorData::new(wv.clone(), [n, 3]), &dev);
            for kind in [Kind::Sigmoid, Kind::Tanh, Kind::Silu] {
                let x = x0.clone().detach().require_grad();
                let (y, _, slot) = apply_measured(&x, kind, None).unwrap();
                let g = (y * w.clone()).sum().backward();
                let got = values(x.grad(&g).unwrap());
                let (m, len) = slot.expect("tracked input").moments().expect("a gradient");
                assert_eq!(len, 3 * n);
                let want = moments::finite_moments(&wv, None);
                let bits = |(a, b, c, d, e): moments::Finite| (a.to_bits(), b.to_bits(), c, d, e);
                assert_eq!(bits(m), bits(want), "{kind:?} n {n}");
                let x = x0.clone().detach().require_grad();
                let g = (apply(&x, kind).unwrap() * w.clone()).sum().backward();
                let plain = values(x.grad(&g).unwrap());
                let same = got
                    .iter()
                    .zip(&plain)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{kind:?} n {n}: input gradient");
            }
        }
        let (_, _, slot) = apply_measured(&x0_untracked(&dev), Kind::Sigmoid, None).unwrap();
        assert!(slot.is_none());
    }

    fn x0_untracked(dev: &burn::tensor::Device) -> Tensor<2> {
        Tensor::<2>::random([4, 3], Distribution::Normal(0.0, 1.0), dev)
    }
}
