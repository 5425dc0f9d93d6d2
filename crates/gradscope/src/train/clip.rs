//! Gradient clipping over the whole model.
//!
//! By norm (Pascanu et al. 2013): the *global* L2 norm over every parameter's gradient,
//! ĝ = g · min(1, c/‖g‖) — one factor for all, so the step keeps its direction.
//! By value: every element clamped to [−v, v].

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use super::optim::Clip;
use crate::probe::params::{norm_sq, norm_sq_in_place};

/// Σ‖g‖² over the parameters: on the CPU each gradient read in place; on a device the squares
/// summed there and read back once (one round trip per step instead of one per parameter).
struct SumSq<'a> {
    grads: &'a GradientsParams,
    /// Read host gradients in place (false: treat every gradient as on a device).
    in_place: bool,
    sq: f64,
    /// The gradients that are not on the host, flattened, still on their device.
    on_device: Vec<Tensor<1>>,
}

impl ModuleVisitor for SumSq<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let Some(g) = self.grads.get::<D>(param.id) else {
            return;
        };
        match self.in_place.then(|| norm_sq_in_place(&g)).flatten() {
            Some(sq) => self.sq += sq,
            None => {
                let n = g.dims().iter().product::<usize>();
                self.on_device.push(g.reshape([n]));
            }
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
    sum_sq(model, grads, true).sqrt()
}

fn sum_sq<M: Module>(model: &M, grads: &GradientsParams, in_place: bool) -> f64 {
    let mut v = SumSq {
        grads,
        in_place,
        sq: 0.0,
        on_device: Vec::new(),
    };
    model.visit(&mut v);
    if v.on_device.is_empty() {
        return v.sq;
    }
    let squares = v.on_device.iter().map(|g| g.clone().powf_scalar(2.0).sum());
    let sq = Tensor::cat(squares.collect(), 0).sum().into_scalar::<f64>();
    v.sq + if sq.is_finite() {
        sq
    } else {
        // f32 squares overflowed (or a gradient is not finite): gradient by gradient, rescaled
        // where needed
        v.on_device.into_iter().map(norm_sq).sum()
    }
}

/// Scales every gradient by min(1, c/‖g‖). Returns ‖g‖ before clipping.
pub fn clip_norm<M: Module>(model: &M, grads: &mut GradientsParams, c: f64) -> f64 {
    let norm = global_norm(model, grads);
    let s = on_update(Some(norm), c, None).scale;
    if s != 1.0 {
        model.visit(&mut Map {
            grads,
            f: |g: Tensor<1>| g.mul_scalar(s),
        });
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
    model.visit(&mut Map {
        grads,
        f: |g: Tensor<1>| g.clamp(-v, v),
    });
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
