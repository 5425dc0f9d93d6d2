//! Diagnosis: from probe records to verdicts with their evidence, and ranked remedies.
//!
//! Every rule uses relative quantities: how ‖∂L/∂h‖ changes from the last hidden layer to the
//! first (first/last ratio and its per-layer geometric mean), the update ratio ‖ΔW‖/‖W‖ (≈1e-3
//! is a healthy rule of thumb), growth of the global gradient norm, and — for plain dense layers
//! — the per-layer factor √χ₁ that mean-field theory predicts at the measured pre-activations.
//! A run whose gradients are healthy but whose loss falls slowly is *not* called vanishing (He et
//! al. 2016: deep plain nets with BatchNorm degrade with healthy gradients).

pub mod divergence;
pub mod meanfield;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::probe::{LayerRecord, NonFinite, StepRecord};

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
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Remedy {
    /// gradscope switches that apply it, e.g. `act=relu init=he`.
    pub switch: String,
    pub why: String,
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

/// The series of probe points the diagnosis follows: every layer but the head; through time,
/// the state that carries memory — the cell state c_t of an LSTM (blocks `memory:*`), the hidden
/// state h_t otherwise.
pub fn series(r: &StepRecord) -> Vec<&LayerRecord> {
    if r.layers.iter().any(|l| l.block.starts_with("memory")) {
        return r
            .layers
            .iter()
            .filter(|l| l.block.starts_with("memory"))
            .collect();
    }
    r.layers.iter().filter(|l| l.block != "head").collect()
}

fn hidden(r: &StepRecord) -> Vec<&LayerRecord> {
    series(r)
}

/// Whether the record comes from a graph-shaped network (several layers feed the head, marked
/// by blocks `output:*`, as in YOLO's P3/P4/P5 outputs) rather than a chain.
fn is_graph(r: &StepRecord) -> bool {
    r.layers.iter().any(|l| l.block.starts_with("output:"))
}

/// How much gradient a layer receives: ‖∂L/∂h‖ in a chain of equal-width layers; the RMS
/// ‖∂L/∂h‖/√n in a graph, whose layers differ in size by orders of magnitude.
fn magnitude(l: &LayerRecord, graph: bool) -> f64 {
    if graph {
        l.grad_h.rms
    } else {
        l.grad_h.norm
    }
}

/// The reference the first layer is compared with: the last hidden layer of a chain; in a graph
/// the head input that receives most (a stem that gets far less than every output is starved).
fn reference(r: &StepRecord) -> f64 {
    let h = hidden(r);
    if is_graph(r) {
        h.iter()
            .filter(|l| l.block.starts_with("output:"))
            .map(|l| l.grad_h.rms)
            .fold(f64::NAN, f64::max)
    } else {
        h.last().map_or(f64::NAN, |l| l.grad_h.norm)
    }
}

fn first_last(r: &StepRecord) -> f64 {
    let h = hidden(r);
    match h.first() {
        Some(f) if h.len() >= 2 => magnitude(f, is_graph(r)) / reference(r),
        _ => f64::NAN,
    }
}

/// Median of the finite values (NaN if none).
fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

fn geo_mean(v: &[f64]) -> f64 {
    let logs: Vec<f64> = v
        .iter()
        .filter(|x| x.is_finite() && **x > 0.0)
        .map(|x| x.ln())
        .collect();
    if logs.is_empty() {
        return f64::NAN;
    }
    (logs.iter().sum::<f64>() / logs.len() as f64).exp()
}

/// Mean-field prediction and measurement per dense layer of one record:
/// (layer index among hidden, predicted √χ₁, measured factor).
pub fn meanfield_factors(r: &StepRecord) -> Vec<(usize, f64, f64)> {
    let h = hidden(r);
    let mut out = Vec::new();
    for l in 1..h.len() {
        let layer = h[l];
        let (Some(act), Some(q), Some(mu)) = (layer.act_fn, layer.act.pre_var, layer.act.pre_mean)
        else {
            continue;
        };
        if layer.block != "dense" {
            continue; // normalisation or residual paths change the recursion
        }
        let Some(w) = layer.params.iter().find(|p| p.name.ends_with("weight")) else {
            continue;
        };
        let Some(s2) = meanfield::sigma_w2(w.norm, &w.shape) else {
            continue;
        };
        let predicted = meanfield::chi1(act, s2, mu, q).sqrt();
        let measured = h[l - 1].grad_h.norm / layer.grad_h.norm;
        out.push((l, predicted, measured));
    }
    out
}

/// Diagnoses a run from its probe records (in step order). `None` when there are no records.
pub fn diagnose(records: &[StepRecord]) -> Option<Diagnosis> {
    let init = records.first()?;
    let window = &records[records.len().saturating_sub(5.max(records.len() / 10))..];
    let end = records.last()?;
    let act = hidden(init).iter().find_map(|l| l.act_fn);

    let nonfinite = records.iter().find_map(|r| r.nonfinite.clone());
    let fl_init = first_last(init);
    let finite_window: Vec<&StepRecord> = window.iter().filter(|r| r.nonfinite.is_none()).collect();
    let fl_end = median(finite_window.iter().map(|r| first_last(r)).collect());
    let n_hidden = hidden(end).len();
    // geometric mean of the factor between neighbours, over the pairs whose gradients did not
    // underflow to zero (a vanishing RNN reaches exact zeros in f32 after a few dozen steps)
    let per_layer = {
        let factors: Vec<f64> = finite_window
            .iter()
            .flat_map(|r| {
                let h = hidden(r);
                (1..h.len())
                    .map(move |l| {
                        let g = is_graph(r);
                        magnitude(h[l - 1], g) / magnitude(h[l], g)
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        geo_mean(&factors)
    };

    // per-layer medians over the end window
    let layers_end = hidden(end);
    let graph = is_graph(end);
    let last_norm = median(finite_window.iter().map(|r| reference(r)).collect());
    // per layer in a graph, vanishing is judged against the head input that receives least (a
    // branch that feeds a weak output is not starved for that), exploding against the strongest
    let weakest_norm = if graph {
        median(
            finite_window
                .iter()
                .map(|r| {
                    hidden(r)
                        .iter()
                        .filter(|l| l.block.starts_with("output:"))
                        .map(|l| l.grad_h.rms)
                        .fold(f64::NAN, f64::min)
                })
                .collect(),
        )
    } else {
        last_norm
    };
    let mf_init = meanfield_factors(init);
    let mut layers = Vec::new();
    for (i, l) in layers_end.iter().enumerate() {
        let pick = |f: &dyn Fn(&LayerRecord) -> Option<f64>| -> Option<f64> {
            let v: Vec<f64> = finite_window
                .iter()
                .filter_map(|r| hidden(r).get(i).and_then(|x| f(x)))
                .collect();
            let m = median(v);
            m.is_finite().then_some(m)
        };
        let g = pick(&|x| Some(x.grad_h.norm)).unwrap_or(f64::NAN);
        let mag = pick(&|x| Some(magnitude(x, graph))).unwrap_or(f64::NAN);
        let rel = mag / last_norm;
        let rel_weakest = mag / weakest_norm;
        let dead = pick(&|x| x.act.dead_frac);
        let sat = pick(&|x| x.act.sat_frac);
        let verdict = if nonfinite.as_ref().is_some_and(|nf| nf.layer == l.name) {
            Verdict::NonFinite
        } else if rel_weakest < VANISHING_BELOW {
            Verdict::Vanishing
        } else if rel > EXPLODING_ABOVE {
            Verdict::Exploding
        } else if dead.is_some_and(|d| d > DEAD_ABOVE) && l.act_fn == Some(Activation::Relu) {
            Verdict::DeadUnits
        } else if sat.is_some_and(|s| s > SATURATED_ABOVE) {
            Verdict::Saturation
        } else {
            Verdict::Healthy
        };
        let mf = mf_init.iter().find(|(k, _, _)| *k == i);
        layers.push(LayerDiagnosis {
            name: l.name.clone(),
            block: l.block.clone(),
            verdict,
            grad_h_rel: rel,
            grad_h_norm: g,
            update_ratio: pick(&|x| Some(x.update_ratio)).unwrap_or(f64::NAN),
            dead_frac: dead,
            sat_frac: sat,
            measured_factor: mf.map(|m| m.2),
            predicted_factor: mf.map(|m| m.1),
        });
    }

    // layers of a feed-forward net, or time steps of a recurrent one
    let through_time = !layers.is_empty()
        && layers
            .iter()
            .all(|l| l.block.starts_with("step") || l.block.starts_with("memory"));
    let memory = layers.iter().any(|l| l.block.starts_with("memory"));
    let cell = layers
        .first()
        .and_then(|l| l.block.split(':').nth(1))
        .unwrap_or("")
        .to_string();
    let (unit, units, per) = match (through_time, memory) {
        (true, true) => ("time step (cell state c_t)", "steps", "step"),
        (true, false) => ("time step", "steps", "step"),
        _ if graph => (
            "layer (RMS; stem vs the head input that receives most)",
            "layers",
            "layer",
        ),
        _ => ("hidden layer", "layers", "layer"),
    };
    let mut verdicts = Vec::new();
    let mut evidence = Vec::new();
    let mut remedies: Vec<Remedy> = Vec::new();
    let fmt_fl = |x: f64| format!("{x:.2e}");
    evidence.push(format!(
        "‖∂L/∂h‖ first/last {unit}: {} at init, {} at the end ({n_hidden} {units}, ×{per_layer:.3} per {per})",
        fmt_fl(fl_init),
        fmt_fl(fl_end),
    ));
    let meanfield = if mf_init.len() >= 2 {
        let p = geo_mean(&mf_init.iter().map(|m| m.1).collect::<Vec<_>>());
        let m = geo_mean(&mf_init.iter().map(|m| m.2).collect::<Vec<_>>());
        evidence.push(format!(
            "mean-field theory at init: √χ₁ = {p:.3} per layer predicted at the measured pre-activation variance, {m:.3} measured ({} dense layers)",
            mf_init.len()
        ));
        Some((p, m))
    } else {
        None
    };

    if let Some(nf) = &nonfinite {
        verdicts.push(Verdict::NonFinite);
        evidence.push(format!("{nf}"));
    }
    let g0 = init.grad_norm;
    let g1 = median(finite_window.iter().map(|r| r.grad_norm).collect());
    let growth = g1 / g0;
    if fl_end < VANISHING_BELOW || (fl_end.is_nan() && fl_init < VANISHING_BELOW) {
        verdicts.push(Verdict::Vanishing);
        let (u_first, u_last) = (
            layers.first().map_or(f64::NAN, |l| l.update_ratio),
            layers.last().map_or(f64::NAN, |l| l.update_ratio),
        );
        let received = fl_end.min(fl_init);
        evidence.push(if u_first.is_finite() && u_last.is_finite() {
            format!(
                "the first layer receives {received:.1e} of the last hidden layer's gradient; its update ratio ‖ΔW‖/‖W‖ is {u_first:.1e} against {u_last:.1e} for the last (≈1e-3 is healthy)"
            )
        } else {
            format!("the first {unit} receives {received:.1e} of the gradient at the last: the loss barely depends on early inputs")
        });
    }
    if fl_end > EXPLODING_ABOVE || growth > NORM_GROWTH_ABOVE {
        verdicts.push(Verdict::Exploding);
        if growth > NORM_GROWTH_ABOVE {
            evidence.push(format!(
                "global gradient norm grew ×{growth:.1e} since init ({g0:.2e} → {g1:.2e})"
            ));
        } else {
            evidence.push(format!(
                "the gradient grows ×{fl_end:.1e} from the last hidden layer back to the first"
            ));
        }
    }
    let dead: Vec<&LayerDiagnosis> = layers
        .iter()
        .filter(|l| l.verdict == Verdict::DeadUnits)
        .collect();
    if !dead.is_empty() {
        verdicts.push(Verdict::DeadUnits);
        let worst = dead
            .iter()
            .map(|l| l.dead_frac.unwrap_or(0.0))
            .fold(0.0, f64::max);
        evidence.push(format!(
            "{} layers have more than {:.0}% dead ReLU units (worst {:.0}%): {}",
            dead.len(),
            DEAD_ABOVE * 100.0,
            worst * 100.0,
            dead.iter()
                .map(|l| l.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let sat: Vec<&LayerDiagnosis> = layers
        .iter()
        .filter(|l| l.sat_frac.is_some_and(|s| s > SATURATED_ABOVE))
        .collect();
    if !sat.is_empty() {
        verdicts.push(Verdict::Saturation);
        evidence.push(format!(
            "{} layers have more than {:.0}% of their units saturated (φ' < 0.01)",
            sat.len(),
            SATURATED_ABOVE * 100.0
        ));
    }
    if verdicts.is_empty() {
        verdicts.push(Verdict::Healthy);
    }
    let loss0 = init.loss;
    let loss1 = median(finite_window.iter().map(|r| r.loss).collect());
    // a classifier's head `[width, C]` gives the chance-level cross-entropy ln C: a run that ends
    // near it has not learnt, whatever its first loss was
    let chance = init
        .layers
        .iter()
        .find(|l| l.block == "head")
        .and_then(|h| h.params.iter().find(|p| p.shape.len() == 2))
        .map(|w| w.shape[1])
        .filter(|&c| c >= 2)
        .map(|c| (c as f64).ln());
    let slow = loss1 / loss0 > SLOW_LOSS_RATIO || chance.is_some_and(|c| loss1 > NEAR_CHANCE * c);
    if verdicts == [Verdict::Healthy] && slow && records.len() > 1 {
        let vs = chance
            .map(|c| format!(", chance level {c:.3}"))
            .unwrap_or_default();
        evidence.push(format!(
            "gradients are healthy but the loss barely falls ({loss0:.3} → {loss1:.3}{vs}): an optimisation problem, not vanishing gradients (He et al. 2016)"
        ));
    }

    // remedies, most relevant first
    let mut add = |switch: &str, why: &str| {
        if !remedies.iter().any(|r| r.switch == switch) {
            remedies.push(Remedy {
                switch: switch.into(),
                why: why.into(),
            });
        }
    };
    for v in &verdicts {
        match v {
            // run-level: its remedies come from the front end, which knows the run's settings
            Verdict::Diverged => {}
            Verdict::NonFinite | Verdict::Exploding => {
                add("clip_norm=1", "clip the global gradient norm: one factor min(1, c/‖g‖) for all parameters keeps the step's direction and bounds its size");
                add("clip_norm=auto", "a threshold of 5× the running median norm (Pascanu et al. 2013) cuts sudden spikes; it cannot help when the gradients are huge from the first step");
                add(
                    "clip_value=0.01",
                    "clamping every element bounds the step too, but changes its direction",
                );
                add("lr=<lr/10>", "a smaller learning rate keeps updates inside the region where the loss is smooth");
                add("zero_init=true", "residual branches that start at zero make the network start shallow: no growth through the skip paths");
                add("norm=batch", "normalisation rescales every layer's pre-activations, so a large weight cannot multiply through the depth");
                add(
                    "init=lecun",
                    "a smaller initial weight variance lowers the per-layer gain (mean-field χ₁)",
                );
            }
            Verdict::Vanishing if through_time => {
                if cell != "lstm" {
                    add("cells=lstm", "the LSTM's cell state is updated additively, c_t = f⊙c_{t−1} + i⊙g: with the forget gate near 1 the gradient reaches early steps unattenuated");
                }
                if cell != "gru" {
                    add("cells=gru", "the GRU's update gate interpolates h_t = (1−z)⊙n + z⊙h_{t−1}: an identity path through time");
                }
                if cell == "lstm" {
                    add("forget_bias=2", "a larger forget-gate bias starts the gate more open, so the cell carries information (and gradient) further (Jozefowicz et al. 2015)");
                }
                add(
                    "steps=<shorter>",
                    "truncating sequences shortens the product of Jacobians",
                );
            }
            Verdict::Vanishing => {
                if act == Some(Activation::Tanh) {
                    add("init=xavier", "tanh' = 1 at 0, so tanh is near-critical (χ₁ ≈ σ_w²) once σ_w² ≈ 1: Glorot init gives that, the default U(±1/√fan_in) gives σ_w² = 1/3");
                    add("init=orthogonal", "orthogonal weights with tanh's gain 5/3 keep every singular value of the layer Jacobian near 1 (Saxe et al. 2014)");
                }
                if act.is_some_and(|a| a.saturates()) {
                    add("act=relu init=he", "φ' ≤ 0.25 (sigmoid) or < 1 off-centre (tanh) multiplies the gradient down at every layer; ReLU passes it unchanged on active units and He init makes χ₁ = 1 (critical)");
                    add(
                        "act=silu init=he",
                        "SiLU behaves like ReLU for large inputs, stays smooth and never dies",
                    );
                } else {
                    add("init=he", "mean-field: the measured per-layer factor is below 1; He init (Var = 2/fan_in) makes ReLU critical (χ₁ = 1)");
                }
                add("norm=batch", "BatchNorm keeps every layer's pre-activations at unit scale, out of the saturated range");
                add(
                    "residual=true zero_init=true",
                    "identity paths carry the gradient past every layer unattenuated",
                );
                add("optimizer=adam", "Adam rescales each parameter's step by its own gradient scale; it hides the symptom but learning in the first layers stays slow");
            }
            Verdict::DeadUnits => {
                add("act=leaky_relu", "a small negative slope keeps a gradient for inactive units, so they can recover");
                add(
                    "act=silu",
                    "SiLU has a non-zero gradient for negative inputs",
                );
                add(
                    "lr=<lr/10>",
                    "large steps push biases negative and kill units",
                );
                add(
                    "init=he",
                    "a well-scaled init keeps about half the units active at the start",
                );
            }
            Verdict::Saturation => {
                add(
                    "norm=batch",
                    "normalised pre-activations stay where φ' is large",
                );
                add(
                    "init=xavier",
                    "Glorot init keeps tanh/sigmoid inputs in the linear range",
                );
                add(
                    "act=relu init=he",
                    "ReLU does not saturate for positive inputs",
                );
            }
            Verdict::Healthy => {
                if slow && records.len() > 1 {
                    add(
                        "lr=<lr×3 or lr/3>",
                        "gradients reach every layer, so the step size is the first suspect: too small if the loss creeps down, too large if it jumps around",
                    );
                    add(
                        "optimizer=adam",
                        "adaptive steps speed up optimisation when gradients are healthy",
                    );
                    add("residual=true", "deep plain networks are hard to optimise even with healthy gradients (He et al. 2016)");
                }
            }
        }
    }

    let verdict = *verdicts
        .iter()
        .max_by_key(|v| match v {
            Verdict::Diverged => 6,
            Verdict::NonFinite => 5,
            Verdict::Exploding => 4,
            Verdict::Vanishing => 3,
            Verdict::DeadUnits => 2,
            Verdict::Saturation => 1,
            Verdict::Healthy => 0,
        })
        .unwrap_or(&Verdict::Healthy);
    Some(Diagnosis {
        verdict,
        verdicts,
        evidence,
        remedies,
        first_last_init: fl_init,
        first_last_end: fl_end,
        per_layer_factor: per_layer,
        meanfield,
        nonfinite,
        layers,
        activation: act,
    })
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
        writeln!(f, "per layer (end of run):")?;
        writeln!(
            f,
            "  {:<10} {:<14} {:>11} {:>11} {:>10} {:>6} {:>6} {:>8} {:>8}  verdict",
            "layer", "block", "‖∂L/∂h‖", "rel. last", "update", "dead", "sat", "measured", "√χ₁"
        )?;
        let opt = |x: Option<f64>, pct: bool| match x {
            Some(v) if pct => format!("{:.0}%", v * 100.0),
            Some(v) => format!("{v:.3}"),
            None => "-".into(),
        };
        for l in &self.layers {
            writeln!(
                f,
                "  {:<10} {:<14} {:>11.3e} {:>11.3e} {:>10.2e} {:>6} {:>6} {:>8} {:>8}  {}",
                l.name,
                l.block,
                l.grad_h_norm,
                l.grad_h_rel,
                l.update_ratio,
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
