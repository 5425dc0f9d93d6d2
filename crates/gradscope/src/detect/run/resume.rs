//! The full training state after an epoch, for `resume`: `weights/last.state.safetensors` holds
//! the training model (`train.*`, with BatchNorm statistics), the EMA model (`ema.*`), the
//! optimizer's moments (`optim.m.*`, `optim.v.*`), the gradients accumulated since the last
//! optimizer step (`grad.*`: an accumulation that crosses the epoch's end), the run's history
//! (`hist.*`, f64) and, as metadata, the counters ([`Counters`]) and the rest of the [`Ledger`].
//! Written atomically like every checkpoint, and last in an epoch: it is the epoch's commit point.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::detect::branches::Assigned;
use crate::detect::error::DetectError;
use crate::detect::optimize::ema::Ema;
use crate::detect::optimize::optimizer::{param_names, GroupOptimizer};
use crate::train::recovery::RecoveryEvent;
use crate::train::{EpochStats, History};
use crate::yolo::model::Yolo;
use crate::yolo::weights::{
    load_named, named_tensors, read_safetensors, safetensors_bytes, write_file,
};

pub const STATE_FILE: &str = "last.state.safetensors";
/// The metadata entry holding the counters (a JSON object); state files written before it have
/// one entry per counter.
const STATE_KEY: &str = "gradscope_state";

/// Counters that, with the tensors, make a run continue exactly.
#[derive(Clone, Debug, PartialEq)]
pub struct Counters {
    /// Epochs completed.
    pub epoch: usize,
    pub ema_updates: usize,
    pub last_opt: i64,
    pub opt_steps: usize,
    pub lr_scale: f64,
    pub best: f64,
    /// Epochs completed when `best` was reached (early stopping counts from it).
    pub best_epoch: usize,
    pub adamw: bool,
    pub muon: bool,
}

/// The rest of what a run needs to go on exactly as if it had never stopped.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    /// Epoch summaries and per-step losses, gradient norms and clip thresholds (the divergence
    /// rules and the plots read them), recoveries.
    pub history: History,
    /// The divergence evidence in force, and the epoch it was first seen at with the best
    /// fitness before it (a divergence stays until the run beats that).
    pub diverged: Vec<String>,
    pub diverged_at: Option<(usize, f64)>,
    /// Non-finite steps in a row when the epoch ended.
    pub nan_in_a_row: usize,
    /// The probe's per-layer windows of active units (see [`crate::probe::Probe::dead_windows`]).
    pub dead_windows: BTreeMap<String, Vec<String>>,
    /// Targets assigned per head level in the last epoch, and the boxes' size.
    pub assigned: Assigned,
}

/// The ledger's metadata part (its f64 series are tensors); f64 values as Rust prints them
/// (shortest round trip), NaN included.
#[derive(Serialize, Deserialize, Default)]
struct LedgerMeta {
    recoveries: Vec<RecoveryEvent>,
    stopped: Option<String>,
    diverged: Vec<String>,
    diverged_at: Option<(usize, String)>,
    nan_in_a_row: usize,
    dead_windows: BTreeMap<String, Vec<String>>,
    /// [`Assigned`] as `[P3, P4, P5, median box]` written as Rust prints f64, and imgsz;
    /// absent in state files written before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    assigned: Option<([String; 4], usize)>,
}

/// Everything [`save`] writes.
pub struct State<'a> {
    pub model: &'a Yolo,
    pub ema: &'a Ema,
    pub optim: &'a GroupOptimizer,
    /// Gradients accumulated since the last optimizer step.
    pub pending: &'a GradientsParams,
    pub counters: &'a Counters,
    pub ledger: &'a Ledger,
}

/// Writes the state into `weights/last.state.safetensors`.
pub fn save(weights: &Path, st: &State) -> Result<(), DetectError> {
    prepare(weights, st).write()
}

/// What [`save`] writes, copied out of the training state: the trainer hands it to its writer
/// ([`super::behind::Behind`]), which makes the file's bytes and writes them.
pub struct StateFile {
    path: PathBuf,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
    exact: Vec<(String, Vec<usize>, Vec<f64>)>,
    metadata: HashMap<String, String>,
}

impl StateFile {
    /// Writes `weights/last.state.safetensors` atomically.
    pub fn write(self) -> Result<(), DetectError> {
        let bytes = safetensors_bytes(&self.tensors, &self.exact, Some(self.metadata), &self.path)?;
        Ok(write_file(&bytes, &self.path)?)
    }
}

/// The state [`save`] writes, copied out of `st`.
pub fn prepare(weights: &Path, st: &State) -> StateFile {
    let mut tensors = Vec::new();
    for (n, s, v) in named_tensors(&st.model.valid()) {
        tensors.push((format!("train.{n}"), s, v));
    }
    for (n, s, v) in named_tensors(&st.ema.model(st.model)) {
        tensors.push((format!("ema.{n}"), s, v));
    }
    let (moments, steps) = st.optim.export(st.model);
    for (n, s, v) in moments {
        tensors.push((format!("optim.{n}"), s, v));
    }
    tensors.extend(export_grads(st.model, st.pending));
    let h = &st.ledger.history;
    let series = |name: &str, v: &[f64]| (format!("hist.{name}"), vec![v.len()], v.to_vec());
    let epochs: Vec<f64> = h
        .epochs
        .iter()
        .flat_map(|e| [e.epoch as f64, e.train_loss, e.val_loss, e.val_metric])
        .collect();
    let exact = vec![
        series("step_loss", &h.step_loss),
        series("step_grad_norm", &h.step_grad_norm),
        series("step_clip", &h.step_clip),
        (String::from("hist.epochs"), vec![h.epochs.len(), 4], epochs),
    ];
    let c = st.counters;
    // one metadata entry holding a sorted map: safetensors writes its metadata from a HashMap,
    // so several entries would come out in a random order and identical runs in different bytes
    let mut meta = BTreeMap::new();
    meta.insert("epoch".to_string(), c.epoch.to_string());
    meta.insert("ema_updates".to_string(), c.ema_updates.to_string());
    meta.insert("last_opt".to_string(), c.last_opt.to_string());
    meta.insert("opt_steps".to_string(), c.opt_steps.to_string());
    meta.insert("lr_scale".to_string(), format!("{:e}", c.lr_scale));
    meta.insert("best".to_string(), format!("{:e}", c.best));
    meta.insert("best_epoch".to_string(), c.best_epoch.to_string());
    meta.insert("adamw".to_string(), c.adamw.to_string());
    meta.insert("muon".to_string(), c.muon.to_string());
    let steps: BTreeMap<String, i32> = steps.into_iter().collect();
    meta.insert("param_steps".to_string(), json(&steps));
    let l = st.ledger;
    let ledger = LedgerMeta {
        recoveries: h.recoveries.clone(),
        stopped: h.stopped.clone(),
        diverged: l.diverged.clone(),
        diverged_at: l.diverged_at.map(|(e, b)| (e, format!("{b:e}"))),
        nan_in_a_row: l.nan_in_a_row,
        dead_windows: l.dead_windows.clone(),
        assigned: Some((
            [
                l.assigned.per_level[0],
                l.assigned.per_level[1],
                l.assigned.per_level[2],
                l.assigned.median_box,
            ]
            .map(|v| format!("{v:e}")),
            l.assigned.imgsz,
        )),
    };
    meta.insert("ledger".to_string(), json(&ledger));
    let one = HashMap::from([(STATE_KEY.to_string(), json(&meta))]);
    StateFile {
        path: weights.join(STATE_FILE),
        tensors,
        exact,
        metadata: one,
    }
}

fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

/// The accumulated gradients as `grad.<parameter name>` tensors.
fn export_grads(model: &Yolo, grads: &GradientsParams) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    struct Out<'a> {
        grads: &'a GradientsParams,
        names: HashMap<ParamId, String>,
        out: Vec<(String, Vec<usize>, Vec<f32>)>,
    }
    impl ModuleVisitor for Out<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let (Some(g), Some(name)) = (self.grads.get::<D>(param.id), self.names.get(&param.id))
            else {
                return;
            };
            let values = g
                .to_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap_or_default();
            self.out
                .push((format!("grad.{name}"), g.dims().to_vec(), values));
        }
    }
    let mut v = Out {
        grads,
        names: param_names(model).into_iter().collect(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

/// Gradients saved by [`export_grads`] (names without the `grad.` prefix), on `device`.
fn import_grads(
    model: &Yolo,
    tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
    device: &Device,
) -> GradientsParams {
    struct In<'a> {
        tensors: &'a HashMap<String, (Vec<usize>, Vec<f32>)>,
        names: HashMap<ParamId, String>,
        device: &'a Device,
        grads: GradientsParams,
    }
    impl ModuleVisitor for In<'_> {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let Some((shape, values)) = self.names.get(&param.id).and_then(|n| self.tensors.get(n))
            else {
                return;
            };
            let g =
                Tensor::<D>::from_data(TensorData::new(values.clone(), shape.clone()), self.device);
            self.grads.register::<D>(param.id, g);
        }
    }
    let mut v = In {
        tensors,
        names: param_names(model).into_iter().collect(),
        device,
        grads: GradientsParams::new(),
    };
    model.visit(&mut v);
    v.grads
}

/// Where `resume=` points: `true` with `model=<run>/weights/last.safetensors`, or a run folder,
/// or the state file itself. Returns (run folder, state file).
pub fn locate(resume: &str, model: &str) -> Result<(PathBuf, PathBuf), DetectError> {
    let p = if resume == "true" || resume == "True" {
        PathBuf::from(model)
    } else {
        PathBuf::from(resume)
    };
    let weights = if p.is_dir() && p.join("weights").is_dir() {
        p.join("weights")
    } else if p.is_file() {
        p.parent().map(Path::to_path_buf).unwrap_or_default()
    } else {
        return Err(DetectError::Args(format!(
            "resume: {} is neither a run folder nor a checkpoint (use resume=true model=runs/detect/train/weights/last.safetensors, or resume=runs/detect/train)",
            p.display()
        )));
    };
    let state = weights.join(STATE_FILE);
    if !state.is_file() {
        return Err(DetectError::Args(format!(
            "resume: {} is missing; the run has no complete epoch to resume from",
            state.display()
        )));
    }
    let run = weights
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    Ok((run, state))
}

/// A state file's metadata (the counters and the ledger's metadata part) and its f64 tensors.
type Parts = (HashMap<String, String>, HashMap<String, Vec<f64>>);

fn parts_of(path: &Path) -> Result<Parts, DetectError> {
    let bytes = std::fs::read(path).map_err(|e| DetectError::io(path, e))?;
    let bad = |m: String| DetectError::invalid(path, m);
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut exact = HashMap::new();
    for (name, view) in st.tensors() {
        if view.dtype() == safetensors::Dtype::F64 {
            let v = view
                .data()
                .chunks_exact(8)
                .map(|b| f64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
                .collect();
            exact.insert(name, v);
        }
    }
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(format!("not a safetensors file: {e}")))?;
    let mut m = m.metadata().clone().unwrap_or_default();
    if let Some(json) = m.remove(STATE_KEY) {
        let inner: HashMap<String, String> =
            serde_json::from_str(&json).map_err(|e| bad(format!("metadata '{STATE_KEY}': {e}")))?;
        m.extend(inner);
    }
    Ok((m, exact))
}

/// The counters of a state file's metadata.
fn counters_of(state: &Path, meta: &HashMap<String, String>) -> Result<Counters, DetectError> {
    let get = |k: &str| -> Result<&String, DetectError> {
        meta.get(k)
            .ok_or_else(|| DetectError::invalid(state, format!("metadata field '{k}' is missing")))
    };
    let num = |k: &str| -> Result<f64, DetectError> {
        get(k)?
            .parse::<f64>()
            .map_err(|e| DetectError::invalid(state, format!("metadata field '{k}': {e}")))
    };
    Ok(Counters {
        epoch: num("epoch")? as usize,
        ema_updates: num("ema_updates")? as usize,
        last_opt: num("last_opt")? as i64,
        opt_steps: num("opt_steps")? as usize,
        lr_scale: num("lr_scale")?,
        best: num("best")?,
        // state files from before early stopping: counted from the resumed epoch
        best_epoch: meta
            .get("best_epoch")
            .and_then(|b| b.parse().ok())
            .unwrap_or(num("epoch")? as usize),
        adamw: get("adamw")? == "true",
        muon: meta.get("muon").is_some_and(|m| m == "true"),
    })
}

/// A state file's counters and ledger, without its models: what `gradscope diagnose` reads of
/// a run beyond its probe records (the optimizer `auto` chose, the head levels' assignment).
pub fn summary(state: &Path) -> Result<(Counters, Ledger), DetectError> {
    let (meta, exact) = parts_of(state)?;
    Ok((counters_of(state, &meta)?, ledger_of(state, &meta, &exact)?))
}

/// The ledger of a state file; empty for state files written before it.
fn ledger_of(
    path: &Path,
    meta: &HashMap<String, String>,
    exact: &HashMap<String, Vec<f64>>,
) -> Result<Ledger, DetectError> {
    let Some(json) = meta.get("ledger") else {
        return Ok(Ledger::default());
    };
    let bad = |m: String| DetectError::invalid(path, format!("metadata field 'ledger': {m}"));
    let l: LedgerMeta = serde_json::from_str(json).map_err(|e| bad(e.to_string()))?;
    let series = |name: &str| {
        exact
            .get(&format!("hist.{name}"))
            .cloned()
            .unwrap_or_default()
    };
    let epochs = series("epochs")
        .chunks_exact(4)
        .map(|e| EpochStats {
            epoch: e[0] as usize,
            train_loss: e[1],
            val_loss: e[2],
            val_metric: e[3],
        })
        .collect();
    let diverged_at = match l.diverged_at {
        Some((e, b)) => Some((e, b.parse::<f64>().map_err(|e| bad(e.to_string()))?)),
        None => None,
    };
    let assigned = match l.assigned {
        Some((v, imgsz)) => {
            let mut x = [0.0; 4];
            for (x, v) in x.iter_mut().zip(&v) {
                *x = v.parse::<f64>().map_err(|e| bad(e.to_string()))?;
            }
            Assigned {
                per_level: [x[0], x[1], x[2]],
                median_box: x[3],
                imgsz,
            }
        }
        None => Assigned::default(),
    };
    Ok(Ledger {
        history: History {
            epochs,
            step_loss: series("step_loss"),
            step_grad_norm: series("step_grad_norm"),
            step_clip: series("step_clip"),
            recoveries: l.recoveries,
            stopped: l.stopped,
        },
        diverged: l.diverged,
        diverged_at,
        nan_in_a_row: l.nan_in_a_row,
        dead_windows: l.dead_windows,
        assigned,
    })
}

/// A run as its state file left it.
pub struct Resumed {
    pub model: Yolo,
    pub ema: Ema,
    pub optim: GroupOptimizer,
    /// Gradients accumulated since the last optimizer step.
    pub pending: GradientsParams,
    pub counters: Counters,
    pub ledger: Ledger,
}

/// Restores a run from `state` into freshly built models.
pub fn load(state: &Path, fresh: Yolo, device: &Device) -> Result<Resumed, DetectError> {
    let (meta, exact) = parts_of(state)?;
    let c = counters_of(state, &meta)?;
    let get = |k: &str| -> Result<&String, DetectError> {
        meta.get(k)
            .ok_or_else(|| DetectError::invalid(state, format!("metadata field '{k}' is missing")))
    };
    let steps: HashMap<String, i32> = serde_json::from_str(get("param_steps")?)
        .map_err(|e| DetectError::invalid(state, format!("metadata field 'param_steps': {e}")))?;
    let ledger = ledger_of(state, &meta, &exact)?;
    let all = read_safetensors(state)?;
    let part = |prefix: &str| -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        all.iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    };
    let w = DetectError::from;
    let model = load_named(fresh.clone(), &part("train."), state).map_err(w)?;
    let ema_model = load_named(fresh.valid(), &part("ema."), state).map_err(w)?;
    let plain = device.clone().inner();
    let optim = GroupOptimizer::import((c.adamw, c.muon), &model, &part("optim."), &steps, &plain);
    let pending = import_grads(&model, &part("grad."), &plain);
    let ema = Ema::from_model(&ema_model, c.ema_updates);
    Ok(Resumed {
        model,
        ema,
        optim,
        pending,
        counters: c,
        ledger,
    })
}
