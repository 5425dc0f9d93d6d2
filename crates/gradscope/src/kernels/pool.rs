//! YOLO's two resampling layers as operations with their own backward, for flex: the SPPF's
//! k×k max-pool (stride 1, padding k/2, output the size of the input) and the neck's nearest
//! ×2 upsampling. burn's versions run each image plane in turn on one thread, forward and
//! backward; here one task per plane (image × channel).
//!
//! Max-pool picks, in each window, the first largest value in row-major order (a NaN wins, so
//! that it propagates), as PyTorch's CPU kernel does; its gradient goes to that position.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, Tensor};
use rayon::prelude::*;

use super::grads::hand_to;
use super::host::{contiguous, filled, record, tensor, values, zeroed_par, ShortRuns};

type Ad = Autodiff<Flex>;

/// `[n, c, h, w]` → the per-plane operation's tracked or plain result, or `None` off flex.
fn per_plane<O: Backward<Flex, 1>>(
    x: &Tensor<4>,
    op: O,
    forward: impl FnOnce(&[f32]) -> (Vec<f32>, O::State),
    out_shape: [usize; 4],
) -> Option<Tensor<4>> {
    if x.dtype() != DType::F32 {
        return None;
    }
    match x.clone().try_into_primitive::<Ad>() {
        Ok(p) => {
            let xc = contiguous(p.primitive())?;
            let (y, state) = forward(values(&xc));
            let out = record(op, [p.node()], || state, tensor(y, out_shape));
            Some(Tensor::from_primitive::<Ad>(out))
        }
        Err(_) => {
            let p = x.clone().try_into_primitive::<Flex>().ok()?;
            let (y, _) = forward(values(&contiguous(&p)?));
            Some(Tensor::from_primitive::<Flex>(tensor(y, out_shape)))
        }
    }
}

/// k×k max-pool with stride 1 and padding k/2 (odd k), the output the input's size; burn's
/// `max_pool2d` for other tensors.
pub fn max_pool_same(x: Tensor<4>, k: usize) -> Tensor<4> {
    let dims = x.dims();
    let [_, _, h, w] = dims;
    let forward = |xv: &[f32]| {
        let plane = h * w;
        let mut at = vec![0u32; xv.len()];
        // SAFETY: every plane's every position is written.
        let y = unsafe {
            filled(xv.len(), |y| {
                y.par_chunks_mut(plane.max(1))
                    .zip(at.par_chunks_mut(plane.max(1)))
                    .zip(xv.par_chunks(plane.max(1)))
                    .short_runs()
                    .for_each(|((y, at), x)| pool_plane(x, y, at, h, w, k));
            })
        };
        (y, PoolState { at, dims })
    };
    if k % 2 == 1 {
        if let Some(y) = per_plane(&x, PoolBackward, forward, dims) {
            return y;
        }
    }
    let p = k / 2;
    let opts = burn::tensor::ops::MaxPoolOptions::new([k, k])
        .with_stride([1, 1])
        .with_padding([p, p]);
    burn::tensor::module::max_pool2d(x, opts)
}

/// One plane: each output the first largest value of its window (a NaN wins), and where it is.
fn pool_plane(
    x: &[f32],
    y: &mut [std::mem::MaybeUninit<f32>],
    at: &mut [u32],
    h: usize,
    w: usize,
    k: usize,
) {
    let p = k / 2;
    for oy in 0..h {
        let (y0, y1) = (oy.saturating_sub(p), (oy + p + 1).min(h));
        for ox in 0..w {
            let (x0, x1) = (ox.saturating_sub(p), (ox + p + 1).min(w));
            let (mut best, mut idx) = (f32::NEG_INFINITY, y0 * w + x0);
            for iy in y0..y1 {
                for ix in x0..x1 {
                    let v = x[iy * w + ix];
                    if v > best || (v.is_nan() && !best.is_nan()) {
                        (best, idx) = (v, iy * w + ix);
                    }
                }
            }
            y[oy * w + ox].write(best);
            at[oy * w + ox] = idx as u32;
        }
    }
}

/// Where each output's maximum came from (within its plane), and the shape.
#[derive(Clone, Debug)]
struct PoolState {
    at: Vec<u32>,
    dims: [usize; 4],
}

#[derive(Debug)]
struct PoolBackward;

impl Backward<Flex, 1> for PoolBackward {
    type State = PoolState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let PoolState { at, dims } = ops.state;
            let plane = dims[2] * dims[3];
            let g = contiguous(&g).expect("f32 gradient");
            let gv = values(&g);
            let dx = zeroed_par(gv.len(), plane.max(1), |i, dxp| {
                let (gp, ap) = (&gv[i * plane..][..plane], &at[i * plane..][..plane]);
                for (&v, &a) in gp.iter().zip(ap) {
                    dxp[a as usize] += v;
                }
            });
            hand_to!(grads, node, tensor(dx, dims.to_vec()));
        }
    }
}

/// Nearest-neighbour ×2 upsampling of `[n, c, h, w]`; burn's `interpolate` for other tensors.
pub fn upsample2(x: Tensor<4>) -> Tensor<4> {
    let [n, c, h, w] = x.dims();
    let forward = |xv: &[f32]| {
        let plane = h * w;
        // SAFETY: every output row of every plane is written.
        let y = unsafe {
            filled(4 * xv.len(), |y| {
                y.par_chunks_mut(4 * plane.max(1))
                    .zip(xv.par_chunks(plane.max(1)))
                    .short_runs()
                    .for_each(|(y, x)| {
                        for (oy, row) in y.chunks_mut(2 * w.max(1)).enumerate() {
                            let src = &x[(oy / 2) * w..][..w];
                            for (ox, o) in row.iter_mut().enumerate() {
                                o.write(src[ox / 2]);
                            }
                        }
                    });
            })
        };
        (y, [n, c, h, w])
    };
    if let Some(y) = per_plane(&x, UpsampleBackward, forward, [n, c, 2 * h, 2 * w]) {
        return y;
    }
    use burn::tensor::module::interpolate;
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
    interpolate(
        x,
        InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
    )
}

#[derive(Debug)]
struct UpsampleBackward;

impl Backward<Flex, 1> for UpsampleBackward {
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        if let Some(node) = node {
            let [n, c, h, w] = ops.state;
            let g = contiguous(&g).expect("f32 gradient");
            let gv = values(&g);
            // SAFETY: every input position of every plane is written.
            let dx = unsafe {
                filled(n * c * h * w, |dx| {
                    dx.par_chunks_mut((h * w).max(1))
                        .zip(gv.par_chunks((4 * h * w).max(1)))
                        .short_runs()
                        .for_each(|(dxp, gp)| {
                            for iy in 0..h {
                                let (r0, r1) = (&gp[2 * iy * 2 * w..], &gp[(2 * iy + 1) * 2 * w..]);
                                for ix in 0..w {
                                    let s =
                                        r0[2 * ix] + r0[2 * ix + 1] + r1[2 * ix] + r1[2 * ix + 1];
                                    dxp[iy * w + ix].write(s);
                                }
                            }
                        });
                })
            };
            hand_to!(grads, node, tensor(dx, ops.state.to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::tensor::module::{interpolate, max_pool2d};
    use burn::tensor::ops::{InterpolateMode, InterpolateOptions, MaxPoolOptions};
    use burn::tensor::{Distribution, TensorData};

    fn burn_pool(x: Tensor<4>, k: usize) -> Tensor<4> {
        let opts = MaxPoolOptions::new([k, k])
            .with_stride([1, 1])
            .with_padding([k / 2, k / 2]);
        max_pool2d(x, opts)
    }

    fn burn_up(x: Tensor<4>) -> Tensor<4> {
        let [_, _, h, w] = x.dims();
        interpolate(
            x,
            InterpolateOptions::new(InterpolateMode::Nearest).with_output_size([2 * h, 2 * w]),
        )
    }

    /// Values and the input gradient against burn's, through a loss that weighs every output.
    fn check(ours: impl Fn(Tensor<4>) -> Tensor<4>, theirs: impl Fn(Tensor<4>) -> Tensor<4>) {
        let dev = crate::device();
        let x0 = Tensor::<4>::random([2, 3, 9, 7], Distribution::Normal(0.0, 1.0), &dev);
        let run = |f: &dyn Fn(Tensor<4>) -> Tensor<4>| {
            let x = x0.clone().detach().require_grad();
            let y = f(x.clone());
            // fixed weights, the same for both runs
            let w = Tensor::<4>::from_data(
                TensorData::new(
                    (0..y.dims().iter().product::<usize>())
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                        .collect::<Vec<_>>(),
                    y.dims(),
                ),
                &dev,
            );
            let g = x.grad(&(y.clone() * w).sum().backward()).unwrap();
            (values(y), values(g))
        };
        let (y1, g1) = run(&ours);
        let (y0, g0) = run(&theirs);
        assert_eq!(y1, y0, "values");
        assert!(max_rel(&g1, &g0) < 1e-6, "gradient");
    }

    #[test]
    fn max_pool_matches_burn() {
        check(|x| max_pool_same(x, 5), |x| burn_pool(x, 5));
        check(|x| max_pool_same(x, 3), |x| burn_pool(x, 3));
    }

    #[test]
    fn max_pool_ties_go_to_the_first_and_nan_propagates() {
        let dev = crate::device();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, 1.0, 0.0, f32::NAN], [1, 1, 2, 2]),
            &dev,
        )
        .require_grad();
        let y = max_pool_same(x.clone(), 3);
        assert!(values(y.clone()).iter().all(|v| v.is_nan()));
        let x = Tensor::<4>::from_data(TensorData::new(vec![2.0f32, 2.0, 0.0], [1, 1, 1, 3]), &dev)
            .require_grad();
        let y = max_pool_same(x.clone(), 3);
        assert_eq!(values(y.clone()), vec![2.0, 2.0, 2.0]);
        // outputs 0 and 1 take position 0 (the first of the tie); output 2's window is {1, 2}
        let g = values(x.grad(&y.sum().backward()).unwrap());
        assert_eq!(g, vec![2.0, 1.0, 0.0]);
    }

    #[test]
    fn upsample_matches_burn() {
        check(upsample2, burn_up);
    }
}
