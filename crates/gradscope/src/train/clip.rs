//! Gradient clipping over the whole model.
//!
//! By norm (Pascanu et al. 2013): the *global* L2 norm over every parameter's gradient,
//! ĝ = g · min(1, c/‖g‖) — one factor for all, so the step keeps its direction.
//! By value: every element clamped to [−v, v].

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::optim::Clip;
use crate::probe::params::{norm_sq, norm_sq_in_place};

/// The parameters' gradients, flattened, in the model's order.
struct Gather<'a> {
    grads: &'a GradientsParams,
    out: Vec<(ParamId, Tensor<1>)>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let n = g.dims().iter().product::<usize>();
            self.out.push((param.id, g.reshape([n])));
        }
    }
}

/// Replaces each parameter's gradient by its entry in `new` (flattened), in its own shape.
struct Put<'a> {
    grads: &'a mut GradientsParams,
    new: std::collections::HashMap<ParamId, Tensor<1>>,
}

impl ModuleVisitor for Put<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let (Some(g), Some(new)) = (self.grads.remove::<D>(param.id), self.new.remove(&param.id))
        {
            self.grads.register::<D>(param.id, new.reshape(g.dims()));
        }
    }
}

/// Every gradient through `f`, the gradients side by side on the pool.
fn map<M: Module>(
    model: &M,
    grads: &mut GradientsParams,
    f: impl Fn(Tensor<1>) -> Tensor<1> + Sync,
) {
    use rayon::prelude::*;
    let mut v = Gather {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    let new = v.out.into_par_iter().map(|(id, g)| (id, f(g))).collect();
    model.visit(&mut Put { grads, new });
}

/// ‖g‖ over all parameters of `model` (NaN/∞ when a gradient is).
pub fn global_norm<M: Module>(model: &M, grads: &GradientsParams) -> f64 {
    sum_sq(model, grads, true).sqrt()
}

/// Σ‖g‖² over the parameters (see [`sum_sq_of`]).
fn sum_sq<M: Module>(model: &M, grads: &GradientsParams, in_place: bool) -> f64 {
    let mut v = Gather {
        grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    let flat: Vec<&Tensor<1>> = v.out.iter().map(|(_, g)| g).collect();
    sum_sq_of(&flat, in_place)
}

/// Σ‖g‖² of flattened gradients given in the model's order: on the CPU each gradient read in
/// place, the gradients side by side on the pool and their sums added in the given order; on a
/// device the squares summed there and read back once (one round trip per step instead of one
/// per parameter).
pub(crate) fn sum_sq_of(grads: &[&Tensor<1>], in_place: bool) -> f64 {
    use rayon::prelude::*;
    let read: Vec<Option<f64>> = if in_place {
        grads.par_iter().map(|g| norm_sq_in_place(*g)).collect()
    } else {
        vec![None; grads.len()]
    };
    let mut host = 0.0;
    let mut on_device = Vec::new();
    for (g, sq) in grads.iter().zip(read) {
        match sq {
            Some(sq) => host += sq,
            None => on_device.push((*g).clone()),
        }
    }
    if on_device.is_empty() {
        return host;
    }
    let squares = on_device.iter().map(|g| g.clone().powf_scalar(2.0).sum());
    let sq = Tensor::cat(squares.collect(), 0).sum().into_scalar::<f64>();
    host + if sq.is_finite() {
        sq
    } else {
        // f32 squares overflowed (or a gradient is not finite): gradient by gradient, rescaled
        // where needed
        on_device.into_iter().map(norm_sq).sum()
    }
}

/// Scales every gradient by min(1, c/‖g‖). Returns ‖g‖ before clipping.
pub fn clip_norm<M: Module>(model: &M, grads: &mut GradientsParams, c: f64) -> f64 {
    let norm = global_norm(model, grads);
    let s = on_update(Some(norm), c, None).scale;
    if s != 1.0 {
        map(model, grads, |g| g.mul_scalar(s));
    }
    norm
}

/// The clipping an optimizer applies inside its update pass ([`Clip`]): the gradient scaled by
/// c/‖g‖ when its norm `norm` (read before the update) exceeds `c` (NaN: no clipping by norm),
/// then clamped to [−v, v] with `value` — what [`clip_norm`] and [`clip_value`] write as passes
/// of their own.
pub fn on_update(norm: Option<f64>, c: f64, value: Option<f64>) -> Clip {
    Clip {
        scale: match norm {
            Some(n) if n.is_finite() && n > c => (c / n) as f32,
            _ => 1.0,
        },
        limit: value.map_or(f32::INFINITY, |v| v as f32),
    }
}

/// Clamps every gradient element to [−v, v].
pub fn clip_value<M: Module>(model: &M, grads: &mut GradientsParams, v: f64) {
    map(model, grads, |g| g.clamp(-v, v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::Distribution;

    #[derive(Module, Debug)]
    struct Net {
        a: Linear,
        b: Linear,
    }

    fn grads(scale: f32) -> (Net, GradientsParams) {
        let device = crate::device();
        let net = Net {
            a: LinearConfig::new(8, 16).init(&device),
            b: LinearConfig::new(16, 3).init(&device),
        };
        let x = Tensor::<2>::random([5, 8], Distribution::Normal(0.0, 1.0), &device);
        let y = net.b.forward(net.a.forward(x));
        let loss = y.sum().mul_scalar(scale);
        let g = GradientsParams::from_grads(loss.backward(), &net);
        (net, g)
    }

    /// The norm a GPU run computes (squares summed on the device, read once) is the norm read
    /// in place, also where f32 squares overflow (|g| ~ 1e20, an exploding step).
    #[test]
    fn the_device_sum_is_the_in_place_sum() {
        for scale in [1.0f32, 1e20] {
            let (net, g) = grads(scale);
            let (here, there) = (sum_sq(&net, &g, true), sum_sq(&net, &g, false));
            assert!(here.is_finite() && here > 0.0, "{here}");
            assert!(
                (here - there).abs() <= 1e-5 * here,
                "{here} vs {there} at {scale}"
            );
        }
    }
}
