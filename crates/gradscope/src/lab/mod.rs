//! Experiments that show a claim side by side and check it.

pub mod settings;
pub mod vanishing;

use std::path::{Path, PathBuf};

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
