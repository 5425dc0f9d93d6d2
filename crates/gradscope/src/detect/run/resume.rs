//! The full training state after an epoch, for `resume`: `weights/last.state.safetensors` holds
//! the training model (`train.*`, with BatchNorm statistics), the EMA model (`ema.*`), the
//! optimizer's moments (`optim.m.*`, `optim.v.*`) and, as metadata, the epoch, step counters,
//! learning-rate scale and best fitness. Written atomically like every checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use crate::detect::error::DetectError;
use crate::detect::optimize::ema::Ema;
use crate::detect::optimize::optimizer::GroupOptimizer;
use crate::yolo::model::Yolo;
use crate::yolo::weights::{load_named, named_tensors, read_safetensors, write_safetensors};

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

/// Writes the state into `weights/last.state.safetensors`.
pub fn save(
    weights: &Path,
    model: &Yolo,
    ema: &Ema<Yolo>,
    optim: &GroupOptimizer,
    c: &Counters,
) -> Result<(), DetectError> {
    let mut tensors = Vec::new();
    for (n, s, v) in named_tensors(&model.valid()) {
        tensors.push((format!("train.{n}"), s, v));
    }
    for (n, s, v) in named_tensors(&ema.model) {
        tensors.push((format!("ema.{n}"), s, v));
    }
    let (moments, steps) = optim.export(model);
    for (n, s, v) in moments {
        tensors.push((format!("optim.{n}"), s, v));
    }
    // one metadata entry holding a sorted map: safetensors writes its metadata from a HashMap,
    // so several entries would come out in a random order and identical runs in different bytes
    let mut meta = std::collections::BTreeMap::new();
    meta.insert("epoch".to_string(), c.epoch.to_string());
    meta.insert("ema_updates".to_string(), c.ema_updates.to_string());
    meta.insert("last_opt".to_string(), c.last_opt.to_string());
    meta.insert("opt_steps".to_string(), c.opt_steps.to_string());
    meta.insert("lr_scale".to_string(), format!("{:e}", c.lr_scale));
    meta.insert("best".to_string(), format!("{:e}", c.best));
    meta.insert("best_epoch".to_string(), c.best_epoch.to_string());
    meta.insert("adamw".to_string(), c.adamw.to_string());
    meta.insert("muon".to_string(), c.muon.to_string());
    let steps: std::collections::BTreeMap<String, i32> = steps.into_iter().collect();
    meta.insert(
        "param_steps".to_string(),
        serde_json::to_string(&steps).unwrap_or_default(),
    );
    let one = HashMap::from([(
        STATE_KEY.to_string(),
        serde_json::to_string(&meta).unwrap_or_default(),
    )]);
    let path = weights.join(STATE_FILE);
    Ok(write_safetensors(&tensors, Some(one), &path)?)
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

fn meta_of(path: &Path) -> Result<HashMap<String, String>, DetectError> {
    let bytes = std::fs::read(path).map_err(|e| DetectError::io(path, e))?;
    let (_, m) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| DetectError::invalid(path, format!("not a safetensors file: {e}")))?;
    let mut m = m.metadata().clone().unwrap_or_default();
    if let Some(json) = m.remove(STATE_KEY) {
        let inner: HashMap<String, String> = serde_json::from_str(&json)
            .map_err(|e| DetectError::invalid(path, format!("metadata '{STATE_KEY}': {e}")))?;
        m.extend(inner);
    }
    Ok(m)
}

/// Restores (training model, EMA, optimizer, counters) into freshly built models.
pub fn load(
    state: &Path,
    fresh: Yolo,
    device: &Device,
) -> Result<(Yolo, Ema<Yolo>, GroupOptimizer, Counters), DetectError> {
    let meta = meta_of(state)?;
    let get = |k: &str| -> Result<&String, DetectError> {
        meta.get(k)
            .ok_or_else(|| DetectError::invalid(state, format!("metadata field '{k}' is missing")))
    };
    let num = |k: &str| -> Result<f64, DetectError> {
        get(k)?
            .parse::<f64>()
            .map_err(|e| DetectError::invalid(state, format!("metadata field '{k}': {e}")))
    };
    let c = Counters {
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
    };
    let steps: HashMap<String, i32> = serde_json::from_str(get("param_steps")?)
        .map_err(|e| DetectError::invalid(state, format!("metadata field 'param_steps': {e}")))?;
    let all = read_safetensors(state)?;
    let part = |prefix: &str| -> HashMap<String, (Vec<usize>, Vec<f32>)> {
        all.iter()
            .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
            .collect()
    };
    let w = DetectError::from;
    let model = load_named(fresh.clone(), &part("train."), state).map_err(w)?;
    let ema_model = load_named(fresh.valid(), &part("ema."), state).map_err(w)?;
    let optim = GroupOptimizer::import(
        (c.adamw, c.muon),
        &model,
        &part("optim."),
        &steps,
        &device.clone().inner(),
    );
    let ema = Ema {
        model: ema_model,
        updates: c.ema_updates,
    };
    Ok((model, ema, optim, c))
}
