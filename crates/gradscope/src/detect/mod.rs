//! YOLO26 detection: the input pipeline ([`input`]), the objective ([`objective`]), optimisation
//! ([`optimize`]), evaluation ([`eval`]) and the run folder ([`run`]), with the trainer
//! ([`train`]), prediction ([`predict`]) and export to Ultralytics ([`export`]) on top. Settings in [`args`], errors in [`error`].
//!
//! Dependencies point down that list: `input`, `objective`, `optimize` and `eval` know nothing of
//! runs or the trainer; `run` writes what they produce; `train` and `predict` use them all.

pub mod args;
pub mod branches;
pub mod error;
pub mod eval;
pub mod export;
pub mod input;
pub mod model;
pub mod objective;
pub mod optimize;
pub mod parallel;
pub mod predict;
pub mod remedies;
pub mod run;
pub mod schedule;
mod setup;
pub mod train;
