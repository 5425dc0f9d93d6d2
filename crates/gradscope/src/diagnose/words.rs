//! The evidence in words: one sentence per finding, with the numbers that support it.

use super::evidence::{Evidence, Shape};
use super::rules::{self, DEAD_ABOVE, SATURATED_ABOVE};
use super::{LayerDiagnosis, Verdict};

/// What one element of the series is called: (the unit, its plural, "per …").
fn unit(shape: Shape) -> (&'static str, &'static str, &'static str) {
    match shape {
        Shape::ThroughTime { memory: true, .. } => ("time step (cell state c_t)", "steps", "step"),
        Shape::ThroughTime { memory: false, .. } => ("time step", "steps", "step"),
        Shape::Graph => (
            "layer (RMS; stem vs the head input that receives most)",
            "layers",
            "layer",
        ),
        Shape::Chain => ("hidden layer", "layers", "layer"),
    }
}

/// The sentences supporting `verdicts`, most general first.
pub fn evidence(e: &Evidence, verdicts: &[Verdict], layers: &[LayerDiagnosis]) -> Vec<String> {
    let (unit, units, per) = unit(e.shape);
    let mut out = vec![if e.shape == Shape::Graph {
        let heads: Vec<String> = super::head_inputs(layers)
            .iter()
            .map(|(name, rel)| format!("{name} {rel:.2e}"))
            .collect();
        format!(
            "‖∂L/∂h‖ (RMS) of the stem ÷ the head input that receives most: {:.2e} at init, {:.2e} at the end ({} {units}); each head input ÷ the strongest: {}",
            e.first_last_init,
            e.first_last_end,
            e.n_hidden,
            heads.join(", ")
        )
    } else {
        format!(
            "‖∂L/∂h‖ first/last {unit}: {:.2e} at init, {:.2e} at the end ({} {units}, ×{:.3} per {per})",
            e.first_last_init, e.first_last_end, e.n_hidden, e.per_layer_factor,
        )
    }];
    if let Some((p, m, n)) = e.meanfield {
        out.push(format!(
            "mean-field theory at init: √χ₁ = {p:.3} per layer predicted at the measured pre-activation variance, {m:.3} measured ({n} dense layers)"
        ));
    }
    if let Some(nf) = &e.nonfinite {
        out.push(nf.to_string());
    }
    if verdicts.contains(&Verdict::Vanishing) {
        out.push(vanishing(e, unit));
    }
    if verdicts.contains(&Verdict::Exploding) {
        out.push(exploding(e));
    }
    let dead: Vec<&LayerDiagnosis> = layers
        .iter()
        .filter(|l| l.verdict == Verdict::DeadUnits)
        .collect();
    if !dead.is_empty() {
        let worst = dead
            .iter()
            .map(|l| l.dead_frac.unwrap_or(0.0))
            .fold(0.0, f64::max);
        let names: Vec<&str> = dead.iter().map(|l| l.name.as_str()).collect();
        out.push(format!(
            "{} layers have more than {:.0}% dead ReLU units (worst {:.0}%): {}",
            dead.len(),
            DEAD_ABOVE * 100.0,
            worst * 100.0,
            names.join(", ")
        ));
    }
    let saturated = e.layers.iter().filter(|l| rules::saturated(l)).count();
    if saturated > 0 {
        out.push(format!(
            "{saturated} layers have more than {:.0}% of their units saturated (φ' < 0.01)",
            SATURATED_ABOVE * 100.0
        ));
    }
    if verdicts == [Verdict::Healthy] && rules::slow(e) {
        let vs = e
            .chance
            .map(|c| format!(", chance level {c:.3}"))
            .unwrap_or_default();
        out.push(format!(
            "gradients are healthy but the loss barely falls ({:.3} → {:.3}{vs}): an optimisation problem, not vanishing gradients (He et al. 2016)",
            e.loss_init, e.loss_end
        ));
    }
    out
}

fn vanishing(e: &Evidence, unit: &str) -> String {
    let first = e.layers.first().map_or(f64::NAN, |l| l.update_ratio);
    let last = e.layers.last().map_or(f64::NAN, |l| l.update_ratio);
    let received = e.first_last_end.min(e.first_last_init);
    if first.is_finite() && last.is_finite() {
        format!(
            "the first layer receives {received:.1e} of the last hidden layer's gradient; its update ratio ‖ΔW‖/‖W‖ is {first:.1e} against {last:.1e} for the last (≈1e-3 is healthy)"
        )
    } else {
        format!("the first {unit} receives {received:.1e} of the gradient at the last: the loss barely depends on early inputs")
    }
}

fn exploding(e: &Evidence) -> String {
    let growth = e.norm_growth();
    if growth > rules::NORM_GROWTH_ABOVE {
        format!(
            "global gradient norm grew ×{growth:.1e} since init ({:.2e} → {:.2e})",
            e.grad_norm_init, e.grad_norm_end
        )
    } else {
        format!(
            "the gradient grows ×{:.1e} from the last hidden layer back to the first",
            e.first_last_end
        )
    }
}
