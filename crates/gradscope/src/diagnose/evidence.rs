//! The numbers a diagnosis rests on, measured from probe records in one pass: how much gradient
//! reaches each layer relative to the last, the per-layer factor between neighbours, the global
//! norm's growth, the loss, dead and saturated fractions, and the mean-field prediction. No
//! verdicts and no words here: [`super::rules`] decides, [`super::words`] and
//! [`super::remedy`] speak.

use crate::activation::Activation;
use crate::nn::recurrent::CellKind;
use crate::probe::{LayerRecord, NonFinite, StepRecord};

use super::meanfield;

/// The shape of the network the records come from, which decides what "first" and "last" mean.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Shape {
    /// A chain of equal-width layers: first hidden layer vs the last.
    Chain,
    /// Several layers feed the head (blocks `output:*`, YOLO's P3/P4/P5): layers are compared
    /// by RMS gradient, against the head input that receives most.
    Graph,
    /// Time steps of a recurrent net; `memory` when the series is the LSTM's cell state.
    ThroughTime {
        memory: bool,
        cell: Option<CellKind>,
    },
}

/// One layer's numbers: medians over the end window.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerEvidence {
    pub name: String,
    pub block: String,
    pub act_fn: Option<Activation>,
    /// ‖∂L/∂h‖ at the layer's output.
    pub grad_h_norm: f64,
    /// Gradient magnitude ÷ the reference (last hidden layer; in a graph the strongest head
    /// input).
    pub rel: f64,
    /// … ÷ the weakest head input (in a chain the same as `rel`).
    pub rel_weakest: f64,
    pub update_ratio: f64,
    pub dead_frac: Option<f64>,
    pub sat_frac: Option<f64>,
    /// Mean-field at init: measured ‖∂L/∂h_{l−1}‖/‖∂L/∂h_l‖ and the predicted √χ₁.
    pub measured_factor: Option<f64>,
    pub predicted_factor: Option<f64>,
}

/// Everything the rules read.
#[derive(Clone, Debug, PartialEq)]
pub struct Evidence {
    pub shape: Shape,
    /// The activation of the first hidden layer that has one.
    pub activation: Option<Activation>,
    /// Layers (or time steps) in the series.
    pub n_hidden: usize,
    /// ‖∂L/∂h‖ first ÷ last at the first record, and the median over the end window.
    pub first_last_init: f64,
    pub first_last_end: f64,
    /// Geometric mean of the factor between neighbours over the end window (NaN for a graph:
    /// neighbours in layer order sit on different branches).
    pub per_layer_factor: f64,
    /// Global gradient norm at the first record and its median over the end window.
    pub grad_norm_init: f64,
    pub grad_norm_end: f64,
    pub loss_init: f64,
    pub loss_end: f64,
    /// ln C for a classifier whose head has C outputs.
    pub chance: Option<f64>,
    /// Records read.
    pub steps: usize,
    pub nonfinite: Option<NonFinite>,
    /// Mean-field over the dense layers at init: geometric means of predicted √χ₁ and of the
    /// measured factor, and how many layers.
    pub meanfield: Option<(f64, f64, usize)>,
    pub layers: Vec<LayerEvidence>,
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

/// The head inputs' RMS gradients folded by `pick` (max: the strongest, min: the weakest).
fn head_inputs(r: &StepRecord, pick: fn(f64, f64) -> f64) -> f64 {
    series(r)
        .iter()
        .filter(|l| l.block.starts_with("output:"))
        .map(|l| l.grad_h.rms)
        .fold(f64::NAN, pick)
}

/// The reference the first layer is compared with: the last hidden layer of a chain; in a graph
/// the head input that receives most (a stem that gets far less than every output is starved).
fn reference(r: &StepRecord) -> f64 {
    if is_graph(r) {
        head_inputs(r, f64::max)
    } else {
        series(r).last().map_or(f64::NAN, |l| l.grad_h.norm)
    }
}

fn first_last(r: &StepRecord) -> f64 {
    let h = series(r);
    match h.first() {
        Some(f) if h.len() >= 2 => magnitude(f, is_graph(r)) / reference(r),
        _ => f64::NAN,
    }
}

/// Median of the finite values (the mean of the two middle ones of an even count; NaN if
/// none).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.retain(|x| x.is_finite());
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Geometric mean of the finite positive values (NaN if none).
pub(crate) fn geo_mean(v: &[f64]) -> f64 {
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
/// (layer index in the series, predicted √χ₁, measured factor).
pub fn meanfield_factors(r: &StepRecord) -> Vec<(usize, f64, f64)> {
    let h = series(r);
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

/// The shape of the network behind `r` ([`Shape`]).
fn shape(r: &StepRecord) -> Shape {
    let s = series(r);
    let through_time = !s.is_empty()
        && s.iter()
            .all(|l| l.block.starts_with("step") || l.block.starts_with("memory"));
    if through_time {
        Shape::ThroughTime {
            memory: s.iter().any(|l| l.block.starts_with("memory")),
            cell: s[0].block.split(':').nth(1).and_then(|c| c.parse().ok()),
        }
    } else if is_graph(r) {
        Shape::Graph
    } else {
        Shape::Chain
    }
}

/// ln C for a classifier whose head is `[width, C]`: the cross-entropy of a chance guess.
fn chance_level(r: &StepRecord) -> Option<f64> {
    r.layers
        .iter()
        .find(|l| l.block == "head")
        .and_then(|h| h.params.iter().find(|p| p.shape.len() == 2))
        .map(|w| w.shape[1])
        .filter(|&c| c >= 2)
        .map(|c| (c as f64).ln())
}

impl Evidence {
    /// Measures the records (in step order); `None` when there are none. The end window is the
    /// last tenth of the records (at least 5), without the steps that were not finite.
    pub fn measure(records: &[StepRecord]) -> Option<Evidence> {
        let init = records.first()?;
        let end = records.last()?;
        let window = &records[records.len().saturating_sub(5.max(records.len() / 10))..];
        let finite: Vec<&StepRecord> = window.iter().filter(|r| r.nonfinite.is_none()).collect();
        let over_window =
            |f: &dyn Fn(&StepRecord) -> f64| median(finite.iter().map(|r| f(r)).collect());
        let mf = meanfield_factors(init);
        let meanfield = (mf.len() >= 2).then(|| {
            let p = geo_mean(&mf.iter().map(|m| m.1).collect::<Vec<_>>());
            let m = geo_mean(&mf.iter().map(|m| m.2).collect::<Vec<_>>());
            (p, m, mf.len())
        });
        Some(Evidence {
            shape: shape(end),
            activation: series(init).iter().find_map(|l| l.act_fn),
            n_hidden: series(end).len(),
            first_last_init: first_last(init),
            first_last_end: over_window(&first_last),
            per_layer_factor: if is_graph(end) {
                f64::NAN
            } else {
                per_layer_factor(&finite)
            },
            grad_norm_init: init.grad_norm,
            grad_norm_end: over_window(&|r| r.grad_norm),
            loss_init: init.loss,
            loss_end: over_window(&|r| r.loss),
            chance: chance_level(init),
            steps: records.len(),
            nonfinite: records.iter().find_map(|r| r.nonfinite.clone()),
            meanfield,
            layers: layers(end, &finite, &mf),
        })
    }

    /// Global gradient norm over the end window ÷ at init.
    pub fn norm_growth(&self) -> f64 {
        self.grad_norm_end / self.grad_norm_init
    }
}

/// Geometric mean of the factor between neighbours, over the pairs whose gradients did not
/// underflow to zero (a vanishing RNN reaches exact zeros in f32 after a few dozen steps).
fn per_layer_factor(window: &[&StepRecord]) -> f64 {
    let factors: Vec<f64> = window
        .iter()
        .flat_map(|r| {
            let (h, g) = (series(r), is_graph(r));
            (1..h.len())
                .map(|l| magnitude(h[l - 1], g) / magnitude(h[l], g))
                .collect::<Vec<_>>()
        })
        .collect();
    geo_mean(&factors)
}

/// Per-layer medians over the end window. In a graph a layer is compared with the strongest
/// head input (for exploding) and with the weakest (for vanishing: a branch that feeds a weak
/// output is not starved for that).
fn layers(
    end: &StepRecord,
    window: &[&StepRecord],
    mf: &[(usize, f64, f64)],
) -> Vec<LayerEvidence> {
    let graph = is_graph(end);
    let strongest = median(window.iter().map(|r| reference(r)).collect());
    let weakest = if graph {
        median(window.iter().map(|r| head_inputs(r, f64::min)).collect())
    } else {
        strongest
    };
    series(end)
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let pick = |f: &dyn Fn(&LayerRecord) -> Option<f64>| -> Option<f64> {
                let v = window
                    .iter()
                    .filter_map(|r| series(r).get(i).and_then(|x| f(x)))
                    .collect();
                Some(median(v)).filter(|m| m.is_finite())
            };
            let mag = pick(&|x| Some(magnitude(x, graph))).unwrap_or(f64::NAN);
            let at_init = mf.iter().find(|(k, _, _)| *k == i);
            LayerEvidence {
                name: l.name.clone(),
                block: l.block.clone(),
                act_fn: l.act_fn,
                grad_h_norm: pick(&|x| Some(x.grad_h.norm)).unwrap_or(f64::NAN),
                rel: mag / strongest,
                rel_weakest: mag / weakest,
                update_ratio: pick(&|x| Some(x.update_ratio)).unwrap_or(f64::NAN),
                dead_frac: pick(&|x| x.act.dead_frac),
                sat_frac: pick(&|x| x.act.sat_frac),
                measured_factor: at_init.map(|m| m.2),
                predicted_factor: at_init.map(|m| m.1),
            }
        })
        .collect()
}
