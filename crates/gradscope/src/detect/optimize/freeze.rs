//! `freeze=N`, as Ultralytics' key: the first N layers (`model.0` … `model.N−1`) keep their
//! weights. Their gradients are dropped before accumulation, so the optimizer never sees them:
//! no update, no weight decay, and they do not count in the clipping norm (Ultralytics turns
//! `requires_grad` off, with the same effect). The gradient still flows *through* them to the
//! layers before (there are none for a prefix) and to the probe, which keeps measuring ∂L/∂h
//! there; their update ratio is 0 by design. BatchNorm running statistics keep following the
//! batches in training mode, frozen or not, as in Ultralytics.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::yolo::weights::ultralytics_name;

/// Whether the parameter named `name` (Ultralytics' name, `model.3.conv.weight`) is in the first
/// `layers` layers.
pub fn is_frozen(name: &str, layers: usize) -> bool {
    name.strip_prefix("model.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| i < layers)
}

struct Drop<'a> {
    path: Vec<String>,
    layers: usize,
    grads: &'a mut GradientsParams,
    dropped: usize,
}

impl ModuleVisitor for Drop<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if is_frozen(&ultralytics_name(&self.path), self.layers)
            && self.grads.remove::<D>(param.id).is_some()
        {
            self.dropped += 1;
        }
    }
}

/// Removes from `grads` the gradients of `model`'s parameters in its first `layers` layers;
/// returns how many were removed.
pub fn freeze<M: Module>(model: &M, layers: usize, grads: &mut GradientsParams) -> usize {
    if layers == 0 {
        return 0;
    }
    let mut d = Drop {
        path: Vec::new(),
        layers,
        grads,
        dropped: 0,
    };
    model.visit(&mut d);
    d.dropped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::optimize::optimizer::{GroupLr, GroupOptimizer};
    use crate::probe::Tap;
    use crate::yolo::model::YoloConfig;
    use crate::yolo::weights::named_tensors;

    #[test]
    fn names_in_the_first_layers_are_frozen() {
        assert!(is_frozen("model.0.conv.weight", 1));
        assert!(is_frozen("model.9.cv1.bn.bias", 10));
        assert!(!is_frozen("model.10.cv1.bn.bias", 10));
        assert!(!is_frozen("model.1.conv.weight", 0));
        assert!(!is_frozen("head.weight", 99));
    }

    /// One AdamW step (with weight decay) on YOLO26n with freeze=10: every parameter of
    /// model.0–9 is bit for bit what it was, the weights after changed.
    #[test]
    fn frozen_layers_keep_their_weights_and_the_rest_trains() {
        let device = crate::device();
        let model = YoloConfig::from_name("yolo26n.yaml", 2)
            .unwrap()
            .init(&device);
        let before = named_tensors(&model);
        let x = Tensor::<4>::ones([1, 3, 64, 64], &device);
        let out = model.forward(x, &mut Tap::off());
        let loss = out.heads.one2many.powf_scalar(2.0).mean();
        let grads = loss.backward();
        let mut gp = GradientsParams::from_grads(grads, &model);
        let dropped = freeze(&model, 10, &mut gp);
        let frozen_params = before
            .iter()
            .filter(|(n, ..)| is_frozen(n, 10) && !n.contains("running_"))
            .count();
        assert_eq!(dropped, frozen_params);
        let lr = GroupLr {
            lr: [0.01; 3],
            momentum: 0.9,
            weight_decay: 0.05,
        };
        let model = GroupOptimizer::new(true).step(model, gp, lr);
        let after = named_tensors(&model);
        let mut trained = 0;
        for ((name, _, a), (_, _, b)) in before.iter().zip(&after) {
            if name.contains("running_") {
                continue; // BatchNorm statistics follow the batches, frozen or not (as Ultralytics)
            }
            if is_frozen(name, 10) {
                assert_eq!(a, b, "{name} moved");
            } else if name.ends_with(".weight") && a != b {
                trained += 1;
            }
        }
        assert!(trained > 50, "only {trained} weights after layer 9 changed");
    }
}
