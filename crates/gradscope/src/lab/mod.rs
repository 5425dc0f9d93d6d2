//! Experiments that show a claim side by side and check it.

pub mod papers;
pub mod recurrent;
pub mod remedies;
pub mod settings;

use mlp::LabError;
pub mod mlp;

use std::path::{Path, PathBuf};

/// The labs' `device=` key (declared once for every lab).
pub const DEVICE_KEY: (&str, &str) = (
    "device",
    "cpu (default), or a GPU: 0, vulkan:0 (a binary built with --features gpu); one device",
);

/// A lab's `device=`: one device (data-parallel training is `gradscope train`'s).
pub(crate) fn lab_device(v: &str) -> Result<crate::devices::DeviceSpec, String> {
    let spec = crate::devices::DeviceSpec::parse(v).map_err(|e| format!("device={v}: {e}"))?;
    if spec.count() > 1 {
        return Err(format!(
            "device={v}: a lab runs on one device (data-parallel training is `gradscope train device=0,1`)"
        ));
    }
    spec.check().map_err(|e| format!("device={v}: {e}"))?;
    Ok(spec)
}

/// `root/name`, or `root/name2`, `root/name3`, … — the first that does not exist yet.
pub fn next_run_dir(root: &Path, name: &str) -> PathBuf {
    let first = root.join(name);
    if !first.exists() {
        return first;
    }
    (2..)
        .map(|i| root.join(format!("{name}{i}")))
        .find(|p| !p.exists())
        .expect("an unused folder name exists")
}

/// Creates `dir` (and its parents).
pub(crate) fn create_dir(dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(|source| LabError::Io {
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `value` as pretty JSON, creating the folder.
pub(crate) fn write_json(path: &Path, value: &serde_json::Value) -> Result<(), LabError> {
    if let Some(d) = path.parent() {
        create_dir(d)?;
    }
    let text = serde_json::to_string_pretty(value).expect("JSON values serialise");
    std::fs::write(path, text).map_err(|source| LabError::Io {
        path: path.to_path_buf(),
        source,
    })
}
