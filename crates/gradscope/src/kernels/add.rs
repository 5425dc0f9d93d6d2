//! The sum of two tensors of one shape (residual connections) as one operation with its own
//! backward, for flex.
//!
//! burn's add runs on one thread below 4 M values, and its backward hands both parents the
//! output's gradient through burn's registration, whose sum with a second registration is on
//! one thread too. Here the forward adds in parallel (into the second operand's buffer when
//! nothing else holds it) and the backward hands the gradient on through
//! [`super::grads::hand`], so that the residual's gradient and the branch's are summed in
//! parallel where the residual also feeds one of these kernels.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::cat::rows;
use super::grads::hand_to;
use super::host::{filled, record, tensor};

type Ad = Autodiff<Flex>;

/// Values per parallel task.
const CHUNK: usize = 1 << 15;

/// `x + y` (same shape), in parallel on flex; burn's add otherwise.
pub fn add<const D: usize>(x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    if x.dims() != y.dims() || x.dtype() != DType::F32 || y.dtype() != DType::F32 {
        return x + y;
    }
    match (
        x.clone().try_into_primitive::<Ad>(),
        y.clone().try_into_primitive::<Ad>(),
    ) {
        (Ok(xp), Ok(yp)) => {
            let nodes = [xp.node(), yp.node()];
            let Some(out) = sum(xp.into_primitive(), yp.into_primitive()) else {
                return x + y;
            };
            Tensor::from_primitive::<Ad>(record(AddBackward, nodes, || (), out))
        }
        _ => match (
            x.clone().try_into_primitive::<Flex>(),
            y.clone().try_into_primitive::<Flex>(),
        ) {
            (Ok(a), Ok(b)) => match sum(a, b) {
                Some(out) => Tensor::from_primitive::<Flex>(out),
                None => x + y,
            },
            _ => x + y,
        },
    }
}

/// `a + b` element by element, one task per chunk of a row (an image's values): into `b`'s
/// buffer when nothing else holds it and it is dense from its start, else into a new one. Either
/// operand may be a channel slice of a bigger tensor, read in place. `None` for other layouts.
fn sum(a: FlexTensor, mut b: FlexTensor) -> Option<FlexTensor> {
    let shape = a.layout().shape().to_vec();
    let dim = usize::from(shape.len() >= 2);
    let (outer, block): (usize, usize) =
        (shape[..dim].iter().product(), shape[dim..].iter().product());
    let n = outer * block;
    let ra = rows(&a, dim, block)?;
    if b.is_unique() && b.layout().contiguous_offsets() == Some((0, n)) {
        let bv = &mut b.try_storage_mut::<f32>()?[..n];
        bv.par_chunks_mut(block.max(1))
            .enumerate()
            .for_each(|(r, o)| {
                o.par_chunks_mut(CHUNK)
                    .zip(ra.row(r, block).par_chunks(CHUNK))
                    .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o += x));
            });
        return Some(b);
    }
    let rb = rows(&b, dim, block)?;
    // SAFETY: every row of every image is written below.
    let out = unsafe {
        filled(n, |out| {
            out.par_chunks_mut(block.max(1))
                .enumerate()
                .for_each(|(r, o)| {
                    o.par_chunks_mut(CHUNK)
                        .zip(ra.row(r, block).par_chunks(CHUNK))
                        .zip(rb.row(r, block).par_chunks(CHUNK))
                        .for_each(|((o, x), y)| {
                            for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                                o.write(x + y);
                            }
                        });
                })
        })
    };
    Some(tensor(out, shape))
}

#[derive(Debug)]
struct AddBackward;

impl Backward<Flex, 2> for AddBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_y] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node_x {
            hand_to!(grads, node, g.clone());
        }
        if let Some(node) = node_y {
            hand_to!(grads, node, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::values;
    use super::*;
    use burn::tensor::Distribution;

    #[test]
    fn matches_burn_value_and_gradients_with_the_residual_used_twice() {
        let dev = crate::device();
        let x0 = Tensor::<4>::random([2, 3, 40, 50], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            let h = x.clone() * 1.5; // an intermediate, used by the branch and the residual
            let branch = h.clone().powf_scalar(2.0);
            let y = if ours {
                add(h.clone(), branch)
            } else {
                h.clone() + branch
            };
            let loss = (y.clone() * y.clone()).sum();
            (values(y), values(x.grad(&loss.backward()).unwrap()))
        };
        assert_eq!(run(true), run(false));
        // plain flex tensors, and one operand broadcast (burn's add)
        let a = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<2>::random([1, 4], Distribution::Normal(0.0, 1.0), &dev);
        assert_eq!(values(add(a.clone(), a.clone())), values(a.clone() * 2.0));
        assert_eq!(values(add(a.clone(), b.clone())), values(a + b));
        // a channel slice on either side, read in place
        let c = Tensor::<4>::random([2, 5, 6, 7], Distribution::Normal(0.0, 1.0), &dev);
        let d = Tensor::<4>::random([2, 2, 6, 7], Distribution::Normal(0.0, 1.0), &dev);
        let slice = crate::kernels::cat::narrow(&c, 1, 2, 2);
        assert_eq!(
            values(add(slice.clone(), d.clone())),
            values(slice.clone() + d.clone())
        );
        assert_eq!(values(add(d.clone(), slice.clone())), values(d + slice));
    }
}
