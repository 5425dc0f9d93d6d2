//! A dense layer y = x·W + b as one operation with its own backward, for flex.
//!
//! burn runs it as a matrix product, a broadcast addition and, in the backward, transposed copies
//! for the two gradient products and a reduction for the bias. Here the forward is one GEMM into
//! a buffer pre-filled with the bias, and the backward two GEMMs reading the operands with
//! transposed strides (no copies) and one column sum.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::Linear;
use burn::tensor::Tensor;

use super::host::{contiguous, gemm, record, tensor, values};

type Ad = Autodiff<Flex>;

/// GEMMs with at least this many multiply-adds use every thread.
const PARALLEL_MIN: usize = 1 << 18;

/// y (`[m, n]`) = x (`[m, k]`) · w (`[k, n]`) + b.
fn forward_host(x: &[f32], w: &[f32], b: Option<&[f32]>, m: usize, k: usize, n: usize) -> Vec<f32> {
    // the bias rows written as the output is made (not zeros first, then the bias over them)
    let mut y = match b {
        Some(b) => b.repeat(m),
        None => vec![0.0f32; m * n],
    };
    gemm(
        m,
        n,
        k,
        &mut y,
        b.is_some(),
        x,
        k,
        1,
        w,
        n,
        1,
        m * n * k >= PARALLEL_MIN,
    );
    y
}

#[derive(Debug)]
struct LinearBackward;

#[derive(Clone, Debug)]
struct LinearState {
    x: FlexTensor,
    w: FlexTensor,
    /// Rows (all leading dimensions of x), inputs, outputs, and x's shape.
    dims: [usize; 3],
    x_shape: Vec<usize>,
}

impl Backward<Flex, 3> for LinearBackward {
    type State = LinearState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let g = contiguous(&g).expect("f32 gradient");
        let g = values(&g);
        let st = ops.state;
        let [m, k, n] = st.dims;
        let par = m * n * k >= PARALLEL_MIN;
        // dx = g · Wᵀ ([m, n] · [n, k]) and dW = xᵀ · g ([k, m] · [m, n]): the same number of
        // multiply-adds, so when both are wanted each takes one thread (one fork instead of
        // splitting each product)
        let dx = |par: bool| {
            let mut dx = vec![0.0f32; m * k];
            gemm(m, k, n, &mut dx, false, g, n, 1, values(&st.w), 1, n, par);
            dx
        };
        let dw = |par: bool| {
            let mut dw = vec![0.0f32; k * n];
            gemm(k, n, m, &mut dw, false, values(&st.x), 1, k, g, n, 1, par);
            dw
        };
        // ∂L/∂b: the column sums of g, summed beside the products instead of after them
        let db = || {
            node_b.is_some().then(|| {
                let mut db = vec![0.0f32; n];
                for r in g.chunks(n) {
                    for (d, &v) in db.iter_mut().zip(r) {
                        *d += v;
                    }
                }
                db
            })
        };
        let ((dx, dw), db) = match (node_x.is_some(), node_w.is_some()) {
            (true, true) if par => {
                let (a, (b, db)) = rayon::join(|| dx(false), || rayon::join(|| dw(false), db));
                ((Some(a), Some(b)), db)
            }
            (want_x, want_w) => ((want_x.then(|| dx(par)), want_w.then(|| dw(par))), db()),
        };
        if let (Some(node), Some(dx)) = (node_x, dx) {
            grads.register::<Flex>(node.id, tensor(dx, st.x_shape.clone()));
        }
        if let (Some(node), Some(dw)) = (node_w, dw) {
            grads.register::<Flex>(node.id, tensor(dw, [k, n]));
        }
        if let (Some(node), Some(db)) = (node_b, db) {
            grads.register::<Flex>(node.id, tensor(db, [n]));
        }
    }
}

/// `linear.forward(x)` (x `[…, in]`), fused on flex; burn's `Linear` otherwise.
pub fn forward<const D: usize>(linear: &Linear, x: Tensor<D>) -> Tensor<D> {
    fused(linear, &x).unwrap_or_else(|| linear.forward(x))
}

fn fused<const D: usize>(linear: &Linear, x: &Tensor<D>) -> Option<Tensor<D>> {
    let w = linear.weight.val();
    let [k, n] = w.dims();
    let shape = x.dims();
    if shape[D - 1] != k {
        return None;
    }
    let m: usize = shape[..D - 1].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape[D - 1] = n;
    let bias = linear.bias.as_ref().map(|b| b.val());
    if let Ok(xp) = x.clone().try_into_primitive::<Ad>() {
        let wp = w.try_into_primitive::<Ad>().ok()?;
        // without a bias, a constant zero bias keeps one op shape (its gradient is dropped)
        let bp = match &bias {
            Some(b) => b.clone().try_into_primitive::<Ad>().ok()?,
            None => Tensor::<1>::zeros([n], &x.device())
                .try_into_primitive::<Ad>()
                .ok()?,
        };
        let (xc, wc, bc) = (
            contiguous(xp.primitive())?,
            contiguous(wp.primitive())?,
            contiguous(bp.primitive())?,
        );
        let y = forward_host(values(&xc), values(&wc), Some(values(&bc)), m, k, n);
        let y = tensor(y, out_shape);
        let result = record(
            LinearBackward,
            [xp.node(), wp.node(), bp.node()],
            || LinearState {
                x: xc,
                w: wc,
                dims: [m, k, n],
                x_shape: shape.to_vec(),
            },
            y,
        );
        return Some(Tensor::from_primitive::<Ad>(result));
    }
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    let wp = w.try_into_primitive::<Flex>().ok()?;
    let bv = match &bias {
        Some(b) => Some(contiguous(&b.clone().try_into_primitive::<Flex>().ok()?)?),
        None => None,
    };
    let (xc, wc) = (contiguous(&xp)?, contiguous(&wp)?);
    let y = forward_host(values(&xc), values(&wc), bv.as_ref().map(values), m, k, n);
    Some(Tensor::from_primitive::<Flex>(tensor(y, out_shape)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::nn::LinearConfig;
    use burn::tensor::Distribution;

    #[test]
    fn fused_linear_matches_burn_values_and_gradients() {
        let dev = crate::device();
        for bias in [true, false] {
            let lin = LinearConfig::new(7, 5).with_bias(bias).init(&dev);
            let x0 = Tensor::<3>::random([2, 3, 7], Distribution::Normal(0.0, 1.0), &dev);
            let wy = Tensor::<3>::random([2, 3, 5], Distribution::Normal(0.0, 1.0), &dev);
            let run = |ours: bool| {
                let x = x0.clone().detach().require_grad();
                let y = if ours {
                    forward(&lin, x.clone())
                } else {
                    lin.forward(x.clone())
                };
                let grads = (y.clone() * wy.clone()).sum().backward();
                let dw = values(lin.weight.val().grad(&grads).unwrap());
                let db = lin
                    .bias
                    .as_ref()
                    .map(|b| values(b.val().grad(&grads).unwrap()))
                    .unwrap_or_default();
                (values(y), values(x.grad(&grads).unwrap()), dw, db)
            };
            let (a, r) = (run(true), run(false));
            assert!(max_rel(&a.0, &r.0) < 1e-6, "y");
            assert!(max_rel(&a.1, &r.1) < 1e-6, "dx");
            assert!(max_rel(&a.2, &r.2) < 1e-6, "dW");
            assert_eq!(a.3.len(), r.3.len());
            if bias {
                assert!(max_rel(&a.3, &r.3) < 1e-6, "db");
            }
        }
    }
}
