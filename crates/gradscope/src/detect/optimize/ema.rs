//! Exponential moving average of the weights (and of buffers such as BatchNorm's running
//! statistics): ema ← d·ema + (1 − d)·model with d = 0.9999·(1 − e^(−u/2000)) at update u, so the
//! average follows the model closely early on and smooths it later. Validation and the saved
//! checkpoints use the average.
//!
//! The average is held as flat tensors, one per float tensor of the model in the order a
//! [`ModuleVisitor`] meets them, and becomes a model only when one is asked for
//! ([`Ema::model`]: validation and checkpoints, once an epoch). An update is then one parallel
//! blend with no walk over the averaged model: the detection optimizer hands over the new
//! weights from its own pass ([`crate::detect::optimize::optimizer::GroupOptimizer::apply`]).

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::Tensor;

/// Every float tensor of a model, flattened, in visiting order.
struct Collect(Vec<Tensor<1>>);

impl ModuleVisitor for Collect {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let t = param.val();
        let n = t.shape().num_elements();
        self.0.push(t.inner().reshape([n]));
    }
}

/// Puts flat tensors in place of a model's float tensors, in visiting order, each in the shape
/// of the tensor it replaces.
struct Put(std::vec::IntoIter<Tensor<1>>);

impl ModuleMapper for Put {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let Some(b) = self.0.next() else {
            return param;
        };
        param.map(|e| b.reshape(e.dims()))
    }
}

/// The averaged weights (on the plain, non-autodiff device) and the update count.
#[derive(Clone)]
pub struct Ema {
    /// One flat tensor per float tensor of the model, in visiting order.
    avg: Vec<Tensor<1>>,
    pub updates: usize,
}

impl Ema {
    /// Starts from `model`'s current weights.
    pub fn new<M: Module>(model: &M) -> Self {
        Self::from_model(&model.valid(), 0)
    }

    /// The average held by `model` (a checkpoint's EMA weights), after `updates` updates.
    pub fn from_model<M: Module>(model: &M, updates: usize) -> Self {
        let mut avg = Collect(Vec::new());
        model.valid().visit(&mut avg);
        Ema {
            avg: avg.0,
            updates,
        }
    }

    /// The averaged model: `like` (the training model, any device) on the plain device with the
    /// average in place of its weights and buffers. `like` must be of the model that was
    /// averaged (the same structure).
    pub fn model<M: Module>(&self, like: &M) -> M {
        like.valid().map(&mut Put(self.avg.clone().into_iter()))
    }

    pub fn decay(updates: usize) -> f64 {
        0.9999 * (1.0 - (-(updates as f64) / 2000.0).exp())
    }

    /// How many flat tensors the average holds: the model's float tensors.
    pub fn len(&self) -> usize {
        self.avg.len()
    }

    /// Whether the average holds no tensor (a model without float tensors).
    pub fn is_empty(&self) -> bool {
        self.avg.is_empty()
    }

    /// One update towards `model` (the training model, any device).
    pub fn update<M: Module>(&mut self, model: &M) {
        // valid(): BatchNorm running statistics settled into plain tensors
        let mut now = Collect(Vec::new());
        model.valid().visit(&mut now);
        let (df, ff) = self.next_decay();
        use rayon::prelude::*;
        let avg = std::mem::take(&mut self.avg);
        self.avg = avg
            .into_par_iter()
            .zip(now.0.par_iter())
            .map(|(avg, now)| blend(avg, now, df, ff))
            .collect();
    }

    /// Counts an update and gives its (d, 1 − d) in f32, for [`blend`] over
    /// [`Ema::take`]'s tensors.
    pub(crate) fn next_decay(&mut self) -> (f32, f32) {
        self.updates += 1;
        let d = Self::decay(self.updates);
        (d as f32, (1.0 - d) as f32)
    }

    /// Takes the average's tensors out (in visiting order), to be blended and put back with
    /// [`Ema::put`].
    pub(crate) fn take(&mut self) -> Vec<Tensor<1>> {
        std::mem::take(&mut self.avg)
    }

    /// Puts the blended tensors back.
    pub(crate) fn put(&mut self, avg: Vec<Tensor<1>>) {
        self.avg = avg;
    }
}

/// avg·d + now·f (d and f the f32 roundings of d and 1 − d) into `avg`'s buffer when nothing
/// else holds it: one pass ([`crate::kernels::ema`], big tensors in blocks on every thread), or
/// burn's operations for tensors off flex.
pub(crate) fn blend(avg: Tensor<1>, now: &Tensor<1>, df: f32, ff: f32) -> Tensor<1> {
    crate::kernels::ema::blend(avg, now, df, ff).unwrap_or_else(|avg| {
        // the f64 decay rounds to the f32 it was made from, so these are the old operation's
        // scalars
        *avg * f64::from(df) + now.clone() * f64::from(ff)
    })
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
        let d = Ema::decay(1);
        let got = weights(&ema.model(&net));
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
            .model(&net)
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
        assert!((Ema::decay(100_000) - 0.9999).abs() < 1e-6);
    }
}
