//! Checkpoints as safetensors, written atomically (a temporary file, then a rename) and never
//! from a state that holds a NaN or ∞: a good checkpoint is never replaced by a broken one.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};

use crate::probe::params::snapshot;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("refusing to write {path}: parameter '{param}' is not finite (the previous checkpoint is kept)")]
    NonFinite { path: PathBuf, param: String },
    #[error("cannot write checkpoint {path}: {msg}")]
    Write { path: PathBuf, msg: String },
    #[error("cannot read checkpoint {path}: {msg}")]
    Read { path: PathBuf, msg: String },
}

/// Writes `model` to `path` (safetensors) if every parameter is finite.
pub fn save<M: Module>(model: &M, path: &Path) -> Result<(), CheckpointError> {
    if let Some(bad) = snapshot(model, None)
        .into_iter()
        .find(|p| !p.sq.is_finite())
    {
        return Err(CheckpointError::NonFinite {
            path: path.to_path_buf(),
            param: bad.path,
        });
    }
    let write = |msg: String| CheckpointError::Write {
        path: path.to_path_buf(),
        msg,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| write(e.to_string()))?;
    }
    let tmp = path.with_extension("safetensors.tmp");
    let mut store = SafetensorsStore::from_file(&tmp).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| write(format!("{e:?}")))?;
    std::fs::rename(&tmp, path).map_err(|e| write(e.to_string()))
}

/// Loads parameters saved by [`save`] into `model`.
pub fn load<M: Module>(mut model: M, path: &Path) -> Result<M, CheckpointError> {
    let mut store = SafetensorsStore::from_file(path);
    model
        .load_from(&mut store)
        .map_err(|e| CheckpointError::Read {
            path: path.to_path_buf(),
            msg: format!("{e:?}"),
        })?;
    Ok(model)
}
