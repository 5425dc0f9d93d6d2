//! Diagnosis: from probe records to verdicts with their evidence, and ranked remedies — in three
//! steps that read top to bottom: [`evidence`] measures (numbers only, one pass over the
//! records), [`rules`] decides (small named rules with their thresholds), [`words`] and
//! [`remedy`] speak (sentences with the numbers; remedies as typed changes each front end turns
//! into its own pasteable `key=value`).
//!
//! Every rule uses relative quantities: how ‖∂L/∂h‖ changes from the last hidden layer to the
//! first (first/last ratio and its per-layer geometric mean), the update ratio ‖ΔW‖/‖W‖ (≈1e-3
//! is a healthy rule of thumb), growth of the global gradient norm, and — for plain dense layers
//! — the per-layer factor √χ₁ that mean-field theory predicts at the measured pre-activations.
//! A run whose gradients are healthy but whose loss falls slowly is *not* called vanishing (He et
//! al. 2016: deep plain nets with BatchNorm degrade with healthy gradients).

pub mod divergence;
pub mod evidence;
pub mod meanfield;
pub mod remedy;
pub mod rules;
pub mod words;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::probe::{NonFinite, StepRecord};

pub use evidence::{meanfield_factors, series, Evidence, Shape};
pub use remedy::{Change, Remedy};
pub use rules::{
    DEAD_ABOVE, EXPLODING_ABOVE, NEAR_CHANCE, NORM_GROWTH_ABOVE, SATURATED_ABOVE, SLOW_LOSS_RATIO,
    VANISHING_BELOW,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Healthy,
    Vanishing,
    Exploding,
    DeadUnits,
    Saturation,
    NonFinite,
    /// The run flew apart although its gradients may look fine (clipping bounds them): the
    /// loss grew by orders of magnitude, validation losses are not finite, or BatchNorm
    /// statistics blew up ([`divergence`]).
    Diverged,
    /// A branch of a graph-shaped network (a detection head level) receives almost no gradient
    /// because almost no target is assigned to it: not a vanishing gradient, nothing to learn
    /// from (decided by the detection trainer, which knows the assignments).
    StarvedBranch,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Healthy => "healthy",
            Verdict::Vanishing => "vanishing",
            Verdict::Exploding => "exploding",
            Verdict::DeadUnits => "dead units",
            Verdict::Saturation => "saturation",
            Verdict::NonFinite => "non-finite",
            Verdict::Diverged => "diverged",
            Verdict::StarvedBranch => "starved branch",
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerDiagnosis {
    pub name: String,
    pub block: String,
    pub verdict: Verdict,
    /// ‖∂L/∂h‖ at the layer's output ÷ the same at the last hidden layer (end window).
    pub grad_h_rel: f64,
    pub grad_h_norm: f64,
    pub update_ratio: f64,
    pub dead_frac: Option<f64>,
    pub sat_frac: Option<f64>,
    /// Measured ‖∂L/∂h_{l−1}‖/‖∂L/∂h_l‖ and the mean-field prediction √χ₁ for this layer.
    pub measured_factor: Option<f64>,
    pub predicted_factor: Option<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Diagnosis {
    /// The main verdict (most severe), then every verdict that applies.
    pub verdict: Verdict,
    pub verdicts: Vec<Verdict>,
    pub evidence: Vec<String>,
    pub remedies: Vec<Remedy>,
    pub first_last_init: f64,
    pub first_last_end: f64,
    /// Geometric mean of the factor ‖∂L/∂h_{l−1}‖/‖∂L/∂h_l‖ between neighbouring layers (or time
    /// steps) over the end window, where neither underflowed to zero.
    pub per_layer_factor: f64,
    /// Mean-field: geometric means of predicted √χ₁ and measured factors over the dense layers
    /// where the theory applies (at init).
    pub meanfield: Option<(f64, f64)>,
    pub nonfinite: Option<NonFinite>,
    pub layers: Vec<LayerDiagnosis>,
    pub activation: Option<Activation>,
}

/// Diagnoses a run from its probe records (in step order). `None` when there are no records.
pub fn diagnose(records: &[StepRecord]) -> Option<Diagnosis> {
    let e = Evidence::measure(records)?;
    let nonfinite_layer = e.nonfinite.as_ref().map(|n| n.layer.as_str());
    let layers: Vec<LayerDiagnosis> = e
        .layers
        .iter()
        .map(|l| LayerDiagnosis {
            name: l.name.clone(),
            block: l.block.clone(),
            verdict: rules::layer_verdict(l, nonfinite_layer),
            grad_h_rel: l.rel,
            grad_h_norm: l.grad_h_norm,
            update_ratio: l.update_ratio,
            dead_frac: l.dead_frac,
            sat_frac: l.sat_frac,
            measured_factor: l.measured_factor,
            predicted_factor: l.predicted_factor,
        })
        .collect();
    let layer_verdicts: Vec<Verdict> = layers.iter().map(|l| l.verdict).collect();
    let verdicts = rules::verdicts(&e, &layer_verdicts);
    let (through_time, cell) = match e.shape {
        Shape::ThroughTime { cell, .. } => (true, cell),
        _ => (false, None),
    };
    let context = remedy::Context {
        activation: e.activation,
        through_time,
        cell,
        slow: rules::slow(&e),
    };
    Some(Diagnosis {
        verdict: rules::main_verdict(&verdicts),
        evidence: words::evidence(&e, &verdicts, &layers),
        remedies: remedy::for_verdicts(&verdicts, &context),
        verdicts,
        first_last_init: e.first_last_init,
        first_last_end: e.first_last_end,
        per_layer_factor: e.per_layer_factor,
        meanfield: e.meanfield.map(|(p, m, _)| (p, m)),
        nonfinite: e.nonfinite,
        layers,
        activation: e.activation,
    })
}

impl Diagnosis {
    /// A diagnosis with `verdicts` (the first is the main one) and `remedies`, nothing measured:
    /// for testing front ends.
    #[cfg(test)]
    pub(crate) fn with_remedies(verdicts: &[Verdict], remedies: Vec<Remedy>) -> Diagnosis {
        Diagnosis {
            verdict: verdicts[0],
            verdicts: verdicts.to_vec(),
            evidence: Vec::new(),
            remedies,
            first_last_init: 1.0,
            first_last_end: 1.0,
            per_layer_factor: 1.0,
            meanfield: None,
            nonfinite: None,
            layers: Vec::new(),
            activation: None,
        }
    }
}

impl Diagnosis {
    /// The head inputs of a graph-shaped network (layers whose block is `output:*`, in layer
    /// order) with the RMS gradient each receives ÷ the one that receives most; empty for a chain.
    pub fn head_inputs(&self) -> Vec<(&str, f64)> {
        head_inputs(&self.layers)
    }

    /// The gradient flow in one line: for a chain (or time), first ÷ last layer and the factor
    /// per layer; for a graph, the stem ÷ the strongest head input and what each head input
    /// receives (a factor per layer means nothing across branches of different depth).
    pub fn flow_line(&self) -> String {
        let heads = self.head_inputs();
        if heads.is_empty() {
            return format!(
                "first/last ‖∂L/∂h‖ {:.3e}, per layer ×{:.3}",
                self.first_last_end, self.per_layer_factor
            );
        }
        let each: Vec<String> = heads
            .iter()
            .map(|(n, r)| format!("{n} {}", short(*r)))
            .collect();
        format!(
            "stem ÷ strongest head input (RMS ‖∂L/∂h‖) {:.2e}; head inputs {}",
            self.first_last_end,
            each.join(", ")
        )
    }
}

/// The head inputs among `layers` (blocks `output:*`, in layer order) with the RMS gradient each
/// receives ÷ the one that receives most.
pub(crate) fn head_inputs(layers: &[LayerDiagnosis]) -> Vec<(&str, f64)> {
    layers
        .iter()
        .filter(|l| l.block.starts_with("output:"))
        .map(|l| (l.name.as_str(), l.grad_h_rel))
        .collect()
}

/// A ratio in 3 significant digits, exponent form below 0.01.
fn short(x: f64) -> String {
    if x.is_finite() && x != 0.0 && x.abs() < 0.01 {
        format!("{x:.2e}")
    } else {
        format!("{x:.3}")
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.verdicts.len() > 1 {
            let all: Vec<String> = self.verdicts.iter().map(|v| v.to_string()).collect();
            writeln!(f, "verdict: {} (all: {})", self.verdict, all.join(", "))?;
        } else {
            writeln!(f, "verdict: {}", self.verdict)?;
        }
        writeln!(f, "evidence:")?;
        for e in &self.evidence {
            writeln!(f, "  - {e}")?;
        }
        if !self.remedies.is_empty() {
            writeln!(f, "remedies, most relevant first:")?;
            for (i, r) in self.remedies.iter().enumerate() {
                writeln!(f, "  {}. {:<28} {}", i + 1, r.switch, r.why)?;
            }
        }
        // in a graph, "rel." is the RMS gradient ÷ the head input that receives most
        let (title, rel) = if self.head_inputs().is_empty() {
            ("per layer (end of run):", "rel. last")
        } else {
            (
                "per layer (end of run; rel. head: RMS ‖∂L/∂h‖ ÷ the head input that receives most):",
                "rel. head",
            )
        };
        writeln!(f, "{title}")?;
        writeln!(
            f,
            "  {:<10} {:<14} {:>11} {:>11} {:>10} {:>6} {:>6} {:>8} {:>8}  verdict",
            "layer", "block", "‖∂L/∂h‖", rel, "update", "dead", "sat", "measured", "√χ₁"
        )?;
        let opt = |x: Option<f64>, pct: bool| match x {
            Some(v) if pct => format!("{:.0}%", v * 100.0),
            Some(v) => format!("{v:.3}"),
            None => "-".into(),
        };
        // no finite update in the window: a layer without parameters (a concatenation, an
        // upsampling) has none to show
        let update = |x: f64| {
            if x.is_nan() {
                "-".to_string()
            } else {
                format!("{x:.2e}")
            }
        };
        for l in &self.layers {
            writeln!(
                f,
                "  {:<10} {:<14} {:>11.3e} {:>11.3e} {:>10} {:>6} {:>6} {:>8} {:>8}  {}",
                l.name,
                l.block,
                l.grad_h_norm,
                l.grad_h_rel,
                update(l.update_ratio),
                opt(l.dead_frac, true),
                opt(l.sat_frac, true),
                opt(l.measured_factor, false),
                opt(l.predicted_factor, false),
                l.verdict
            )?;
        }
        Ok(())
    }
}
