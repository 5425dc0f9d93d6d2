//! NaN recovery: the last state known to give a finite loss and finite gradients — parameters,
//! optimizer state, and buffers such as BatchNorm running statistics — kept so that a
//! non-finite step can be undone.
//!
//! The model is kept as a `valid()` snapshot: a plain clone would share its running statistics
//! with the live model (burn keeps them behind a shared mutex, with pending per-thread updates),
//! so the failing forward pass would write NaN into the saved state too. `valid()` synchronises
//! and copies them into new state; `train()` brings the snapshot back for training.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use serde::{Deserialize, Serialize};

use crate::probe::NonFinite;

/// One recovery: at `step` the loss or a gradient was not finite.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecoveryEvent {
    pub step: usize,
    /// `loss` or `gradient`.
    pub what: String,
    /// Where the non-finite value was produced, when it could be localised.
    pub producer: Option<NonFinite>,
    /// Learning rate after halving.
    pub lr_after: f64,
}

/// The saved model and optimizer state (burn's `ModuleOptimizer` for the labs, the detection
/// trainer's own grouped optimizer for YOLO).
pub struct GoodState<M, O = ModuleOptimizer> {
    model: M,
    optim: O,
}

impl<M: Module + Clone, O: Clone> GoodState<M, O> {
    pub fn capture(model: &M, optim: &O) -> Self {
        GoodState {
            model: model.valid(),
            optim: optim.clone(),
        }
    }

    /// The saved model, ready to train, and the saved optimizer.
    pub fn restore(&self) -> (M, O) {
        (self.model.clone().train(), self.optim.clone())
    }
}
