//! The labs' optimizers: SGD, SGD with momentum, Adam and AdamW.
//!
//! Each is burn 0.22.1's optimizer of that name with the settings below (PyTorch's `SGD`,
//! `SGD(momentum=0.9)`, `Adam(eps=1e-8)` and `AdamW(eps=1e-8, weight_decay=0.01)`; checked against
//! PyTorch in `tests/lab_optim.rs`), written here as one pass per parameter
//! ([`crate::kernels::update`]) instead of burn's chain of tensor operations: the pass reads each
//! weight, gradient and moment once, and on a probed step also measures what the probe reads of
//! the weights (‖W‖ and the update ‖ΔW‖), which cost a probed step of a small model three more
//! passes over every parameter. The new weights are the bits burn's optimizers give (tested);
//! tensors on other backends take the same arithmetic as burn tensor operations.

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::choice::choice;
pub use crate::kernels::update::Clip;
use crate::kernels::update::{update, Rule, Updated};
use crate::probe::params::norm_sq;
pub use crate::probe::params::Measured;

choice! {
    /// The optimizer.
    pub enum OptimizerKind ("optimizer") {
        /// Plain SGD.
        Sgd = "sgd",
        /// SGD with classical momentum 0.9 (no dampening), as PyTorch's `SGD(momentum=0.9)`.
        Momentum = "momentum",
        /// Adam (β 0.9/0.999, ε 1e-8).
        Adam = "adam",
        /// AdamW with decoupled weight decay 0.01.
        Adamw = "adamw",
    }
}

/// Momentum of [`OptimizerKind::Momentum`].
const MOMENTUM: f32 = 0.9;
/// Adam's and AdamW's β₁, β₂ and ε.
const BETA1: f32 = 0.9;
const BETA2: f32 = 0.999;
const EPSILON: f32 = 1e-8;
/// AdamW's decoupled weight decay.
const WEIGHT_DECAY: f32 = 0.01;

impl OptimizerKind {
    /// A fresh optimizer (no moments yet).
    pub fn build(self) -> Optimizer {
        Optimizer {
            kind: self,
            states: HashMap::new(),
        }
    }

    /// The element rule of step `t` (1 for the first) at learning rate `lr`, with every
    /// coefficient rounded to f32 where burn rounds it.
    fn rule(self, lr: f64, t: i32) -> Rule {
        let lr32 = lr as f32;
        match self {
            OptimizerKind::Sgd => Rule::Sgd { lr: lr32 },
            OptimizerKind::Momentum => Rule::Momentum {
                lr: lr32,
                mu: MOMENTUM,
            },
            OptimizerKind::Adam => {
                let bc2 = (1.0 - BETA2.powi(t)).sqrt();
                Rule::Adam {
                    lr: lr32,
                    b1: BETA1,
                    f1: 1.0 - BETA1,
                    b2: BETA2,
                    f2: 1.0 - BETA2,
                    cf: bc2 / (1.0 - BETA1.powi(t)),
                    eps: EPSILON * bc2,
                }
            }
            OptimizerKind::Adamw => Rule::AdamW {
                lr: lr32,
                b1: BETA1,
                f1: 1.0 - BETA1,
                b2: BETA2,
                f2: 1.0 - BETA2,
                c1: 1.0 - BETA1.powi(t),
                c2: 1.0 - BETA2.powi(t),
                eps: EPSILON,
                keep: (1.0 - lr * WEIGHT_DECAY as f64) as f32,
            },
        }
    }
}

/// One parameter's moments after its last update, and how many updates it has had.
#[derive(Clone)]
struct Moments {
    tensors: Vec<Tensor<1>>,
    t: i32,
}

/// An optimizer with its state. Cheap to clone (the moments are reference-counted tensors, and an
/// update writes new ones), so a copy serves NaN recovery.
#[derive(Clone)]
pub struct Optimizer {
    kind: OptimizerKind,
    states: HashMap<ParamId, Moments>,
}

impl Optimizer {
    /// One update of every parameter that has a gradient in `grads`.
    pub fn step<M: Module>(&mut self, lr: f64, model: M, grads: GradientsParams) -> M {
        self.step_measured(lr, model, grads, Clip::NONE, false).0
    }

    /// [`step`](Self::step) with each gradient clipped on the way (`clip`), measuring each
    /// updated parameter's ‖g‖² and, when `weights`, its ‖W‖² and ‖ΔW‖², all in the same pass; in
    /// the order the model visits its parameters. When `weights`, every trainable parameter
    /// without a gradient is reported too (`g_sq` `None`, its ‖W‖² read), so that the list is
    /// the model's whole set of trainable parameters. With a non-finite gradient the returned model
    /// holds non-finite weights: the caller keeps the one it passed in to go back to.
    pub fn step_measured<M: Module>(
        &mut self,
        lr: f64,
        model: M,
        mut grads: GradientsParams,
        clip: Clip,
        weights: bool,
    ) -> (M, Vec<Measured>) {
        let mut s = Stepper {
            opt: self,
            grads: &mut grads,
            lr,
            clip,
            weights,
            path: Vec::new(),
            measured: Vec::new(),
        };
        let model = model.map(&mut s);
        let measured = s.measured;
        (model, measured)
    }
}

struct Stepper<'a> {
    opt: &'a mut Optimizer,
    grads: &'a mut GradientsParams,
    lr: f64,
    clip: Clip,
    weights: bool,
    path: Vec<String>,
    measured: Vec<Measured>,
}

impl ModuleMapper for Stepper<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let require = tensor.is_require_grad();
        let dims: [usize; D] = tensor.dims();
        let Some(grad) = self.grads.remove::<D>(id) else {
            if self.weights && require {
                // no gradient this step: reported unchanged, so that a probe's record holds
                // every trainable parameter without walking the model itself
                self.measured.push(Measured {
                    path: self.path.join("."),
                    shape: dims.to_vec(),
                    g_sq: None,
                    w_sq: norm_sq(tensor.clone().inner()),
                    delta_sq: f64::NAN,
                });
            }
            return Param::from_mapped_value(id, tensor, mapper);
        };
        let n: usize = dims.iter().product();
        let w: Tensor<1> = tensor.inner().reshape([n]);
        let g: Tensor<1> = grad.reshape([n]);
        let prev = self.opt.states.remove(&id);
        let t = prev.as_ref().map_or(0, |p| p.t) + 1;
        let rule = self.opt.kind.rule(self.lr, t);
        let moments = prev.as_ref().map(|p| p.tensors.as_slice());
        let (clip, weights) = (self.clip, self.weights);
        let up = apply(rule, clip, w, g, moments, weights);
        self.measured.push(Measured {
            path: self.path.join("."),
            shape: dims.to_vec(),
            g_sq: Some(up.g_sq),
            w_sq: up.w_sq,
            delta_sq: up.delta_sq,
        });
        if rule.moments() > 0 {
            let tensors = up.moments;
            self.opt.states.insert(id, Moments { tensors, t });
        }
        let mut out = Tensor::from_inner(up.w.reshape(dims));
        if require {
            out = out.require_grad();
        }
        Param::from_mapped_value(id, out, mapper)
    }
}

/// One parameter's update by `rule`: the one-pass kernel ([`crate::kernels::update`]) on flex,
/// burn's tensor operations elsewhere (the same operations, so the same bits).
pub fn apply(
    rule: Rule,
    clip: Clip,
    w: Tensor<1>,
    g: Tensor<1>,
    moments: Option<&[Tensor<1>]>,
    measure: bool,
) -> Updated {
    match update(rule, clip, &w, g, moments, measure) {
        Ok(up) => up,
        Err(g) => composed(rule, clip, w, *g, moments, measure),
    }
}

/// The update from burn's tensor operations, for tensors that are not on the flex backend: the
/// same operations as [`crate::kernels::update`]'s loop, one tensor pass each.
fn composed(
    rule: Rule,
    clip: Clip,
    w: Tensor<1>,
    g: Tensor<1>,
    moments: Option<&[Tensor<1>]>,
    measure: bool,
) -> Updated {
    let g_sq = norm_sq(g.clone());
    let g = clip.composed(g);
    // the moments of the previous step (zeros before the first)
    let before: Vec<Tensor<1>> = (0..rule.moments())
        .map(|i| {
            moments
                .and_then(|m| m.get(i).cloned())
                .unwrap_or_else(|| g.zeros_like())
        })
        .collect();
    let prev = |i: usize| before[i].clone();
    let (new, moments) = match rule {
        Rule::Sgd { lr } => (w.clone() - g.mul_scalar(lr), vec![]),
        Rule::Momentum { lr, mu } => {
            let v = g + prev(0).mul_scalar(mu);
            (w.clone() - v.clone().mul_scalar(lr), vec![v])
        }
        Rule::Adam {
            lr,
            b1,
            f1,
            b2,
            f2,
            cf,
            eps,
        } => {
            let m = prev(0).mul_scalar(b1) + g.clone().mul_scalar(f1);
            let v = prev(1).mul_scalar(b2) + (g.clone() * g).mul_scalar(f2);
            let step = m.clone().mul_scalar(cf) / v.clone().sqrt().add_scalar(eps);
            (w.clone() - step.mul_scalar(lr), vec![m, v])
        }
        Rule::AdamW {
            lr,
            b1,
            f1,
            b2,
            f2,
            c1,
            c2,
            eps,
            keep,
        } => {
            let m = prev(0).mul_scalar(b1) + g.clone().mul_scalar(f1);
            let v = prev(1).mul_scalar(b2) + (g.clone() * g).mul_scalar(f2);
            let step = m.clone().div_scalar(c1) / v.clone().div_scalar(c2).sqrt().add_scalar(eps);
            (w.clone().mul_scalar(keep) - step.mul_scalar(lr), vec![m, v])
        }
        Rule::Nesterov {
            lr,
            mu,
            decay,
            first,
        } => {
            let d = if decay > 0.0 {
                g + w.clone().mul_scalar(decay)
            } else {
                g
            };
            let b = if first {
                d.clone()
            } else {
                prev(0).mul_scalar(mu) + d.clone()
            };
            let new = w.clone() - (d + b.clone().mul_scalar(mu)).mul_scalar(lr);
            (new, vec![b])
        }
        Rule::TorchAdamW {
            b1,
            f1,
            b2,
            f2,
            c2,
            eps,
            keep,
            step,
        } => {
            let m = prev(0).mul_scalar(b1) + g.clone().mul_scalar(f1);
            let v = prev(1).mul_scalar(b2) + (g.clone() * g).mul_scalar(f2);
            let denom = v.clone().div_scalar(c2).sqrt().add_scalar(eps);
            let new = w.clone().mul_scalar(keep) - (m.clone() / denom).mul_scalar(step);
            (new, vec![m, v])
        }
    };
    let (w_sq, delta_sq) = if measure {
        (norm_sq(w.clone()), norm_sq(new.clone() - w))
    } else {
        (f64::NAN, f64::NAN)
    };
    Updated {
        w: new,
        moments,
        g_sq,
        w_sq,
        delta_sq,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::optim::momentum::MomentumConfig;
    use burn::optim::{AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig};
    use burn::tensor::Distribution;

    #[derive(Module, Debug)]
    struct Net {
        a: Linear,
        b: Linear,
    }

    /// burn's optimizer with the settings of `kind` (what the labs used before this module).
    fn burns(kind: OptimizerKind) -> ModuleOptimizer {
        match kind {
            OptimizerKind::Sgd => SgdConfig::new().init(),
            OptimizerKind::Momentum => SgdConfig::new()
                .with_momentum(Some(MomentumConfig {
                    momentum: 0.9,
                    dampening: 0.0,
                    nesterov: false,
                }))
                .init(),
            OptimizerKind::Adam => AdamConfig::new().with_epsilon(1e-8).init(),
            OptimizerKind::Adamw => AdamWConfig::new()
                .with_epsilon(1e-8)
                .with_weight_decay(0.01)
                .init(),
        }
    }

    fn bits<const D: usize>(t: Tensor<D>) -> Vec<u32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    /// Three steps of each optimizer give burn's optimizer's weights bit for bit (one of them
    /// clipped), on a layer big enough to be updated in parallel blocks and on small ones; the
    /// measured ‖W‖² and ‖ΔW‖² are those of the weights before and after.
    #[test]
    fn updates_are_burns_bit_for_bit_and_measure_the_step() {
        let device = crate::device();
        let net0 = Net {
            a: LinearConfig::new(300, 257).init(&device),
            b: LinearConfig::new(257, 3).init(&device),
        };
        for kind in OptimizerKind::ALL {
            let (mut ours, mut theirs) = (kind.build(), burns(*kind));
            let (mut a, mut b) = (net0.clone(), net0.clone());
            for step in 0..3 {
                let x = Tensor::<2>::random([5, 300], Distribution::Normal(0.0, 1.0), &device);
                let loss = |n: &Net| n.b.forward(n.a.forward(x.clone())).powf_scalar(2.0).sum();
                let ga = GradientsParams::from_grads(loss(&a).backward(), &a);
                let mut gb = GradientsParams::from_grads(loss(&b).backward(), &b);
                // the second step clipped by norm and by value: burn's passes on one side, the
                // scale and bound of the update on the other
                let clip = if step == 1 {
                    let s = 0.5f64;
                    let v = 0.05f64;
                    // what clipping by norm (to half the norm) then by value writes
                    let clipped = |g: Tensor<1>| g.mul_scalar(s).clamp(-v, v);
                    for p in [&b.a, &b.b] {
                        let w = gb.remove::<2>(p.weight.id).unwrap();
                        let d = w.dims();
                        gb.register::<2>(p.weight.id, clipped(w.reshape([d[0] * d[1]])).reshape(d));
                        let id = p.bias.as_ref().unwrap().id;
                        let bias = gb.remove::<1>(id).unwrap();
                        gb.register::<1>(id, clipped(bias));
                    }
                    Clip {
                        scale: s as f32,
                        limit: v as f32,
                    }
                } else {
                    Clip::NONE
                };
                let before = a.a.weight.val();
                let measured;
                (a, measured) = ours.step_measured(0.01 * (step + 1) as f64, a, ga, clip, true);
                b = theirs.step(0.01 * (step + 1) as f64, b, gb);
                assert_eq!(
                    bits(a.a.weight.val()),
                    bits(b.a.weight.val()),
                    "{kind:?} {step}"
                );
                let bias = |n: &Net| bits(n.b.bias.as_ref().unwrap().val());
                assert_eq!(bias(&a), bias(&b), "{kind:?} {step}");
                let m = &measured[0];
                assert_eq!(m.path, "a.weight");
                let w_sq = norm_sq(before.clone().inner());
                let d_sq = norm_sq((a.a.weight.val() - before).inner());
                assert!(
                    (m.w_sq - w_sq).abs() <= 1e-6 * w_sq,
                    "{kind:?}: {m:?} {w_sq}"
                );
                assert!(
                    (m.delta_sq - d_sq).abs() <= 1e-5 * d_sq,
                    "{kind:?}: {m:?} {d_sq}"
                );
                assert_eq!(measured.len(), 4);
            }
        }
    }

    /// The composed path (tensors elsewhere than flex) computes the same update.
    #[test]
    fn the_composed_update_is_the_pass() {
        let device = crate::device();
        let n = 40_000; // two parallel blocks
                        // plain tensors, as an update sees them (`inner()` of a parameter)
        let t =
            |s: f32| Tensor::<1>::random([n], Distribution::Normal(0.0, s as f64), &device).inner();
        let (w, g) = (t(1.0), t(0.1));
        let moments = [t(0.01), t(0.001).abs()];
        let detection = [
            Rule::Nesterov {
                lr: 0.05,
                mu: 0.9,
                decay: 5e-4,
                first: false,
            },
            Rule::Nesterov {
                lr: 0.05,
                mu: 0.9,
                decay: 0.0,
                first: true,
            },
            Rule::TorchAdamW {
                b1: 0.9,
                f1: (1.0 - 0.9f64) as f32,
                b2: 0.999,
                f2: (1.0 - 0.999f64) as f32,
                c2: (1.0 - 0.999f64.powi(3)) as f32,
                eps: 1e-8,
                keep: (1.0 - 0.05 * 5e-4f64) as f32,
                step: (0.05 / (1.0 - 0.9f64.powi(3))) as f32,
            },
        ];
        let rules = OptimizerKind::ALL
            .iter()
            .map(|kind| (format!("{kind:?}"), kind.rule(0.05, 3)))
            .chain(detection.map(|r| (format!("{r:?}"), r)));
        for (kind, rule) in rules {
            let k = rule.moments();
            let prev = Some(&moments[..k]);
            let clip = Clip {
                scale: 0.5,
                limit: 0.12,
            };
            // a handle of its own: the pass writes the new weights over the gradient it is
            // given when nothing else holds it; a shared one (`g` stays here) is left as it was
            let g_own = Tensor::<1>::from_data(g.to_data(), &g.device());
            let pass = update(rule, clip, &w, g_own, prev, true).ok().unwrap();
            let before = bits(g.clone());
            let shared = update(rule, clip, &w, g.clone(), prev, true).ok().unwrap();
            assert_eq!(
                bits(g.clone()),
                before,
                "{kind:?}: a shared gradient was written"
            );
            assert_eq!(bits(shared.w), bits(pass.w.clone()), "{kind:?}");
            let comp = composed(rule, clip, w.clone(), g.clone(), prev, true);
            assert!((pass.g_sq - comp.g_sq).abs() <= 1e-6 * comp.g_sq);
            assert_eq!(bits(pass.w), bits(comp.w), "{kind:?}");
            for (p, c) in pass.moments.into_iter().zip(comp.moments) {
                assert_eq!(bits(p), bits(c), "{kind:?}");
            }
            assert!((pass.w_sq - comp.w_sq).abs() <= 1e-6 * comp.w_sq);
            assert!((pass.delta_sq - comp.delta_sq).abs() <= 1e-5 * comp.delta_sq);
        }
    }
}
