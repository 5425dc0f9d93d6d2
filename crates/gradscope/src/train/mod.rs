//! The training loop for classifiers, with the probe, clipping and evaluation built in.

pub mod clip;
pub mod loss;
pub mod optim;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::probe::{Probe, ProbeError, Tap};
pub use optim::OptimizerKind;

/// A model that maps `[batch, features]` to logits `[batch, classes]` with probe points.
pub trait Classifier: Module + Clone {
    fn logits(&self, x: Tensor<2>, tap: &mut Tap) -> Tensor<2>;
}

impl Classifier for crate::nn::mlp::Mlp {
    fn logits(&self, x: Tensor<2>, tap: &mut Tap) -> Tensor<2> {
        self.forward(x, tap)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub clip_norm: Option<f64>,
    pub clip_value: Option<f64>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            optimizer: OptimizerKind::Momentum,
            lr: 0.01,
            batch: 64,
            epochs: 20,
            seed: 0,
            clip_norm: None,
            clip_value: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    pub val_acc: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochStats>,
    /// Training loss of every step.
    pub step_loss: Vec<f64>,
    /// Global gradient norm of every step, before clipping.
    pub step_grad_norm: Vec<f64>,
    /// Why training stopped early, if it did.
    pub stopped: Option<String>,
}

/// Reported once per optimizer step.
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub epoch: usize,
    pub loss: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error("the dataset is empty: nothing to train on")]
    Empty,
}

/// Trains `model` on `train` and evaluates on `val` after every epoch.
/// A non-finite loss stops the run (recorded in [`History::stopped`]); the probe record of that
/// step names the producer when the step was probed.
pub fn train_classifier<M: Classifier>(
    mut model: M,
    train: &Dataset,
    val: &Dataset,
    cfg: &TrainConfig,
    probe: &mut Probe,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(M, History), TrainError> {
    if train.is_empty() {
        return Err(TrainError::Empty);
    }
    let mut optim = cfg.optimizer.build();
    let mut rng = StdRng::seed_from_u64(cfg.seed ^ 0x5eed);
    let per_epoch = train.len().div_ceil(cfg.batch.max(1));
    let steps = per_epoch * cfg.epochs;
    let mut hist = History::default();
    let mut step = 0;
    'epochs: for epoch in 0..cfg.epochs {
        let mut sum = 0.0;
        let mut n = 0usize;
        for idx in train.batches(cfg.batch, &mut rng) {
            let (x, y) = train.tensors(&idx, device);
            let mut tap = probe.tap(step);
            let logits = model.logits(x, &mut tap);
            let loss = loss::cross_entropy(logits, y);
            let loss_v = loss.clone().into_scalar::<f64>();
            let grads = loss.backward();
            let pending = probe.after_backward(step, epoch, loss_v, tap, &model, &grads);
            let mut gp = GradientsParams::from_grads(grads, &model);
            let gnorm = match cfg.clip_norm {
                Some(c) => clip::clip_norm(&model, &mut gp, c),
                None => clip::global_norm(&model, &gp),
            };
            if let Some(v) = cfg.clip_value {
                clip::clip_value(&model, &mut gp, v);
            }
            hist.step_loss.push(loss_v);
            hist.step_grad_norm.push(gnorm);
            if !loss_v.is_finite() || !gnorm.is_finite() {
                // keep the record that localises the fault, do not apply a non-finite update
                probe.after_step(pending, &model, cfg.lr)?;
                let where_ = probe
                    .records()
                    .last()
                    .filter(|r| r.step == step)
                    .and_then(|r| r.nonfinite.as_ref())
                    .map(|nf| format!(": {nf}"))
                    .unwrap_or_default();
                hist.stopped = Some(format!(
                    "non-finite {} at step {step}{where_}",
                    if loss_v.is_finite() {
                        "gradient"
                    } else {
                        "loss"
                    }
                ));
                break 'epochs;
            }
            model = optim.step(cfg.lr, model, gp);
            probe.after_step(pending, &model, cfg.lr)?;
            sum += loss_v;
            n += 1;
            step += 1;
            progress(&Progress {
                step,
                steps,
                epoch,
                loss: loss_v,
            });
        }
        let (val_loss, val_acc) = evaluate(&model, val, device);
        hist.epochs.push(EpochStats {
            epoch,
            train_loss: sum / n.max(1) as f64,
            val_loss,
            val_acc,
        });
    }
    Ok((model, hist))
}

/// Mean cross-entropy and accuracy in evaluation mode (BatchNorm uses running statistics).
pub fn evaluate<M: Classifier>(model: &M, data: &Dataset, device: &Device) -> (f64, f64) {
    if data.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let m = model.valid();
    let (mut loss, mut correct) = (0.0, 0usize);
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(512) {
        let (x, y) = data.tensors(chunk, device);
        let logits = m.logits(x.inner(), &mut Tap::off());
        let y: Tensor<1, Int> = y.inner();
        let pred = int_values(logits.clone().argmax(1).into_data());
        let truth = int_values(y.clone().into_data());
        correct += pred.iter().zip(&truth).filter(|(p, t)| p == t).count();
        loss += loss::cross_entropy(logits, y).into_scalar::<f64>() * chunk.len() as f64;
    }
    (loss / data.len() as f64, correct as f64 / data.len() as f64)
}

fn int_values(d: burn::tensor::TensorData) -> Vec<i64> {
    d.convert::<i64>()
        .try_into_vec::<i64>()
        .expect("converted to i64")
}
