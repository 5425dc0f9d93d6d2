//! Evaluation: validation of a model on a split ([`validate`]) and COCO metrics ([`metrics`]).

pub mod det_metrics;
pub mod metrics;
pub mod validate;
