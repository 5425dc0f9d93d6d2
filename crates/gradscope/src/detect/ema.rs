//! Exponential moving average of the weights (and of buffers such as BatchNorm's running
//! statistics): ema ← d·ema + (1 − d)·model with d = 0.9999·(1 − e^(−u/2000)) at update u, so the
//! average follows the model closely early on and smooths it later. Validation and the saved
//! checkpoints use the average.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.inner().reshape([n]));
    }
}

struct Blend {
    src: std::vec::IntoIter<Tensor<1>>,
    d: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(m) = self.src.next() else {
            return param;
        };
        let d = self.d;
        param.map(|e| {
            let dims: [usize; D] = e.dims();
            e * d + m.reshape(dims) * (1.0 - d)
        })
    }
}

/// The averaged model (on the plain, non-autodiff device) and its update count.
#[derive(Clone)]
pub struct Ema<M> {
    pub model: M,
    pub updates: usize,
}

impl<M: Module> Ema<M> {
    /// Starts from `model`'s current weights.
    pub fn new(model: &M) -> Self {
        Ema {
            model: model.valid(),
            updates: 0,
        }
    }

    pub fn decay(updates: usize) -> f64 {
        0.9999 * (1.0 - (-(updates as f64) / 2000.0).exp())
    }

    /// One update towards `model` (the training model, any device).
    pub fn update(&mut self, model: &M) {
        self.updates += 1;
        let d = Self::decay(self.updates);
        let mut c = Collect(Vec::new());
        // valid(): BatchNorm running statistics synchronised into plain tensors
        model.valid().visit(&mut c);
        let mut b = Blend {
            src: c.0.into_iter(),
            d,
        };
        self.model = self.model.clone().map(&mut b);
    }
}
