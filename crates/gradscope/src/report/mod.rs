//! Reports: PNG plots and a one-page HTML report.

pub mod chart;
pub mod html;
pub mod panels;
pub mod plots;

use std::path::PathBuf;

use crate::diagnose::Diagnosis;
use crate::probe::StepRecord;
use crate::train::History;

/// What a report needs to know about one run.
pub struct RunView<'a> {
    pub name: &'a str,
    /// `key=value` settings that define the run.
    pub settings: String,
    pub records: &'a [StepRecord],
    pub history: &'a History,
    pub diagnosis: Option<&'a Diagnosis>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot draw {path}: {msg}")]
    Plot { path: PathBuf, msg: String },
    #[error("cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}
