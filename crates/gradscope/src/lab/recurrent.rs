//! `gradscope lab recurrent`: a vanilla RNN, an LSTM and a GRU trained side by side on the same
//! sequences, with ‖∂L/∂h_t‖ measured at every time step.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::mlp::{LabError, LabEvent};
use super::write_json;
use crate::choice::choice;
use crate::data::sequences::{self, CharText, SeqBatch, ADDING_BASELINE_MSE};
use crate::diagnose::{diagnose, Diagnosis};
use crate::nn::recurrent::{CellKind, RecurrentConfig, SeqModel};
use crate::probe::{Probe, ProbeConfig, StepRecord, Tap};
use crate::report::html::{self, Table};
use crate::report::{plots, RunView};
use crate::settings::{positive_number, whole};
use crate::train::{fit, ClipNorm, History, OptimizerKind, Task, TrainConfig};

choice! {
    /// What the recurrent networks learn.
    pub enum SeqTaskKind ("task") {
        /// The adding problem (MSE; always predicting 1 gives 1/6).
        Adding = "adding",
        /// Yearly sunspots, next-value regression (MSE on values / 100).
        Sunspots = "sunspots",
        /// Moby Dick, next character (bits per character).
        Text = "text",
    }
}

impl SeqTaskKind {
    /// The trivial predictor whose score is the task's baseline, in words.
    pub fn trivial(self) -> &'static str {
        match self {
            SeqTaskKind::Adding => "always 1",
            SeqTaskKind::Sunspots => "repeat the last value",
            SeqTaskKind::Text => "character frequencies",
        }
    }
}

pub const LAB_KEYS: &[(&str, &str)] = &[
    ("task", "adding | sunspots | text"),
    (
        "T",
        "sequence length (default: adding 100, sunspots 20, text 50)",
    ),
    ("hidden", "hidden units (default 64)"),
    ("cells", "which cells, comma-separated: rnn,lstm,gru"),
    ("forget_bias", "LSTM forget-gate bias at init (default 1)"),
    (
        "recurrent_gain",
        "start each recurrent matrix orthogonal × this gain (spectral norm = gain), or default",
    ),
    ("optimizer", "sgd | momentum | adam | adamw (default adam)"),
    ("lr", "learning rate (default 0.01)"),
    ("batch", "sequences per batch (default 32)"),
    ("epochs", "epochs (default 20)"),
    (
        "per_epoch",
        "batches per epoch for adding and text (default 100)",
    ),
    (
        "clip_norm",
        "global gradient-norm threshold, auto, or none (default 1)",
    ),
    ("clip_value", "per-element gradient bound, or none"),
    (
        "nan_recovery",
        "non-finite steps in a row that stop the run, 0 = no recovery (default 3)",
    ),
    ("seed", "integer ≥ 0"),
    ("probe", "true | false (default true)"),
    ("probe_every", "probe every k-th step (default 10)"),
    ("project", "folder for run outputs (default runs)"),
    super::DEVICE_KEY,
];

#[derive(Clone, Debug, PartialEq)]
pub struct RecurrentLab {
    pub task: SeqTaskKind,
    pub steps: Option<usize>,
    pub hidden: usize,
    pub cells: Vec<CellKind>,
    pub forget_bias: f64,
    pub recurrent_gain: Option<f64>,
    pub train: TrainConfig,
    pub per_epoch: usize,
    pub probe: ProbeConfig,
    pub project: PathBuf,
    /// `device=`: where the cells train.
    pub device: crate::devices::DeviceSpec,
}

impl Default for RecurrentLab {
    fn default() -> Self {
        RecurrentLab {
            task: SeqTaskKind::Adding,
            steps: None,
            hidden: 64,
            cells: vec![CellKind::Rnn, CellKind::Lstm, CellKind::Gru],
            forget_bias: 1.0,
            recurrent_gain: None,
            train: TrainConfig {
                optimizer: OptimizerKind::Adam,
                lr: 0.01,
                batch: 32,
                epochs: 20,
                clip_norm: Some(ClipNorm::Fixed(1.0)),
                ..TrainConfig::default()
            },
            per_epoch: 100,
            probe: ProbeConfig {
                enabled: true,
                every: 10,
                dead_window: 8,
            },
            device: crate::devices::DeviceSpec::Cpu,
            project: PathBuf::from("runs"),
        }
    }
}

impl RecurrentLab {
    pub fn steps(&self) -> usize {
        self.steps.unwrap_or(match self.task {
            SeqTaskKind::Adding => 100,
            SeqTaskKind::Sunspots => 20,
            SeqTaskKind::Text => 50,
        })
    }

    /// Whether `pairs` are all keys of this lab and change it.
    pub fn changed_by(&self, pairs: &[(String, String)]) -> bool {
        let mut l = self.clone();
        pairs.iter().all(|(k, v)| l.set(k, v) == Ok(true)) && l != *self
    }

    /// Applies a `key=value` argument. `Ok(false)`: unknown key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "device" => self.device = super::lab_device(v)?,
            "task" => self.task = v.parse().map_err(|e: String| format!("task={v}: {e}"))?,
            "T" | "steps" => self.steps = Some(whole(key, v, 2)?),
            "hidden" => self.hidden = whole(key, v, 1)?,
            "cells" => {
                let cells: Result<Vec<CellKind>, String> =
                    v.split(',').map(|c| c.parse()).collect();
                self.cells = cells.map_err(|e| format!("cells={v}: {e}"))?;
            }
            "forget_bias" => {
                self.forget_bias = v
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| format!("forget_bias={v}: expected a number"))?
            }
            "recurrent_gain" => {
                self.recurrent_gain = if v == "default" {
                    None
                } else {
                    Some(positive_number(key, v)?)
                }
            }
            "per_epoch" => self.per_epoch = whole(key, v, 1)?,
            "seed" => {
                self.train.seed = v
                    .parse()
                    .map_err(|_| format!("seed={v}: expected a whole number ≥ 0"))?
            }
            "probe" => {
                self.probe.enabled = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("probe={v}: expected true or false")),
                }
            }
            "probe_every" => self.probe.every = whole(key, v, 1)?,
            "project" => self.project = PathBuf::from(v),
            _ => return super::settings::set_train(&mut self.train, key, v),
        }
        Ok(true)
    }
}

/// Sequences for one task: fresh or fixed training batches, a fixed validation set.
pub struct SeqTask {
    kind: SeqTaskKind,
    steps: usize,
    batch: usize,
    per_epoch: usize,
    rng: StdRng,
    /// sunspots: the training windows; text: the characters
    series: Option<SeqBatch>,
    text: Option<CharText>,
    val: SeqBatch,
    device: Device,
}

/// A batch on the device: inputs `[n, T, features]`, regression targets or class ids.
pub enum SeqData {
    Regression(Tensor<3>, Tensor<2>),
    Chars(Tensor<3>, Tensor<1, Int>),
}

impl SeqTask {
    pub fn new(
        kind: SeqTaskKind,
        steps: usize,
        batch: usize,
        per_epoch: usize,
        seed: u64,
        device: &Device,
    ) -> Result<Self, LabError> {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut val_rng = StdRng::seed_from_u64(seed ^ 0xda7a);
        let (series, text, val) = match kind {
            SeqTaskKind::Adding => (None, None, sequences::adding(1000, steps, &mut val_rng)),
            SeqTaskKind::Sunspots => {
                let s = sequences::sunspots()?;
                let w = sequences::windows(&s, steps, 100.0);
                // chronological split: the last 20% of windows validate
                let n_train = w.n * 4 / 5;
                let cut = |from: usize, to: usize| SeqBatch {
                    x: w.x[from * steps..to * steps].to_vec(),
                    y: w.y[from..to].to_vec(),
                    n: to - from,
                    steps,
                    features: 1,
                    targets: 1,
                };
                (Some(cut(0, n_train)), None, cut(n_train, w.n))
            }
            SeqTaskKind::Text => {
                let t = CharText::new(&sequences::moby_dick()?);
                let split = t.ids.len() * 9 / 10;
                let val = t.sample(256, steps, split..t.ids.len(), &mut val_rng);
                (None, Some(t), val)
            }
        };
        let _ = &mut rng;
        Ok(SeqTask {
            kind,
            steps,
            batch,
            per_epoch,
            rng,
            series,
            text,
            val,
            device: device.clone(),
        })
    }

    pub fn features(&self) -> usize {
        self.val.features
    }

    pub fn outputs(&self) -> usize {
        match &self.text {
            Some(t) => t.alphabet.len(),
            None => 1,
        }
    }

    fn to_device(&self, b: &SeqBatch) -> SeqData {
        let x = Tensor::from_data(
            TensorData::new(b.x.clone(), [b.n, b.steps, b.features]),
            &self.device,
        );
        match self.kind {
            SeqTaskKind::Text => {
                let y: Vec<i64> = b.y.iter().map(|&c| c as i64).collect();
                SeqData::Chars(
                    x,
                    Tensor::from_data(TensorData::new(y, [b.n * b.steps]), &self.device),
                )
            }
            _ => SeqData::Regression(
                x,
                Tensor::from_data(TensorData::new(b.y.clone(), [b.n, 1]), &self.device),
            ),
        }
    }

    /// The score of a trivial predictor on the validation set: adding 1/6 (predict 1),
    /// sunspots: predict the last value, text: the training text's unigram entropy in bits.
    pub fn baseline(&self) -> f64 {
        match self.kind {
            SeqTaskKind::Adding => ADDING_BASELINE_MSE,
            SeqTaskKind::Sunspots => {
                let v = &self.val;
                (0..v.n)
                    .map(|i| (v.x[i * v.steps + v.steps - 1] - v.y[i]).powi(2) as f64)
                    .sum::<f64>()
                    / v.n as f64
            }
            SeqTaskKind::Text => {
                let t = self.text.as_ref().expect("text task");
                let mut counts = vec![0f64; t.alphabet.len()];
                t.ids.iter().for_each(|&c| counts[c] += 1.0);
                let n = t.ids.len() as f64;
                counts
                    .iter()
                    .filter(|&&c| c > 0.0)
                    .map(|&c| -(c / n) * (c / n).log2())
                    .sum()
            }
        }
    }

    pub fn metric_name(&self) -> &'static str {
        match self.kind {
            SeqTaskKind::Text => "val bits/char",
            _ => "val MSE",
        }
    }

    fn loss_of(&self, model: &SeqModel, data: &SeqData, tap: &mut Tap) -> Tensor<1> {
        match data {
            SeqData::Regression(x, y) => {
                let pred = model.forward_last(x.clone(), tap);
                (pred - y.clone()).powf_scalar(2.0).mean()
            }
            SeqData::Chars(x, y) => {
                let logits = model.forward_all(x.clone(), tap);
                let [b, t, v] = logits.dims();
                crate::train::loss::cross_entropy(logits.reshape([b * t, v]), y.clone())
            }
        }
    }
}

impl Task<SeqModel> for SeqTask {
    type Batch = SeqData;

    fn batches(&mut self, _epoch: usize) -> Vec<SeqData> {
        let raw: Vec<SeqBatch> = match self.kind {
            SeqTaskKind::Adding => (0..self.per_epoch)
                .map(|_| sequences::adding(self.batch, self.steps, &mut self.rng))
                .collect(),
            SeqTaskKind::Text => {
                let t = self.text.as_ref().expect("text task");
                let split = t.ids.len() * 9 / 10;
                (0..self.per_epoch)
                    .map(|_| t.sample(self.batch, self.steps, 0..split, &mut self.rng))
                    .collect()
            }
            SeqTaskKind::Sunspots => {
                use rand::seq::SliceRandom;
                let s = self.series.as_ref().expect("series task");
                let mut idx: Vec<usize> = (0..s.n).collect();
                idx.shuffle(&mut self.rng);
                idx.chunks(self.batch)
                    .map(|c| SeqBatch {
                        x: c.iter()
                            .flat_map(|&i| s.x[i * s.steps..(i + 1) * s.steps].to_vec())
                            .collect(),
                        y: c.iter().map(|&i| s.y[i]).collect(),
                        n: c.len(),
                        steps: s.steps,
                        features: 1,
                        targets: 1,
                    })
                    .collect()
            }
        };
        raw.iter().map(|b| self.to_device(b)).collect()
    }

    fn loss(&self, model: &SeqModel, batch: &SeqData, tap: &mut Tap) -> Tensor<1> {
        self.loss_of(model, batch, tap)
    }

    fn evaluate(&mut self, model: &SeqModel) -> (f64, f64) {
        let data = self.to_device(&self.val.clone());
        let l = self
            .loss_of(model, &data, &mut Tap::off())
            .into_scalar::<f64>();
        let metric = match self.kind {
            SeqTaskKind::Text => l / std::f64::consts::LN_2,
            _ => l,
        };
        (l, metric)
    }
}

pub struct CellOutcome {
    pub cell: CellKind,
    pub history: History,
    pub records: Vec<StepRecord>,
    pub diagnosis: Option<Diagnosis>,
    /// max over gates of ‖U‖₂ at init and at the end
    pub spectral_init: f64,
    pub spectral_end: f64,
    pub seconds: f64,
}

pub struct RecurrentOutcome {
    pub dir: PathBuf,
    pub report: PathBuf,
    pub baseline: f64,
    pub metric: &'static str,
    pub cells: Vec<CellOutcome>,
}

fn max_norm(m: &SeqModel) -> f64 {
    m.recurrent_spectral_norms().into_iter().fold(0.0, f64::max)
}

/// The comparison table.
pub fn table(out: &RecurrentOutcome) -> Table {
    let rows = out
        .cells
        .iter()
        .map(|c| {
            let last = c.history.epochs.last();
            let d = c.diagnosis.as_ref();
            vec![
                c.cell.to_string(),
                html::num(last.map_or(f64::NAN, |e| e.train_loss)),
                html::num(last.map_or(f64::NAN, |e| e.val_metric)),
                html::num(out.baseline),
                format!("{:.2e}", d.map_or(f64::NAN, |d| d.first_last_end)),
                format!("{:.3}", d.map_or(f64::NAN, |d| d.per_layer_factor)),
                format!(
                    "{}→{}",
                    html::num(c.spectral_init),
                    html::num(c.spectral_end)
                ),
                d.map_or("not probed".into(), |d| d.verdict.to_string()),
                format!("{:.0}", c.seconds),
            ]
        })
        .collect();
    let columns = [
        "cell",
        "train loss",
        out.metric,
        "baseline",
        "first/last",
        "per step",
        "‖U‖₂",
        "verdict",
        "sec",
    ];
    Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

fn pascanu(cell: CellKind, norm: f64) -> Option<String> {
    (cell == CellKind::Rnn).then(|| {
        if norm < 1.0 {
            format!("‖U‖₂ = {norm:.3} < 1/γ = 1 (tanh): the gradient through time must vanish (Pascanu et al. 2013, sufficient condition)")
        } else {
            format!("‖U‖₂ = {norm:.3} ≥ 1/γ = 1 (tanh): vanishing is not certain and exploding becomes possible (Pascanu et al. 2013)")
        }
    })
}

impl RecurrentLab {
    pub fn run(&self, on: &mut dyn FnMut(LabEvent)) -> Result<RecurrentOutcome, LabError> {
        crate::devices::select(&self.device)?;
        let device = crate::device();
        let steps = self.steps();
        let dir = super::next_run_dir(
            &self.project.join("recurrent"),
            &format!("{}{}", self.task, steps),
        );
        super::create_dir(&dir)?;
        let mut cells = Vec::new();
        let mut baseline = f64::NAN;
        let mut metric = "val";
        for (index, &cell) in self.cells.iter().enumerate() {
            let mut task = SeqTask::new(
                self.task,
                steps,
                self.train.batch,
                self.per_epoch,
                self.train.seed,
                &device,
            )?;
            baseline = task.baseline();
            metric = task.metric_name();
            let mut cfg = RecurrentConfig::new(cell, task.features(), self.hidden, task.outputs());
            cfg.forget_bias = self.forget_bias;
            cfg.recurrent_gain = self.recurrent_gain;
            cfg.seed = self.train.seed;
            let model = cfg.init(&device);
            let spectral_init = max_norm(&model);
            let cdir = dir.join(cell.name());
            let mut probe = Probe::new(self.probe.clone()).with_jsonl(&cdir.join("probe.jsonl"))?;
            let name = cell.name();
            let total = self.train.epochs
                * match self.task {
                    SeqTaskKind::Sunspots => {
                        (task.series.as_ref().map_or(0, |s| s.n)).div_ceil(self.train.batch)
                    }
                    _ => self.per_epoch,
                };
            on(LabEvent::Start {
                name,
                index,
                total: self.cells.len(),
                steps: total,
            });
            let t0 = Instant::now();
            let (model, history) = fit(model, &mut task, &self.train, &mut probe, &mut |p| {
                on(LabEvent::Step(p))
            })?;
            let seconds = t0.elapsed().as_secs_f64();
            on(LabEvent::Done { name, seconds });
            let records = probe.into_records();
            let spectral_end = max_norm(&model);
            let mut diagnosis = diagnose(&records).map(|mut d| {
                let changes = |p: &[(String, String)]| self.changed_by(p);
                let lr = self.train.lr;
                super::remedies::for_lab(
                    &mut d,
                    lr,
                    Some(steps),
                    changes,
                    super::remedies::as_words,
                );
                d
            });
            if let (Some(d), Some(p)) = (diagnosis.as_mut(), pascanu(cell, spectral_init)) {
                d.evidence.push(format!("at init: {p}"));
            }
            write_json(
                &cdir.join("run.json"),
                &serde_json::json!({
                    "cell": cell, "task": self.task, "T": steps, "hidden": self.hidden, "forget_bias": self.forget_bias,
                    "train": self.train, "history": history, "diagnosis": diagnosis,
                    "spectral_norm_init": spectral_init, "spectral_norm_end": spectral_end, "seconds": seconds,
                }),
            )?;
            cells.push(CellOutcome {
                cell,
                history,
                records,
                diagnosis,
                spectral_init,
                spectral_end,
                seconds,
            });
        }
        let out = RecurrentOutcome {
            dir: dir.clone(),
            report: dir.join("report.html"),
            baseline,
            metric,
            cells,
        };
        let names: Vec<String> = out.cells.iter().map(|c| c.cell.to_string()).collect();
        let views: Vec<RunView> = out
            .cells
            .iter()
            .zip(&names)
            .map(|(c, n)| RunView {
                name: n,
                settings: format!(
                    "cell={} task={} T={} hidden={} forget_bias={}",
                    c.cell, self.task, steps, self.hidden, self.forget_bias
                ),
                records: &c.records,
                history: &c.history,
                diagnosis: c.diagnosis.as_ref(),
            })
            .collect();
        let mut images = vec![
            ("curves.png", "Training loss and validation metric"),
            ("grad_norm.png", "Global gradient norm per step"),
        ];
        let baseline = format!(
            "baseline: {} ({})",
            self.task.trivial(),
            html::num(out.baseline)
        );
        let reference = plots::Reference {
            value: out.baseline,
            name: &baseline,
        };
        plots::curves(&views, &dir.join("curves.png"), out.metric, Some(reference))?;
        plots::grad_norm(&views, &dir.join("grad_norm.png"))?;
        if self.probe.enabled {
            plots::profile(
                &views,
                &dir.join("through_time.png"),
                "time step t",
                "log10 ‖∂L/∂h_t‖ through time",
            )?;
            images.insert(
                0,
                (
                    "through_time.png",
                    "Gradient reaching each time step, at init and at the end",
                ),
            );
        }
        let intro = format!(
            "A vanilla tanh RNN, an LSTM (forget-gate bias {}) and a GRU with {} hidden units trained on the {} task with sequences of {} steps; \
             the baseline is a trivial predictor ({}). first/last is ‖∂L/∂h‖ at the first time step ÷ at the last, at the end of training.",
            self.forget_bias, self.hidden, self.task, steps,
            self.task.trivial()
        );
        html::write(
            &out.report,
            "gradscope lab recurrent",
            &intro,
            &table(&out),
            &views,
            &images,
        )?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::{remedy::catalogue, Diagnosis, Verdict};

    /// Every remedy the recurrent lab prints is a set of its own keys that change its settings.
    #[test]
    fn every_remedy_pastes_back() {
        let lab = RecurrentLab::default();
        let mut d = Diagnosis::with_remedies(&[Verdict::Vanishing], catalogue());
        let words = super::super::remedies::as_words;
        super::super::remedies::for_lab(
            &mut d,
            lab.train.lr,
            Some(100),
            |p| lab.changed_by(p),
            words,
        );
        let switches: Vec<&str> = d.remedies.iter().map(|r| r.switch.as_str()).collect();
        for want in [
            "cells=lstm",
            "cells=gru",
            "T=50",
            "forget_bias=2",
            "lr=0.001",
        ] {
            assert!(switches.contains(&want), "{want} missing from {switches:?}");
        }
        for r in &d.remedies {
            let mut pasted = lab.clone();
            for w in r.switch.split_whitespace() {
                let (k, v) = w.split_once('=').unwrap();
                assert_eq!(pasted.set(k, v), Ok(true), "{}", r.switch);
            }
            assert_ne!(pasted, lab, "{} changes nothing", r.switch);
        }
    }
}
