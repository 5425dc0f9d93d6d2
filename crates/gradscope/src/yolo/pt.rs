//! Ultralytics `.pt` checkpoints, read without Python.
//!
//! A `.pt` written by Ultralytics (the released `yolo26n.pt`, or a run's `last.pt`/`best.pt`) is a
//! PyTorch zip whose pickle is a dict — `model`, `ema`, `train_args`, `date`, `version`, … — holding
//! a whole pickled `DetectionModel`, usually in float16. The pickle is read by `pytorch-reader`
//! (burn's own reader, the one behind burn-store's `PytorchStore`): it rebuilds modules from their
//! `_parameters`/`_buffers`/`_modules` tables, gives every tensor under its `state_dict()` name and
//! never runs Python code. What is YOLO-specific is here: which entry holds the weights (`ema` when
//! present, else `model`), the scale and number of classes (read from the tensors' shapes, which
//! cannot disagree with the weights), the image size it was trained at (`train_args`), and the
//! checks that refuse a checkpoint that is not a YOLO26 detector, naming what was found. The
//! reader gives a pickled module back as its module tables only, so the model's own attributes
//! (`names`, `yaml`) are not read: class names come from the data yaml, or are COCO's for 80
//! classes.

use std::path::{Path, PathBuf};

use burn::tensor::{DType, TensorData};
use pytorch_reader::{PickleValue, PytorchReader};

use super::weights::{NamedTensors, WeightsError};

/// What a `.pt` holds for gradscope.
#[derive(Debug)]
pub struct PtCheckpoint {
    pub path: PathBuf,
    /// Every float tensor, as f32, under Ultralytics' names (`model.0.conv.weight`, …).
    pub tensors: NamedTensors,
    /// `ema`, `model` or (a gradscope-written file) `state_dict`: the entry the weights came from.
    pub entry: &'static str,
    /// `n`, `s`, `m`, `l` or `x`.
    pub scale: char,
    pub nc: usize,
    /// `train_args.imgsz`, when present.
    pub imgsz: Option<usize>,
    /// The Ultralytics version that wrote it.
    pub version: Option<String>,
    /// Class names, when the file keeps them where the reader can see them (a gradscope-written
    /// `.pt`; Ultralytics keeps them as an attribute of its pickled model, which is not read).
    pub names: Option<Vec<String>>,
}

fn read_err(path: &Path, msg: impl std::fmt::Display) -> WeightsError {
    WeightsError::Read {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

fn not_yolo26(path: &Path, found: impl std::fmt::Display) -> WeightsError {
    WeightsError::Read {
        path: path.to_path_buf(),
        msg: format!("not a YOLO26 detection checkpoint: {found}; gradscope trains YOLO26 detectors (yolo26n.pt … yolo26x.pt)"),
    }
}

/// Reads an Ultralytics checkpoint.
pub fn read_pt(path: &Path) -> Result<PtCheckpoint, WeightsError> {
    let top = PytorchReader::read_pickle_data(path, None)
        .map_err(|e| read_err(path, format!("not a PyTorch checkpoint ({e})")))?;
    let PickleValue::Dict(top) = top else {
        return Err(read_err(
            path,
            "not an Ultralytics checkpoint: its pickle is not a dict with `model`",
        ));
    };
    // a pickled module reads as the dict of its tensors; a gradscope-written `.pt` builds its
    // model by a call the reader does not run, and keeps the same tensors as `state_dict`
    let entry = ["ema", "model", "state_dict"]
        .into_iter()
        .find(|k| matches!(top.get(*k), Some(PickleValue::Dict(_))));
    let Some(entry) = entry else {
        let mut keys: Vec<String> = top
            .iter()
            .map(|(k, v)| match v {
                PickleValue::Unsupported(t) => format!("{k} ({t})"),
                _ => k.clone(),
            })
            .collect();
        keys.sort();
        return Err(read_err(
            path,
            format!(
                "not an Ultralytics checkpoint: no `model` or `ema` module entry (entries: {})",
                keys.join(", ")
            ),
        ));
    };
    let reader = PytorchReader::with_top_level_key(path, entry)
        .map_err(|e| read_err(path, format!("{entry}: {e}")))?;
    let mut tensors = NamedTensors::new();
    for (name, t) in reader.tensors() {
        let dtype = match t.dtype() {
            pytorch_reader::DType::F32 => DType::F32,
            pytorch_reader::DType::F16 => DType::F16,
            pytorch_reader::DType::BF16 => DType::BF16,
            pytorch_reader::DType::F64 => DType::F64,
            _ => continue, // BatchNorm's num_batches_tracked
        };
        let bytes = t.read().map_err(|e| read_err(path, e))?;
        let values = TensorData::from_bytes_vec(bytes, t.shape().to_vec(), dtype)
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| read_err(path, format!("{name}: {e:?}")))?;
        tensors.insert(name.clone(), (t.shape().to_vec(), values));
    }
    let (scale, nc) = identify(path, &tensors)?;
    Ok(PtCheckpoint {
        path: path.to_path_buf(),
        entry,
        scale,
        nc,
        imgsz: top
            .get("train_args")
            .and_then(|a| field(a, "imgsz"))
            .and_then(as_usize),
        version: match top.get("version") {
            Some(PickleValue::String(s)) => Some(s.clone()),
            _ => None,
        },
        names: match top.get("names") {
            Some(PickleValue::List(l)) if l.len() == nc => l
                .iter()
                .map(|v| match v {
                    PickleValue::String(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            _ => None,
        },
        tensors,
    })
}

/// A field of a pickled dict or object (objects come back as the dict of their attributes).
fn field<'a>(v: &'a PickleValue, key: &str) -> Option<&'a PickleValue> {
    match v {
        PickleValue::Dict(d) => d.get(key),
        _ => None,
    }
}

fn as_usize(v: &PickleValue) -> Option<usize> {
    match v {
        PickleValue::Int(i) => usize::try_from(*i).ok(),
        PickleValue::List(l) => l.first().and_then(as_usize),
        _ => None,
    }
}

/// Scale and number of classes from the tensors, after checking that they are a YOLO26
/// detector's: the one-to-one head, no DFL (YOLO26 regresses 4 distances, `reg_max` 1), no
/// mask, keypoint or angle branch.
pub fn identify(path: &Path, t: &NamedTensors) -> Result<(char, usize), WeightsError> {
    let has = |prefix: &str| t.keys().any(|k| k.starts_with(prefix));
    if let Some(k) = t.keys().find(|k| k.contains(".dfl.")) {
        return Err(not_yolo26(
            path,
            format!("it has a DFL box head ({k}), as YOLOv8/YOLO11 do"),
        ));
    }
    if let Some(k) = t
        .keys()
        .find(|k| k.contains(".cv4.") || k.contains(".proto.") || k.contains("cv5"))
    {
        return Err(not_yolo26(
            path,
            format!("its head has a mask, keypoint or angle branch ({k}): a segmentation, pose or OBB model"),
        ));
    }
    if !has("model.23.one2one_cv3.") {
        let head = t
            .keys()
            .filter_map(|k| k.strip_prefix("model."))
            .filter_map(|k| k.split('.').next()?.parse::<usize>().ok())
            .max();
        return Err(not_yolo26(
            path,
            format!(
                "no one-to-one head at model.23 (its last layer is model.{})",
                head.map_or("?".into(), |h| h.to_string())
            ),
        ));
    }
    let nc = t
        .get("model.23.cv3.0.2.weight")
        .map(|(s, _)| s[0])
        .ok_or_else(|| not_yolo26(path, "no class branch model.23.cv3.0.2.weight"))?;
    // stem width 16·w for width multiples n 0.25, s 0.5, m/l 1.0, x 1.5; m and l differ in depth
    let stem = t.get("model.0.conv.weight").map(|(s, _)| s[0]);
    let scale = match stem {
        Some(16) => 'n',
        Some(32) => 's',
        Some(64) if has("model.2.m.1.") => 'l',
        Some(64) => 'm',
        Some(96) => 'x',
        other => {
            return Err(not_yolo26(
                path,
                format!("a stem of {other:?} channels matches no YOLO26 scale"),
            ))
        }
    };
    Ok((scale, nc))
}
