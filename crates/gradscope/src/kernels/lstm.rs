//! The LSTM's element-wise step as two fused operations with their own backward, for flex.
//!
//! With the gate pre-activations z = [i f g o] (`[B, 4H]`, PyTorch's order):
//!   cell:   c = σ(f)⊙c₋ + σ(i)⊙tanh(g)
//!   hidden: h = σ(o)⊙tanh(c)
//! burn builds these from about a dozen nodes per time step (slices, σ, tanh, products, sums),
//! each with its own allocation and backward; here each is one node. They stay two operations so
//! that the probe can still watch c and h separately.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::activation::{sigmoid as t_sigmoid, tanh as t_tanh};
use burn::tensor::Tensor;

use super::host::{contiguous, tensor, values};
use super::simd::{multiversion, sigmoid, tanh};

type Ad = Autodiff<Flex>;

/// Which of the two element-wise steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// c = σ(f)⊙c₋ + σ(i)⊙tanh(g), from (z, c₋).
    Cell,
    /// h = σ(o)⊙tanh(c), from (z, c).
    Hidden,
}

multiversion! {
    fn forward_rows(z: &[f32], c: &[f32], out: &mut [f32], h: usize, cell: bool) {
        for ((zr, cr), or) in z.chunks(4 * h).zip(c.chunks(h)).zip(out.chunks_mut(h)) {
            let (zi, rest) = zr.split_at(h);
            let (zf, rest) = rest.split_at(h);
            let (zg, zo) = rest.split_at(h);
            if cell {
                for j in 0..h {
                    or[j] = sigmoid(zf[j]) * cr[j] + sigmoid(zi[j]) * tanh(zg[j]);
                }
            } else {
                for j in 0..h {
                    or[j] = sigmoid(zo[j]) * tanh(cr[j]);
                }
            }
        }
    }
}

multiversion! {
    /// Gradients w.r.t. z (`[B, 4H]`, zero in the blocks the step does not read) and c.
    fn backward_rows(z: &[f32], c: &[f32], g: &[f32], dz: &mut [f32], dc: &mut [f32], h: usize, cell: bool) {
        for ((((zr, cr), gr), dzr), dcr) in z
            .chunks(4 * h)
            .zip(c.chunks(h))
            .zip(g.chunks(h))
            .zip(dz.chunks_mut(4 * h))
            .zip(dc.chunks_mut(h))
        {
            let (zi, rest) = zr.split_at(h);
            let (zf, rest) = rest.split_at(h);
            let (zg, zo) = rest.split_at(h);
            let (di, rest) = dzr.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dg, dout) = rest.split_at_mut(h);
            if cell {
                for j in 0..h {
                    let (si, sf, tg) = (sigmoid(zi[j]), sigmoid(zf[j]), tanh(zg[j]));
                    let gj = gr[j];
                    di[j] = gj * tg * si * (1.0 - si);
                    df[j] = gj * cr[j] * sf * (1.0 - sf);
                    dg[j] = gj * si * (1.0 - tg * tg);
                    dout[j] = 0.0;
                    dcr[j] = gj * sf;
                }
            } else {
                for j in 0..h {
                    let (so, tc) = (sigmoid(zo[j]), tanh(cr[j]));
                    let gj = gr[j];
                    di[j] = 0.0;
                    df[j] = 0.0;
                    dg[j] = 0.0;
                    dout[j] = gj * tc * so * (1.0 - so);
                    dcr[j] = gj * so * (1.0 - tc * tc);
                }
            }
        }
    }
}

#[derive(Debug)]
struct StepBackward;

#[derive(Clone, Debug)]
struct StepState {
    z: FlexTensor,
    c: FlexTensor,
    b: usize,
    h: usize,
    step: Step,
}

impl Backward<Flex, 2> for StepBackward {
    type State = StepState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_z, node_c] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let st = ops.state;
        let g = contiguous(&g).expect("f32 gradient");
        let mut dz = vec![0.0f32; st.b * 4 * st.h];
        let mut dc = vec![0.0f32; st.b * st.h];
        backward_rows(
            values(&st.z),
            values(&st.c),
            values(&g),
            &mut dz,
            &mut dc,
            st.h,
            st.step == Step::Cell,
        );
        if let Some(node) = node_z {
            grads.register::<Flex>(node.id, tensor(dz, [st.b, 4 * st.h]));
        }
        if let Some(node) = node_c {
            grads.register::<Flex>(node.id, tensor(dc, [st.b, st.h]));
        }
    }
}

fn fused(z: &Tensor<2>, c: &Tensor<2>, step: Step) -> Option<Tensor<2>> {
    let [b, h] = c.dims();
    if z.dims() != [b, 4 * h] {
        return None;
    }
    if let Ok(zp) = z.clone().try_into_primitive::<Ad>() {
        let cp = c.clone().try_into_primitive::<Ad>().ok()?;
        let (zv, cv) = (contiguous(zp.primitive())?, contiguous(cp.primitive())?);
        let mut out = vec![0.0f32; b * h];
        forward_rows(values(&zv), values(&cv), &mut out, h, step == Step::Cell);
        let out = tensor(out, [b, h]);
        let result = match StepBackward
            .prepare::<NoCheckpointing>([zp.node(), cp.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(
                StepState {
                    z: zv,
                    c: cv,
                    b,
                    h,
                    step,
                },
                out,
            ),
            OpsKind::UnTracked(prep) => prep.finish(out),
        };
        return Some(Tensor::from_primitive::<Ad>(result));
    }
    let zp = z.clone().try_into_primitive::<Flex>().ok()?;
    let cp = c.clone().try_into_primitive::<Flex>().ok()?;
    let mut out = vec![0.0f32; b * h];
    let (zv, cv) = (contiguous(&zp)?, contiguous(&cp)?);
    forward_rows(values(&zv), values(&cv), &mut out, h, step == Step::Cell);
    Some(Tensor::from_primitive::<Flex>(tensor(out, [b, h])))
}

fn block(t: &Tensor<2>, k: usize, h: usize) -> Tensor<2> {
    let [b, _] = t.dims();
    t.clone().slice([0..b, k * h..(k + 1) * h])
}

/// c = σ(f)⊙c₋ + σ(i)⊙tanh(g) from the gate pre-activations `z` `[B, 4H]` and `c_prev` `[B, H]`.
pub fn cell(z: &Tensor<2>, c_prev: &Tensor<2>) -> Tensor<2> {
    fused(z, c_prev, Step::Cell).unwrap_or_else(|| {
        let h = c_prev.dims()[1];
        t_sigmoid(block(z, 1, h)) * c_prev.clone()
            + t_sigmoid(block(z, 0, h)) * t_tanh(block(z, 2, h))
    })
}

/// h = σ(o)⊙tanh(c).
pub fn hidden(z: &Tensor<2>, c: &Tensor<2>) -> Tensor<2> {
    fused(z, c, Step::Hidden).unwrap_or_else(|| {
        let h = c.dims()[1];
        t_sigmoid(block(z, 3, h)) * t_tanh(c.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    fn v(t: Tensor<2>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn fused_steps_match_burn_values_and_gradients() {
        let dev = crate::device();
        let (b, h) = (3, 5);
        let z0 = Tensor::<2>::random([b, 4 * h], Distribution::Normal(0.0, 2.0), &dev);
        let c0 = Tensor::<2>::random([b, h], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<2>::random([b, h], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let z = z0.clone().detach().require_grad();
            let c = c0.clone().detach().require_grad();
            let (c1, h1) = if ours {
                let c1 = fused(&z, &c, Step::Cell).unwrap();
                (c1.clone(), fused(&z, &c1, Step::Hidden).unwrap())
            } else {
                let c1 = t_sigmoid(block(&z, 1, h)) * c.clone()
                    + t_sigmoid(block(&z, 0, h)) * t_tanh(block(&z, 2, h));
                (c1.clone(), t_sigmoid(block(&z, 3, h)) * t_tanh(c1))
            };
            let loss = (h1.clone() * w.clone()).sum() + (c1.clone() * w.clone()).sum() * 0.5;
            let grads = loss.backward();
            (
                v(c1),
                v(h1),
                v(z.grad(&grads).unwrap()),
                v(c.grad(&grads).unwrap()),
            )
        };
        let a = run(true);
        let r = run(false);
        for (x, y, what) in [
            (&a.0, &r.0, "c"),
            (&a.1, &r.1, "h"),
            (&a.2, &r.2, "dz"),
            (&a.3, &r.3, "dc"),
        ] {
            let worst = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-6, "{what}: {worst}");
        }
    }

    #[test]
    fn tanh_matches_std() {
        for i in -200..=200 {
            let x = i as f32 * 0.05;
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "{x}");
        }
    }
}
