//! The probe's records: one [`StepRecord`] per probed step, one JSON line each in `probe.jsonl`.
//!
//! Schema (all norms are L2 over every element; non-finite numbers are written as the strings
//! `"NaN"`, `"Infinity"`, `"-Infinity"` so that no information is lost):
//!
//! ```text
//! { "step": 40, "epoch": 1, "loss": 2.28, "lr": 0.01, "grad_norm": 0.53,
//!   "layers": [ { "name": "layers.0", "block": "dense", "act_fn": "sigmoid",
//!                 "act":    { "numel", "mean", "std", "pre_mean", "pre_var",
//!                             "dead_frac", "sat_frac", "nan", "inf" },
//!                 "grad_h": { "norm", "rms", "nan", "inf" },      // ∂L/∂h, h = layer output
//!                 "grad_w_norm", "w_norm", "update_ratio",         // over the layer's parameters
//!                 "params": [ { "name": "linear.weight", "shape": [64, 128], "grad_norm",
//!                               "norm", "update_ratio", "grad_nan", "grad_inf" } ] } ],
//!   "other_params": [ …parameters under no probe point, full paths… ],
//!   "nonfinite": null | { "phase": "forward"|"backward"|"loss", "layer": "layers.7", "step": 40 } }
//! ```
//! `layers` are in forward order. `grad_norm` is the global norm over all parameters before
//! clipping. `update_ratio` is ‖ΔW‖/‖W‖ of the optimizer step taken at this step.

use serde::{Deserialize, Serialize};

use crate::activation::Activation;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepRecord {
    pub step: usize,
    pub epoch: usize,
    #[serde(with = "num")]
    pub loss: f64,
    #[serde(with = "num")]
    pub lr: f64,
    #[serde(with = "num")]
    pub grad_norm: f64,
    pub layers: Vec<LayerRecord>,
    /// Parameters under no probe point (e.g. a recurrent cell's weights, shared by every time
    /// step), named by their full path.
    #[serde(default)]
    pub other_params: Vec<ParamRecord>,
    pub nonfinite: Option<NonFinite>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LayerRecord {
    pub name: String,
    /// What the layer is: `dense`, `dense+batch`, `dense+layer`, `residual`, `head`, …
    pub block: String,
    pub act_fn: Option<Activation>,
    pub act: ActStats,
    pub grad_h: GradStats,
    #[serde(with = "num")]
    pub grad_w_norm: f64,
    #[serde(with = "num")]
    pub w_norm: f64,
    #[serde(with = "num")]
    pub update_ratio: f64,
    pub params: Vec<ParamRecord>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ActStats {
    pub numel: usize,
    /// Mean and standard deviation over the finite elements.
    #[serde(with = "num")]
    pub mean: f64,
    #[serde(with = "num")]
    pub std: f64,
    /// Mean and variance of the pre-activation z (h = φ(z)), where the layer exposes it.
    #[serde(with = "opt_num", default)]
    pub pre_mean: Option<f64>,
    #[serde(with = "opt_num", default)]
    pub pre_var: Option<f64>,
    /// ReLU family: fraction of units whose output was ≤ 0 for every sample of every batch in
    /// the probe's window.
    #[serde(with = "opt_num", default)]
    pub dead_frac: Option<f64>,
    /// sigmoid/tanh: fraction of elements with φ'(z) < 0.01.
    #[serde(with = "opt_num", default)]
    pub sat_frac: Option<f64>,
    pub nan: usize,
    pub inf: usize,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GradStats {
    #[serde(with = "num")]
    pub norm: f64,
    /// norm / √numel: comparable across layers of different sizes.
    #[serde(with = "num")]
    pub rms: f64,
    pub nan: usize,
    pub inf: usize,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ParamRecord {
    /// Path below the layer, e.g. `linear.weight`.
    pub name: String,
    pub shape: Vec<usize>,
    #[serde(with = "num")]
    pub grad_norm: f64,
    #[serde(with = "num")]
    pub norm: f64,
    #[serde(with = "num")]
    pub update_ratio: f64,
    pub grad_nan: usize,
    pub grad_inf: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The input data itself, before any layer.
    Input,
    Forward,
    Backward,
    Loss,
}

/// Where a non-finite value was first produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NonFinite {
    pub phase: Phase,
    pub layer: String,
    pub step: usize,
}

impl std::fmt::Display for NonFinite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.phase {
            Phase::Input => write!(f, "non-finite input data at step {}", self.step),
            Phase::Forward => write!(
                f,
                "layer '{}' produced the first non-finite activation at step {} (its input was finite)",
                self.layer, self.step
            ),
            Phase::Backward => write!(
                f,
                "layer '{}' produced the first non-finite gradient at step {} (the gradient reaching its output was finite)",
                self.layer, self.step
            ),
            Phase::Loss => write!(
                f,
                "the loss produced a non-finite gradient at step {} (all activations finite)",
                self.step
            ),
        }
    }
}

impl LayerRecord {
    pub fn has_nonfinite_params(&self) -> bool {
        self.params.iter().any(|p| p.grad_nan + p.grad_inf > 0)
    }
}

/// f64 fields that may hold NaN or ±∞.
pub mod num {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else if v.is_nan() {
            s.serialize_str("NaN")
        } else if *v > 0.0 {
            s.serialize_str("Infinity")
        } else {
            s.serialize_str("-Infinity")
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        N(f64),
        S(String),
        Null(()),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::N(v) => Ok(v),
            Repr::Null(()) => Ok(f64::NAN),
            Repr::S(s) => match s.as_str() {
                "NaN" => Ok(f64::NAN),
                "Infinity" => Ok(f64::INFINITY),
                "-Infinity" => Ok(f64::NEG_INFINITY),
                other => Err(serde::de::Error::custom(format!(
                    "expected a number, \"NaN\", \"Infinity\" or \"-Infinity\", got \"{other}\""
                ))),
            },
        }
    }
}

/// Optional f64 fields (absent or null = not measured).
pub mod opt_num {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            None => s.serialize_none(),
            Some(x) => super::num::serialize(x, s),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "super::num")] f64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_numbers_round_trip() {
        let r = GradStats {
            norm: f64::NAN,
            rms: f64::INFINITY,
            nan: 3,
            inf: 1,
        };
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"NaN\"") && s.contains("\"Infinity\""), "{s}");
        let back: GradStats = serde_json::from_str(&s).unwrap();
        assert!(back.norm.is_nan() && back.rms == f64::INFINITY && back.nan == 3);
        let a = ActStats {
            pre_var: Some(f64::NEG_INFINITY),
            ..Default::default()
        };
        let back: ActStats = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back.pre_var, Some(f64::NEG_INFINITY));
        assert_eq!(back.dead_frac, None);
    }
}
