//! The verdict rules: each small, named, and reading only [`Evidence`] numbers. Thresholds are
//! relative quantities (ratios of gradient magnitudes, fractions of units), so they hold for any
//! width, batch or loss scale.

use crate::activation::Activation;

use super::evidence::{Evidence, LayerEvidence};
use super::Verdict;

/// ‖∂L/∂h_first‖/‖∂L/∂h_last‖ below this: the first layers get < 1% of the gradient.
pub const VANISHING_BELOW: f64 = 1e-2;
/// … above this: the gradient grows more than 100× on its way back.
pub const EXPLODING_ABOVE: f64 = 1e2;
/// Global gradient norm growth (end window ÷ init) above this: exploding over time.
pub const NORM_GROWTH_ABOVE: f64 = 1e3;
/// Fraction of dead (ReLU) units or saturated (sigmoid/tanh) elements that makes a verdict.
pub const DEAD_ABOVE: f64 = 0.5;
pub const SATURATED_ABOVE: f64 = 0.5;
/// Loss at the end ÷ loss at the start above this: the run has barely learnt.
pub const SLOW_LOSS_RATIO: f64 = 0.9;
/// A classifier whose loss ends above this fraction of the chance level ln C has barely learnt.
pub const NEAR_CHANCE: f64 = 0.8;

/// The first layer receives less than [`VANISHING_BELOW`] of the last one's gradient at the end
/// (or at init, when nothing at the end was finite).
pub fn vanishing(e: &Evidence) -> bool {
    e.first_last_end < VANISHING_BELOW
        || (e.first_last_end.is_nan() && e.first_last_init < VANISHING_BELOW)
}

/// The gradient grows more than [`EXPLODING_ABOVE`]× on its way back, or the global norm grew
/// more than [`NORM_GROWTH_ABOVE`]× since init.
pub fn exploding(e: &Evidence) -> bool {
    e.first_last_end > EXPLODING_ABOVE || e.norm_growth() > NORM_GROWTH_ABOVE
}

/// A ReLU layer with more than [`DEAD_ABOVE`] of its units dead.
pub fn dead(l: &LayerEvidence) -> bool {
    l.dead_frac.is_some_and(|d| d > DEAD_ABOVE) && l.act_fn == Some(Activation::Relu)
}

/// More than [`SATURATED_ABOVE`] of a layer's units where φ' < 0.01.
pub fn saturated(l: &LayerEvidence) -> bool {
    l.sat_frac.is_some_and(|s| s > SATURATED_ABOVE)
}

/// The loss barely fell ([`SLOW_LOSS_RATIO`]), or a classifier ends near chance
/// ([`NEAR_CHANCE`]): needs more than one record to say.
pub fn slow(e: &Evidence) -> bool {
    e.steps > 1
        && (e.loss_end / e.loss_init > SLOW_LOSS_RATIO
            || e.chance.is_some_and(|c| e.loss_end > NEAR_CHANCE * c))
}

/// One layer's verdict: the non-finite value's layer, then starved (against the weakest head
/// input), then exploding (against the strongest), dead, saturated.
pub fn layer_verdict(l: &LayerEvidence, nonfinite_layer: Option<&str>) -> Verdict {
    if nonfinite_layer == Some(l.name.as_str()) {
        Verdict::NonFinite
    } else if l.rel_weakest < VANISHING_BELOW {
        Verdict::Vanishing
    } else if l.rel > EXPLODING_ABOVE {
        Verdict::Exploding
    } else if dead(l) {
        Verdict::DeadUnits
    } else if saturated(l) {
        Verdict::Saturation
    } else {
        Verdict::Healthy
    }
}

/// Every verdict that applies to the run, in a fixed order (`Healthy` alone when none does).
/// `layer_verdicts` are [`layer_verdict`] of each of `e.layers`.
pub fn verdicts(e: &Evidence, layer_verdicts: &[Verdict]) -> Vec<Verdict> {
    let mut v = Vec::new();
    if e.nonfinite.is_some() {
        v.push(Verdict::NonFinite);
    }
    if vanishing(e) {
        v.push(Verdict::Vanishing);
    }
    if exploding(e) {
        v.push(Verdict::Exploding);
    }
    if layer_verdicts.contains(&Verdict::DeadUnits) {
        v.push(Verdict::DeadUnits);
    }
    if e.layers.iter().any(saturated) {
        v.push(Verdict::Saturation);
    }
    if v.is_empty() {
        v.push(Verdict::Healthy);
    }
    v
}

/// How severe a verdict is: the main verdict of a run is its most severe.
pub fn severity(v: Verdict) -> u8 {
    match v {
        Verdict::Diverged => 6,
        Verdict::NonFinite => 5,
        Verdict::Exploding => 4,
        Verdict::Vanishing => 3,
        Verdict::DeadUnits => 2,
        Verdict::Saturation => 1,
        Verdict::StarvedBranch => 1,
        Verdict::Healthy => 0,
    }
}

/// The most severe of `verdicts` (healthy when empty).
pub fn main_verdict(verdicts: &[Verdict]) -> Verdict {
    verdicts
        .iter()
        .copied()
        .max_by_key(|v| severity(*v))
        .unwrap_or(Verdict::Healthy)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::diagnose::evidence::Shape;

    /// A healthy 4-layer ReLU chain: every layer gets half the next one's gradient at most.
    pub(crate) fn healthy() -> Evidence {
        let layer = |i: usize| LayerEvidence {
            name: format!("fc{i}"),
            block: "dense".into(),
            act_fn: Some(Activation::Relu),
            grad_h_norm: 0.5 + 0.1 * i as f64,
            rel: 0.5 + 0.1 * i as f64,
            rel_weakest: 0.5 + 0.1 * i as f64,
            update_ratio: 1e-3,
            dead_frac: Some(0.1),
            sat_frac: None,
            measured_factor: None,
            predicted_factor: None,
        };
        Evidence {
            shape: Shape::Chain,
            activation: Some(Activation::Relu),
            n_hidden: 4,
            first_last_init: 0.6,
            first_last_end: 0.5,
            per_layer_factor: 0.8,
            grad_norm_init: 1.0,
            grad_norm_end: 0.7,
            loss_init: 2.3,
            loss_end: 0.4,
            chance: Some(10f64.ln()),
            steps: 50,
            nonfinite: None,
            meanfield: None,
            layers: (0..4).map(layer).collect(),
        }
    }

    fn run_verdicts(e: &Evidence) -> Vec<Verdict> {
        let nf = e.nonfinite.as_ref().map(|n| n.layer.as_str());
        let lv: Vec<Verdict> = e.layers.iter().map(|l| layer_verdict(l, nf)).collect();
        verdicts(e, &lv)
    }

    #[test]
    fn a_healthy_run_is_healthy_and_not_slow() {
        let e = healthy();
        assert_eq!(run_verdicts(&e), [Verdict::Healthy]);
        assert!(!slow(&e));
    }

    #[test]
    fn vanishing_at_the_end_or_at_init_when_the_end_is_not_finite() {
        let mut e = healthy();
        e.first_last_end = 5e-3;
        assert_eq!(run_verdicts(&e), [Verdict::Vanishing]);
        e.first_last_end = f64::NAN;
        assert!(!vanishing(&e), "init was fine");
        e.first_last_init = 1e-4;
        assert!(vanishing(&e));
        // exactly at the threshold: not yet
        e.first_last_end = VANISHING_BELOW;
        assert!(!vanishing(&e));
    }

    #[test]
    fn exploding_by_depth_or_by_growth_over_time() {
        let mut e = healthy();
        e.first_last_end = 300.0;
        assert!(exploding(&e));
        let mut e = healthy();
        e.grad_norm_end = 2e3;
        assert!(exploding(&e));
        assert_eq!(run_verdicts(&e), [Verdict::Exploding]);
        e.grad_norm_end = 9e2;
        assert!(!exploding(&e));
    }

    #[test]
    fn dead_units_count_only_for_relu_and_saturation_for_any_layer() {
        let mut e = healthy();
        e.layers[1].dead_frac = Some(0.7);
        assert_eq!(layer_verdict(&e.layers[1], None), Verdict::DeadUnits);
        assert_eq!(run_verdicts(&e), [Verdict::DeadUnits]);
        e.layers[1].act_fn = Some(Activation::LeakyRelu);
        assert_eq!(run_verdicts(&e), [Verdict::Healthy]);
        e.layers[2].sat_frac = Some(0.9);
        assert_eq!(run_verdicts(&e), [Verdict::Saturation]);
    }

    #[test]
    fn a_layer_is_judged_nonfinite_then_starved_then_exploding() {
        let mut l = healthy().layers[0].clone();
        l.rel_weakest = 1e-3;
        l.rel = 500.0;
        assert_eq!(layer_verdict(&l, Some("fc0")), Verdict::NonFinite);
        assert_eq!(layer_verdict(&l, Some("fc9")), Verdict::Vanishing);
        l.rel_weakest = 1.0;
        assert_eq!(layer_verdict(&l, None), Verdict::Exploding);
    }

    #[test]
    fn slow_when_the_loss_barely_falls_or_ends_near_chance() {
        let mut e = healthy();
        e.loss_end = 2.2;
        assert!(slow(&e));
        e.loss_init = 5.0; // fell a lot, but ends at 2.2 > 0.8 ln 10 = 1.84
        assert!(slow(&e));
        e.chance = None;
        assert!(!slow(&e));
        e.loss_end = 4.9;
        e.steps = 1;
        assert!(!slow(&e), "one record says nothing about learning");
    }

    #[test]
    fn the_main_verdict_is_the_most_severe() {
        use Verdict::*;
        assert_eq!(main_verdict(&[Saturation, Vanishing, DeadUnits]), Vanishing);
        assert_eq!(main_verdict(&[Vanishing, NonFinite, Exploding]), NonFinite);
        assert_eq!(main_verdict(&[Exploding, Diverged]), Diverged);
        assert_eq!(main_verdict(&[]), Healthy);
    }
}
