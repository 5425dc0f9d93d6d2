//! Remedies as typed values: what to change ([`Change`]) and why. Each front end turns a change
//! into its own `key=value` (a lab variant `add=act=relu,init=he`, a recurrent lab's `cells=lstm`,
//! detection's `lr0=0.0002`), with the numbers of the run it is about, and keeps only those its
//! parser takes — so every printed remedy can be pasted back.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::nn::init::Init;
use crate::nn::recurrent::CellKind;
use crate::settings::round_sig;

use super::Verdict;

/// One setting to change.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    Act(Activation),
    Init(Init),
    /// BatchNorm after every layer.
    BatchNorm,
    /// Residual (skip) connections.
    Residual,
    /// Residual branches that start at zero.
    ZeroInit,
    /// The Adam optimizer.
    Adam,
    /// The learning rate times this factor.
    ScaleLr(f64),
    /// Clip the global gradient norm at this threshold.
    ClipNorm(f64),
    /// Clip the global norm at 5× its running median (Pascanu et al. 2013).
    ClipNormAuto,
    /// Clamp every gradient element to ±this.
    ClipValue(f64),
    /// Use this recurrent cell.
    Cell(CellKind),
    /// The LSTM's forget-gate bias at init.
    ForgetBias(f64),
    /// Sequences half as long.
    HalveSequence,
    /// A learning-rate warmup over this many epochs (detection).
    WarmupEpochs(f64),
}

impl Change {
    /// The generic key and value, in the labs' keys; the value is a placeholder (`<lr/10>`)
    /// where the number depends on the run.
    pub fn key_value(&self) -> (&'static str, String) {
        match self {
            Change::Act(a) => ("act", a.to_string()),
            Change::Init(i) => ("init", i.to_string()),
            Change::BatchNorm => ("norm", "batch".into()),
            Change::Residual => ("residual", "true".into()),
            Change::ZeroInit => ("zero_init", "true".into()),
            Change::Adam => ("optimizer", "adam".into()),
            Change::ScaleLr(k) if *k < 1.0 => ("lr", format!("<lr/{}>", round_sig(1.0 / k))),
            Change::ScaleLr(k) => ("lr", format!("<lr×{k}>")),
            Change::ClipNorm(c) => ("clip_norm", c.to_string()),
            Change::ClipNormAuto => ("clip_norm", "auto".into()),
            Change::ClipValue(c) => ("clip_value", c.to_string()),
            Change::Cell(c) => ("cells", c.to_string()),
            Change::ForgetBias(b) => ("forget_bias", b.to_string()),
            Change::HalveSequence => ("T", "<T/2>".into()),
            Change::WarmupEpochs(e) => ("warmup_epochs", e.to_string()),
        }
    }
}

impl fmt::Display for Change {
    /// `key=value` of [`Change::key_value`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (k, v) = self.key_value();
        write!(f, "{k}={v}")
    }
}

/// A remedy: changes applied together, why they help, and the words that apply them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remedy {
    /// Empty in files written before remedies were typed.
    #[serde(default)]
    pub changes: Vec<Change>,
    pub why: String,
    /// The words to paste: the generic form ([`Change`]'s `Display`) until a front end writes
    /// its own.
    pub switch: String,
}

impl Remedy {
    pub fn new(changes: Vec<Change>, why: &str) -> Remedy {
        let switch = changes
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        Remedy {
            changes,
            why: why.into(),
            switch,
        }
    }
}

/// What the remedies depend on besides the verdicts.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Context {
    pub activation: Option<Activation>,
    /// The series is time steps of a recurrent net …
    pub through_time: bool,
    /// … of this cell.
    pub cell: Option<CellKind>,
    /// Gradients are healthy but the loss barely falls.
    pub slow: bool,
}

/// The remedies for `verdicts`, most relevant first, without repeats.
pub fn for_verdicts(verdicts: &[Verdict], ctx: &Context) -> Vec<Remedy> {
    let mut out: Vec<Remedy> = Vec::new();
    for v in verdicts {
        for r in for_verdict(*v, ctx) {
            if !out.iter().any(|o| o.changes == r.changes) {
                out.push(r);
            }
        }
    }
    out
}

fn for_verdict(v: Verdict, ctx: &Context) -> Vec<Remedy> {
    use Change::*;
    let r = Remedy::new;
    match v {
        // run-level: its remedies come from the front end, which knows the run's settings
        Verdict::Diverged | Verdict::StarvedBranch => vec![],
        Verdict::NonFinite | Verdict::Exploding => vec![
            r(vec![ClipNorm(1.0)], "clip the global gradient norm: one factor min(1, c/‖g‖) for all parameters keeps the step's direction and bounds its size"),
            r(vec![ClipNormAuto], "a threshold of 5× the running median norm (Pascanu et al. 2013) cuts sudden spikes; it cannot help when the gradients are huge from the first step"),
            r(vec![ClipValue(0.01)], "clamping every element bounds the step too, but changes its direction"),
            r(vec![ScaleLr(0.1)], "a smaller learning rate keeps updates inside the region where the loss is smooth"),
            r(vec![ZeroInit], "residual branches that start at zero make the network start shallow: no growth through the skip paths"),
            r(vec![BatchNorm], "normalisation rescales every layer's pre-activations, so a large weight cannot multiply through the depth"),
            r(vec![Init(crate::nn::init::Init::Lecun)], "a smaller initial weight variance lowers the per-layer gain (mean-field χ₁)"),
        ],
        Verdict::Vanishing if ctx.through_time => through_time(ctx.cell),
        Verdict::Vanishing => vanishing_depth(ctx.activation),
        Verdict::DeadUnits => vec![
            r(vec![Act(Activation::LeakyRelu)], "a small negative slope keeps a gradient for inactive units, so they can recover"),
            r(vec![Act(Activation::Silu)], "SiLU has a non-zero gradient for negative inputs"),
            r(vec![ScaleLr(0.1)], "large steps push biases negative and kill units"),
            r(vec![Init(crate::nn::init::Init::He)], "a well-scaled init keeps about half the units active at the start"),
        ],
        Verdict::Saturation => vec![
            r(vec![BatchNorm], "normalised pre-activations stay where φ' is large"),
            r(vec![Init(crate::nn::init::Init::Xavier)], "Glorot init keeps tanh/sigmoid inputs in the linear range"),
            r(vec![Act(Activation::Relu), Init(crate::nn::init::Init::He)], "ReLU does not saturate for positive inputs"),
        ],
        Verdict::Healthy if ctx.slow => {
            let lr = "gradients reach every layer, so the step size is the first suspect: too small if the loss creeps down, too large if it jumps around";
            vec![
                r(vec![ScaleLr(3.0)], lr),
                r(vec![ScaleLr(1.0 / 3.0)], lr),
                r(vec![Adam], "adaptive steps speed up optimisation when gradients are healthy"),
                r(vec![Residual], "deep plain networks are hard to optimise even with healthy gradients (He et al. 2016)"),
            ]
        }
        Verdict::Healthy => vec![],
    }
}

/// Gradients that fade through time: gated cells, a more open forget gate, shorter sequences.
fn through_time(cell: Option<CellKind>) -> Vec<Remedy> {
    use Change::*;
    let mut out = Vec::new();
    if cell != Some(CellKind::Lstm) {
        out.push(Remedy::new(vec![Cell(CellKind::Lstm)], "the LSTM's cell state is updated additively, c_t = f⊙c_{t−1} + i⊙g: with the forget gate near 1 the gradient reaches early steps unattenuated"));
    }
    if cell != Some(CellKind::Gru) {
        out.push(Remedy::new(vec![Cell(CellKind::Gru)], "the GRU's update gate interpolates h_t = (1−z)⊙n + z⊙h_{t−1}: an identity path through time"));
    }
    if cell == Some(CellKind::Lstm) {
        out.push(Remedy::new(vec![ForgetBias(2.0)], "a larger forget-gate bias starts the gate more open, so the cell carries information (and gradient) further (Jozefowicz et al. 2015)"));
    }
    out.push(Remedy::new(
        vec![HalveSequence],
        "truncating sequences shortens the product of Jacobians",
    ));
    out
}

/// Gradients that fade through depth: a critical init for the activation, a non-saturating
/// activation, normalisation, identity paths.
fn vanishing_depth(act: Option<Activation>) -> Vec<Remedy> {
    use crate::nn::init::Init::{He, Orthogonal, Xavier};
    use Change::*;
    let r = Remedy::new;
    let mut out = Vec::new();
    if act == Some(Activation::Tanh) {
        out.push(r(vec![Init(Xavier)], "tanh' = 1 at 0, so tanh is near-critical (χ₁ ≈ σ_w²) once σ_w² ≈ 1: Glorot init gives that, the default U(±1/√fan_in) gives σ_w² = 1/3"));
        out.push(r(vec![Init(Orthogonal)], "orthogonal weights with tanh's gain 5/3 keep every singular value of the layer Jacobian near 1 (Saxe et al. 2014)"));
    }
    if act.is_some_and(|a| a.saturates()) {
        out.push(r(vec![Act(Activation::Relu), Init(He)], "φ' ≤ 0.25 (sigmoid) or < 1 off-centre (tanh) multiplies the gradient down at every layer; ReLU passes it unchanged on active units and He init makes χ₁ = 1 (critical)"));
        out.push(r(
            vec![Act(Activation::Silu), Init(He)],
            "SiLU behaves like ReLU for large inputs, stays smooth and never dies",
        ));
    } else {
        out.push(r(vec![Init(He)], "mean-field: the measured per-layer factor is below 1; He init (Var = 2/fan_in) makes ReLU critical (χ₁ = 1)"));
    }
    out.push(r(
        vec![BatchNorm],
        "BatchNorm keeps every layer's pre-activations at unit scale, out of the saturated range",
    ));
    out.push(r(
        vec![Residual, ZeroInit],
        "identity paths carry the gradient past every layer unattenuated",
    ));
    out.push(r(vec![Adam], "Adam rescales each parameter's step by its own gradient scale; it hides the symptom but learning in the first layers stays slow"));
    out
}

/// Every remedy the diagnosis can give, over every verdict and context: what each front end's
/// tests check can be pasted back.
pub fn catalogue() -> Vec<Remedy> {
    let verdicts = [
        Verdict::Healthy,
        Verdict::Vanishing,
        Verdict::Exploding,
        Verdict::DeadUnits,
        Verdict::Saturation,
        Verdict::NonFinite,
        Verdict::Diverged,
    ];
    let acts = std::iter::once(None).chain(Activation::ALL.iter().copied().map(Some));
    let mut contexts = Vec::new();
    for activation in acts {
        for cell in std::iter::once(None).chain(CellKind::ALL.iter().copied().map(Some)) {
            for (through_time, slow) in [(false, false), (false, true), (true, false)] {
                contexts.push(Context {
                    activation,
                    through_time,
                    cell,
                    slow,
                });
            }
        }
    }
    let mut out: Vec<Remedy> = Vec::new();
    for ctx in &contexts {
        for r in for_verdicts(&verdicts, ctx) {
            if !out.iter().any(|o| o.changes == r.changes) {
                out.push(r);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generic_words_name_the_labs_keys() {
        let words: Vec<String> = catalogue().iter().map(|r| r.switch.clone()).collect();
        for want in [
            "act=relu init=he",
            "cells=lstm",
            "lr=<lr/10>",
            "lr=<lr×3>",
            "T=<T/2>",
            "residual=true zero_init=true",
            "clip_norm=auto",
        ] {
            assert!(words.iter().any(|w| w == want), "{want} not in {words:?}");
        }
    }

    #[test]
    fn remedies_follow_the_context() {
        let v = [Verdict::Vanishing];
        let lstm = for_verdicts(
            &v,
            &Context {
                through_time: true,
                cell: Some(CellKind::Lstm),
                ..Default::default()
            },
        );
        let changes: Vec<&Change> = lstm.iter().flat_map(|r| &r.changes).collect();
        assert!(changes.contains(&&Change::ForgetBias(2.0)));
        assert!(
            !changes.contains(&&Change::Cell(CellKind::Lstm)),
            "already an LSTM"
        );
        let relu = for_verdicts(
            &v,
            &Context {
                activation: Some(Activation::Relu),
                ..Default::default()
            },
        );
        assert_eq!(relu[0].changes, [Change::Init(Init::He)]);
        assert!(for_verdicts(&[Verdict::Healthy], &Context::default()).is_empty());
        // exploding and non-finite share their remedies: listed once
        let both = for_verdicts(
            &[Verdict::NonFinite, Verdict::Exploding],
            &Context::default(),
        );
        assert_eq!(
            both.len(),
            for_verdict(Verdict::Exploding, &Context::default()).len()
        );
    }
}
