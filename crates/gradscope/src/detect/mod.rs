//! YOLO26 detection training: augmentation, target assignment, losses, metrics, the trainer,
//! validation and prediction.

pub mod args;
pub mod assign;
pub mod augment;
pub mod dataset;
pub mod download;
pub mod ema;
pub mod loss;
pub mod metrics;
pub mod optimizer;
pub mod plots;
pub mod predict;
pub mod resume;
pub mod runs;
pub mod train;
pub mod validate;
