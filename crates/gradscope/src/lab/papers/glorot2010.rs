//! Glorot & Bengio 2010, "Understanding the difficulty of training deep feedforward neural
//! networks" (AISTATS): five hidden layers of sigmoid, tanh or softsign units with the standard
//! init U(±1/√n) or their normalised init U(±√6/√(n_in+n_out)) ("N"). With the standard init
//! n·Var(W) = 1/3, so the variance of the activations (going up) and of the back-propagated
//! gradients (going down) shrinks layer by layer (their Figs. 6–7, §4.2); normalised init keeps
//! n·Var(W) = 1. Sigmoid's top hidden layer saturates early (Fig. 2), and sigmoid nets end with
//! the worst test error (Table 1).

use super::{
    final_metric, net, percentile, probe_every, training, variance, Claim, Paper, PaperLab,
    PaperOutcome, Setup,
};
use crate::activation::Activation;
use crate::diagnose::meanfield::chi1;
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::nn::mlp::Mlp;
use crate::probe::Tap;
use crate::report::panels::{self, Panel, Series};
use crate::train::{loss::cross_entropy, OptimizerKind};

pub const PAPER: Paper = Paper {
    name: "glorot2010",
    cite: "Glorot & Bengio 2010, Understanding the difficulty of training deep feedforward neural networks",
    claim: "standard init shrinks activations and gradients layer by layer, normalised (Xavier) init keeps them",
    own_data: None,
    run,
};

/// Their Table 1's rows: activation, init.
const ROWS: [(Activation, Init); 5] = [
    (Activation::Sigmoid, Init::Default),
    (Activation::Tanh, Init::Default),
    (Activation::Tanh, Init::Xavier),
    (Activation::Softsign, Init::Default),
    (Activation::Softsign, Init::Xavier),
];

fn variant(lab: &PaperLab, (act, init): (Activation, Init)) -> Variant {
    let (width, epochs) = if lab.quick { (256, 10) } else { (1000, 30) };
    let model = net(6, width, act, init, lab.seed);
    let train = training(OptimizerKind::Sgd, 0.05, 10, epochs, lab.seed);
    let n = if init == Init::Xavier { " N" } else { "" };
    Variant {
        name: format!("{act}{n}"),
        settings: Settings { model, train },
    }
}

/// One hidden layer measured on the validation set.
#[derive(Clone, Debug)]
struct LayerTrace {
    /// 15th, 50th, 85th percentile of the activations.
    act: [f64; 3],
    act_std: f64,
    pre_mean: f64,
    pre_var: f64,
    /// Var(∂L/∂h) over the set's elements.
    grad_var: f64,
}

/// Every hidden layer's activations and back-propagated gradients on the validation set (one
/// forward and backward of the mean cross-entropy; the parameters are not changed).
fn trace(model: &Mlp, setup: &Setup) -> Vec<LayerTrace> {
    let device = crate::device();
    let idx: Vec<usize> = (0..setup.val.len()).collect();
    let (x, y) = setup.val.tensors(&idx, &device);
    let mut tap = Tap::keeping();
    let logits = model.forward(x, &mut tap);
    let grads = cross_entropy(logits, y).backward();
    tap.finish(&grads)
        .into_iter()
        .filter(|t| t.name.starts_with("layers."))
        .filter_map(|t| {
            let k = t.kept?;
            let pre = k.pre.unwrap_or_default();
            let mean = pre.iter().map(|&v| v as f64).sum::<f64>() / pre.len().max(1) as f64;
            Some(LayerTrace {
                act: [15.0, 50.0, 85.0].map(|p| percentile(&k.act, p)),
                act_std: variance(&k.act).sqrt(),
                pre_mean: mean,
                pre_var: variance(&pre),
                grad_var: variance(&k.grad),
            })
        })
        .collect()
}

/// A variant's run with its traces at init and at the end.
struct Traced {
    run: VariantOutcome,
    act: Activation,
    /// n·Var(W) of the hidden-to-hidden weights at init: 1/3 standard, 1 normalised (square).
    sigma_w2: f64,
    init: Vec<LayerTrace>,
    end: Vec<LayerTrace>,
}

impl Traced {
    /// Var(∂L/∂h) at the first hidden layer ÷ at the last, at init.
    fn grad_ratio(&self) -> f64 {
        match (self.init.first(), self.init.last()) {
            (Some(a), Some(b)) => a.grad_var / b.grad_var,
            _ => f64::NAN,
        }
    }

    /// What mean-field theory predicts for [`Traced::grad_ratio`]: the product over the layers
    /// above the first of σ_w²·E(φ'(s)²) at each layer's measured pre-activation distribution.
    fn grad_ratio_theory(&self) -> f64 {
        self.init
            .iter()
            .skip(1)
            .map(|l| chi1(self.act, self.sigma_w2, l.pre_mean, l.pre_var))
            .product()
    }

    /// Std of the activations at the last hidden layer ÷ at the first, at init.
    fn act_ratio(&self) -> f64 {
        match (self.init.first(), self.init.last()) {
            (Some(a), Some(b)) => b.act_std / a.act_std,
            _ => f64::NAN,
        }
    }

    fn val_error(&self) -> f64 {
        1.0 - final_metric(&self.run.history)
    }
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(5);
    let bench = setup.bench(&probe);
    let all: Vec<Variant> = ROWS.iter().map(|&r| variant(lab, r)).collect();
    let mut out = Vec::new();
    for (i, v) in all.iter().enumerate() {
        let epochs = v.settings.train.epochs;
        let (mut init, mut end) = (Vec::new(), Vec::new());
        let run = bench.train(v, (i, all.len()), on, &mut |e, m| {
            if e == 0 {
                init = trace(m, &setup);
            } else if e == epochs {
                end = trace(m, &setup);
            }
        })?;
        let sigma_w2 = if v.settings.model.init == Init::Xavier {
            1.0
        } else {
            1.0 / 3.0
        };
        out.push(Traced {
            run,
            act: v.settings.model.act,
            sigma_w2,
            init,
            end,
        });
    }
    let claims = claims(&out);
    fig_6_7(&out, &setup.dir.join("fig6_7.png"))?;
    fig_2(&out[0], &setup.dir.join("fig2.png"))?;
    let m = &all[0].settings;
    let intro = format!(
        "Five hidden layers of {} units (the paper: 1000) with sigmoid, tanh or softsign, standard init U(±1/√fan_in) or normalised init U(±√(6/(fan_in+fan_out))) (\"N\"), plain SGD at lr {} with batches of {} as in the paper, {} epochs on {}. The paper used Shapeset-3×2, MNIST, CIFAR-10 and ImageNet and tuned the learning rate per model; we use one rate for all. Activations and ∂L/∂h are measured on the whole validation set at init and after training.",
        m.model.width,
        m.train.lr,
        m.train.batch,
        m.train.epochs,
        setup.data_text()
    );
    let runs = out.into_iter().map(|t| t.run.into()).collect();
    setup.finish(
        &PAPER,
        &intro,
        claims,
        runs,
        &[
            (
                "fig6_7.png",
                "Their Figs. 6–7 from our runs: activations and back-propagated gradients per hidden layer",
            ),
            (
                "fig2.png",
                "Their Fig. 2 from our run: mean activation of each sigmoid hidden layer over training",
            ),
        ],
    )
}

/// (step, mean activation) of hidden layer `layer` over the probed steps.
fn mean_activation(run: &VariantOutcome, layer: usize) -> Vec<(f64, f64)> {
    let name = format!("layers.{layer}");
    run.records
        .iter()
        .filter_map(|r| {
            let l = r.layers.iter().find(|l| l.name == name)?;
            Some((r.step as f64, l.act.mean))
        })
        .collect()
}

fn claims(out: &[Traced]) -> Vec<Claim> {
    let [sig, tanh, tanh_n, soft, soft_n] = out else {
        return Vec::new();
    };
    let within = |m: f64, t: f64, factor: f64| (m / t).log10().abs() <= factor.log10();
    let mut c = Vec::new();
    let (g, gt) = (tanh.grad_ratio(), tanh.grad_ratio_theory());
    let (gn, gnt) = (tanh_n.grad_ratio(), tanh_n.grad_ratio_theory());
    c.push(Claim {
        claim: "tanh at init: back-propagated gradients shrink toward the input with standard init, not with normalised".into(),
        paper: "Var[∂C/∂s] × n·Var[W] per layer: × 1/3 standard, × 1 normalised (§4.2, Fig. 7)".into(),
        ours: format!(
            "Var(∂L/∂h) layer 1 ÷ layer 5: {g:.3} standard (mean field: {gt:.3}), {gn:.3} normalised ({gnt:.3})"
        ),
        // the ordering, and each within a factor 2 of mean-field theory
        agree: g < gn && within(g, gt, 2.0) && within(gn, gnt, 2.0),
    });
    let (a, an) = (tanh.act_ratio(), tanh_n.act_ratio());
    c.push(Claim {
        claim: "tanh at init: activations narrow going up with standard init, not with normalised".into(),
        paper: "the activation histograms narrow layer by layer with standard init, stay alike with normalised (Fig. 6)".into(),
        ours: format!("std of activations, layer 5 ÷ layer 1: {a:.3} standard, {an:.3} normalised"),
        agree: a < 0.5 && an > 2.0 * a,
    });
    let top = out[0].init.len().saturating_sub(1);
    let sig_top = mean_activation(&sig.run, top);
    let (start, low) = (
        sig_top.first().map_or(f64::NAN, |p| p.1),
        sig_top.iter().copied().fold(
            (f64::NAN, f64::INFINITY),
            |m, p| if p.1 < m.1 { p } else { m },
        ),
    );
    c.push(Claim {
        claim: "sigmoid: the top hidden layer is driven into saturation at 0 early in training"
            .into(),
        paper: "its mean activation drops quickly toward 0 and recovers only slowly (Fig. 2)"
            .into(),
        ours: format!(
            "layer 5's mean activation {start:.3} at init, lowest {:.3} at step {}",
            low.1, low.0
        ),
        // saturated: below a fifth of where it started
        agree: low.1 < 0.2 * start,
    });
    let errors: Vec<(String, f64)> = out
        .iter()
        .map(|t| (t.run.name.clone(), t.val_error()))
        .collect();
    let worst = errors
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or("", |w| w.0.as_str());
    c.push(Claim {
        claim: "test error: sigmoid the worst of the five".into(),
        paper: "sigmoid has the highest test error on all four data sets (Table 1)".into(),
        ours: errors
            .iter()
            .map(|(n, e)| format!("{n} {e:.3}"))
            .collect::<Vec<_>>()
            .join(", "),
        agree: worst == sig.run.name,
    });
    c.push(Claim {
        claim: "test error: normalised init helps tanh".into(),
        paper: "tanh N below tanh on all four data sets (Table 1)".into(),
        ours: format!(
            "tanh N {:.3}, tanh {:.3} (softsign N {:.3}, softsign {:.3})",
            tanh_n.val_error(),
            tanh.val_error(),
            soft_n.val_error(),
            soft.val_error()
        ),
        agree: tanh_n.val_error() < tanh.val_error(),
    });
    c
}

/// (a) activations' 15–85 band per layer at init, tanh standard vs N; (b, c) Var(∂L/∂h) per
/// layer at init (with mean-field theory) and after training.
fn fig_6_7(out: &[Traced], path: &std::path::Path) -> Result<(), LabError> {
    let layer = |i: usize| i as f64 + 1.0;
    let acts = out
        .iter()
        .filter(|t| t.act == Activation::Tanh)
        .map(|t| Series {
            name: t.run.name.clone(),
            points: t
                .init
                .iter()
                .enumerate()
                .map(|(i, l)| (layer(i), l.act[1]))
                .collect(),
            band: t
                .init
                .iter()
                .enumerate()
                .map(|(i, l)| (layer(i), l.act[0], l.act[2]))
                .collect(),
            dashed: false,
        })
        .collect();
    let grads = |end: bool| -> Vec<Series> {
        let mut s = Vec::new();
        for t in out {
            let trace = if end { &t.end } else { &t.init };
            s.push(Series {
                name: t.run.name.clone(),
                points: trace
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (layer(i), l.grad_var))
                    .collect(),
                ..Series::default()
            });
            if !end && t.act == Activation::Tanh {
                // anchored at the top layer, going down by σ_w²·E[φ'²] per layer
                let mut v = trace.last().map_or(f64::NAN, |l| l.grad_var);
                let mut pts = vec![(layer(trace.len().saturating_sub(1)), v)];
                for i in (0..trace.len().saturating_sub(1)).rev() {
                    let above = &trace[i + 1];
                    v *= chi1(t.act, t.sigma_w2, above.pre_mean, above.pre_var);
                    pts.push((layer(i), v));
                }
                s.push(Series {
                    name: "mean field (tanh, tanh N)".into(),
                    points: pts,
                    dashed: true,
                    ..Series::default()
                });
            }
        }
        s
    };
    let panels_v = [
        Panel {
            caption: "(a) at init: activations, 15/50/85th pct".into(),
            x_desc: "hidden layer".into(),
            y_desc: "activation".into(),
            series: acts,
            log_y: false,
            log_x: false,
        },
        Panel {
            caption: "(b) at init: back-propagated gradients".into(),
            x_desc: "hidden layer".into(),
            y_desc: "Var(∂L/∂h)".into(),
            series: grads(false),
            log_y: true,
            log_x: false,
        },
        Panel {
            caption: "(c) after training".into(),
            x_desc: "hidden layer".into(),
            y_desc: "Var(∂L/∂h)".into(),
            series: grads(true),
            log_y: true,
            log_x: false,
        },
    ];
    panels::grid(
        path,
        "Glorot & Bengio 2010, Figs. 6–7 — standard vs normalised init",
        &panels_v,
        3,
        (520, 420),
    )?;
    Ok(())
}

/// Their Fig. 2: the sigmoid net's mean activation per hidden layer over training.
fn fig_2(sig: &Traced, path: &std::path::Path) -> Result<(), LabError> {
    let series = (0..sig.init.len())
        .map(|l| Series {
            name: format!("layer {}", l + 1),
            points: mean_activation(&sig.run, l),
            ..Series::default()
        })
        .collect();
    let panel = Panel {
        caption: "sigmoid, standard init: mean activation per hidden layer".into(),
        x_desc: "step".into(),
        y_desc: "mean activation".into(),
        series,
        log_y: false,
        log_x: false,
    };
    panels::grid(
        path,
        "Glorot & Bengio 2010, Fig. 2 — sigmoid saturation",
        &[panel],
        1,
        (900, 420),
    )?;
    Ok(())
}
