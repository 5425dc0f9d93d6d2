//! Gradient clipping over the whole model.
//!
//! By norm (Pascanu et al. 2013): the *global* L2 norm over every parameter's gradient,
//! ĝ = g · min(1, c/‖g‖) — one factor for all, so the step keeps its direction.
//! By value: every element clamped to [−v, v].

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

struct SumSq<'a> {
    grads: &'a GradientsParams,
    sq: f64,
}

impl ModuleVisitor for SumSq<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sq += crate::probe::params::norm_sq(g);
        }
    }
}

struct Map<'a, F: Fn(Tensor<1>) -> Tensor<1>> {
    grads: &'a mut GradientsParams,
    f: F,
}

impl<F: Fn(Tensor<1>) -> Tensor<1>> ModuleVisitor for Map<'_, F> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let shape = g.dims();
            let flat: Tensor<1> = g.reshape([shape.iter().product::<usize>()]);
            self.grads
                .register::<D>(param.id, (self.f)(flat).reshape(shape));
        }
    }
}

/// ‖g‖ over all parameters of `model` (NaN/∞ when a gradient is).
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    let mut v = SumSq { grads, sq: 0.0 };
    model.visit(&mut v);
    v.sq.sqrt()
}

/// Scales every gradient by min(1, c/‖g‖). Returns ‖g‖ before clipping.
pub fn clip_norm<M: Module>(model: &M, grads: &mut GradientsParams, c: f64) -> f64 {
    let norm = global_norm(model, grads);
    if norm.is_finite() && norm > c {
        let s = c / norm;
        model.visit(&mut Map {
            grads,
            f: |g: Tensor<1>| g.mul_scalar(s),
        });
    }
    norm
}

/// Clamps every gradient element to [−v, v].
pub fn clip_value<M: Module>(model: &M, grads: &mut GradientsParams, v: f64) {
    model.visit(&mut Map {
        grads,
        f: |g: Tensor<1>| g.clamp(-v, v),
    });
}
