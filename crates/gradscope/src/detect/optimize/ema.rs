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

/// Takes each parameter's tensor out of the averaged model (flattened, so held once and blended
/// in its own buffer), leaving the model's tensor of the same shape in its place meanwhile.
struct Take {
    now: std::vec::IntoIter<Tensor<1>>,
    avg: Vec<Tensor<1>>,
}

impl ModuleMapper for Take {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(now) = self.now.next() else {
            return param;
        };
        let (id, avg, mapper) = param.consume();
        let dims = avg.dims();
        self.avg.push(avg.reshape([dims.iter().product::<usize>()]));
        Param::from_mapped_value(id, now.reshape(dims), mapper)
    }
}

/// Puts the blended averages back, in visiting order.
struct Put(std::vec::IntoIter<Tensor<1>>);

impl ModuleMapper for Put {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(b) = self.0.next() else {
            return param;
        };
        param.map(|e| b.reshape(e.dims()))
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
        let mut take = Take {
            now: now.0.clone().into_iter(),
            avg: Vec::with_capacity(now.0.len()),
        };
        let shell = std::mem::replace(&mut self.model, plain).map(&mut take);
        // avg·d + now·(1 − d): the parameters side by side, each in one pass (kernels::ema; burn's
        // operations for tensors off flex), big ones in blocks on every thread
        let (df, ff) = (d as f32, (1.0 - d) as f32);
        let blended: Vec<Tensor<1>> = {
            use rayon::prelude::*;
            take.avg
                .into_par_iter()
                .zip(now.0.into_par_iter())
                .map(|(avg, now)| {
                    crate::kernels::ema::blend(avg, &now, df, ff)
                        .unwrap_or_else(|avg| *avg * d + now * (1.0 - d))
                })
                .collect()
        };
        self.model = shell.map(&mut Put(blended.into_iter()));
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
