//! Labs on deep MLPs, trained side by side on real data with the probe on:
//! `gradscope lab vanishing` (one deep network plain and with each remedy) and
//! `gradscope lab exploding` (a network whose gradients blow up, without clipping, clipped by
//! norm and clipped by value).

use std::path::PathBuf;
use std::time::Instant;

use super::settings::{Settings, KEYS};
use super::write_json;
use crate::activation::Activation;
use crate::data::{self, DataError, Dataset};
use crate::diagnose::{diagnose, Diagnosis};
use crate::nn::init::Init;
use crate::nn::mlp::MlpConfig;
use crate::probe::{Probe, ProbeConfig, ProbeError, StepRecord};
use crate::report::html::{self, Table};
use crate::report::{plots, ReportError, RunView};
use crate::train::{train_classifier_watched, History, Progress, TrainConfig, TrainError};

#[derive(Clone, Debug, PartialEq)]
pub enum DataSource {
    /// The embedded sklearn digits (1797 × 8×8).
    Digits,
    /// Fashion-MNIST from an IDX folder; `limit` samples of the training part (0 = all).
    Fashion { dir: PathBuf, limit: usize },
}

impl DataSource {
    /// The data keys every MLP lab takes (`data`, `data_dir`, `limit`).
    pub const KEYS: [(&'static str, &'static str); 3] = [
        ("data", "digits | fashion"),
        (
            "data_dir",
            "folder with Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist)",
        ),
        (
            "limit",
            "fashion: number of training images to use, 0 = all 60000 (default 10000)",
        ),
    ];

    /// Applies `data=`, `data_dir=` or `limit=`. `Ok(false)`: another key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "data" => {
                *self = match v {
                    "digits" => DataSource::Digits,
                    "fashion" => DataSource::Fashion {
                        dir: data::idx::FASHION_DIR.into(),
                        limit: 10_000,
                    },
                    _ => return Err(format!("data={v}: expected digits or fashion")),
                }
            }
            "data_dir" | "limit" => {
                let DataSource::Fashion { dir, limit } = self else {
                    return Err(format!(
                        "{key}= applies to data=fashion; put data=fashion before it"
                    ));
                };
                if key == "data_dir" {
                    *dir = PathBuf::from(v);
                } else {
                    *limit = v
                        .parse()
                        .map_err(|_| format!("limit={v}: expected a whole number ≥ 0"))?;
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The samples.
    pub fn load(&self) -> Result<Dataset, DataError> {
        match self {
            DataSource::Digits => data::digits::load(),
            DataSource::Fashion { dir, limit } => {
                let d = data::idx::load_dir(dir, "fashion-mnist")?;
                Ok(if *limit > 0 { d.take(*limit) } else { d })
            }
        }
    }
}

/// Lab-level keys (besides the model/training keys of [`KEYS`]).
pub const LAB_KEYS: &[(&str, &str)] = &[
    DataSource::KEYS[0],
    DataSource::KEYS[1],
    DataSource::KEYS[2],
    (
        "val",
        "fraction held out for validation, in (0, 1) (default 0.2)",
    ),
    ("probe", "true | false"),
    ("probe_every", "probe every k-th step, ≥ 1 (default 5)"),
    (
        "dead_window",
        "batches a ReLU unit must stay off to count as dead (default 8)",
    ),
    (
        "add",
        "an extra variant, e.g. add=act=gelu,init=he (repeatable; name=… sets its name)",
    ),
    (
        "only",
        "run only these default variants, comma-separated names",
    ),
    ("project", "folder for run outputs (default runs)"),
    super::DEVICE_KEY,
];

#[derive(Clone, Debug)]
pub struct Variant {
    pub name: String,
    pub settings: Settings,
}

#[derive(Clone, Debug)]
pub struct MlpLab {
    /// `vanishing` or `exploding`: the run folder and the report title.
    pub kind: &'static str,
    pub data: DataSource,
    pub base: Settings,
    /// Overrides per default variant; `add=` appends to `extra`.
    pub defaults: Vec<(String, Vec<(String, String)>)>,
    pub extra: Vec<(String, Vec<(String, String)>)>,
    /// Model and training keys given for every variant (checked against the variants' own).
    pub globals: Vec<(String, String)>,
    pub only: Option<Vec<String>>,
    pub val_frac: f64,
    pub probe: ProbeConfig,
    /// `device=`: where the variants train.
    pub device: crate::devices::DeviceSpec,
    pub project: PathBuf,
}

fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for MlpLab {
    fn default() -> Self {
        MlpLab::vanishing()
    }
}

impl MlpLab {
    /// The same deep network plain and with each remedy.
    pub fn vanishing() -> Self {
        let mut model = MlpConfig::new(0, 0);
        model.depth = 20;
        model.width = 128;
        let train = TrainConfig {
            epochs: 30,
            ..TrainConfig::default()
        };
        MlpLab {
            kind: "vanishing",
            data: DataSource::Digits,
            base: Settings { model, train },
            defaults: vec![
                (
                    "sigmoid".into(),
                    kv(&[("act", "sigmoid"), ("init", "default")]),
                ),
                ("tanh".into(), kv(&[("act", "tanh"), ("init", "default")])),
                ("relu+he".into(), kv(&[("act", "relu"), ("init", "he")])),
                (
                    "silu+he+batchnorm".into(),
                    kv(&[("act", "silu"), ("init", "he"), ("norm", "batch")]),
                ),
                (
                    "silu+he+residual".into(),
                    kv(&[
                        ("act", "silu"),
                        ("init", "he"),
                        ("residual", "true"),
                        ("zero_init", "true"),
                    ]),
                ),
            ],
            extra: Vec::new(),
            globals: Vec::new(),
            only: None,
            val_frac: 0.2,
            probe: ProbeConfig {
                enabled: true,
                every: 5,
                dead_window: 8,
            },
            device: crate::devices::DeviceSpec::Cpu,
            project: PathBuf::from("runs"),
        }
    }

    /// A deep ReLU network whose weights start 1.3× larger than He init: every layer multiplies
    /// the gradient by ≈1.3 on its way back (≈1.3¹⁹ ≈ 150 over 19 layers, more once training
    /// moves), so the first SGD steps are huge and the loss turns NaN within a few steps. Trained
    /// without clipping (NaN recovery on), clipped by global norm at 1, clipped by norm at the
    /// automatic threshold (5 × the running median norm), and clipped by value at 0.01.
    pub fn exploding() -> Self {
        let mut lab = MlpLab::vanishing();
        lab.kind = "exploding";
        let m = &mut lab.base.model;
        m.act = Activation::Relu;
        m.init = Init::He;
        m.gain = EXPLODING_GAIN;
        lab.base.train.lr = 0.01;
        lab.base.train.epochs = 20;
        lab.defaults = vec![
            ("no-clipping".into(), Vec::new()),
            ("clip_norm=1".into(), kv(&[("clip_norm", "1")])),
            ("clip_norm=auto".into(), kv(&[("clip_norm", "auto")])),
            ("clip_value=0.01".into(), kv(&[("clip_value", "0.01")])),
        ];
        lab.probe.every = 1;
        lab
    }
}

/// The exploding lab's init gain on top of He init.
pub const EXPLODING_GAIN: f64 = 1.3;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Data(#[from] DataError),
    #[error(transparent)]
    Probe(#[from] ProbeError),
    #[error(transparent)]
    Train(#[from] TrainError),
    #[error(transparent)]
    Report(#[from] ReportError),
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Device(#[from] crate::devices::Unusable),
}

/// Name for an `add=` variant from its settings: `act=gelu,init=he,norm=layer` → `gelu+he+layernorm`.
fn variant_name(pairs: &[(String, String)]) -> String {
    if let Some((_, n)) = pairs.iter().find(|(k, _)| k == "name") {
        return n.clone();
    }
    let parts: Vec<String> = pairs
        .iter()
        .map(|(k, v)| match (k.as_str(), v.as_str()) {
            ("act" | "init" | "optimizer", _) => v.clone(),
            ("norm", _) => format!("{v}norm"),
            ("residual", "true") => "residual".into(),
            ("zero_init", "true") => "zero-init".into(),
            _ => format!("{k}{v}"),
        })
        .collect();
    if parts.is_empty() {
        "base".into()
    } else {
        parts.join("+")
    }
}

impl MlpLab {
    /// Applies a `key=value` argument. `Ok(false)`: unknown key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "device" => self.device = super::lab_device(v)?,
            "data" | "data_dir" | "limit" => {
                self.data.set(key, v)?;
            }
            "val" => match v.parse::<f64>() {
                Ok(f) if f > 0.0 && f < 1.0 => self.val_frac = f,
                _ => return Err(format!("val={v}: expected a fraction between 0 and 1")),
            },
            "probe" => {
                self.probe.enabled = match v {
                    "true" => true,
                    "false" => false,
                    _ => return Err(format!("probe={v}: expected true or false")),
                }
            }
            "probe_every" | "dead_window" => {
                let n = v.parse::<usize>().ok().filter(|&n| n >= 1);
                let n = n.ok_or_else(|| format!("{key}={v}: expected a whole number ≥ 1"))?;
                if key == "probe_every" {
                    self.probe.every = n;
                } else {
                    self.probe.dead_window = n;
                }
            }
            "add" => {
                let mut pairs = Vec::new();
                let mut check = self.base.clone();
                for item in v.split(',').filter(|s| !s.is_empty()) {
                    let (k, val) = item.split_once('=').ok_or_else(|| {
                        format!(
                            "add={v}: '{item}' is not key=value (example: add=act=gelu,init=he)"
                        )
                    })?;
                    if k != "name" && !check.set(k, val).map_err(|e| format!("add={v}: {e}"))? {
                        let keys: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                        return Err(format!(
                            "add={v}: unknown key '{k}'; accepted: name, {}",
                            keys.join(", ")
                        ));
                    }
                    pairs.push((k.to_string(), val.to_string()));
                }
                self.extra.push((variant_name(&pairs), pairs));
            }
            "only" => {
                let names: Vec<String> = v.split(',').map(str::to_string).collect();
                for n in &names {
                    if !self.defaults.iter().any(|(d, _)| d == n) {
                        let all: Vec<&str> =
                            self.defaults.iter().map(|(d, _)| d.as_str()).collect();
                        return Err(format!(
                            "only={v}: no default variant '{n}'; the defaults are {}",
                            all.join(", ")
                        ));
                    }
                }
                self.only = Some(names);
            }
            "project" => self.project = PathBuf::from(v),
            _ => {
                let known = self.base.set(key, v)?;
                if known {
                    self.globals.retain(|(k, _)| k != key);
                    self.globals.push((key.to_string(), v.to_string()));
                }
                return Ok(known);
            }
        }
        Ok(true)
    }

    /// A warning for every global key that a chosen variant overrides with its own value (a
    /// variant's own settings win), saying how to run the setting instead.
    pub fn overridden(&self) -> Vec<String> {
        let chosen = self
            .defaults
            .iter()
            .filter(|(n, _)| self.only.as_ref().is_none_or(|o| o.contains(n)));
        let mut out = Vec::new();
        for (name, pairs) in chosen {
            for (k, v) in &self.globals {
                if let Some((_, own)) = pairs.iter().find(|(pk, pv)| pk == k && pv != v) {
                    out.push(format!(
                        "{k}={v} does not apply to variant '{name}', which sets {k}={own} itself; to train with {k}={v}, add a variant: add={k}={v}"
                    ));
                }
            }
        }
        out
    }

    /// The variants to run, each with its full settings.
    pub fn variants(&self) -> Vec<Variant> {
        let chosen = self
            .defaults
            .iter()
            .filter(|(n, _)| self.only.as_ref().is_none_or(|o| o.contains(n)))
            .chain(self.extra.iter());
        chosen
            .map(|(name, pairs)| {
                let mut settings = self.base.clone();
                for (k, v) in pairs {
                    if k != "name" {
                        // validated when the variant was defined
                        let _ = settings.set(k, v);
                    }
                }
                Variant {
                    name: name.clone(),
                    settings,
                }
            })
            .collect()
    }
}

/// What the lab reports while it runs.
pub enum LabEvent<'a> {
    Start {
        name: &'a str,
        index: usize,
        total: usize,
        steps: usize,
    },
    Step(&'a Progress),
    Done {
        name: &'a str,
        seconds: f64,
    },
}

pub struct VariantOutcome {
    pub name: String,
    pub settings: Settings,
    pub history: History,
    pub records: Vec<StepRecord>,
    pub diagnosis: Option<Diagnosis>,
    pub seconds: f64,
    pub dir: PathBuf,
}

impl VariantOutcome {
    /// verdict of the diagnosis, or why there is none
    pub fn verdict(&self) -> String {
        match (&self.diagnosis, &self.history.stopped) {
            (Some(d), _) => d.verdict.to_string(),
            (None, Some(_)) => "stopped".into(),
            (None, None) => "not probed".into(),
        }
    }
}

/// The comparison table of a vanishing lab.
pub fn table(variants: &[VariantOutcome]) -> Table {
    let rows = variants
        .iter()
        .map(|v| {
            let last = v.history.epochs.last();
            vec![
                v.name.clone(),
                html::num(last.map_or(f64::NAN, |e| e.train_loss)),
                format!("{:.3}", last.map_or(f64::NAN, |e| e.val_metric)),
                format!(
                    "{:.2e}",
                    v.diagnosis.as_ref().map_or(f64::NAN, |d| d.first_last_end)
                ),
                v.verdict(),
                v.history.recoveries.len().to_string(),
                format!("{:.1}", v.seconds),
            ]
        })
        .collect();
    let columns = [
        "variant",
        "train loss",
        "val acc",
        "first/last",
        "verdict",
        "NaN recoveries",
        "sec",
    ];
    Table {
        columns: columns.iter().map(|c| c.to_string()).collect(),
        rows,
    }
}

pub struct LabOutcome {
    pub dir: PathBuf,
    pub report: PathBuf,
    pub data: String,
    pub variants: Vec<VariantOutcome>,
}

/// The accuracy of always predicting the most common class of `labels`: what a net that learnt
/// nothing scores.
pub(crate) fn majority_share(labels: &[usize], classes: usize) -> f64 {
    let mut counts = vec![0usize; classes.max(1)];
    for &y in labels {
        if let Some(c) = counts.get_mut(y) {
            *c += 1;
        }
    }
    *counts.iter().max().unwrap_or(&0) as f64 / labels.len().max(1) as f64
}

/// Where a lab's variants train: the data, the probe, the lab's folder.
pub struct Bench<'a> {
    /// The whole set (its name, features and classes size the model).
    pub all: &'a Dataset,
    pub train: &'a Dataset,
    pub val: &'a Dataset,
    pub probe: &'a ProbeConfig,
    /// The lab's folder; each variant writes into `<dir>/<variant name>`.
    pub dir: &'a std::path::Path,
}

impl Bench<'_> {
    /// Trains variant `index` of `total` with the probe on, shows `watch` the model with the
    /// number of epochs done (0: at init, then after every epoch), diagnoses it (remedies as
    /// `add=` variants) and writes its `run.json` and `probe.jsonl`.
    pub fn train(
        &self,
        v: &Variant,
        (index, total): (usize, usize),
        on: &mut dyn FnMut(LabEvent),
        watch: &mut dyn FnMut(usize, &crate::nn::mlp::Mlp),
    ) -> Result<VariantOutcome, LabError> {
        let device = crate::device();
        let mut model_cfg = v.settings.model.clone();
        model_cfg.input = self.all.features;
        model_cfg.classes = self.all.classes;
        let vdir = self.dir.join(&v.name);
        let mut probe = Probe::new(self.probe.clone()).with_jsonl(&vdir.join("probe.jsonl"))?;
        let steps = self.train.len().div_ceil(v.settings.train.batch) * v.settings.train.epochs;
        on(LabEvent::Start {
            name: &v.name,
            index,
            total,
            steps,
        });
        let t0 = Instant::now();
        let model = model_cfg.init(&device);
        watch(0, &model);
        let (_, history) = train_classifier_watched(
            model,
            self.train,
            self.val,
            &v.settings.train,
            &mut probe,
            &device,
            &mut |p| on(LabEvent::Step(p)),
            &mut |epoch, m| watch(epoch + 1, m),
        )?;
        let seconds = t0.elapsed().as_secs_f64();
        on(LabEvent::Done {
            name: &v.name,
            seconds,
        });
        let records = probe.into_records();
        // remedies as variants this lab runs when pasted (`add=act=relu,init=he`)
        let diagnosis = diagnose(&records).map(|mut d| {
            let changes = |p: &[(String, String)]| v.settings.changed_by(p);
            let lr = v.settings.train.lr;
            super::remedies::for_lab(&mut d, lr, None, changes, super::remedies::as_variant);
            d
        });
        let out = VariantOutcome {
            name: v.name.clone(),
            settings: v.settings.clone(),
            history,
            records,
            diagnosis,
            seconds,
            dir: vdir,
        };
        out.write_run_json(&self.all.name)?;
        Ok(out)
    }

    /// Trains every variant in turn (nothing watched).
    pub fn train_all(
        &self,
        variants: &[Variant],
        on: &mut dyn FnMut(LabEvent),
    ) -> Result<Vec<VariantOutcome>, LabError> {
        let total = variants.len();
        let mut out = Vec::with_capacity(total);
        for (index, v) in variants.iter().enumerate() {
            out.push(self.train(v, (index, total), on, &mut |_, _| {})?);
        }
        Ok(out)
    }
}

impl VariantOutcome {
    /// Writes `<dir>/run.json`: name, settings, data, history, diagnosis, seconds (again after a
    /// lab adds to the diagnosis).
    pub fn write_run_json(&self, data: &str) -> Result<(), LabError> {
        write_json(
            &self.dir.join("run.json"),
            &serde_json::json!({
                "name": self.name, "settings": self.settings.describe(), "data": data,
                "history": self.history, "diagnosis": self.diagnosis, "seconds": self.seconds,
            }),
        )
    }
}

/// Each outcome as the report sees it.
pub fn views(outcomes: &[VariantOutcome]) -> Vec<RunView<'_>> {
    outcomes
        .iter()
        .map(|o| RunView {
            name: &o.name,
            settings: o.settings.describe(),
            records: &o.records,
            history: &o.history,
            diagnosis: o.diagnosis.as_ref(),
        })
        .collect()
}

impl MlpLab {
    pub fn run(&self, on: &mut dyn FnMut(LabEvent)) -> Result<LabOutcome, LabError> {
        crate::devices::select(&self.device)?;
        let all = self.data.load()?;
        let (train, val) = data::prepare(&all, self.val_frac, 0);
        let dir = super::next_run_dir(&self.project.join(self.kind), "lab");
        super::create_dir(&dir)?;
        let bench = Bench {
            all: &all,
            train: &train,
            val: &val,
            probe: &self.probe,
            dir: &dir,
        };
        let outcomes = bench.train_all(&self.variants(), on)?;
        let views = views(&outcomes);
        let mut images = Vec::new();
        if self.probe.enabled {
            plots::heatmap(&views, &dir.join("heatmap.png"))?;
            plots::layer_bars(&views, &dir.join("layers.png"))?;
            images.push(("heatmap.png", "Gradient reaching each layer over training"));
            images.push(("layers.png", "Gradient per layer at init and at the end"));
        }
        let majority = majority_share(&val.y, all.classes);
        let chance = format!("always the most common class ({majority:.3})");
        let reference = plots::Reference {
            value: majority,
            name: &chance,
        };
        plots::curves(
            &views,
            &dir.join("curves.png"),
            "validation accuracy",
            Some(reference),
        )?;
        plots::grad_norm(&views, &dir.join("grad_norm.png"))?;
        images.insert(0, ("curves.png", "Loss and validation accuracy"));
        images.insert(1, ("grad_norm.png", "Global gradient norm per step"));
        let report = dir.join("report.html");
        let intro = format!(
            "The same {}-layer network (width {}) trained on {} ({} train / {} val samples) with each remedy. \
             ‖∂L/∂h‖ first/last is the gradient norm at the first hidden layer's output divided by that at the last hidden layer's, at the end of training.",
            self.base.model.depth, self.base.model.width, all.name, train.len(), val.len()
        );
        html::write(
            &report,
            &format!("gradscope lab {}", self.kind),
            &intro,
            &table(&outcomes),
            &views,
            &images,
        )?;
        Ok(LabOutcome {
            dir,
            report,
            data: all.name.clone(),
            variants: outcomes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_variants_are_validated_and_named() {
        let mut lab = MlpLab::default();
        assert_eq!(lab.set("add", "act=gelu,init=he,norm=layer"), Ok(true));
        assert_eq!(lab.variants().last().unwrap().name, "gelu+he+layernorm");
        assert!(lab.set("add", "act=foo").unwrap_err().contains("act=foo"));
        assert!(lab
            .set("add", "colour=red")
            .unwrap_err()
            .contains("unknown key 'colour'"));
        assert!(lab.set("only", "nope").unwrap_err().contains("sigmoid"));
        assert_eq!(lab.set("depth", "8"), Ok(true));
        assert!(lab.variants().iter().all(|v| v.settings.model.depth == 8));
        assert_eq!(lab.set("frobnicate", "1"), Ok(false));
    }

    /// Every remedy an MLP lab prints, pasted after `gradscope lab vanishing`, adds a variant
    /// whose settings differ from the run's.
    #[test]
    fn every_remedy_pastes_back_as_a_variant() {
        use crate::diagnose::{remedy::catalogue, Diagnosis, Verdict};
        let all = catalogue();
        assert!(all.len() >= 15, "{all:?}");
        let lab = MlpLab::vanishing();
        // the remedies of the sigmoid variant's diagnosis
        let base = lab.variants()[0].settings.clone();
        let mut d = Diagnosis::with_remedies(&[Verdict::Vanishing], all);
        let variant = super::super::remedies::as_variant;
        super::super::remedies::for_lab(
            &mut d,
            base.train.lr,
            None,
            |p| base.changed_by(p),
            variant,
        );
        assert!(d.remedies.len() >= 10, "{:?}", d.remedies);
        for r in &d.remedies {
            let (k, v) = r.switch.split_once('=').unwrap();
            assert_eq!(k, "add", "{}", r.switch);
            let mut pasted = lab.clone();
            assert_eq!(pasted.set(k, v), Ok(true), "{}", r.switch);
            let added = pasted.variants().pop().unwrap();
            assert_ne!(added.settings, base, "{} changes nothing", r.switch);
        }
    }
}
