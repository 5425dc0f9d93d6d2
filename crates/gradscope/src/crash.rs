//! Named crash points for the fault-injection tests.
//!
//! `GRADSCOPE_CRASH_AT=<point>` aborts the process the first time it reaches `point`,
//! `GRADSCOPE_CRASH_AT=<point>#<n>` the n-th time: no unwinding, no destructors, no buffers
//! flushed — what `kill -9` leaves behind, at an instant chosen by name instead of by chance.
//! Unset (always, outside the tests), a point costs one load of a cached value.
//!
//! The points a training run passes:
//! - `step`: after an optimizer step (parameters, optimizer and EMA updated in memory);
//! - `step@rank<r>`: the same in replica `r` of data-parallel training (`device=cpu,cpu`);
//! - `write-half:<file>`: inside an atomic write of `<file>` (e.g. `last.state.safetensors`),
//!   with half of its temporary file written;
//! - `write:<file>`: the temporary file complete and synced, before the rename;
//! - `csv`: after an epoch's results.csv row;
//! - `epoch`: after an epoch, its resume state committed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The environment variable naming the point to crash at.
pub const ENV: &str = "GRADSCOPE_CRASH_AT";

fn target() -> Option<&'static (String, usize)> {
    static AT: OnceLock<Option<(String, usize)>> = OnceLock::new();
    AT.get_or_init(|| {
        let v = std::env::var(ENV).ok()?;
        Some(match v.rsplit_once('#') {
            Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1).max(1)),
            None => (v, 1),
        })
    })
    .as_ref()
}

/// Aborts the process if this is the point (and the time) `GRADSCOPE_CRASH_AT` names.
pub fn point(name: &str) {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    if let Some((at, n)) = target() {
        if at == name && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("{ENV}={at}#{n}: aborting here");
            std::process::abort();
        }
    }
}

/// [`point`] for a point named after a file: `<prefix>:<file name>`.
pub fn file_point(prefix: &str, path: &std::path::Path) {
    if target().is_some() {
        let file = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        point(&format!("{prefix}:{file}"));
    }
}
