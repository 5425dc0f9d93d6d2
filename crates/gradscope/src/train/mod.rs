//! The training loop shared by every model: the probe, gradient clipping, NaN recovery and
//! checkpoints built in. [`fit`] is generic over the model and its batches; [`train_classifier`]
//! is the loop for `[batch, features]` → class models.

pub mod checkpoint;
pub mod clip;
pub mod loss;
pub mod optim;
pub mod recovery;
pub mod replicas;

use std::path::PathBuf;

use burn::module::Module;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Int, Tensor};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::Dataset;
use crate::probe::{Probe, ProbeError, Tap};
pub use optim::{Optimizer, OptimizerKind};
use recovery::{localise, Decision, GoodState, Recovery, RecoveryEvent};

/// A model that maps `[batch, features]` to logits `[batch, classes]` with probe points.
pub trait Classifier: Module + Clone {
    fn logits(&self, x: Tensor<2>, tap: &mut Tap) -> Tensor<2>;
}

impl Classifier for crate::nn::mlp::Mlp {
    fn logits(&self, x: Tensor<2>, tap: &mut Tap) -> Tensor<2> {
        self.forward(x, tap)
    }
}

/// Gradient-norm clipping threshold.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipNorm {
    Fixed(f64),
    /// [`AUTO_CLIP_FACTOR`] × the median global gradient norm of the last
    /// [`AUTO_CLIP_WINDOW`] steps (Pascanu et al. 2013: a threshold from the average norm
    /// over many updates).
    Auto,
}

pub const AUTO_CLIP_FACTOR: f64 = 5.0;
pub const AUTO_CLIP_WINDOW: usize = 100;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub optimizer: OptimizerKind,
    pub lr: f64,
    pub batch: usize,
    pub epochs: usize,
    pub seed: u64,
    pub clip_norm: Option<ClipNorm>,
    pub clip_value: Option<f64>,
    /// NaN recovery: a non-finite step restores the last good state, halves the learning rate
    /// and skips the batch; the `nan_recovery`-th such step in a row stops the run (after
    /// restoring). 0 = off: the first non-finite step stops the run.
    pub nan_recovery: usize,
    /// Write the model here (safetensors) after every epoch, if it is finite.
    pub checkpoint: Option<PathBuf>,
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
            nan_recovery: 3,
            checkpoint: None,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochStats {
    pub epoch: usize,
    pub train_loss: f64,
    pub val_loss: f64,
    /// Accuracy for classifiers; the task's own metric otherwise (MSE, bits per character).
    pub val_metric: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochStats>,
    /// Training loss of every step.
    pub step_loss: Vec<f64>,
    /// Global gradient norm of every step, before clipping.
    pub step_grad_norm: Vec<f64>,
    /// The clipping threshold in force at every step (NaN: no norm clipping).
    pub step_clip: Vec<f64>,
    /// Non-finite steps that were undone.
    pub recoveries: Vec<RecoveryEvent>,
    /// Why training stopped early, if it did.
    pub stopped: Option<String>,
}

/// Reported once per step.
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
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("the dataset is empty: nothing to train on")]
    Empty,
}

/// What [`fit`] needs from a task: its batches, its loss, its evaluation.
pub trait Task<M> {
    type Batch;
    /// The batches of one epoch.
    fn batches(&mut self, epoch: usize) -> Vec<Self::Batch>;
    /// The scalar loss of `batch`, with probe points reported to `tap`.
    fn loss(&self, model: &M, batch: &Self::Batch, tap: &mut Tap) -> Tensor<1>;
    /// (validation loss, validation metric) after an epoch.
    fn evaluate(&mut self, model: &M) -> (f64, f64);
}

fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[s.len() / 2]
}

/// This step's clipping threshold for ‖g‖ (NaN: no clipping by norm), from the norms of the
/// steps so far (`auto`: a multiple of their recent median).
fn clip_threshold(cfg: &TrainConfig, norms: &[f64]) -> f64 {
    match cfg.clip_norm {
        Some(ClipNorm::Fixed(c)) => c,
        Some(ClipNorm::Auto) => {
            let m = median(&norms[norms.len().saturating_sub(AUTO_CLIP_WINDOW)..]);
            if m.is_finite() {
                AUTO_CLIP_FACTOR * m
            } else {
                f64::INFINITY
            }
        }
        None => f64::NAN,
    }
}

/// Trains `model` on `task`. A non-finite loss or gradient is localised (the step is replayed
/// with the probe on when it was not probed), then undone: the last good parameters, optimizer
/// state and buffers come back, the learning rate halves and the batch is skipped. After
/// `nan_recovery` such steps in a row the run stops; the reason, naming the producer layer and
/// step, is in [`History::stopped`].
pub fn fit<M: Module + Clone, T: Task<M>>(
    mut model: M,
    task: &mut T,
    cfg: &TrainConfig,
    probe: &mut Probe,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(M, History), TrainError> {
    let mut optim = cfg.optimizer.build();
    let mut hist = History::default();
    let mut lr = cfg.lr;
    let mut step = 0;
    let mut recovery = Recovery::new(cfg.nan_recovery);
    let mut total = None;
    'epochs: for epoch in 0..cfg.epochs {
        let batches = task.batches(epoch);
        if batches.is_empty() {
            return Err(TrainError::Empty);
        }
        let steps = *total.get_or_insert(batches.len() * cfg.epochs);
        let (mut sum, mut n) = (0.0, 0usize);
        for batch in &batches {
            let good = GoodState::capture(&model, &optim);
            let mut tap = probe.tap(step);
            let loss = task.loss(&model, batch, &mut tap);
            let loss_v = loss.clone().into_scalar::<f64>();
            let grads = loss.backward();
            let pending = probe.after_backward_for_update(step, epoch, loss_v, tap, &model, &grads);
            let gp = GradientsParams::from_grads(grads, &model);
            let threshold = clip_threshold(cfg, &hist.step_grad_norm);
            // clipping by norm needs the norm before the update (one reading pass); otherwise the
            // update pass measures it, and a non-finite step is undone below
            let known = (!threshold.is_nan()).then(|| clip::global_norm(&model, &gp));
            let clip = clip::on_update(known, threshold, cfg.clip_value);
            let (updated, measured) =
                optim.step_measured(lr, model.clone(), gp, clip, pending.is_some());
            let gnorm =
                known.unwrap_or_else(|| measured.iter().filter_map(|m| m.g_sq).sum::<f64>().sqrt());
            hist.step_loss.push(loss_v);
            hist.step_grad_norm.push(gnorm);
            hist.step_clip.push(threshold);

            if !loss_v.is_finite() || !gnorm.is_finite() {
                let replay = |probe: &mut Probe| {
                    let mut tap = probe.replay_tap(step);
                    let l = task.loss(&model, batch, &mut tap);
                    let lv = l.clone().into_scalar::<f64>();
                    let g = l.backward();
                    probe.after_backward(step, epoch, lv, tap, &model, &g)
                };
                // a probed step's record lacks the gradients' norms: `localise` replays the step
                let producer = localise(probe, pending, replay, &model, lr)?;
                let what = if loss_v.is_finite() {
                    "gradient"
                } else {
                    "loss"
                };
                let at = format!("step {step}");
                match recovery.failed(what, step, &at, producer, lr) {
                    Decision::Stop(reason) => {
                        hist.stopped = Some(reason);
                        model = good.restore().0;
                        break 'epochs;
                    }
                    Decision::Recover(event) => {
                        (model, optim) = good.restore();
                        lr = event.lr_after;
                        hist.recoveries.push(event);
                    }
                }
            } else {
                recovery.finite();
                model = updated;
                probe.after_update(pending, &measured, lr)?;
                sum += loss_v;
                n += 1;
            }
            step += 1;
            progress(&Progress {
                step,
                steps,
                epoch,
                loss: loss_v,
            });
        }
        let (val_loss, val_metric) = task.evaluate(&model);
        hist.epochs.push(EpochStats {
            epoch,
            train_loss: sum / n.max(1) as f64,
            val_loss,
            val_metric,
        });
        if let Some(path) = &cfg.checkpoint {
            checkpoint::save(&model, path)?;
        }
    }
    Ok((model, hist))
}

/// Classification on an in-memory dataset: cross-entropy, accuracy.
struct Classification<'a, M> {
    train: &'a Dataset,
    val: &'a Dataset,
    batch: usize,
    rng: StdRng,
    device: &'a Device,
    /// Shown the model after each epoch's evaluation, with the epoch.
    watch: &'a mut dyn FnMut(usize, &M),
    epoch: usize,
}

impl<M: Classifier> Task<M> for Classification<'_, M> {
    type Batch = (Tensor<2>, Tensor<1, Int>);

    fn batches(&mut self, _epoch: usize) -> Vec<Self::Batch> {
        self.train
            .batches(self.batch, &mut self.rng)
            .iter()
            .map(|idx| self.train.tensors(idx, self.device))
            .collect()
    }

    fn loss(&self, model: &M, (x, y): &Self::Batch, tap: &mut Tap) -> Tensor<1> {
        loss::cross_entropy(model.logits(x.clone(), tap), y.clone())
    }

    fn evaluate(&mut self, model: &M) -> (f64, f64) {
        let out = evaluate(model, self.val, self.device);
        (self.watch)(self.epoch, model);
        self.epoch += 1;
        out
    }
}

/// Trains a classifier on `train` and evaluates it on `val` after every epoch.
pub fn train_classifier<M: Classifier>(
    model: M,
    train: &Dataset,
    val: &Dataset,
    cfg: &TrainConfig,
    probe: &mut Probe,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(M, History), TrainError> {
    let mut nothing = |_: usize, _: &M| {};
    train_classifier_watched(
        model,
        train,
        val,
        cfg,
        probe,
        device,
        progress,
        &mut nothing,
    )
}

/// [`train_classifier`], showing `watch` the model after every epoch's evaluation (with the
/// epoch, from 0): for measurements a lab takes over training.
#[allow(clippy::too_many_arguments)]
pub fn train_classifier_watched<M: Classifier>(
    model: M,
    train: &Dataset,
    val: &Dataset,
    cfg: &TrainConfig,
    probe: &mut Probe,
    device: &Device,
    progress: &mut dyn FnMut(&Progress),
    watch: &mut dyn FnMut(usize, &M),
) -> Result<(M, History), TrainError> {
    if train.is_empty() {
        return Err(TrainError::Empty);
    }
    let mut task = Classification {
        train,
        val,
        batch: cfg.batch,
        rng: StdRng::seed_from_u64(cfg.seed ^ 0x5eed),
        device,
        watch,
        epoch: 0,
    };
    fit(model, &mut task, cfg, probe, progress)
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
