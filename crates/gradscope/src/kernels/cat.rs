//! Concatenation as one parallel copy, for flex.
//!
//! burn's `cat` copies its inputs one after the other on one thread, and a channel slice fed to
//! it (a C3k2 block's two halves) is first made contiguous by another single-threaded copy; in a
//! YOLO26n training step those copies were the largest part of the time the other threads wait
//! (≈4% of a step). Here the output is cut into pieces that every thread fills from the inputs,
//! read in place where they are row-strided views (a channel slice of an NCHW tensor is one), and
//! the backward hands each input its part of the gradient the same way. [`narrow`], the
//! inverse (a channel slice), is a view forward; its backward writes the slice's gradient and the
//! zeros around it in the same parallel pass, where burn zero-filled the whole tensor and copied
//! the slice in on one thread.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::grads::hand_to;
use super::host::{contiguous, filled, record, tensor, ShortRuns};

type Ad = Autodiff<Flex>;

/// Below this many elements one thread copies everything (rayon's hand-off costs more).
const PARALLEL_MIN: usize = 1 << 15;
/// Elements per task.
const PIECE: usize = 1 << 14;

/// `Tensor::cat(xs, dim)`, as one parallel pass when every input is an f32 flex tensor (with or
/// without autodiff) and there are 2 to 6 of them; burn's `cat` otherwise.
pub fn cat<const D: usize>(xs: Vec<Tensor<D>>, dim: usize) -> Tensor<D> {
    match fused(&xs, dim) {
        Some(y) => y,
        None => Tensor::cat(xs, dim),
    }
}

fn fused<const D: usize>(xs: &[Tensor<D>], dim: usize) -> Option<Tensor<D>> {
    match xs.len() {
        2 => fused_n::<D, 2>(xs, dim),
        3 => fused_n::<D, 3>(xs, dim),
        4 => fused_n::<D, 4>(xs, dim),
        5 => fused_n::<D, 5>(xs, dim),
        6 => fused_n::<D, 6>(xs, dim),
        _ => None,
    }
}

/// The sizes of a concatenation: `outer` rows (the product of the dimensions before `dim`), each
/// the inputs' blocks (their size along `dim` times the inner dimensions) one after the other.
#[derive(Clone, Debug)]
struct Plan {
    outer: usize,
    /// Each input's block per row.
    blocks: Vec<usize>,
}

impl Plan {
    /// `None` when the shapes do not concatenate (burn's `cat` then reports it).
    fn new(shapes: &[Vec<usize>], dim: usize) -> Option<Self> {
        let first = shapes.first()?;
        if dim >= first.len() {
            return None;
        }
        let same_elsewhere = shapes.iter().all(|s| {
            s.len() == first.len()
                && s.iter()
                    .zip(first)
                    .enumerate()
                    .all(|(j, (a, b))| j == dim || a == b)
        });
        if !same_elsewhere {
            return None;
        }
        let outer = first[..dim].iter().product();
        let inner: usize = first[dim + 1..].iter().product();
        let blocks = shapes.iter().map(|s| s[dim] * inner).collect();
        Some(Plan { outer, blocks })
    }

    fn row(&self) -> usize {
        self.blocks.iter().sum()
    }
}

/// Where a tensor's rows lie in its storage: row r is `data[first + r·stride ..][..block]`.
/// Empty `data` stands for rows of zeros (a narrowed gradient's outside), written without a
/// source.
pub(super) struct Rows<'a> {
    data: &'a [f32],
    first: usize,
    stride: usize,
}

impl Rows<'_> {
    pub(super) fn row(&self, r: usize, block: usize) -> &[f32] {
        &self.data[self.first + r * self.stride..][..block]
    }
}

/// `t` as rows of `block` elements split at `dim`, read in place when the dimensions from `dim`
/// on are contiguous and the ones before it collapse to one stride; `None` otherwise (the caller
/// then makes `t` contiguous first).
pub(super) fn rows(t: &FlexTensor, dim: usize, block: usize) -> Option<Rows<'_>> {
    if t.dtype() != DType::F32 {
        return None;
    }
    let layout = t.layout();
    let shape = layout.shape().to_vec();
    let strides = layout.strides();
    // contiguous from `dim` on (dimensions of size 1 may have any stride)
    let mut want = 1isize;
    for j in (dim..shape.len()).rev() {
        if shape[j] > 1 && strides[j] != want {
            return None;
        }
        want *= shape[j] as isize;
    }
    // the dimensions before `dim` as one stride
    let mut stride: Option<isize> = None;
    let mut expect: Option<isize> = None;
    for j in (0..dim).rev() {
        if shape[j] == 1 {
            continue;
        }
        match expect {
            None => {
                stride = Some(strides[j]);
                expect = Some(strides[j] * shape[j] as isize);
            }
            Some(e) if strides[j] == e => expect = Some(e * shape[j] as isize),
            Some(_) => return None,
        }
    }
    let stride = stride.unwrap_or(block as isize);
    if stride < 0 {
        return None;
    }
    let data: &[f32] = t.storage::<f32>();
    let outer: usize = shape[..dim].iter().product();
    let first = layout.start_offset();
    let end = first + outer.saturating_sub(1) * stride as usize + block;
    (outer == 0 || end <= data.len()).then_some(Rows {
        data,
        first,
        stride: stride as usize,
    })
}

/// `t` itself when [`rows`] reads it in place, else a contiguous copy (`None` for other dtypes).
fn readable(t: &FlexTensor, dim: usize, block: usize) -> Option<FlexTensor> {
    match rows(t, dim, block) {
        Some(_) => Some(t.clone()),
        None => contiguous(t),
    }
}

/// Fills `out` (the concatenation's `outer` rows, contiguous) from the inputs' rows: each piece of
/// `out` copies the parts of the rows it covers, the pieces in parallel for big outputs.
fn gather(plan: &Plan, inputs: &[Rows], out: &mut [MaybeUninit<f32>]) {
    let row = plan.row();
    let fill = |start: usize, piece: &mut [MaybeUninit<f32>]| {
        let mut done = 0;
        while done < piece.len() {
            let at = start + done;
            let (r, mut within) = (at / row, at % row);
            let mut i = 0;
            while within >= plan.blocks[i] {
                within -= plan.blocks[i];
                i += 1;
            }
            let n = (plan.blocks[i] - within).min(piece.len() - done);
            let out = &mut piece[done..done + n];
            if inputs[i].data.is_empty() {
                out.fill(MaybeUninit::new(0.0));
            } else {
                let src = &inputs[i].row(r, plan.blocks[i])[within..];
                for (o, &v) in out.iter_mut().zip(&src[..n]) {
                    o.write(v);
                }
            }
            done += n;
        }
    };
    if out.len() < PARALLEL_MIN {
        fill(0, out);
    } else {
        out.par_chunks_mut(PIECE)
            .short_runs()
            .enumerate()
            .for_each(|(k, piece)| fill(k * PIECE, piece));
    }
}

/// Input `i`'s part of the concatenation's gradient `g` (rows of `plan.row()`), contiguous.
fn scatter(plan: &Plan, g: &Rows, i: usize) -> Vec<f32> {
    let block = plan.blocks[i];
    let offset: usize = plan.blocks[..i].iter().sum();
    let part = Rows {
        data: g.data,
        first: g.first + offset,
        stride: g.stride,
    };
    let single = Plan {
        outer: plan.outer,
        blocks: vec![block],
    };
    // SAFETY: gather writes every element of the outer·block it is given.
    unsafe { filled(plan.outer * block, |out| gather(&single, &[part], out)) }
}

#[derive(Debug)]
struct CatBackward;

#[derive(Clone, Debug)]
struct CatState {
    plan: Plan,
    dim: usize,
    /// Each input's shape.
    shapes: Vec<Vec<usize>>,
}

impl<const N: usize> Backward<Flex, N> for CatBackward {
    type State = CatState;

    fn backward(self, ops: Ops<Self::State, N>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let CatState { plan, dim, shapes } = ops.state;
        let row = plan.row();
        let g = readable(&g, dim, row).expect("f32 gradient");
        let gr = rows(&g, dim, row).expect("a readable gradient has rows");
        let wanted: Vec<usize> = (0..N).filter(|&i| ops.parents[i].is_some()).collect();
        let parts: Vec<Vec<f32>> = wanted.par_iter().map(|&i| scatter(&plan, &gr, i)).collect();
        for (i, part) in wanted.into_iter().zip(parts) {
            if let Some(node) = &ops.parents[i] {
                hand_to!(grads, node, tensor(part, shapes[i].clone()));
            }
        }
    }
}

fn fused_n<const D: usize, const N: usize>(xs: &[Tensor<D>], dim: usize) -> Option<Tensor<D>> {
    let tracked: Option<Vec<_>> = xs
        .iter()
        .map(|x| x.clone().try_into_primitive::<Ad>().ok())
        .collect();
    let (prims, nodes) = match tracked {
        Some(ts) => {
            let prims: Vec<FlexTensor> = ts.iter().map(|t| t.primitive().clone()).collect();
            let nodes: [_; N] = ts
                .iter()
                .map(|t| t.node())
                .collect::<Vec<_>>()
                .try_into()
                .ok()?;
            (prims, Some(nodes))
        }
        None => {
            let plain: Option<Vec<FlexTensor>> = xs
                .iter()
                .map(|x| x.clone().try_into_primitive::<Flex>().ok())
                .collect();
            (plain?, None)
        }
    };
    let shapes: Vec<Vec<usize>> = prims.iter().map(|p| p.layout().shape().to_vec()).collect();
    let plan = Plan::new(&shapes, dim)?;
    // inputs that are not row-strided views are made contiguous first
    let owned: Vec<FlexTensor> = prims
        .iter()
        .zip(&plan.blocks)
        .map(|(p, &b)| readable(p, dim, b))
        .collect::<Option<_>>()?;
    let inputs: Vec<Rows> = owned
        .iter()
        .zip(&plan.blocks)
        .map(|(p, &b)| rows(p, dim, b))
        .collect::<Option<_>>()?;
    // SAFETY: gather writes every element of the outer·row elements.
    let out = unsafe { filled(plan.outer * plan.row(), |o| gather(&plan, &inputs, o)) };
    let mut shape = shapes[0].clone();
    shape[dim] = shapes.iter().map(|s| s[dim]).sum();
    let out = tensor(out, shape);
    Some(match nodes {
        Some(nodes) => {
            let y = record(CatBackward, nodes, || CatState { plan, dim, shapes }, out);
            Tensor::from_primitive::<Ad>(y)
        }
        None => Tensor::from_primitive::<Flex>(out),
    })
}

#[derive(Debug)]
struct NarrowBackward;

#[derive(Clone, Debug)]
struct NarrowState {
    /// The input's shape, and the slice's `dim`, `start` and `len`.
    shape: Vec<usize>,
    dim: usize,
    start: usize,
    len: usize,
}

impl Backward<Flex, 1> for NarrowBackward {
    type State = NarrowState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let g = grads.consume::<Flex>(&ops.node);
        let [parent] = ops.parents;
        let Some(node) = parent else {
            return;
        };
        let NarrowState {
            shape,
            dim,
            start,
            len,
        } = ops.state;
        let inner: usize = shape[dim + 1..].iter().product();
        let parts = [start, len, shape[dim] - start - len].map(|n| n * inner);
        let g = readable(&g, dim, parts[1]).expect("f32 gradient");
        let zero = || Rows {
            data: &[],
            first: 0,
            stride: 0,
        };
        let slice = rows(&g, dim, parts[1]).expect("a readable gradient has rows");
        let (mut blocks, mut inputs) = (Vec::new(), Vec::new());
        for (n, r) in parts.into_iter().zip([zero(), slice, zero()]) {
            if n > 0 {
                blocks.push(n);
                inputs.push(r);
            }
        }
        let plan = Plan {
            outer: shape[..dim].iter().product(),
            blocks,
        };
        // SAFETY: gather writes every element of the outer·row elements.
        let dx = unsafe { filled(plan.outer * plan.row(), |o| gather(&plan, &inputs, o)) };
        hand_to!(grads, node, tensor(dx, shape));
    }
}

/// `x` sliced to `start .. start + len` along `dim` (the other dimensions whole): a view, as
/// burn's `slice`, with a parallel backward on flex (see the module's notes).
pub fn narrow<const D: usize>(x: &Tensor<D>, dim: usize, start: usize, len: usize) -> Tensor<D> {
    let dims = x.dims();
    let ranges: [std::ops::Range<usize>; D] = std::array::from_fn(|j| {
        if j == dim {
            start..start + len
        } else {
            0..dims[j]
        }
    });
    let Ok(xp) = x.clone().try_into_primitive::<Ad>() else {
        return x.clone().slice(ranges);
    };
    let view = Tensor::<D>::from_primitive::<Flex>(xp.primitive().clone()).slice(ranges.clone());
    let Ok(view) = view.try_into_primitive::<Flex>() else {
        return x.clone().slice(ranges);
    };
    let state = || NarrowState {
        shape: dims.to_vec(),
        dim,
        start,
        len,
    };
    Tensor::from_primitive::<Ad>(record(NarrowBackward, [xp.node()], state, view))
}

#[cfg(test)]
mod tests {
    use super::super::testing::values;
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    fn random<const D: usize>(shape: [usize; D], grad: bool) -> Tensor<D> {
        let t = Tensor::<D>::random(shape, Distribution::Normal(0.0, 1.0), &crate::device());
        if grad {
            t.require_grad()
        } else {
            t
        }
    }

    /// The fused concatenation equals burn's, values and every input's gradient (weighted by a
    /// fixed tensor so that each position's gradient differs).
    /// `inputs` builds the inputs from the leaves (twice: one graph per backward).
    fn check<const D: usize>(
        inputs: impl Fn() -> Vec<Tensor<D>>,
        leaves: &[Tensor<D>],
        dim: usize,
    ) {
        let want = Tensor::cat(inputs(), dim);
        let got = cat(inputs(), dim);
        assert_eq!(got.dims(), want.dims());
        assert_eq!(values(got.clone()), values(want.clone()));
        let n = want.shape().num_elements();
        let w = Tensor::<1>::from_data(
            TensorData::new((0..n).map(|i| (i % 13) as f32 - 6.0).collect(), [n]),
            &crate::device(),
        )
        .reshape(want.dims());
        let gw = (want * w.clone()).sum().backward();
        let gg = (got * w).sum().backward();
        for (k, leaf) in leaves.iter().enumerate() {
            let a = values(leaf.grad(&gw).expect("burn's gradient"));
            let b = values(leaf.grad(&gg).expect("the fused gradient"));
            assert_eq!(a, b, "input {k}'s gradient, dim {dim}");
        }
    }

    #[test]
    fn matches_burns_cat_on_every_dimension() {
        for dim in 0..4 {
            let mut shapes = [[2, 3, 5, 7]; 3];
            shapes[1][dim] = 4;
            shapes[2][dim] = 1;
            let leaves: Vec<Tensor<4>> = shapes.iter().map(|&s| random(s, true)).collect();
            check(
                || leaves.iter().map(|l| l.clone() * 2.0).collect(),
                &leaves,
                dim,
            );
        }
    }

    #[test]
    fn reads_channel_slices_in_place_and_handles_big_tensors() {
        // a C3k2 block: both halves of one tensor (strided views) and a third tensor, big
        // enough to be split among threads
        let y = random([3, 16, 40, 40], true);
        let z = random([3, 8, 40, 40], true);
        let halves = || {
            let y2 = y.clone() * 1.0;
            vec![
                y2.clone().slice([0..3, 0..8, 0..40, 0..40]),
                y2.slice([0..3, 8..16, 0..40, 0..40]),
                z.clone() * 1.0,
            ]
        };
        check(halves, &[y.clone(), z.clone()], 1);
        // the detection head: levels of [B, C, HW] side by side
        let ls: Vec<Tensor<3>> = [6400, 1600, 400]
            .iter()
            .map(|&n| random([2, 12, n], true))
            .collect();
        check(|| ls.iter().map(|l| l.clone() + 0.0).collect(), &ls, 2);
    }

    #[test]
    fn narrow_matches_burns_slice_values_and_gradients() {
        let x = random([2, 6, 3, 5], true);
        for (dim, start, len) in [(1, 0, 3), (1, 3, 3), (1, 2, 2), (0, 1, 1), (3, 1, 4)] {
            let dims = x.dims();
            let ranges: [std::ops::Range<usize>; 4] = std::array::from_fn(|j| {
                if j == dim {
                    start..start + len
                } else {
                    0..dims[j]
                }
            });
            let want = (x.clone() * 2.0).slice(ranges);
            let got = narrow(&(x.clone() * 2.0), dim, start, len);
            assert_eq!(got.dims(), want.dims());
            assert_eq!(values(got.clone()), values(want.clone()));
            let w = want.clone().detach() + 0.5;
            let gw = (want * w.clone()).sum().backward();
            let gg = (got * w).sum().backward();
            assert_eq!(
                values(x.grad(&gw).unwrap()),
                values(x.grad(&gg).unwrap()),
                "dim {dim} {start}+{len}"
            );
        }
        // both halves of one tensor (a C3k2 block's split): the gradients add up
        let y = random([2, 8, 40, 40], true);
        let halves = |f: &dyn Fn(&Tensor<4>, usize) -> Tensor<4>| {
            let y2 = y.clone() * 1.0;
            (f(&y2, 0) * 3.0 + f(&y2, 4)).sum().backward()
        };
        let gw = halves(&|t, s| t.clone().slice([0..2, s..s + 4, 0..40, 0..40]));
        let gg = halves(&|t, s| narrow(t, 1, s, 4));
        assert_eq!(values(y.grad(&gw).unwrap()), values(y.grad(&gg).unwrap()));
        // a view: it shares the buffer of the tensor it slices
        let y2 = y.clone() * 1.0;
        let n = narrow(&y2, 1, 4, 4).try_into_primitive::<Ad>().unwrap();
        let base = y2.try_into_primitive::<Ad>().unwrap();
        assert_eq!(n.primitive().layout().start_offset(), 4 * 40 * 40);
        assert!(std::ptr::eq(
            n.primitive().storage::<f32>().as_ptr(),
            base.primitive().storage::<f32>().as_ptr()
        ));
    }

    #[test]
    fn a_channel_slice_is_read_in_place() {
        let flex = burn::tensor::Device::flex();
        let y = Tensor::<4>::random([3, 16, 4, 4], Distribution::Normal(0.0, 1.0), &flex);
        let half = y.clone().slice([0..3, 8..16, 0..4, 0..4]);
        let p = half.try_into_primitive::<Flex>().unwrap();
        let r = rows(&p, 1, 8 * 16).expect("a row-strided view");
        assert_eq!((r.first, r.stride), (8 * 16, 16 * 16));
        // a transposed view is not: it is made contiguous first
        let t = y.swap_dims(2, 3).try_into_primitive::<Flex>().unwrap();
        assert!(rows(&t, 1, 16 * 16).is_none());
    }

    #[test]
    fn plain_tensors_and_many_inputs() {
        let xs: Vec<Tensor<2>> = (0..3).map(|_| random([4, 5], false)).collect();
        let want = values(Tensor::cat(xs.clone(), 1));
        assert_eq!(values(cat(xs, 1)), want);
        // seven inputs: burn's cat
        let xs: Vec<Tensor<2>> = (0..7).map(|_| random([2, 3], false)).collect();
        assert_eq!(values(cat(xs.clone(), 0)), values(Tensor::cat(xs, 0)));
    }

    /// A tensor used by three fused operations and by one of burn's: its gradient is the sum
    /// of all four, whichever registers first.
    #[test]
    fn a_tensor_used_several_times_gets_the_whole_sum() {
        let dev = crate::device();
        let x0 = Tensor::<3>::random([2, 6, 50_000], Distribution::Normal(0.0, 1.0), &dev);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            // an intermediate tensor (not a leaf), used four times
            let h = x.clone() * 2.0;
            let parts = if fused {
                vec![
                    narrow(&h, 1, 0, 2),
                    narrow(&h, 1, 1, 4),
                    narrow(&h, 1, 3, 3),
                ]
            } else {
                vec![
                    h.clone().narrow(1, 0, 2),
                    h.clone().narrow(1, 1, 4),
                    h.clone().narrow(1, 3, 3),
                ]
            };
            let loss = parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| (p * (i as f64 + 1.0)).sum())
                .fold(h.clone().powf_scalar(2.0).sum(), |a, b| a + b);
            values(x.grad(&loss.backward()).unwrap())
        };
        assert_eq!(run(true), run(false));
    }
}
