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

/// Blends each parameter of the averaged model, in visiting order, with the model's tensor:
/// avg·d + now·f in one pass, in the average's own buffer ([`crate::kernels::ema::blend`]; burn's
/// operations for tensors off flex).
struct Blend {
    now: std::vec::IntoIter<Tensor<1>>,
    d: f64,
}

impl ModuleMapper for Blend {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(now) = self.now.next() else {
            return param;
        };
        let (d, f) = (self.d, 1.0 - self.d);
        param.map(|avg| {
            let dims = avg.dims();
            let n: usize = dims.iter().product();
            let out = crate::kernels::ema::blend(avg.reshape([n]), &now, d as f32, f as f32)
                .unwrap_or_else(|avg| *avg * d + now * f);
            out.reshape(dims)
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
        // valid(): BatchNorm running statistics synchronised into plain tensors
        let plain = model.valid();
        let mut now = Collect(Vec::new());
        plain.visit(&mut now);
        // the average taken out (the model's plain copy in its place meanwhile), so that each of
        // its tensors is held once and blended in its own buffer
        let avg = std::mem::replace(&mut self.model, plain);
        self.model = avg.map(&mut Blend {
            now: now.0.into_iter(),
            d,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{BatchNorm, BatchNormConfig, Linear, LinearConfig};
    use burn::tensor::TensorData;

    #[derive(Module, Debug)]
    struct Net {
        fc: Linear,
        bn: BatchNorm,
    }

    fn weights(m: &Net) -> Vec<f32> {
        m.fc.weight
            .val()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    #[test]
    fn ema_follows_the_model_early_and_averages_later() {
        let device = crate::device();
        let mut net = Net {
            fc: LinearConfig::new(2, 1).init(&device),
            bn: BatchNormConfig::new(1).init(&device),
        };
        let mut ema = Ema::new(&net);
        let w0 = weights(&net);
        net.fc.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![5.0f32, -5.0], [2, 1]),
            &device,
        ));
        ema.update(&net);
        let d = Ema::<Net>::decay(1);
        let got = weights(&ema.model);
        for i in 0..2 {
            let want = d as f32 * w0[i] + (1.0 - d as f32) * [5.0, -5.0][i];
            assert!((got[i] - want).abs() < 1e-5, "{got:?} vs {want}");
        }
        // BatchNorm running statistics are averaged too. The bias is set, not drawn: both rows
        // give x·W = 0, so the batch mean is the bias (a random one could be ~0, and other tests
        // drawing from the same device RNG in parallel change which one this test gets).
        net.fc.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![1.0f32], [1]),
            &device,
        )));
        let x = Tensor::<2>::from_data(
            TensorData::new(vec![10.0f32, 10.0, 12.0, 12.0], [2, 2]),
            &device,
        );
        let _ = net.bn.forward(net.fc.forward(x).reshape([2, 1, 1]));
        ema.update(&net);
        let rm: Vec<f32> = ema
            .model
            .bn
            .running_mean
            .value()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        assert!(
            rm[0].abs() > 1e-3,
            "running mean reached the average: {rm:?}"
        );
        assert!((Ema::<Net>::decay(100_000) - 0.9999).abs() < 1e-6);
    }
}
