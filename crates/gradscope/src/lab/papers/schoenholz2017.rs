//! Schoenholz, Gilmer, Ganguli & Sohl-Dickstein 2017, "Deep information propagation" (ICLR):
//! in a random tanh network (weights of variance σ_w²/n, biases σ_b²) signals and gradients
//! propagate over a depth scale ξ_c that diverges at the order-to-chaos transition (σ_w² ≈ 1.76
//! for σ_b² = 0.05); networks train when their depth is below about 6ξ_c (their Figs. 5–6), and
//! the gradient's norm changes by √χ₁ per layer.

use super::{
    final_metric, net, probe_every, training, Claim, Paper, PaperLab, PaperOutcome, Setup,
};
use crate::activation::Activation;
use crate::diagnose::meanfield::{depth_scale, DepthScale};
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::report::panels::{self, Cell, Series};
use crate::train::OptimizerKind;

pub const PAPER: Paper = Paper {
    name: "schoenholz2017",
    cite: "Schoenholz et al. 2017, Deep information propagation",
    claim: "a tanh net trains when its depth is below about 6ξ_c, the mean-field depth scale",
    own_data: None,
    run,
};

/// σ_b², as in their Figs. 5–6.
const SIGMA_B2: f64 = 0.05;
/// Their order-to-chaos transition at σ_b² = 0.05.
const PAPER_CRITICAL: f64 = 1.76;

fn grid(lab: &PaperLab) -> (Vec<f64>, Vec<usize>) {
    if lab.quick {
        (
            (0..7).map(|i| 1.0 + 0.5 * i as f64).collect(),
            vec![4, 8, 16, 32, 64],
        )
    } else {
        (
            (0..13).map(|i| 1.0 + 0.25 * i as f64).collect(),
            vec![4, 8, 16, 32, 64, 128],
        )
    }
}

fn variant(lab: &PaperLab, sigma_w2: f64, depth: usize) -> Variant {
    let (width, epochs) = if lab.quick { (64, 4) } else { (128, 10) };
    let mut model = net(depth, width, Activation::Tanh, Init::Lecun, lab.seed);
    model.gain = sigma_w2.sqrt();
    model.bias_std = Some(SIGMA_B2.sqrt());
    let train = training(OptimizerKind::Sgd, 0.01, 32, epochs, lab.seed);
    Variant {
        name: format!("σw²={sigma_w2} L={depth}"),
        settings: Settings { model, train },
    }
}

/// One cell of the grid.
struct Trained {
    sigma_w2: f64,
    depth: usize,
    run: VariantOutcome,
    theory: DepthScale,
}

impl Trained {
    fn accuracy(&self) -> f64 {
        final_metric(&self.run.history)
    }

    /// The geometric mean of ‖∂L/∂h_l‖ ÷ ‖∂L/∂h_{l+1}‖ at init over the hidden layers, leaving
    /// out two at each end (where q has not settled at q*, or the head's gradient enters).
    fn measured_factor(&self) -> Option<f64> {
        let r = self.run.records.first()?;
        let g: Vec<f64> = r
            .layers
            .iter()
            .filter(|l| l.name.starts_with("layers."))
            .map(|l| l.grad_h.norm)
            .collect();
        if g.len() < 8 {
            return None;
        }
        let inner = &g[2..g.len() - 2];
        let logs: Vec<f64> = inner
            .windows(2)
            .map(|w| (w[0] / w[1]).ln())
            .filter(|v| v.is_finite())
            .collect();
        (!logs.is_empty()).then(|| (logs.iter().sum::<f64>() / logs.len() as f64).exp())
    }
}

/// σ_w² where χ₁ = 1, by bisection on [1, 4].
fn critical() -> f64 {
    let (mut lo, mut hi) = (1.0, 4.0);
    for _ in 0..30 {
        let mid = (lo + hi) / 2.0;
        if depth_scale(Activation::Tanh, mid, SIGMA_B2).chi1 < 1.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(10);
    let bench = setup.bench(&probe);
    let (sigmas, depths) = grid(lab);
    let all: Vec<Variant> = sigmas
        .iter()
        .flat_map(|&s| depths.iter().map(move |&d| (s, d)))
        .map(|(s, d)| variant(lab, s, d))
        .collect();
    let out: Vec<Trained> = bench
        .train_all(&all, on)?
        .into_iter()
        .map(|run| {
            let sigma_w2 = run.settings.model.gain.powi(2);
            Trained {
                sigma_w2,
                depth: run.settings.model.depth,
                theory: depth_scale(Activation::Tanh, sigma_w2, SIGMA_B2),
                run,
            }
        })
        .collect();
    let chance = super::super::mlp::majority_share(&setup.val.y, setup.all.classes);
    let threshold = trainable_threshold(&out, chance);
    let crit = critical();
    let claims = claims(&out, threshold, crit);
    figure(&out, &sigmas, threshold, &setup.dir.join("fig5.png"))?;
    let m = &all[0].settings;
    let intro = format!(
        "tanh networks of depth {depths:?} ({} units wide) on a grid of σ_w² = {sigmas:?} with σ_b² = {SIGMA_B2} (weights N(0, σ_w²/fan_in), biases N(0, σ_b²)), plain SGD at lr {}, batch {}, {} epochs on {}. A cell counts as trained when its validation accuracy reaches {threshold:.3}: halfway from chance ({chance:.3}) to the best cell's. ξ_c is computed by the library from the mean-field recursions (the length map's fixed point q*, the correlation map's c*). The paper: width 300, depths to 300, MNIST and CIFAR-10, SGD and RMSProp for many more steps.",
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
        &[(
            "fig5.png",
            "Their Fig. 5 from our runs: validation accuracy over σ_w² × depth, with 6ξ_c from mean-field theory",
        )],
    )
}

/// Halfway from chance to the best cell's accuracy.
fn trainable_threshold(out: &[Trained], chance: f64) -> f64 {
    let best = out
        .iter()
        .map(Trained::accuracy)
        .filter(|a| a.is_finite())
        .fold(chance, f64::max);
    chance + 0.5 * (best - chance)
}

fn claims(out: &[Trained], threshold: f64, crit: f64) -> Vec<Claim> {
    let agreeing = out
        .iter()
        .filter(|t| (t.accuracy() >= threshold) == (t.depth as f64 <= 6.0 * t.theory.xi_c))
        .count();
    let trained = out.iter().filter(|t| t.accuracy() >= threshold).count();
    let factors: Vec<(f64, f64)> = out
        .iter()
        .filter_map(|t| Some((t.measured_factor()?, t.theory.chi1.sqrt())))
        .collect();
    let close = factors
        .iter()
        .filter(|(m, p)| (m / p - 1.0).abs() <= 0.15)
        .count();
    let worst = factors
        .iter()
        .map(|(m, p)| (m / p - 1.0).abs())
        .fold(0.0, f64::max);
    vec![
        Claim {
            claim: "the order-to-chaos transition for tanh at σ_b² = 0.05".into(),
            paper: format!("χ₁ = 1 at σ_w² ≈ {PAPER_CRITICAL} (their phase diagram)"),
            ours: format!("χ₁ = 1 at σ_w² = {crit:.3} (the library's mean-field recursions)"),
            agree: (crit - PAPER_CRITICAL).abs() <= 0.05,
        },
        Claim {
            claim: "a network trains when its depth is below about 6ξ_c".into(),
            paper: "6ξ_c separates trainable from untrainable networks (Figs. 5–6)".into(),
            ours: format!(
                "depth ≤ 6ξ_c predicts trained / not trained in {agreeing} of {} cells ({trained} trained)",
                out.len()
            ),
            // their 80% bar
            agree: agreeing as f64 >= 0.8 * out.len() as f64,
        },
        Claim {
            claim: "at init the gradient's norm changes by √χ₁ per layer".into(),
            paper: "‖∂L/∂h‖² changes by χ₁ per layer: vanishing in the ordered phase, exploding in the chaotic".into(),
            ours: format!(
                "measured per-layer factor within 15% of √χ₁ in {close} of {} cells of ≥ 8 layers (largest difference {:.0}%)",
                factors.len(),
                100.0 * worst
            ),
            agree: close as f64 >= 0.8 * factors.len() as f64 && !factors.is_empty(),
        },
    ]
}

fn figure(
    out: &[Trained],
    sigmas: &[f64],
    threshold: f64,
    path: &std::path::Path,
) -> Result<(), LabError> {
    let step = sigmas
        .get(1)
        .zip(sigmas.first())
        .map_or(0.5, |(b, a)| b - a);
    let cells: Vec<Cell> = out
        .iter()
        .map(|t| {
            let y = (t.depth as f64).log2();
            let mark = if t.accuracy() >= threshold {
                ""
            } else {
                " ✗"
            };
            Cell {
                x: (t.sigma_w2 - step / 2.0, t.sigma_w2 + step / 2.0),
                y: (y - 0.5, y + 0.5),
                value: t.accuracy(),
                label: format!("{:.2}{mark}", t.accuracy()),
            }
        })
        .collect();
    let (lo, hi) = (
        sigmas[0] - step / 2.0,
        sigmas[sigmas.len() - 1] + step / 2.0,
    );
    let curve: Vec<(f64, f64)> = (0..=60)
        .map(|i| {
            let s = lo + (hi - lo) * i as f64 / 60.0;
            (
                s,
                (6.0 * depth_scale(Activation::Tanh, s, SIGMA_B2).xi_c).log2(),
            )
        })
        .collect();
    let lines = [Series {
        name: "6ξ_c (mean field)".into(),
        points: curve,
        dashed: false,
        ..Series::default()
    }];
    panels::heat(
        path,
        "Schoenholz et al. 2017, Fig. 5 — trainability of tanh nets (validation accuracy; ✗ not trained)",
        ("σ_w²", "log2 depth"),
        &cells,
        &lines,
        (1100, 620),
    )?;
    Ok(())
}
