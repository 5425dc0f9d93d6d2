//! BatchNorm followed by SiLU (or nothing) as one operation with its own backward.
//!
//! burn composes BatchNorm in training mode and SiLU from about fifteen element-wise and reduction
//! passes over the activation, forward and backward, each allocating its result. Here the forward
//! is two reading passes for the batch statistics (mean, then the centred variance, summed in f64)
//! and one pass that writes `act(γ·x̂ + β)`; the backward is one pass that forms ∂L/∂z and its two
//! per-channel sums, and one that writes ∂L/∂x. Only the BatchNorm input is kept for the backward
//! (the activation is recomputed), so it also holds less memory than the composed version.
//!
//! Maths, per channel over the M = N·H·W values x of that channel:
//!   μ = mean x, σ² = mean (x−μ)² (biased), r = 1/√(σ²+ε), x̂ = (x−μ)·r, z = γ·x̂ + β, y = act(z);
//!   g = ∂L/∂y, d = g·act'(z) with silu'(z) = s·(1 + z·(1−s)), s = σ(z);
//!   ∂L/∂β = Σd, ∂L/∂γ = Σd·x̂, ∂L/∂x = γ·r·(d − Σd/M − x̂·Σd·x̂/M).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::nn::BatchNorm;
use burn::tensor::{Tensor, TensorData};
use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::grads::hand_to;
use super::host::{contiguous, filled, record, tensor, values, ShortRuns};
use super::simd::{multiversion, sigmoid};
use super::tap::with_values;

/// The activation fused after the normalisation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    Identity,
    Silu,
}

type Ad = Autodiff<Flex>;

const LANES: usize = 16;
const BLOCK: usize = 1024;

/// Σ f(v) in f64, from f32 partial sums in 16 lanes over blocks of 1024.
#[inline(always)]
fn block_sum(v: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0.0f64;
    for block in v.chunks(BLOCK) {
        let mut acc = [0.0f32; LANES];
        let mut it = block.chunks_exact(LANES);
        for c in &mut it {
            for i in 0..LANES {
                acc[i] += f(c[i]);
            }
        }
        let rest: f32 = it.remainder().iter().map(|&x| f(x)).sum();
        total += (acc.iter().sum::<f32>() + rest) as f64;
    }
    total
}

multiversion! {
    /// Σv.
    fn sum_f64(v: &[f32]) -> f64 {
        block_sum(v, |x| x)
    }
}

multiversion! {
    /// Σ(v − m)².
    fn sum_sq_centred(v: &[f32], m: f32) -> f64 {
        block_sum(v, |x| (x - m) * (x - m))
    }
}

multiversion! {
    /// out = act(a·y + b).
    fn affine_act(y: &[f32], out: &mut [MaybeUninit<f32>], a: f32, b: f32, silu: bool) {
        assert_eq!(y.len(), out.len());
        if silu {
            for (o, &x) in out.iter_mut().zip(y) {
                let z = x * a + b;
                o.write(z * sigmoid(z));
            }
        } else {
            for (o, &x) in out.iter_mut().zip(y) {
                o.write(x * a + b);
            }
        }
    }
}

/// Per-chunk constants of the backward.
#[derive(Clone, Copy)]
struct Chan {
    mean: f32,
    invstd: f32,
    gamma: f32,
    beta: f32,
}

/// d = g·act'(z) for one value; returns (d, x̂).
#[inline(always)]
fn grad_one<const SILU: bool>(x: f32, g: f32, k: Chan) -> (f32, f32) {
    let xh = (x - k.mean) * k.invstd;
    if SILU {
        let z = k.gamma * xh + k.beta;
        let s = sigmoid(z);
        (g * s * (1.0 + z * (1.0 - s)), xh)
    } else {
        (g, xh)
    }
}

/// One block of [`backward_sums`], in 16 lanes without bounds checks so that it vectorises.
#[inline(always)]
fn sums_block<const SILU: bool>(
    y: &[f32],
    g: &[f32],
    d: &mut [MaybeUninit<f32>],
    k: Chan,
) -> (f32, f32) {
    let mut a1 = [0.0f32; LANES];
    let mut a2 = [0.0f32; LANES];
    let mut yi = y.chunks_exact(LANES);
    let mut gi = g.chunks_exact(LANES);
    let mut di = d.chunks_exact_mut(LANES);
    for ((yc, gc), dc) in (&mut yi).zip(&mut gi).zip(&mut di) {
        let yc: &[f32; LANES] = yc.try_into().unwrap();
        let gc: &[f32; LANES] = gc.try_into().unwrap();
        let dc: &mut [MaybeUninit<f32>; LANES] = dc.try_into().unwrap();
        for i in 0..LANES {
            let (dv, xh) = grad_one::<SILU>(yc[i], gc[i], k);
            dc[i].write(dv);
            a1[i] += dv;
            a2[i] += dv * xh;
        }
    }
    let (mut r1, mut r2) = (0.0f32, 0.0f32);
    for ((&x, &gv), dv) in yi
        .remainder()
        .iter()
        .zip(gi.remainder())
        .zip(di.into_remainder())
    {
        let (v, xh) = grad_one::<SILU>(x, gv, k);
        dv.write(v);
        r1 += v;
        r2 += v * xh;
    }
    (a1.iter().sum::<f32>() + r1, a2.iter().sum::<f32>() + r2)
}

multiversion! {
    /// d = g·act'(z) written to `d`; returns (Σd, Σd·x̂), f32 within blocks of 1024, f64 across.
    fn backward_sums(y: &[f32], g: &[f32], d: &mut [MaybeUninit<f32>], k: Chan, silu: bool) -> (f64, f64) {
        assert!(y.len() == d.len() && g.len() == d.len());
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for ((yb, gb), db) in y.chunks(BLOCK).zip(g.chunks(BLOCK)).zip(d.chunks_mut(BLOCK)) {
            let (a, b) = if silu {
                sums_block::<true>(yb, gb, db, k)
            } else {
                sums_block::<false>(yb, gb, db, k)
            };
            s1 += a as f64;
            s2 += b as f64;
        }
        (s1, s2)
    }
}

multiversion! {
    /// In place: d ← γ·r·(d − mean_d − x̂·mean_dx̂).
    fn backward_input(y: &[f32], d: &mut [f32], k: Chan, mean_d: f32, mean_dx: f32) {
        let scale = k.gamma * k.invstd;
        for (dv, &x) in d.iter_mut().zip(y) {
            let xh = (x - k.mean) * k.invstd;
            *dv = scale * (*dv - mean_d - xh * mean_dx);
        }
    }
}

/// Host side of the forward on an `[N, C, H·W]` buffer: returns (output, mean, biased variance).
pub fn forward_host(
    y: &[f32],
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f64,
    act: Act,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let chunks = y.len().checked_div(hw).unwrap_or(0);
    let m = (chunks / c.max(1) * hw).max(1) as f64;
    let sums: Vec<f64> = y.par_chunks(hw.max(1)).short_runs().map(sum_f64).collect();
    let mean: Vec<f64> = (0..c)
        .map(|ch| sums.iter().skip(ch).step_by(c).sum::<f64>() / m)
        .collect();
    let sq: Vec<f64> = y
        .par_chunks(hw.max(1))
        .short_runs()
        .enumerate()
        .map(|(i, v)| sum_sq_centred(v, mean[i % c] as f32))
        .collect();
    let var: Vec<f64> = (0..c)
        .map(|ch| sq.iter().skip(ch).step_by(c).sum::<f64>() / m)
        .collect();
    let out = normalise(y, c, hw, act, |ch| {
        let a = gamma[ch] as f64 / (var[ch] + eps).sqrt();
        (a, beta[ch] as f64 - mean[ch] * a)
    });
    let mean = mean.iter().map(|&v| v as f32).collect();
    let var = var.iter().map(|&v| v as f32).collect();
    (out, mean, var)
}

/// act(a·y + b) per channel of an `[N, C, H·W]` buffer, with (a, b) = `coef(channel)`.
fn normalise(
    y: &[f32],
    c: usize,
    hw: usize,
    act: Act,
    coef: impl Fn(usize) -> (f64, f64) + Sync,
) -> Vec<f32> {
    // SAFETY: the chunks cover the whole output and affine_act writes each element of its chunk.
    unsafe {
        filled(y.len(), |out| {
            out.par_chunks_mut(hw.max(1))
                .zip(y.par_chunks(hw.max(1)))
                .short_runs()
                .enumerate()
                .for_each(|(i, (o, v))| {
                    let (a, b) = coef(i % c);
                    affine_act(v, o, a as f32, b as f32, act == Act::Silu);
                })
        })
    }
}

/// Host side of the inference forward: out = act(γ·(x−μ)/√(σ²+ε) + β) with given statistics.
#[allow(clippy::too_many_arguments)]
pub fn inference_host(
    y: &[f32],
    c: usize,
    hw: usize,
    gamma: &[f32],
    beta: &[f32],
    mean: &[f32],
    var: &[f32],
    eps: f64,
    act: Act,
) -> Vec<f32> {
    normalise(y, c, hw, act, |ch| {
        let a = gamma[ch] as f64 / (var[ch] as f64 + eps).sqrt();
        (a, beta[ch] as f64 - mean[ch] as f64 * a)
    })
}

/// Host side of the backward: returns (∂L/∂x, ∂L/∂γ, ∂L/∂β).
#[allow(clippy::too_many_arguments)]
pub fn backward_host(
    y: &[f32],
    g: &[f32],
    c: usize,
    hw: usize,
    mean: &[f32],
    invstd: &[f32],
    gamma: &[f32],
    beta: &[f32],
    act: Act,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let silu = act == Act::Silu;
    let hw1 = hw.max(1);
    let chunks = y.len() / hw1;
    let m = (chunks / c.max(1) * hw).max(1) as f64;
    let chan = |ch: usize| Chan {
        mean: mean[ch],
        invstd: invstd[ch],
        gamma: gamma[ch],
        beta: beta[ch],
    };
    let mut sums: Vec<(f64, f64)> = Vec::new();
    // SAFETY: the chunks cover all of d and backward_sums writes each element of its chunk.
    let mut d = unsafe {
        filled(y.len(), |d| {
            sums = d
                .par_chunks_mut(hw1)
                .zip(y.par_chunks(hw1).zip(g.par_chunks(hw1)))
                .short_runs()
                .enumerate()
                .map(|(i, (dc, (yc, gc)))| backward_sums(yc, gc, dc, chan(i % c), silu))
                .collect();
        })
    };
    let mut dbeta = vec![0.0f64; c];
    let mut dgamma = vec![0.0f64; c];
    for (i, (s1, s2)) in sums.iter().enumerate() {
        dbeta[i % c] += s1;
        dgamma[i % c] += s2;
    }
    d.par_chunks_mut(hw1)
        .zip(y.par_chunks(hw1))
        .short_runs()
        .enumerate()
        .for_each(|(i, (dc, yc))| {
            let ch = i % c;
            backward_input(
                yc,
                dc,
                chan(ch),
                (dbeta[ch] / m) as f32,
                (dgamma[ch] / m) as f32,
            );
        });
    let f = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect();
    (d, f(dgamma), f(dbeta))
}

#[derive(Debug)]
struct BnActBackward;

#[derive(Clone, Debug)]
struct BnActState {
    y: FlexTensor,
    mean: Vec<f32>,
    invstd: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
    act: Act,
}

impl Backward<Flex, 3> for BnActBackward {
    type State = BnActState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_gamma, node_beta] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let st = ops.state;
        let shape = st.y.layout().shape().to_vec();
        let c = shape[1];
        let hw: usize = shape[2..].iter().product();
        let g = contiguous(&g).expect("f32 gradient");
        let (dx, dgamma, dbeta) = backward_host(
            values(&st.y),
            values(&g),
            c,
            hw,
            &st.mean,
            &st.invstd,
            &st.gamma,
            &st.beta,
            st.act,
        );
        if let Some(node) = node_x {
            hand_to!(grads, node, tensor(dx, shape));
        }
        if let Some(node) = node_gamma {
            grads.register::<Flex>(node.id, tensor(dgamma, vec![c]));
        }
        if let Some(node) = node_beta {
            grads.register::<Flex>(node.id, tensor(dbeta, vec![c]));
        }
    }
}

fn host_vec(t: &FlexTensor) -> Option<Vec<f32>> {
    contiguous(t).map(|c| values(&c).to_vec())
}

/// Training-mode BatchNorm + `act` on an autodiff flex tensor `[N, C, …]`. Returns the output and
/// the batch mean and biased variance, or `None` when the tensors are not f32 `Autodiff<Flex>`
/// (the caller then takes the composed path).
pub fn train(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    eps: f64,
    act: Act,
) -> Option<(Tensor<4>, Vec<f32>, Vec<f32>)> {
    let xp = x.clone().try_into_primitive::<Ad>().ok()?;
    let gp = gamma.clone().try_into_primitive::<Ad>().ok()?;
    let bp = beta.clone().try_into_primitive::<Ad>().ok()?;
    let yt = xp.primitive().clone();
    let shape = yt.layout().shape().to_vec();
    let c = shape[1];
    let hw: usize = shape[2..].iter().product();
    let gv = host_vec(gp.primitive())?;
    let bv = host_vec(bp.primitive())?;
    let y_kept = contiguous(&yt)?;
    let (out, mean, var) = forward_host(values(&y_kept), c, hw, &gv, &bv, eps, act);
    let invstd: Vec<f32> = var
        .iter()
        .map(|&v| (1.0 / (v as f64 + eps).sqrt()) as f32)
        .collect();
    let out = tensor(out, shape);
    let result = record(
        BnActBackward,
        [xp.node(), gp.node(), bp.node()],
        || BnActState {
            y: y_kept,
            mean: mean.clone(),
            invstd,
            gamma: gv,
            beta: bv,
            act,
        },
        out,
    );
    Some((Tensor::from_primitive::<Ad>(result), mean, var))
}

/// Inference-mode BatchNorm + `act` on a plain flex tensor, or `None` when it is not one.
pub fn inference(
    x: &Tensor<4>,
    gamma: &Tensor<1>,
    beta: &Tensor<1>,
    mean: &Tensor<1>,
    var: &Tensor<1>,
    eps: f64,
    act: Act,
) -> Option<Tensor<4>> {
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    let vec1 = |t: &Tensor<1>| -> Option<Vec<f32>> {
        let p = t.clone().try_into_primitive::<Flex>().ok()?;
        host_vec(&p)
    };
    let (gv, bv, mv, vv) = (vec1(gamma)?, vec1(beta)?, vec1(mean)?, vec1(var)?);
    let shape = xp.layout().shape().to_vec();
    let c = shape[1];
    let hw: usize = shape[2..].iter().product();
    let y = contiguous(&xp)?;
    let out = inference_host(values(&y), c, hw, &gv, &bv, &mv, &vv, eps, act);
    Some(Tensor::from_primitive::<Flex>(tensor(out, shape)))
}

/// `act(bn(x))` for a burn [`BatchNorm`], fused when the tensors live on flex (training: batch
/// statistics, running statistics updated as burn does; inference: running statistics), composed
/// from burn's operations otherwise.
pub fn batch_norm_act(bn: &BatchNorm, x: Tensor<4>, act: Act) -> Tensor<4> {
    let training = x.device().is_autodiff() && bn.training.is_enabled();
    let numel = x.shape().num_elements();
    let fused = if training {
        train(&x, &bn.gamma.val(), &bn.beta.val(), bn.epsilon, act).map(|(out, mean, var)| {
            let device = bn.running_mean.value_sync().device();
            let c = mean.len();
            let m = bn.momentum;
            let update = |state: &burn::module::RunningState<Tensor<1>>, batch: Vec<f32>| {
                // off autodiff: the statistics are no part of the graph (on the autodiff device
                // each of burn's operations below registered a node, on the one thread)
                let running = state.value_sync().to_device(&device).inner();
                let plain = running.device();
                // burn's running·(1 − m) + batch·m, both products rounded to f32, in one loop
                // over the values read in place (four burn operations and their buffers before)
                let (keep, take) = ((1.0 - m) as f32, m as f32);
                let blended = with_values(&running, |r| {
                    let v = r.iter().zip(&batch).map(|(r, b)| r * keep + b * take);
                    (r.len() == c).then(|| v.collect::<Vec<f32>>())
                });
                let new = match blended.flatten() {
                    Some(v) => Tensor::<1>::from_data(TensorData::new(v, [c]), &plain),
                    None => {
                        let batch = Tensor::<1>::from_data(TensorData::new(batch, [c]), &plain);
                        running.mul_scalar(1.0 - m).add(batch.mul_scalar(m))
                    }
                };
                // kept off autodiff too: burn settles an update with a division by the number
                // of threads that updated (1), which on an autodiff tensor registers a node
                state.update(new);
                // burn keeps an update aside until the next one; settle it now so that
                // visitors (checkpoints, EMA, `valid()`) see this step's statistics.
                let _ = state.value_sync();
            };
            // PyTorch (and so Ultralytics) keeps the unbiased variance, M/(M−1)·σ², where burn's
            // own BatchNorm keeps the biased one; at 20×20 maps and batch 2 that is 0.1%.
            let count = (numel / c.max(1)) as f64;
            let unbias = if count > 1.0 {
                count / (count - 1.0)
            } else {
                1.0
            };
            update(&bn.running_mean, mean);
            update(
                &bn.running_var,
                var.iter().map(|&v| (v as f64 * unbias) as f32).collect(),
            );
            out
        })
    } else {
        inference(
            &x,
            &bn.gamma.val(),
            &bn.beta.val(),
            &bn.running_mean.value(),
            &bn.running_var.value(),
            bn.epsilon,
            act,
        )
    };
    match fused {
        Some(out) => out,
        None => {
            let y = bn.forward(x);
            if training {
                // as the fused path does: burn keeps its update aside until the next one; settled
                // now, visitors (the detection optimizer's EMA) see this step's statistics
                let _ = (bn.running_mean.value_sync(), bn.running_var.value_sync());
            }
            match act {
                Act::Identity => y,
                Act::Silu => burn::tensor::activation::silu(y),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::tensor::Distribution;

    /// Fused forward and all three gradients against burn's composed BatchNorm (+ SiLU), with a
    /// loss that weights every output differently.
    fn check(act: Act, shape: [usize; 4]) {
        let dev = crate::device();
        let c = shape[1];
        let x0 = Tensor::<4>::random(shape, Distribution::Normal(0.7, 2.0), &dev);
        let w = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), &dev);
        let g0 = Tensor::<1>::random([c], Distribution::Uniform(0.5, 1.5), &dev);
        let b0 = Tensor::<1>::random([c], Distribution::Normal(0.0, 0.5), &dev);
        let run = |fused: bool| {
            let x = x0.clone().detach().require_grad();
            let g = g0.clone().detach().require_grad();
            let b = b0.clone().detach().require_grad();
            let out = if fused {
                train(&x, &g, &b, 1e-3, act).expect("flex autodiff").0
            } else {
                let y =
                    burn::tensor::module::batch_norm_train(x.clone(), g.clone(), b.clone(), 1e-3)
                        .output;
                match act {
                    Act::Silu => burn::tensor::activation::silu(y),
                    Act::Identity => y,
                }
            };
            let grads = (out.clone() * w.clone()).sum().backward();
            let dx = x.grad(&grads).unwrap();
            let dg = values(g.grad(&grads).unwrap());
            let db = values(b.grad(&grads).unwrap());
            (values(out), values(dx), dg, db)
        };
        let (o1, dx1, dg1, db1) = run(true);
        let (o2, dx2, dg2, db2) = run(false);
        assert!(max_rel(&o1, &o2) < 1e-5, "output {}", max_rel(&o1, &o2));
        assert!(max_rel(&dx1, &dx2) < 1e-4, "dx {}", max_rel(&dx1, &dx2));
        assert!(max_rel(&dg1, &dg2) < 1e-4, "dgamma {}", max_rel(&dg1, &dg2));
        assert!(max_rel(&db1, &db2) < 1e-4, "dbeta {}", max_rel(&db1, &db2));
    }

    #[test]
    fn fused_silu_matches_burn_composed() {
        check(Act::Silu, [3, 4, 9, 11]);
        check(Act::Silu, [2, 5, 40, 33]); // chunks longer than a lane block
    }

    #[test]
    fn fused_identity_matches_burn_composed() {
        check(Act::Identity, [2, 3, 7, 5]);
        check(Act::Identity, [4, 2, 1, 1]);
    }

    #[test]
    fn statistics_are_biased_mean_and_variance() {
        // Channel 0: 1..=4 over two images; channel 1: constant.
        let y = [1.0, 2.0, 5.0, 5.0, 3.0, 4.0, 5.0, 5.0];
        let (_, mean, var) = forward_host(&y, 2, 2, &[1.0, 1.0], &[0.0, 0.0], 1e-3, Act::Identity);
        assert_eq!(mean, vec![2.5, 5.0]);
        assert_eq!(var, vec![1.25, 0.0]);
    }

    #[test]
    fn inference_uses_the_given_statistics() {
        let dev = burn::tensor::Device::flex();
        let x = Tensor::<4>::from_data(
            TensorData::new(vec![1.0f32, -2.0, 3.0, 0.5], [1, 2, 2, 1]),
            &dev,
        );
        let t = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [2]), &dev);
        let out = inference(
            &x,
            &t(vec![2.0, 1.0]),
            &t(vec![0.5, -1.0]),
            &t(vec![1.0, 0.0]),
            &t(vec![4.0, 1.0]),
            0.0,
            Act::Silu,
        )
        .unwrap();
        let got = out
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let silu = |z: f32| z / (1.0 + (-z).exp());
        let want = [
            silu(0.5),
            silu(2.0 * -3.0 / 2.0 + 0.5),
            silu(2.0),
            silu(-0.5),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{got:?} vs {want:?}");
        }
    }
}
