//! The gradient probe: measure, per layer and per step, how the gradient flows.
//!
//! Usage inside a training loop (the [`crate::prelude`] documentation has a compiled example,
//! `examples/probe_your_model.rs` a whole loop, [`crate::train`] the labs' loop):
//! ```text
//! let mut tap = probe.tap(step);                 // on or off for this step
//! let loss = loss_fn(model.forward(x, &mut tap));
//! let grads = loss.backward();
//! let pending = probe.after_backward(step, epoch, loss, tap, &model, &grads);
//! model = optimizer.step(lr, model, grads_params);
//! probe.after_step(pending, &model, lr)?;             // update ratios, JSONL line
//! ```

pub mod history;
pub mod params;
pub mod producer;
pub mod record;
pub mod stats;
pub mod tap;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Gradients, Tensor};

pub use history::History;
pub use record::{LayerRecord, NonFinite, ParamRecord, Phase, StepRecord};
pub use tap::{Fault, Kept, Tap, Tapped};

use params::{diff_norm, norm_sq, snapshot_with, Measured, ParamSnapshot};

#[derive(Clone, Debug, PartialEq)]
pub struct ProbeConfig {
    /// `probe=false`: no taps, no statistics, no file.
    pub enabled: bool,
    /// Probe every k-th step (step 0 is always probed).
    pub every: usize,
    /// Number of probed batches over which a unit must stay at ≤ 0 to count as dead.
    pub dead_window: usize,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            enabled: true,
            every: 1,
            dead_window: 8,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("cannot write probe records to {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read probe records from {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}, line {line}: not a probe record: {msg}")]
    Parse {
        path: PathBuf,
        line: usize,
        msg: String,
    },
}

/// Measurements taken between backward and the optimizer step.
pub struct Pending {
    record: StepRecord,
    /// The trainable parameters as the backward left them (empty with [`Reads::Taps`]: the
    /// update pass reports them).
    before: Vec<ParamSnapshot>,
    /// index in `record.layers` for each entry of `before` (None: not under any probe point)
    owner: Vec<Option<usize>>,
    /// What was read at the backward; the rest comes from the update pass (`after_update`) or,
    /// for the weights, is read in `after_step`.
    reads: Reads,
    /// The layers whose dead-unit window this step added to (undone by [`Probe::discard`]).
    windowed: Vec<String>,
}

impl Pending {
    /// Whether only the taps were read at the backward ([`Probe::after_backward_for_update`]):
    /// the parameters, their gradient norms and non-finite counts included, come from the
    /// update pass, so a step that fails before it has none of them.
    pub(crate) fn taps_only(&self) -> bool {
        self.reads == Reads::Taps
    }

    /// The parameters' and layers' weight norms from ‖W‖² of each entry of `before`.
    fn set_weights(&mut self, sq: &[f64]) {
        self.spread(sq, |p, n| p.norm = n, |l, n| l.w_norm = n);
    }

    /// Hands each parameter the norm of its square `sq` (`param`) and each layer the norm of
    /// the sum over its parameters (`layer`); returns the sum over all.
    fn spread(
        &mut self,
        sq: &[f64],
        param: fn(&mut ParamRecord, f64),
        layer: fn(&mut LayerRecord, f64),
    ) -> f64 {
        let record = &mut self.record;
        let mut layer_sq = vec![0f64; record.layers.len()];
        let mut total = 0f64;
        for ((p, o), &sq) in self.before.iter().zip(&self.owner).zip(sq) {
            total += sq;
            if let Some(li) = o {
                layer_sq[*li] += sq;
            }
            if let Some(pr) = param_record(record, p, *o) {
                param(pr, sq.sqrt());
            }
        }
        for (l, sq) in record.layers.iter_mut().zip(layer_sq) {
            layer(l, sq.sqrt());
        }
        total
    }

    /// Update ratios ‖ΔW‖/‖W‖ per parameter and per layer from ‖ΔW‖ of each entry of `before`
    /// (`None`: the parameter was not updated).
    fn set_updates(&mut self, delta: &[Option<f64>]) {
        let record = &mut self.record;
        let mut layer_delta = vec![0f64; record.layers.len()];
        for ((p, o), d) in self.before.iter().zip(&self.owner).zip(delta) {
            let Some(d) = *d else {
                continue;
            };
            if let Some(li) = o {
                layer_delta[*li] += d * d;
            }
            if let Some(pr) = param_record(record, p, *o) {
                pr.update_ratio = d / pr.norm.max(f64::MIN_POSITIVE);
            }
        }
        for (l, d2) in record.layers.iter_mut().zip(layer_delta) {
            if !l.params.is_empty() {
                l.update_ratio = d2.sqrt() / l.w_norm.max(f64::MIN_POSITIVE);
            }
        }
    }

    /// The parameter records, and the layers' and the step's norms, from an update pass that
    /// reported every trainable parameter ([`Reads::Taps`]): the same sums, in the same order,
    /// as [`set_weights`](Self::set_weights) and [`set_updates`](Self::set_updates) make from a
    /// walk of the model.
    fn take_measured(&mut self, measured: &[Measured]) {
        let record = &mut self.record;
        let owner: Vec<Option<usize>> = {
            let names: Vec<&str> = record.layers.iter().map(|l| l.name.as_str()).collect();
            measured.iter().map(|m| owner_of(&m.path, &names)).collect()
        };
        let n = record.layers.len();
        let (mut g_sq, mut w_sq, mut d_sq) = (vec![0f64; n], vec![0f64; n], vec![0f64; n]);
        let mut total = 0f64;
        for (m, o) in measured.iter().zip(owner) {
            let g = m.g_sq.unwrap_or(0.0);
            let norm = m.w_sq.sqrt();
            let delta = m.delta();
            total += g;
            let (name, list) = match o {
                Some(li) => {
                    g_sq[li] += g;
                    w_sq[li] += m.w_sq;
                    d_sq[li] += delta * delta;
                    let l = &mut record.layers[li];
                    (m.path[l.name.len() + 1..].to_string(), &mut l.params)
                }
                None => (m.path.clone(), &mut record.other_params),
            };
            list.push(ParamRecord {
                name,
                shape: m.shape.clone(),
                grad_norm: g.sqrt(),
                norm,
                update_ratio: delta / norm.max(f64::MIN_POSITIVE),
                grad_nan: 0,
                grad_inf: 0,
            });
        }
        for (i, l) in record.layers.iter_mut().enumerate() {
            l.grad_w_norm = g_sq[i].sqrt();
            l.w_norm = w_sq[i].sqrt();
            if !l.params.is_empty() {
                l.update_ratio = d_sq[i].sqrt() / l.w_norm.max(f64::MIN_POSITIVE);
            }
        }
        record.grad_norm = total.sqrt();
    }
}

/// What [`Probe`] reads right after a backward; the rest comes from the update pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reads {
    /// The taps, the parameters' gradient norms and their weights.
    All,
    /// The taps and the gradient norms (the weights from the update pass).
    Gradients,
    /// The taps only (gradient and weight norms from the update pass).
    Taps,
}

/// The record of parameter `p` (in its layer `owner`, or among the other parameters).
fn param_record<'a>(
    record: &'a mut StepRecord,
    p: &ParamSnapshot,
    owner: Option<usize>,
) -> Option<&'a mut ParamRecord> {
    match owner {
        Some(li) => {
            let l = &mut record.layers[li];
            let name = &p.path[l.name.len() + 1..];
            l.params.iter_mut().find(|r| r.name == name)
        }
        None => record.other_params.iter_mut().find(|r| r.name == p.path),
    }
}

pub struct Probe {
    pub config: ProbeConfig,
    /// What the diagnosis and the plots read: every record of a short run, an evenly thinned
    /// sample of a long one (`probe.jsonl` has them all).
    records: History,
    writer: Option<(PathBuf, BufWriter<File>)>,
    windows: HashMap<String, VecDeque<Vec<bool>>>,
    faults: Vec<(usize, Fault)>,
}

impl Probe {
    pub fn new(config: ProbeConfig) -> Self {
        Probe {
            config,
            records: History::default(),
            writer: None,
            windows: HashMap::new(),
            faults: Vec::new(),
        }
    }

    /// Also stream every record to `path` as JSON lines.
    pub fn with_jsonl(self, path: &Path) -> Result<Self, ProbeError> {
        self.with_jsonl_mode(path, false)
    }

    /// Streams records to `path`, after what it holds when `append` (a resumed run).
    pub fn with_jsonl_mode(mut self, path: &Path, append: bool) -> Result<Self, ProbeError> {
        if self.config.enabled {
            let io = |source| ProbeError::Io {
                path: path.to_path_buf(),
                source,
            };
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let f = if append {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io)?
            } else {
                File::create(path).map_err(io)?
            };
            self.writer = Some((path.to_path_buf(), BufWriter::new(f)));
        }
        Ok(self)
    }

    /// Streams records to `path` for a run resumed at optimizer step `step`: the records of
    /// earlier steps are kept (and read back, for the diagnosis), those of `step` and later
    /// (written after the state the run resumes from) are cut away first, so a resumed run's file
    /// holds each step once.
    pub fn with_jsonl_resumed(mut self, path: &Path, step: usize) -> Result<Self, ProbeError> {
        if self.config.enabled && path.is_file() {
            let io = |source| ProbeError::Io {
                path: path.to_path_buf(),
                source,
            };
            // streamed, line by line: the file of a long run is larger than memory
            let file = BufReader::new(File::open(path).map_err(io)?);
            let records = &mut self.records;
            crate::atomic::write_with(path, |out| {
                for line in file.lines() {
                    let line = line?;
                    // a line cut short by a crash is not a record
                    let Ok(r) = serde_json::from_str::<StepRecord>(&line) else {
                        continue;
                    };
                    // each step once, in order (a step recorded twice keeps its first record)
                    if r.step >= step || records.last().is_some_and(|last| last.step >= r.step) {
                        continue;
                    }
                    out.write_all(line.as_bytes())?;
                    out.write_all(b"\n")?;
                    records.push(r);
                }
                Ok(())
            })
            .map_err(io)?;
        }
        self.with_jsonl_mode(path, true)
    }

    /// The per-layer windows of which units were active on the last `dead_window` probed steps
    /// and the one before (each step a string of `0`/`1`), the state behind `dead_frac`: a
    /// resumed run restores them with [`restore_dead_windows`](Self::restore_dead_windows) to
    /// measure exactly as before.
    pub fn dead_windows(&self) -> BTreeMap<String, Vec<String>> {
        self.windows
            .iter()
            .map(|(layer, q)| {
                let steps = q
                    .iter()
                    .map(|a| a.iter().map(|&on| if on { '1' } else { '0' }).collect())
                    .collect();
                (layer.clone(), steps)
            })
            .collect()
    }

    /// Puts back windows saved by [`dead_windows`](Self::dead_windows).
    pub fn restore_dead_windows(&mut self, w: &BTreeMap<String, Vec<String>>) {
        self.windows = w
            .iter()
            .map(|(layer, steps)| {
                let q = steps
                    .iter()
                    .map(|s| s.chars().map(|c| c == '1').collect())
                    .collect();
                (layer.clone(), q)
            })
            .collect();
    }

    pub fn should_probe(&self, step: usize) -> bool {
        self.config.enabled && step.is_multiple_of(self.config.every.max(1))
    }

    /// Schedules a deliberate fault at `step` (applied whether or not that step is probed):
    /// for testing localisation and recovery.
    pub fn inject(mut self, step: usize, fault: Fault) -> Self {
        self.faults.push((step, fault));
        self
    }

    /// A recording tap for `step` whatever the sampling (with the step's scheduled fault), to
    /// replay a step that went wrong and localise it.
    pub fn replay_tap(&self, step: usize) -> Tap {
        Tap::on().with_fault(self.fault_at(step))
    }

    fn fault_at(&self, step: usize) -> Option<Fault> {
        self.faults
            .iter()
            .find(|(s, _)| *s == step)
            .map(|(_, f)| f.clone())
    }

    /// The tap to run this step's forward pass with.
    pub fn tap(&self, step: usize) -> Tap {
        let tap = if self.should_probe(step) {
            Tap::on()
        } else {
            Tap::off()
        };
        tap.with_fault(self.fault_at(step))
    }

    /// The records the probe remembers (all of a run with at most
    /// [`History::DEFAULT_CAP`] probed steps, an even sample of a longer one), in step order.
    pub fn records(&self) -> &[StepRecord] {
        self.records.records()
    }

    /// What the probe remembers of the run.
    pub fn history(&self) -> &History {
        &self.records
    }

    pub fn into_records(self) -> Vec<StepRecord> {
        self.records.into_records()
    }

    /// Reads the taps and the parameter gradients and weights. Returns `None` when the tap did
    /// not record.
    pub fn after_backward<M: Module>(
        &mut self,
        step: usize,
        epoch: usize,
        loss: f64,
        tap: Tap,
        model: &M,
        grads: &Gradients,
    ) -> Option<Pending> {
        self.read_backward(step, epoch, loss, tap, model, grads, Reads::All)
    }

    /// [`after_backward`](Self::after_backward) that reads the taps and the gradient norms of
    /// this backward but leaves the weights to an optimizer that measures them in its own update
    /// pass ([`crate::detect::optimize::optimizer::GroupOptimizer::apply_measured`]):
    /// [`after_update`](Self::after_update) then adds ‖W‖ and the update ratios, keeping these
    /// gradient norms (with gradient accumulation, the update pass sees the accumulated
    /// gradient; the record is of this backward's). A pending record that goes to
    /// [`after_step`](Self::after_step) instead reads the weights there.
    pub fn after_backward_grads<M: Module>(
        &mut self,
        step: usize,
        epoch: usize,
        loss: f64,
        tap: Tap,
        model: &M,
        grads: &Gradients,
    ) -> Option<Pending> {
        self.read_backward(step, epoch, loss, tap, model, grads, Reads::Gradients)
    }

    /// [`after_backward`](Self::after_backward) for an optimizer that measures the parameters
    /// in its own update pass ([`crate::train::Optimizer::step_measured`] with `weights`, which
    /// reports every trainable parameter): reads the taps only, without walking the model;
    /// [`after_update`](Self::after_update) adds the parameters with the gradient and weight
    /// norms the update measured. (Until then there are none. A step whose gradient is not
    /// finite is replayed with [`after_backward`](Self::after_backward) to localise it. Given to
    /// [`after_step`](Self::after_step) instead, the record gets the parameters as they are
    /// after the step, with no gradient norms or update ratios.)
    pub fn after_backward_for_update<M: Module>(
        &mut self,
        step: usize,
        epoch: usize,
        loss: f64,
        tap: Tap,
        model: &M,
        grads: &Gradients,
    ) -> Option<Pending> {
        self.read_backward(step, epoch, loss, tap, model, grads, Reads::Taps)
    }

    #[allow(clippy::too_many_arguments)]
    fn read_backward<M: Module>(
        &mut self,
        step: usize,
        epoch: usize,
        loss: f64,
        tap: Tap,
        model: &M,
        grads: &Gradients,
        reads: Reads,
    ) -> Option<Pending> {
        if !tap.is_recording() {
            return None;
        }
        let weights = reads == Reads::All;
        let input_nonfinite = tap.input_nonfinite();
        let tapped = tap.finish(grads);
        let before = match reads {
            Reads::Taps => Vec::new(),
            _ => snapshot_with(model, Some(grads), weights),
        };
        let names: Vec<&str> = tapped.iter().map(|t| t.name.as_str()).collect();
        let owner: Vec<Option<usize>> = before.iter().map(|p| owner_of(&p.path, &names)).collect();

        let mut layers: Vec<LayerRecord> = Vec::with_capacity(tapped.len());
        let windowed = tapped
            .iter()
            .filter(|t| t.active.is_some())
            .map(|t| t.name.clone())
            .collect();
        for t in tapped {
            let dead_frac = t.active.map(|a| self.dead_fraction(&t.name, a));
            let mut act = t.act;
            act.dead_frac = dead_frac;
            layers.push(LayerRecord {
                name: t.name,
                block: t.block,
                act_fn: t.act_fn,
                act,
                grad_h: t.grad_h,
                grad_w_norm: 0.0,
                w_norm: 0.0,
                update_ratio: f64::NAN,
                params: Vec::new(),
            });
        }
        let mut total_sq = 0f64;
        let mut total_bad = false;
        let mut other_params = Vec::new();
        for (p, o) in before.iter().zip(&owner) {
            let (gsq, gnan, ginf) = p.grad.unwrap_or((0.0, 0, 0));
            total_sq += gsq;
            total_bad |= gnan + ginf > 0;
            let (name, list) = match o {
                Some(li) => {
                    let l = &mut layers[*li];
                    l.grad_w_norm += gsq;
                    (p.path[l.name.len() + 1..].to_string(), &mut l.params)
                }
                None => (p.path.clone(), &mut other_params),
            };
            list.push(ParamRecord {
                name,
                shape: p.shape.clone(),
                grad_norm: nonfinite_norm(gsq, gnan, ginf),
                norm: f64::NAN,
                update_ratio: f64::NAN,
                grad_nan: gnan,
                grad_inf: ginf,
            });
        }
        for l in layers.iter_mut() {
            let (nan, inf) = l
                .params
                .iter()
                .fold((0, 0), |a, p| (a.0 + p.grad_nan, a.1 + p.grad_inf));
            l.grad_w_norm = nonfinite_norm(l.grad_w_norm, nan, inf);
        }
        let nonfinite = producer::find(step, input_nonfinite, loss, &layers);
        let record = StepRecord {
            step,
            epoch,
            loss,
            lr: f64::NAN,
            grad_norm: if total_bad { f64::NAN } else { total_sq.sqrt() },
            layers,
            other_params,
            nonfinite,
        };
        let mut pending = Pending {
            record,
            before,
            owner,
            reads,
            windowed,
        };
        match reads {
            Reads::All => {
                let sq: Vec<f64> = pending.before.iter().map(|p| p.sq).collect();
                pending.set_weights(&sq);
            }
            Reads::Gradients => {}
            // not measured until the update pass says
            Reads::Taps => pending.record.grad_norm = f64::NAN,
        }
        Some(pending)
    }

    /// After the optimizer step: update ratios (from the weights before and after), then the
    /// record is kept and written. `lr` is the learning rate used for the step.
    pub fn after_step<M: Module>(
        &mut self,
        pending: Option<Pending>,
        model: &M,
        lr: f64,
    ) -> Result<Option<&StepRecord>, ProbeError> {
        let Some(mut pending) = pending else {
            return Ok(None);
        };
        if pending.reads == Reads::Taps {
            // meant for `after_update`: the parameters as they are now, their gradients and
            // updates not measured
            let now: Vec<Measured> = snapshot_with(model, None, true)
                .into_iter()
                .map(|p| Measured {
                    path: p.path,
                    shape: p.shape,
                    g_sq: Some(f64::NAN),
                    w_sq: p.sq,
                    delta_sq: f64::NAN,
                })
                .collect();
            pending.take_measured(&now);
            return self.keep(pending.record, lr);
        }
        if pending.reads == Reads::Gradients {
            let sq: Vec<f64> = pending
                .before
                .iter()
                .map(|p| norm_sq(p.values.clone()))
                .collect();
            pending.set_weights(&sq);
        }
        let after = params::values(model);
        let by_path: HashMap<&str, &Tensor<1>> =
            after.iter().map(|(p, t)| (p.as_str(), t)).collect();
        // the parameters side by side (results in order)
        let delta: Vec<Option<f64>> = {
            use rayon::prelude::*;
            pending
                .before
                .par_iter()
                .map(|p| {
                    by_path
                        .get(p.path.as_str())
                        .map(|new| diff_norm(&p.values, new))
                })
                .collect()
        };
        pending.set_updates(&delta);
        self.keep(pending.record, lr)
    }

    /// After an update that measured the weights itself
    /// ([`crate::train::Optimizer::step_measured`] for a `pending` from
    /// [`after_backward_for_update`](Self::after_backward_for_update): the gradient and weight
    /// norms; [`crate::detect::optimize::optimizer::GroupOptimizer::apply_measured`] for one
    /// from [`after_backward_grads`](Self::after_backward_grads): the weight norms) and the
    /// update ratios from `measured` (0 for a parameter the update did not touch: its weights
    /// stayed), then the record is kept and written.
    pub fn after_update(
        &mut self,
        pending: Option<Pending>,
        measured: &[Measured],
        lr: f64,
    ) -> Result<Option<&StepRecord>, ProbeError> {
        let Some(mut pending) = pending else {
            return Ok(None);
        };
        if pending.reads == Reads::Taps {
            pending.take_measured(measured);
            return self.keep(pending.record, lr);
        }
        let by_path: HashMap<&str, &Measured> =
            measured.iter().map(|m| (m.path.as_str(), m)).collect();
        let found: Vec<Option<&&Measured>> = pending
            .before
            .iter()
            .map(|p| by_path.get(p.path.as_str()))
            .collect();
        if pending.reads == Reads::Gradients {
            // a parameter the update did not touch (frozen, or without a gradient) is read here
            let sq: Vec<f64> = found
                .iter()
                .zip(&pending.before)
                .map(|(m, p)| m.map_or_else(|| norm_sq(p.values.clone()), |m| m.w_sq))
                .collect();
            pending.set_weights(&sq);
        }
        // a parameter the pass did not report was not updated either: its weights stayed
        let delta: Vec<Option<f64>> = found
            .iter()
            .map(|m| Some(m.map_or(0.0, |m| m.delta())))
            .collect();
        pending.set_updates(&delta);
        self.keep(pending.record, lr)
    }

    /// Drops a step's measurements without keeping a record (a step that is then replayed in
    /// full), undoing what it added to the dead-unit windows so that the replay counts once.
    pub fn discard(&mut self, pending: Option<Pending>) {
        for layer in pending.map(|p| p.windowed).unwrap_or_default() {
            if let Some(q) = self.windows.get_mut(&layer) {
                q.pop_back();
            }
        }
    }

    /// Keeps a finished record and writes it to the JSONL file.
    fn keep(&mut self, mut record: StepRecord, lr: f64) -> Result<Option<&StepRecord>, ProbeError> {
        record.lr = lr;
        if let Some((path, w)) = self.writer.as_mut() {
            let line = serde_json::to_string(&record).expect("records serialise");
            writeln!(w, "{line}")
                .and_then(|_| w.flush())
                .map_err(|source| ProbeError::Io {
                    path: path.clone(),
                    source,
                })?;
        }
        self.records.push(record);
        Ok(self.records.last())
    }

    fn dead_fraction(&mut self, layer: &str, active: Vec<bool>) -> f64 {
        let window = self.config.dead_window.max(1);
        let q = self.windows.entry(layer.to_string()).or_default();
        q.push_back(active);
        // one batch more than the window is kept, so that `discard` can take the last one back
        while q.len() > window + 1 {
            q.pop_front();
        }
        let units = q.back().map_or(0, |a| a.len());
        let dead = (0..units)
            .filter(|&u| {
                q.iter()
                    .rev()
                    .take(window)
                    .all(|a| !a.get(u).copied().unwrap_or(false))
            })
            .count();
        dead as f64 / units.max(1) as f64
    }
}

fn nonfinite_norm(sq: f64, nan: usize, inf: usize) -> f64 {
    if nan > 0 {
        f64::NAN
    } else if inf > 0 {
        f64::INFINITY
    } else {
        sq.sqrt()
    }
}

/// The probe point a parameter belongs to: the longest point name that prefixes its path.
fn owner_of(path: &str, names: &[&str]) -> Option<usize> {
    names
        .iter()
        .enumerate()
        .filter(|(_, n)| {
            path.len() > n.len() && path.starts_with(*n) && path.as_bytes()[n.len()] == b'.'
        })
        .max_by_key(|(_, n)| n.len())
        .map(|(i, _)| i)
}

/// Reads a `probe.jsonl` written by [`Probe::with_jsonl`] line by line into a [`History`] (every
/// record of a file of at most [`History::DEFAULT_CAP`] records, an even sample of a longer one,
/// with [`History::seen`] counting them all).
pub fn read_history(path: &Path) -> Result<History, ProbeError> {
    let io = |source| ProbeError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = BufReader::new(File::open(path).map_err(io)?);
    let mut out = History::default();
    for (i, line) in file.lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let r: StepRecord = serde_json::from_str(&line).map_err(|e| ProbeError::Parse {
            path: path.to_path_buf(),
            line: i + 1,
            msg: e.to_string(),
        })?;
        out.push(r);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::owner_of;

    #[test]
    fn parameters_belong_to_the_longest_matching_point() {
        let names = ["layers.1", "layers.10", "head"];
        assert_eq!(owner_of("layers.10.linear.weight", &names), Some(1));
        assert_eq!(owner_of("layers.1.linear.bias", &names), Some(0));
        assert_eq!(owner_of("head.weight", &names), Some(2));
        assert_eq!(owner_of("embed.weight", &names), None);
    }

    /// A resumed run's probe.jsonl keeps the records before the step it resumes at and drops
    /// those written after its state (each step once), then appends.
    #[test]
    fn a_resumed_record_file_is_cut_back_to_the_resumed_step() {
        use super::{Probe, ProbeConfig};
        let dir = std::env::temp_dir().join(format!("gradscope-jsonl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe.jsonl");
        let line = |s: usize| {
            format!("{{\"step\":{s},\"epoch\":0,\"loss\":0.1,\"lr\":\"NaN\",\"grad_norm\":1e-300,\"layers\":[],\"nonfinite\":null}}\n")
        };
        // steps 0–5, step 1 twice, and a last line cut short by a crash
        let mut text: String = [0, 1, 1, 2, 3, 4, 5].into_iter().map(line).collect();
        text.push_str("{\"step\":6,\"epo");
        std::fs::write(&path, text).unwrap();
        let probe = Probe::new(ProbeConfig::default())
            .with_jsonl_resumed(&path, 3)
            .unwrap();
        let steps: Vec<usize> = probe.records().iter().map(|r| r.step).collect();
        drop(probe);
        let kept = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        // kept as written, byte for byte, and read back for the diagnosis
        assert_eq!(kept, line(0) + &line(1) + &line(2));
        assert_eq!(steps, [0, 1, 2]);
    }

    /// A resumed run longer than the history's cap remembers the same even sample as the run that
    /// never stopped, and its file still holds every record before the resumed step.
    #[test]
    fn a_resumed_long_run_remembers_what_the_uninterrupted_one_does() {
        use super::{History, Probe, ProbeConfig, StepRecord};
        let dir = std::env::temp_dir().join(format!("gradscope-jsonl-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe.jsonl");
        let line = |s: usize| {
            format!("{{\"step\":{s},\"epoch\":0,\"loss\":{s},\"lr\":0.01,\"grad_norm\":1.0,\"layers\":[],\"nonfinite\":null}}\n")
        };
        let n = 3 * History::DEFAULT_CAP;
        std::fs::write(&path, (0..n).map(line).collect::<String>()).unwrap();
        let resume_at = n - 500;
        let probe = Probe::new(ProbeConfig::default())
            .with_jsonl_resumed(&path, resume_at)
            .unwrap();
        let mut uninterrupted = History::default();
        for s in 0..resume_at {
            uninterrupted.push(serde_json::from_str::<StepRecord>(&line(s)).unwrap());
        }
        let steps = |r: &[StepRecord]| r.iter().map(|r| r.step).collect::<Vec<_>>();
        assert_eq!(steps(probe.records()), steps(uninterrupted.records()));
        assert!(probe.records().len() <= History::DEFAULT_CAP + 2);
        assert_eq!(probe.history().seen(), resume_at);
        drop(probe);
        let kept = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).ok();
        assert_eq!(kept, (0..resume_at).map(line).collect::<String>());
    }
}
