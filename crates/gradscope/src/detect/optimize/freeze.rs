//! `freeze=N` or `freeze=[i, j, …]`, as Ultralytics' key: the first N layers (`model.0` …
//! `model.N−1`), or the listed ones, keep their weights. Their gradients are dropped before accumulation, so the optimizer never sees them:
//! no update, no weight decay, and they do not count in the clipping norm (Ultralytics turns
//! `requires_grad` off, with the same effect). The gradient still flows *through* them to the
//! layers before (there are none for a prefix) and to the probe, which keeps measuring ∂L/∂h
//! there; their update ratio is 0 by design. BatchNorm running statistics keep following the
//! batches in training mode, frozen or not, as in Ultralytics.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;

use crate::settings::Value;
use crate::yolo::weights::ultralytics_name;

/// The layers `freeze=` keeps: the first N, or a list of layer indices.
#[derive(Clone, Debug, PartialEq)]
pub enum Freeze {
    First(usize),
    Layers(Vec<usize>),
}

impl Freeze {
    /// Whether layer `i` (`model.i`) is frozen.
    pub fn contains(&self, i: usize) -> bool {
        match self {
            Freeze::First(n) => i < *n,
            Freeze::Layers(l) => l.contains(&i),
        }
    }

    /// Whether no layer is frozen.
    pub fn is_empty(&self) -> bool {
        matches!(self, Freeze::First(0)) || matches!(self, Freeze::Layers(l) if l.is_empty())
    }

    /// The largest layer index named (for the range check).
    pub fn last(&self) -> Option<usize> {
        match self {
            Freeze::First(n) => n.checked_sub(1),
            Freeze::Layers(l) => l.iter().max().copied(),
        }
    }

    /// The frozen layers in words: `model.0 … model.9`, or `model.0, model.4`.
    pub fn describe(&self) -> String {
        match self {
            Freeze::First(n) => format!("model.0 … model.{}", n.saturating_sub(1)),
            Freeze::Layers(l) => l
                .iter()
                .map(|i| format!("model.{i}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

/// `10`, or a list `[0, 1, 2]` (brackets optional, as in `freeze=0,1,2`).
impl Value for Freeze {
    fn parse(v: &str) -> Result<Self, String> {
        let bad = || {
            "expected a number of layers (freeze=10) or a list of layer indices (freeze=[0,1,2])"
                .to_string()
        };
        let t = v.trim();
        if let Ok(n) = t.parse::<usize>() {
            return Ok(Freeze::First(n));
        }
        let inner = t
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(t);
        let mut l: Vec<usize> = inner
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<usize>().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        l.sort_unstable();
        l.dedup();
        Ok(Freeze::Layers(l))
    }
    fn show(&self) -> String {
        match self {
            Freeze::First(n) => n.to_string(),
            Freeze::Layers(l) => format!(
                "[{}]",
                l.iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// Whether the parameter named `name` (Ultralytics' name, `model.3.conv.weight`) is in a frozen
/// layer.
pub fn is_frozen(name: &str, layers: &Freeze) -> bool {
    name.strip_prefix("model.")
        .and_then(|rest| rest.split('.').next())
        .and_then(|i| i.parse::<usize>().ok())
        .is_some_and(|i| layers.contains(i))
}

struct Drop<'a> {
    path: Vec<String>,
    layers: &'a Freeze,
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

/// Removes from `grads` the gradients of `model`'s parameters in the frozen `layers`; returns
/// how many were removed.
pub fn freeze<M: Module>(model: &M, layers: &Freeze, grads: &mut GradientsParams) -> usize {
    if layers.is_empty() {
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
        let first = |n| Freeze::First(n);
        assert!(is_frozen("model.0.conv.weight", &first(1)));
        assert!(is_frozen("model.9.cv1.bn.bias", &first(10)));
        assert!(!is_frozen("model.10.cv1.bn.bias", &first(10)));
        assert!(!is_frozen("model.1.conv.weight", &first(0)));
        assert!(!is_frozen("head.weight", &first(99)));
        let list = Freeze::parse("[0, 4]").unwrap();
        assert!(is_frozen("model.4.cv1.conv.weight", &list));
        assert!(!is_frozen("model.1.conv.weight", &list));
        assert_eq!(list.describe(), "model.0, model.4");
    }

    #[test]
    fn both_forms_parse_and_read_back() {
        for (word, want) in [
            ("10", Freeze::First(10)),
            ("[0,1,2]", Freeze::Layers(vec![0, 1, 2])),
            ("[2, 0]", Freeze::Layers(vec![0, 2])),
            ("0,1", Freeze::Layers(vec![0, 1])),
            ("[]", Freeze::Layers(vec![])),
        ] {
            let f = Freeze::parse(word).unwrap();
            assert_eq!(f, want, "{word}");
            assert_eq!(Freeze::parse(&f.show()).unwrap(), f);
        }
        assert!(Freeze::parse("[a]")
            .unwrap_err()
            .contains("list of layer indices"));
        assert!(Freeze::parse("-1").is_err());
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
        let dropped = freeze(&model, &Freeze::First(10), &mut gp);
        let frozen_params = before
            .iter()
            .filter(|(n, ..)| is_frozen(n, &Freeze::First(10)) && !n.contains("running_"))
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
            if is_frozen(name, &Freeze::First(10)) {
                assert_eq!(a, b, "{name} moved");
            } else if name.ends_with(".weight") && a != b {
                trained += 1;
            }
        }
        assert!(trained > 50, "only {trained} weights after layer 9 changed");
    }
}
