//! Ioffe & Szegedy 2015, "Batch normalization" (ICML), Fig. 1: three fully connected sigmoid
//! layers of 100 units on MNIST, with and without BatchNorm. (a) the network with BatchNorm
//! reaches a higher test accuracy, sooner; (b, c) the input of a typical sigmoid in the last
//! hidden layer (its 15th, 50th and 85th percentiles over training) drifts without BatchNorm
//! and stays put with it.

use super::{net, percentile, probe_every, training, Claim, Paper, PaperLab, PaperOutcome, Setup};
use crate::activation::Activation;
use crate::lab::mlp::{LabError, LabEvent, Variant, VariantOutcome};
use crate::lab::settings::Settings;
use crate::nn::init::Init;
use crate::nn::mlp::{Mlp, NormKind};
use crate::probe::Tap;
use crate::report::panels::{self, Panel, Series};
use crate::train::OptimizerKind;
use burn::module::Module;

pub const PAPER: Paper = Paper {
    name: "ioffe2015",
    cite: "Ioffe & Szegedy 2015, Batch normalization",
    claim: "BatchNorm trains a sigmoid net faster and keeps each unit's input distribution stable",
    own_data: None,
    run,
};

/// The hidden layer whose units we watch: the last of three.
const WATCHED: &str = "layers.2";
/// Percentiles of their Fig. 1 (b, c).
const PERCENTILES: [f64; 3] = [15.0, 50.0, 85.0];

fn variant(lab: &PaperLab, norm: NormKind) -> Variant {
    let epochs = if lab.quick { 30 } else { 150 };
    // "initialized to small random Gaussian values"
    let mut model = net(4, 100, Activation::Sigmoid, Init::Lecun, lab.seed);
    model.norm = norm;
    let train = training(OptimizerKind::Sgd, 0.5, 60, epochs, lab.seed);
    let name = match norm {
        NormKind::Batch => "with BatchNorm",
        _ => "without BatchNorm",
    };
    Variant {
        name: name.into(),
        settings: Settings { model, train },
    }
}

/// Each watched unit's 15th/50th/85th percentile over the validation set, in evaluation mode
/// (BatchNorm with its running statistics).
fn unit_percentiles(model: &Mlp, setup: &Setup) -> Vec<[f64; 3]> {
    let device = crate::device();
    let idx: Vec<usize> = (0..setup.val.len()).collect();
    let (x, _) = setup.val.tensors(&idx, &device);
    let mut tap = Tap::values();
    let _ = model.valid().forward(x.inner(), &mut tap);
    let Some((_, kept)) = tap.kept().into_iter().find(|(n, _)| n == WATCHED) else {
        return Vec::new();
    };
    let (Some(pre), Some(&units)) = (kept.pre, kept.shape.last()) else {
        return Vec::new();
    };
    (0..units)
        .map(|u| {
            let column: Vec<f32> = pre.iter().skip(u).step_by(units).copied().collect();
            PERCENTILES.map(|p| percentile(&column, p))
        })
        .collect()
}

/// A variant's run with the watched units' percentiles after every epoch (index 0: at init).
struct Watched {
    run: VariantOutcome,
    /// [epochs done][unit] → 15/50/85th percentiles
    units: Vec<Vec<[f64; 3]>>,
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let setup = Setup::new(lab, PAPER.name)?;
    let probe = probe_every(5);
    let bench = setup.bench(&probe);
    let all = [variant(lab, NormKind::None), variant(lab, NormKind::Batch)];
    let mut out = Vec::new();
    for (i, v) in all.iter().enumerate() {
        let mut units = Vec::new();
        let run = bench.train(v, (i, all.len()), on, &mut |_, m| {
            units.push(unit_percentiles(m, &setup))
        })?;
        out.push(Watched { run, units });
    }
    let per_epoch = setup.train.len().div_ceil(all[0].settings.train.batch);
    let claims = claims(&out, per_epoch, setup.val.len());
    figure(&out, per_epoch, &setup.dir.join("fig1.png"))?;
    let intro = format!(
        "Three fully connected sigmoid layers of 100 units (Gaussian init, Var = 1/fan_in) and a softmax head, without and with BatchNorm before each sigmoid; plain SGD at lr {}, batches of {} as in the paper, on {} for {} steps (the paper: MNIST, 50 000 steps). Test accuracy is measured after every epoch ({per_epoch} steps), and so are the 15th, 50th and 85th percentiles of every last-hidden-layer unit's input (its sigmoid's argument) over the validation set, in evaluation mode.",
        all[0].settings.train.lr,
        all[0].settings.train.batch,
        setup.data_text(),
        per_epoch * all[0].settings.train.epochs
    );
    let runs = out.into_iter().map(|w| w.run.into()).collect();
    setup.finish(
        &PAPER,
        &intro,
        claims,
        runs,
        &[(
            "fig1.png",
            "Their Fig. 1 from our runs: (a) test accuracy; (b, c) the input of unit 0 of the last hidden layer, 15th/50th/85th percentiles over the validation set, from the first epoch on",
        )],
    )
}

fn accuracy_at(w: &Watched, fraction: f64) -> f64 {
    let e = &w.run.history.epochs;
    let i = ((e.len() as f64 * fraction).ceil() as usize).clamp(1, e.len().max(1)) - 1;
    e.get(i).map_or(f64::NAN, |e| e.val_metric)
}

/// How far each unit's median moved from where it was after the first epoch, at its farthest,
/// in units of its 15–85 percentile spread then; the median over the units. From the first
/// epoch, not from init: in evaluation mode BatchNorm uses its running statistics, which start
/// at mean 0 and variance 1 and move a tenth of the way to the data's per step.
fn median_drift(w: &Watched) -> f64 {
    let Some(start) = w.units.get(1) else {
        return f64::NAN;
    };
    let drifts: Vec<f32> = start
        .iter()
        .enumerate()
        .map(|(u, s0)| {
            let spread = (s0[2] - s0[0]).max(1e-12);
            let far = w.units[1..]
                .iter()
                .filter_map(|e| e.get(u))
                .map(|p| (p[1] - s0[1]).abs())
                .fold(0.0, f64::max);
            (far / spread) as f32
        })
        .collect();
    percentile(&drifts, 50.0)
}

fn claims(out: &[Watched], per_epoch: usize, n_val: usize) -> Vec<Claim> {
    let [plain, bn] = out else {
        return Vec::new();
    };
    let steps = |f: f64| (plain.run.history.epochs.len() as f64 * f).ceil() as usize * per_epoch;
    let (p10, b10) = (accuracy_at(plain, 0.1), accuracy_at(bn, 0.1));
    let (p_end, b_end) = (accuracy_at(plain, 1.0), accuracy_at(bn, 1.0));
    let (dp, db) = (median_drift(plain), median_drift(bn));
    // one standard error of an accuracy measured on n_val samples
    let se = |a: f64| (a * (1.0 - a) / n_val.max(1) as f64).sqrt();
    let se_end = se((b_end + p_end) / 2.0);
    vec![
        Claim {
            claim: "BatchNorm: higher test accuracy early in training".into(),
            paper: "the BN network's test accuracy is higher from the start (Fig. 1a)".into(),
            ours: format!(
                "after {} steps: {b10:.3} with BN, {p10:.3} without",
                steps(0.1),
            ),
            agree: b10 > p10 + se((b10 + p10) / 2.0),
        },
        Claim {
            claim: "BatchNorm: higher test accuracy at the end".into(),
            paper: "higher at the end of training too (Fig. 1a)".into(),
            ours: format!(
                "after {} steps: {b_end:.3} with BN, {p_end:.3} without (one standard error: ±{se_end:.3})",
                steps(1.0)
            ),
            agree: b_end > p_end + se_end,
        },
        Claim {
            claim: "without BatchNorm a sigmoid's input distribution drifts; with it, it is stable"
                .into(),
            paper: "its 15/50/85th percentiles move over training without BN, stay put with BN (Fig. 1b, c)"
                .into(),
            ours: format!(
                "farthest move of a unit's median after the first epoch, in 15–85 spreads (median over 100 units): {dp:.2} without BN, {db:.2} with"
            ),
            agree: dp > db,
        },
    ]
}

fn figure(out: &[Watched], per_epoch: usize, path: &std::path::Path) -> Result<(), LabError> {
    let step = |e: usize| (e * per_epoch) as f64;
    let accuracy = Panel {
        caption: "(a) test accuracy".into(),
        x_desc: "step".into(),
        y_desc: "accuracy".into(),
        series: out
            .iter()
            .map(|w| Series {
                name: w.run.name.clone(),
                points: w
                    .run
                    .history
                    .epochs
                    .iter()
                    .map(|e| (step(e.epoch + 1), e.val_metric))
                    .collect(),
                ..Series::default()
            })
            .collect(),
        log_y: false,
        log_x: false,
    };
    let mut panels_v = vec![accuracy];
    for (w, letter) in out.iter().zip(["b", "c"]) {
        // from the first epoch on, as the drift is measured
        let unit0: Vec<(f64, [f64; 3])> = w
            .units
            .iter()
            .enumerate()
            .skip(1)
            .filter_map(|(e, u)| Some((step(e), *u.first()?)))
            .collect();
        panels_v.push(Panel {
            caption: format!("({letter}) {}: input of unit 0", w.run.name),
            x_desc: "step".into(),
            y_desc: "sigmoid input (15/50/85th pct)".into(),
            series: vec![Series {
                name: w.run.name.clone(),
                points: unit0.iter().map(|(s, p)| (*s, p[1])).collect(),
                band: unit0.iter().map(|(s, p)| (*s, p[0], p[2])).collect(),
                dashed: false,
            }],
            log_y: false,
            log_x: false,
        });
    }
    panels::grid(
        path,
        "Ioffe & Szegedy 2015, Fig. 1 — sigmoid MLP with and without BatchNorm",
        &panels_v,
        3,
        (520, 420),
    )?;
    Ok(())
}
