//! Divergence: a run can keep finite gradients (clipping bounds every step) and still fly apart.
//! The evidence here is the run itself, not the gradients: the training loss growing, validation
//! losses that are no longer finite, BatchNorm running statistics far out of range, or a loss that
//! collapsed to nothing. Each rule is small and named; [`divergence`] collects what they find.

/// Training loss at the end ÷ at the start above this: the run diverged.
pub const LOSS_GROWTH_ABOVE: f64 = 10.0;
/// The validation loss is more than [`VAL_OVER_TRAIN_ABOVE`]× the training loss.
pub fn val_far_above_train(val: Option<f64>, train: Option<f64>) -> Option<String> {
    let (v, t) = (val?, train?);
    (v.is_finite() && t.is_finite() && v > VAL_OVER_TRAIN_ABOVE * t.max(f64::MIN_POSITIVE)).then(|| {
        format!("the validation loss ({v:.3e}) is {:.3e}× the training loss ({t:.3e}): with BatchNorm on its running statistics the network no longer computes what it trained", v / t)
    })
}

/// A BatchNorm running variance above this: the pre-activations it normalises have blown up
/// (inputs are in [0, 1] and a trained network keeps unit-scale activations; 1e6 is a variance
/// of activations of size 1000).
pub const BN_VAR_ABOVE: f64 = 1e6;
/// Validation loss ÷ training loss of the same epoch above this: evaluation (BatchNorm on its
/// running statistics) no longer computes what training does. A healthy detector stays within
/// a few × (the default tree run: 0.8–1.3×).
pub const VAL_OVER_TRAIN_ABOVE: f64 = 100.0;

/// What a run leaves for the divergence rules.
#[derive(Clone, Debug, Default)]
pub struct RunTrace<'a> {
    /// Training loss of every optimizer step.
    pub step_loss: &'a [f64],
    /// Total validation loss of the last validated epoch, if validation ran.
    pub last_val_loss: Option<f64>,
    /// Mean training loss of that epoch.
    pub last_train_loss: Option<f64>,
    /// The largest BatchNorm running variance (name, value); non-finite counts as largest.
    pub bn_var_max: Option<(String, f64)>,
    /// The last epoch's batches had target boxes and the assigner gave none of them an anchor.
    pub unassigned: bool,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The median finite step loss of the first tenth of the steps and of the last (at least 3 steps
/// each), and how many finite steps there were; `None` when there are too few to say.
fn ends(step_loss: &[f64]) -> Option<(f64, f64, usize)> {
    let finite: Vec<f64> = step_loss
        .iter()
        .copied()
        .filter(|l| l.is_finite())
        .collect();
    let k = (finite.len() / 10).max(3);
    if finite.len() < 2 * k {
        return None;
    }
    let first = median(finite[..k].to_vec());
    let last = median(finite[finite.len() - k..].to_vec());
    Some((first, last, finite.len()))
}

/// The training loss grew more than [`LOSS_GROWTH_ABOVE`]× from the first tenth of the steps to
/// the last (medians over at least 3 steps each, so one noisy batch does not decide).
pub fn loss_grew(step_loss: &[f64]) -> Option<String> {
    let (first, last, n) = ends(step_loss)?;
    (last > LOSS_GROWTH_ABOVE * first.max(f64::MIN_POSITIVE)).then(|| {
        format!(
            "training loss grew from {first:.3e} to {last:.3e} (×{:.3e}) over {} optimizer steps",
            last / first,
            n
        )
    })
}

/// Training loss at the end ÷ at the start below this: the run collapsed.
pub const LOSS_COLLAPSE_BELOW: f64 = 1e-6;

/// The training loss fell below [`LOSS_COLLAPSE_BELOW`]× its start (medians of the first and
/// last tenth, as [`loss_grew`]). A detector cannot learn its way there: its class loss is BCE
/// against soft targets (the assigned anchors' alignment, between 0 and 1), which stays above
/// their entropy while any anchor is assigned one. A loss a millionth of its start means every
/// class score is near 0: the model predicts nothing, no anchor is assigned a target, and no
/// gradient is left to learn from — the collapse too large steps leave when they do not reach NaN.
pub fn loss_collapsed(step_loss: &[f64]) -> Option<String> {
    let (first, last, n) = ends(step_loss)?;
    (first > 0.0 && last < LOSS_COLLAPSE_BELOW * first).then(|| {
        format!(
            "training loss fell from {first:.3e} to {last:.3e} over {n} optimizer steps: every class score is near 0, so the model predicts nothing and no anchor is assigned a target (a collapse, not a fit)"
        )
    })
}

/// Training loss at the end ÷ at the start below this, with no anchor assigned a target in the
/// last epoch: the run collapsed. A detector that fits its data keeps its loss within about a
/// hundredth of its start (box and L1 losses are measured on assigned anchors, and some always
/// are while it detects anything).
pub const UNASSIGNED_COLLAPSE_BELOW: f64 = 1e-3;

/// The training loss fell below [`UNASSIGNED_COLLAPSE_BELOW`]× its start (medians as
/// [`loss_grew`]) while the last epoch had target boxes and the assigner gave none of them an
/// anchor: the model predicts nothing anywhere, and the small loss is that of empty predictions,
/// not of a fit. The collapse [`loss_collapsed`] names when the loss has not (yet) fallen a
/// millionfold: the trees run at lr0=1 ended at 1e-4 of its start with no anchor assigned.
pub fn nothing_assigned(step_loss: &[f64], unassigned: bool) -> Option<String> {
    if !unassigned {
        return None;
    }
    let (first, last, n) = ends(step_loss)?;
    (first > 0.0 && last < UNASSIGNED_COLLAPSE_BELOW * first).then(|| {
        format!(
            "no anchor was assigned a target in the last epoch though its images had boxes, and the training loss fell from {first:.3e} to {last:.3e} over {n} optimizer steps: the model predicts nothing (a collapse, not a fit)"
        )
    })
}

/// Validation ran and its loss is not a finite number.
pub fn val_loss_not_finite(last_val_loss: Option<f64>) -> Option<String> {
    last_val_loss
        .filter(|l| !l.is_finite())
        .map(|l| format!("the validation loss is {l} at the end of training"))
}

/// A BatchNorm running variance above [`BN_VAR_ABOVE`] or not finite.
pub fn bn_statistics_exploded(bn_var_max: Option<&(String, f64)>) -> Option<String> {
    let (name, v) = bn_var_max?;
    (!v.is_finite() || *v > BN_VAR_ABOVE).then(|| {
        format!("BatchNorm running variance reached {v:.3e} in {name} (a trained network keeps it near 1)")
    })
}

/// Every divergence rule that fires, as evidence lines; empty when the run did not diverge.
pub fn divergence(trace: &RunTrace) -> Vec<String> {
    [
        loss_grew(trace.step_loss),
        loss_collapsed(trace.step_loss)
            .or_else(|| nothing_assigned(trace.step_loss, trace.unassigned)),
        val_loss_not_finite(trace.last_val_loss),
        val_far_above_train(trace.last_val_loss, trace.last_train_loss),
        bn_statistics_exploded(trace.bn_var_max.as_ref()),
    ]
    .into_iter()
    .flatten()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_falling_or_noisy_loss_is_not_divergence() {
        let falling: Vec<f64> = (0..100).map(|i| 5.0 * (-(i as f64) / 50.0).exp()).collect();
        assert_eq!(loss_grew(&falling), None);
        // one huge spike among steady losses: the medians ignore it
        let mut spiky = vec![3.0; 60];
        spiky[55] = 1e9;
        assert_eq!(loss_grew(&spiky), None);
        // too few steps to say
        assert_eq!(loss_grew(&[1.0, 1e9, 1e9]), None);
    }

    #[test]
    fn a_loss_that_climbs_by_orders_of_magnitude_is() {
        let climbing: Vec<f64> = (0..40).map(|i| 3.0 * 10f64.powf(i as f64 / 5.0)).collect();
        let e = loss_grew(&climbing).expect("diverged");
        assert!(e.contains("over 40 optimizer steps"), "{e}");
        // NaN steps (undone by recovery) are left out, not counted as growth or as healthy
        let mut with_nan = climbing.clone();
        with_nan.push(f64::NAN);
        assert!(loss_grew(&with_nan).is_some());
    }

    #[test]
    fn a_loss_that_falls_a_millionfold_has_collapsed() {
        // the trees run at lr0=1: ≈3 at the start, ≈1e-8 over its last epoch
        let mut collapsed: Vec<f64> = (0..42).map(|i| 3.0 / (1.0 + i as f64)).collect();
        collapsed.extend((0..21).map(|i| 1e-8 * (1.0 + (i % 3) as f64)));
        let e = loss_collapsed(&collapsed).expect("collapsed");
        assert!(e.contains("to 2.000e-8 over 63 optimizer steps"), "{e}");
        // a loss that falls a thousandfold is training; one tiny step among them decides nothing
        let mut small: Vec<f64> = (0..60).map(|i| 3.0 * (-(i as f64) / 9.0).exp()).collect();
        assert_eq!(loss_collapsed(&small), None);
        small[58] = 0.0;
        assert_eq!(loss_collapsed(&small), None);
        // zero from the start (nothing to learn from) is not a collapse; too few steps to say
        assert_eq!(loss_collapsed(&[0.0; 30]), None);
        assert_eq!(loss_collapsed(&[3.0, 0.0, 0.0]), None);
    }

    #[test]
    fn a_loss_that_falls_with_nothing_assigned_has_collapsed() {
        // the trees run at lr0=1 with other last bits: ≈17 at the start, ≈1.3e-4 over its last
        // epoch, no anchor assigned
        let mut run: Vec<f64> = (0..42).map(|i| 17.0 / (1.0 + i as f64)).collect();
        run.extend((0..21).map(|i| 1.3e-4 * (1.0 + (i % 3) as f64 / 10.0)));
        assert_eq!(loss_collapsed(&run), None, "not a millionfold");
        let e = nothing_assigned(&run, true).expect("collapsed");
        assert!(
            e.contains("no anchor was assigned") && e.contains("63 optimizer steps"),
            "{e}"
        );
        let trace = RunTrace {
            step_loss: &run,
            unassigned: true,
            ..RunTrace::default()
        };
        assert_eq!(divergence(&trace).len(), 1);
        // anchors assigned: a small loss is a fit; none assigned but the loss barely fell (a
        // run that has not started learning): not a collapse
        assert_eq!(nothing_assigned(&run, false), None);
        let flat: Vec<f64> = (0..60).map(|i| 3.0 - i as f64 * 0.01).collect();
        assert_eq!(nothing_assigned(&flat, true), None);
    }

    #[test]
    fn validation_and_batchnorm_rules() {
        assert_eq!(val_loss_not_finite(Some(3.2)), None);
        assert_eq!(val_loss_not_finite(None), None);
        assert!(val_loss_not_finite(Some(f64::NAN)).unwrap().contains("NaN"));
        assert_eq!(
            bn_statistics_exploded(Some(&("model.0.bn".into(), 40.0))),
            None
        );
        let e = bn_statistics_exploded(Some(&("model.3.bn".into(), 5e20))).unwrap();
        assert!(e.contains("model.3.bn") && e.contains("5.000e20"), "{e}");
        assert!(bn_statistics_exploded(Some(&("m".into(), f64::INFINITY))).is_some());
        assert_eq!(val_far_above_train(Some(2.8), Some(3.5)), None);
        let e = val_far_above_train(Some(286.9), Some(0.29)).unwrap();
        assert!(e.contains("9.893e2×"), "{e}");
        let trace = RunTrace {
            step_loss: &[],
            last_train_loss: None,
            last_val_loss: Some(f64::NAN),
            bn_var_max: Some(("m".into(), 1e9)),
            unassigned: false,
        };
        assert_eq!(divergence(&trace).len(), 2);
    }
}
