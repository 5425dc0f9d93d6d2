//! NaN recovery: the last state known to give a finite loss and finite gradients — parameters,
//! optimizer state, and buffers such as BatchNorm running statistics — kept so that a
//! non-finite step can be undone.
//!
//! The model is kept as a `valid()` snapshot: a plain clone would share its running statistics
//! with the live model (burn keeps them behind a shared mutex, with pending per-thread updates),
//! so the failing forward pass would write NaN into the saved state too. `valid()` synchronises
//! and copies them into new state; `train()` brings the snapshot back for training.

use burn::module::Module;
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

/// The saved model and optimizer state (the labs' [`Optimizer`](super::optim::Optimizer), the
/// detection trainer's grouped optimizer for YOLO).
pub struct GoodState<M, O = super::optim::Optimizer> {
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

/// What to do after a non-finite step.
#[derive(Clone, Debug)]
pub enum Decision {
    /// Undo the step, continue with the learning rate halved.
    Recover(RecoveryEvent),
    /// Too many in a row (or recovery off): stop the run, with this reason.
    Stop(String),
}

/// Counts non-finite steps in a row and decides between recovering and stopping: the one policy
/// of the lab loop ([`fit`](super::fit)) and the detection trainer.
#[derive(Clone, Debug)]
pub struct Recovery {
    limit: usize,
    in_a_row: usize,
}

impl Recovery {
    /// Stops at the `limit`-th non-finite step in a row (0: at the first, no recovery).
    pub fn new(limit: usize) -> Self {
        Recovery { limit, in_a_row: 0 }
    }

    /// A recovery that has seen `in_a_row` non-finite steps in a row (a resumed run).
    pub fn resumed(limit: usize, in_a_row: usize) -> Self {
        Recovery { limit, in_a_row }
    }

    /// Non-finite steps since the last finite one.
    pub fn in_a_row(&self) -> usize {
        self.in_a_row
    }

    /// A finite step: the count starts again.
    pub fn finite(&mut self) {
        self.in_a_row = 0;
    }

    /// A non-finite `what` (`loss` or `gradient`) at optimizer step `step`, described for the
    /// user as `at` (e.g. "step 12" or "epoch 2 iteration 5"), produced where `producer` says;
    /// `lr` is the learning rate in use. The caller restores its last good state either way.
    pub fn failed(
        &mut self,
        what: &str,
        step: usize,
        at: &str,
        producer: Option<NonFinite>,
        lr: f64,
    ) -> Decision {
        self.in_a_row += 1;
        let by = producer
            .as_ref()
            .map(|p| format!(": {p}"))
            .unwrap_or_default();
        if self.limit == 0 {
            return Decision::Stop(format!(
                "non-finite {what} at {at}{by} (nan_recovery=0: no recovery)"
            ));
        }
        if self.in_a_row >= self.limit {
            return Decision::Stop(format!(
                "non-finite {what} at {at}, {} in a row{by}",
                self.in_a_row
            ));
        }
        Decision::Recover(RecoveryEvent {
            step,
            what: what.into(),
            producer,
            lr_after: lr * 0.5,
        })
    }
}

/// Where a non-finite step came from: the probe record of that step when it was probed, else the
/// step replayed with the probe on (`replay` returns its pending record). A record that read the
/// taps only ([`crate::probe::Probe::after_backward_for_update`]) lacks the parameters' gradients,
/// which the update pass a failed step never reaches would have given: it is discarded and the
/// step replayed too. Probe I/O errors are returned, not dropped.
pub fn localise<M: Module>(
    probe: &mut crate::probe::Probe,
    pending: Option<crate::probe::Pending>,
    replay: impl FnOnce(&mut crate::probe::Probe) -> Option<crate::probe::Pending>,
    model: &M,
    lr: f64,
) -> Result<Option<NonFinite>, crate::probe::ProbeError> {
    let pending = match pending {
        Some(p) if !p.taps_only() => Some(p),
        taps_or_none => {
            probe.discard(taps_or_none);
            replay(probe)
        }
    };
    Ok(probe
        .after_step(pending, model, lr)?
        .and_then(|r| r.nonfinite.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_until_the_limit_then_stops_and_counts_again_after_a_finite_step() {
        let mut r = Recovery::new(3);
        for _ in 0..2 {
            let d = r.failed("loss", 4, "step 4", None, 0.1);
            assert!(
                matches!(d, Decision::Recover(ref e) if e.lr_after == 0.05),
                "{d:?}"
            );
        }
        assert!(matches!(
            r.failed("gradient", 6, "step 6", None, 0.1),
            Decision::Stop(ref s) if s == "non-finite gradient at step 6, 3 in a row"
        ));
        r.finite();
        assert!(matches!(
            r.failed("loss", 7, "step 7", None, 0.1),
            Decision::Recover(_)
        ));
        assert!(matches!(
            Recovery::new(0).failed("loss", 0, "step 0", None, 0.1),
            Decision::Stop(ref s) if s.contains("nan_recovery=0")
        ));
    }
}
