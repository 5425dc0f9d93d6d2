//! Probe points inside a model's forward pass.
//!
//! A model calls [`Tap::point`] on each layer's output. When the tap records, the call measures
//! the activation and routes it through an identity whose backward keeps the gradient
//! (`kernels::tap`, on flex) or adds a zero-valued leaf tensor to it (`h + 0`, same value, on
//! other backends): after `backward`, that gradient *is* ∂L/∂h. When the tap is off, `point` returns `h`
//! untouched: no leaf, no copy, no autodiff node.
//!
//! A tap can also carry a [`Fault`]: a NaN in one layer's output, or a gradient that turns
//! non-finite inside one layer's backward pass. Faults exist to test that the probe names the
//! right layer, and that recovery works.

use burn::tensor::{Gradients, Tensor};

use super::record::{ActStats, GradStats};
use super::stats::{
    activation_stats, activation_stats_with, grad_stats, grad_stats_of, saturated_bounds,
    sum_and_sq, Presummed,
};
use crate::activation::Activation;
use crate::kernels::act::apply_measured;
use crate::kernels::moments::fold;
use crate::kernels::tap::{tap, with_values, GradSlot};

/// A deliberate numerical fault at one probe point.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// The layer's output becomes NaN in the forward pass.
    ForwardNan { layer: String },
    /// The layer's forward output is unchanged, but the gradient flowing back through it
    /// becomes non-finite: `h + √(0·h)` has value `h` and derivative `1 + 0·∞`.
    BackwardInf { layer: String },
    /// Adds `delta` to element `index` (row-major) of the layer's output: a finite-difference
    /// check of ∂L/∂h perturbs the activation exactly where the probe measures it.
    Nudge {
        layer: String,
        index: usize,
        delta: f32,
    },
}

/// Reads ∂L/∂h's statistics after `backward` (`None`: the output did not reach the loss), and
/// a copy of ∂L/∂h itself when the tap keeps values.
type LeafGrad = Box<dyn Fn(&Gradients) -> Option<(GradStats, Option<Vec<f32>>)>>;

/// ∂L/∂h's statistics from what its slot caught (no values kept).
fn moments_of(slot: &GradSlot) -> Option<(GradStats, Option<Vec<f32>>)> {
    slot.moments().map(|(m, n)| (grad_stats_of(m, n), None))
}

/// A probe point's values, whole: what a [`Tap::keeping`] tap keeps for distributions and
/// percentiles (the statistics of a [`Tapped`] summarise them).
#[derive(Clone, Debug, Default)]
pub struct Kept {
    /// The layer's output h, row-major.
    pub act: Vec<f32>,
    /// Its pre-activation (the input of the activation function), where it has one.
    pub pre: Option<Vec<f32>>,
    /// ∂L/∂h after `backward` (empty when the output did not reach the loss, or before backward).
    pub grad: Vec<f32>,
    /// The output's shape.
    pub shape: Vec<usize>,
}

struct Point {
    name: String,
    block: String,
    act_fn: Option<Activation>,
    act: ActStats,
    active: Option<Vec<bool>>,
    leaf: LeafGrad,
    kept: Option<Kept>,
}

/// What one probe point measured in one step.
pub struct Tapped {
    pub name: String,
    pub block: String,
    pub act_fn: Option<Activation>,
    pub act: ActStats,
    /// Units active in this batch (ReLU family), for the dead-unit window.
    pub active: Option<Vec<bool>>,
    pub grad_h: GradStats,
    /// The values themselves, from a [`Tap::keeping`] tap.
    pub kept: Option<Kept>,
}

/// Per-forward-pass recorder handed to a model.
pub struct Tap {
    record: bool,
    keep: bool,
    /// Attach a gradient leaf at every point (not in an evaluation-mode forward).
    leaves: bool,
    fault: Option<Fault>,
    input_nonfinite: bool,
    points: Vec<Point>,
}

impl Tap {
    /// A tap that measures every point.
    pub fn on() -> Self {
        Tap {
            record: true,
            keep: false,
            leaves: true,
            fault: None,
            input_nonfinite: false,
            points: Vec::new(),
        }
    }

    /// A tap that does nothing (no leaves, no copies).
    pub fn off() -> Self {
        Tap {
            record: false,
            keep: false,
            leaves: false,
            fault: None,
            input_nonfinite: false,
            points: Vec::new(),
        }
    }

    /// A tap that measures every point and also keeps its values whole (activation,
    /// pre-activation, and ∂L/∂h after backward): for the distributions a lab draws, not for
    /// training steps (it copies every activation).
    pub fn keeping() -> Self {
        Tap {
            keep: true,
            ..Tap::on()
        }
    }

    /// A tap for a forward pass without backward (a model in evaluation mode): keeps every
    /// point's values whole, attaches no gradient leaf. Read them with [`Tap::kept`].
    pub fn values() -> Self {
        Tap {
            leaves: false,
            ..Tap::keeping()
        }
    }

    pub fn with_fault(mut self, fault: Option<Fault>) -> Self {
        self.fault = fault;
        self
    }

    pub fn is_recording(&self) -> bool {
        self.record
    }

    /// Notes whether the model's input is finite (so a non-finite input is not blamed on layer 0).
    pub fn input<const D: usize>(&mut self, x: &Tensor<D>) {
        if self.record {
            // read in place where possible; Σx and Σx² finite means every value is (else look
            // value by value: a square beyond f32's range is not a non-finite input)
            let nonfinite = |v: &[f32]| {
                let (s, q) = sum_and_sq(v);
                !(s.is_finite() && q.is_finite()) && v.iter().any(|x| !x.is_finite())
            };
            self.input_nonfinite = match with_values(x, nonfinite) {
                Some(bad) => bad,
                None => {
                    let d = x.to_data();
                    d.as_slice::<f32>().is_ok_and(nonfinite)
                }
            };
        }
    }

    pub fn input_nonfinite(&self) -> bool {
        self.input_nonfinite
    }

    /// A probe point on layer `name`'s output `h` (with its pre-activation `pre` when the layer
    /// has one). Returns the tensor to continue the forward pass with.
    pub fn point<const D: usize>(
        &mut self,
        name: &str,
        block: &str,
        act_fn: Option<Activation>,
        pre: Option<&Tensor<D>>,
        h: Tensor<D>,
    ) -> Tensor<D> {
        let h = match &self.fault {
            Some(Fault::ForwardNan { layer }) if layer == name => {
                h.clone() + Tensor::full(h.dims(), f32::NAN, &h.device())
            }
            Some(Fault::BackwardInf { layer }) if layer == name => {
                h.clone() + h.mul_scalar(0.0).sqrt()
            }
            Some(Fault::Nudge {
                layer,
                index,
                delta,
            }) if layer == name => {
                let dims = h.dims();
                let mut d = vec![0f32; dims.iter().product()];
                if let Some(x) = d.get_mut(*index) {
                    *x = *delta;
                }
                let nudge = Tensor::from_data(burn::tensor::TensorData::new(d, dims), &h.device());
                h + nudge
            }
            _ => h,
        };
        if !self.record {
            return h;
        }
        let shape = h.dims().to_vec();
        // Statistics straight from flex's buffers where possible (no copy), else via the host.
        let pre_stats = |values: &[f32]| match pre {
            None => activation_stats(values, &shape, act_fn, None),
            Some(z) => {
                match with_values(z, |pv| activation_stats(values, &shape, act_fn, Some(pv))) {
                    Some(r) => r,
                    None => {
                        let d = z.to_data();
                        activation_stats(values, &shape, act_fn, d.as_slice::<f32>().ok())
                    }
                }
            }
        };
        let (act, active) = match with_values(&h, pre_stats) {
            Some(r) => r,
            None => {
                let d = h.to_data();
                pre_stats(d.as_slice::<f32>().unwrap_or(&[]))
            }
        };
        let kept = self.keep.then(|| Kept {
            act: h.to_data().try_to_vec::<f32>().unwrap_or_default(),
            pre: pre.and_then(|z| z.to_data().try_to_vec::<f32>().ok()),
            grad: Vec::new(),
            shape: shape.clone(),
        });
        let (h, leaf) = self.gradient_leaf(h);
        self.points.push(Point {
            name: name.to_string(),
            block: block.to_string(),
            act_fn,
            act,
            active,
            leaf,
            kept,
        });
        h
    }

    /// A probe point on an activation's output: applies `act` to its pre-activation `z` and
    /// measures both, in the activation's own pass where it has a fused kernel (σ, tanh and SiLU
    /// on flex: the same numbers as [`point`](Self::point), without reading the tensors again),
    /// else as `point(name, block, Some(act), Some(&z), act.forward(z))`. Returns the tensor to
    /// continue the forward pass with.
    pub fn activate<const D: usize>(
        &mut self,
        name: &str,
        block: &str,
        act: Activation,
        z: Tensor<D>,
    ) -> Tensor<D> {
        let fused = self.record && self.leaves && !self.keep && self.fault.is_none();
        if let Some(kind) = act.fused_kind().filter(|_| fused) {
            if let Some((h, seen, slot)) = apply_measured(&z, kind, saturated_bounds(act)) {
                let known = Presummed {
                    h: fold(&seen.output),
                    pre: fold(&seen.input),
                    saturated: seen.outside,
                };
                let shape = h.dims().to_vec();
                let stats = with_values(&h, |hv| {
                    with_values(&z, |zv| {
                        activation_stats_with(hv, &shape, Some(act), Some(zv), Some(&known))
                    })
                });
                if let Some(Some((stats, active))) = stats {
                    let (h, leaf) = match slot {
                        // ∂L/∂h's moments come from the activation's own backward: no tap node
                        Some(slot) => {
                            let leaf: LeafGrad = Box::new(move |_: &Gradients| moments_of(&slot));
                            (h, leaf)
                        }
                        None => self.gradient_leaf(h),
                    };
                    self.points.push(Point {
                        name: name.to_string(),
                        block: block.to_string(),
                        act_fn: Some(act),
                        act: stats,
                        active,
                        leaf,
                        kept: None,
                    });
                    return h;
                }
            }
        }
        let h = act.forward(z.clone());
        let pre = self.record.then_some(&z);
        self.point(name, block, Some(act), pre, h)
    }

    /// `h` routed through the gradient tap (or returned as is when the tap attaches no leaves),
    /// and what reads ∂L/∂h after the backward.
    fn gradient_leaf<const D: usize>(&self, h: Tensor<D>) -> (Tensor<D>, LeafGrad) {
        let keep = self.keep;
        let read = move |g: &[f32]| (grad_stats(g), keep.then(|| g.to_vec()));
        // ∂L/∂h: an identity op that keeps its gradient on flex; elsewhere a zero-valued leaf
        // added to h, whose gradient is ∂L/∂h.
        if !self.leaves {
            (h, Box::new(|_: &Gradients| None))
        } else {
            match tap(&h, !keep) {
                Some((out, slot)) if keep => (out, Box::new(move |_: &Gradients| slot.with(read))),
                // the moments only, taken in the backward pass
                Some((out, slot)) => (out, Box::new(move |_: &Gradients| moments_of(&slot))),
                None => {
                    let leaf: Tensor<D> = Tensor::zeros(h.dims(), &h.device()).require_grad();
                    let probe = leaf.clone();
                    (
                        h + leaf,
                        Box::new(move |grads: &Gradients| {
                            probe
                                .grad(grads)
                                .and_then(|g| g.into_data().try_into_vec::<f32>().ok())
                                .map(|g| read(&g))
                        }),
                    )
                }
            }
        }
    }

    /// Whether this tap injects a fault (fused operations then step aside, so that the fault
    /// lands where it is aimed).
    pub fn has_fault(&self) -> bool {
        self.fault.is_some()
    }

    /// A probe point inside a fused operation: the values it computed and the slot its
    /// backward fills with ∂L/∂h (see `kernels::lstm::sequence`).
    pub fn external(
        &mut self,
        name: &str,
        block: &str,
        values: &[f32],
        shape: &[usize],
        grad: GradSlot,
    ) {
        if !self.record {
            return;
        }
        self.external_measured(
            name,
            block,
            activation_stats(values, shape, None, None),
            grad,
        );
    }

    /// [`external`](Self::external) with the values already measured by
    /// [`activation_stats`] (no activation function):
    /// for an operation that measures many tensors side by side.
    pub fn external_measured(
        &mut self,
        name: &str,
        block: &str,
        (act, active): (ActStats, Option<Vec<bool>>),
        grad: GradSlot,
    ) {
        if !self.record {
            return;
        }
        self.points.push(Point {
            name: name.to_string(),
            block: block.to_string(),
            act_fn: None,
            act,
            active,
            leaf: Box::new(move |_: &Gradients| moments_of(&grad)),
            kept: None,
        });
    }

    /// Without a backward pass (an evaluation-mode forward): what a [`Tap::keeping`] tap kept at
    /// every probe point, in forward order, with no gradients.
    pub fn kept(self) -> Vec<(String, Kept)> {
        self.points
            .into_iter()
            .filter_map(|p| Some((p.name, p.kept?)))
            .collect()
    }

    /// After `backward`: the gradient at every probe point, in forward order.
    pub fn finish(self, grads: &Gradients) -> Vec<Tapped> {
        self.points
            .into_iter()
            .map(|p| {
                // `None`: the output did not reach the loss, its gradient is exactly zero.
                let (grad_h, grad) = (p.leaf)(grads).unwrap_or_default();
                let kept = p.kept.map(|k| Kept {
                    grad: grad.unwrap_or_default(),
                    ..k
                });
                Tapped {
                    name: p.name,
                    block: p.block,
                    act_fn: p.act_fn,
                    act: p.act,
                    active: p.active,
                    grad_h,
                    kept,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::Distribution;

    /// A fused activation's point (σ, tanh, SiLU measured in their own passes, ∂L/∂h from the
    /// activation's backward) reads what a point on the composed activation reads, bit for bit.
    #[test]
    fn an_activation_point_reads_what_a_plain_point_does() {
        let dev = crate::device();
        let z0 = Tensor::<2>::random([300, 130], Distribution::Normal(0.0, 2.0), &dev);
        let w = Tensor::<2>::random([300, 130], Distribution::Normal(0.0, 1.0), &dev);
        for act in [Activation::Sigmoid, Activation::Tanh, Activation::Silu] {
            let read = |fused: bool| {
                let z = z0.clone().detach().require_grad();
                let mut tap = Tap::on();
                let h = if fused {
                    tap.activate("l", "b", act, z)
                } else {
                    tap.point("l", "b", Some(act), Some(&z), act.forward(z.clone()))
                };
                let grads = (h * w.clone()).sum().backward();
                tap.finish(&grads).remove(0)
            };
            let (a, b) = (read(true), read(false));
            let bits = |t: &Tapped| {
                let (x, g) = (&t.act, &t.grad_h);
                [
                    x.mean,
                    x.std,
                    x.pre_mean.unwrap_or(0.0),
                    x.pre_var.unwrap_or(0.0),
                ]
                .into_iter()
                .chain([g.norm, g.rms])
                .map(f64::to_bits)
                .collect::<Vec<_>>()
            };
            assert_eq!(bits(&a), bits(&b), "{act:?}");
            assert!(a.grad_h.norm > 0.0, "{act:?}: a gradient reached the point");
        }
    }
}
