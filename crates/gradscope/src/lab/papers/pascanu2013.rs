//! Pascanu, Mikolov & Bengio 2013, "On the difficulty of training recurrent neural networks"
//! (ICML): when a recurrent matrix's largest singular value is above 1 (tanh), the gradient
//! through time can explode; the loss surface has steep "cliffs" along which a plain SGD step of
//! size lr·‖g‖ flies off. Rescaling the gradient when its norm exceeds a
//! threshold (§3.2) keeps training finite; clipping each element (Mikolov 2012) also bounds the
//! step.

use std::time::Instant;

use burn::optim::GradientsParams;

use super::{Claim, Paper, PaperLab, PaperOutcome, PaperRun, Setup};
use crate::data::sequences::ADDING_BASELINE_MSE;
use crate::diagnose::diagnose;
use crate::lab::mlp::{LabError, LabEvent};
use crate::lab::recurrent::{SeqData, SeqTask, SeqTaskKind};
use crate::nn::recurrent::{CellKind, RecurrentConfig, SeqModel};
use crate::probe::{Probe, Tap};
use crate::report::panels::{self, Panel, Series};
use crate::train::{clip, fit, ClipNorm, History, OptimizerKind, Task, TrainConfig};

pub const PAPER: Paper = Paper {
    name: "pascanu2013",
    cite: "Pascanu, Mikolov & Bengio 2013, On the difficulty of training recurrent neural networks",
    claim:
        "an RNN's exploding gradients make SGD diverge; clipping the gradient's norm prevents it",
    own_data: Some("the adding problem it generates"),
    run,
};

/// The recurrent matrix starts orthogonal × this: spectral norm 1.5 > 1, the explosion regime.
const GAIN: f64 = 1.5;
const LR: f64 = 0.05;
/// Sequence length of the adding problem.
const STEPS: usize = 50;
const HIDDEN: usize = 32;

/// How a variant clips.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Clipping {
    None,
    Norm(f64),
    Auto,
    Value(f64),
}

impl Clipping {
    fn name(self) -> String {
        match self {
            Clipping::None => "no clipping".into(),
            Clipping::Norm(c) => format!("clip_norm={c}"),
            Clipping::Auto => "clip_norm=auto".into(),
            Clipping::Value(c) => format!("clip_value={c}"),
        }
    }

    fn apply(self, t: &mut TrainConfig) {
        match self {
            Clipping::None => {}
            Clipping::Norm(c) => t.clip_norm = Some(ClipNorm::Fixed(c)),
            Clipping::Auto => t.clip_norm = Some(ClipNorm::Auto),
            Clipping::Value(c) => t.clip_value = Some(c),
        }
    }
}

const VARIANTS: [Clipping; 6] = [
    Clipping::None,
    Clipping::Norm(0.1),
    Clipping::Norm(1.0),
    Clipping::Norm(10.0),
    Clipping::Auto,
    Clipping::Value(0.1),
];

fn train_config(lab: &PaperLab, clipping: Clipping, seed: u64) -> TrainConfig {
    let mut t = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: LR,
        batch: 32,
        epochs: if lab.quick { 4 } else { 10 },
        seed,
        // the first non-finite step ends the run: divergence is what we count
        nan_recovery: 0,
        ..TrainConfig::default()
    };
    clipping.apply(&mut t);
    t
}

fn model(seed: u64, task: &SeqTask) -> SeqModel {
    let mut cfg = RecurrentConfig::new(CellKind::Rnn, task.features(), HIDDEN, task.outputs());
    cfg.recurrent_gain = Some(GAIN);
    cfg.seed = seed;
    cfg.init(&crate::device())
}

/// One seed of one variant.
struct SeedRun {
    history: History,
    diverged: bool,
    final_val: f64,
    run: Option<PaperRun>,
}

/// Diverged: a non-finite loss or gradient (the run stops), or a final validation MSE above
/// 10× that of always predicting 1 — finite, but flown far off.
fn diverged(h: &History) -> bool {
    h.stopped.is_some()
        || h.step_loss.iter().any(|l| !l.is_finite())
        || h.epochs
            .last()
            .is_none_or(|e| !e.val_loss.is_finite() || e.val_loss > 10.0 * ADDING_BASELINE_MSE)
}

fn per_epoch(lab: &PaperLab) -> usize {
    if lab.quick {
        50
    } else {
        100
    }
}

fn train_one(
    lab: &PaperLab,
    clipping: Clipping,
    seed: u64,
    keep: Option<&std::path::Path>,
    on: &mut dyn FnMut(LabEvent),
    (index, total): (usize, usize),
) -> Result<SeedRun, LabError> {
    let device = crate::device();
    let cfg = train_config(lab, clipping, seed);
    let mut task = SeqTask::new(
        SeqTaskKind::Adding,
        STEPS,
        cfg.batch,
        per_epoch(lab),
        seed,
        &device,
    )?;
    let m = model(seed, &task);
    let mut probe = Probe::new(super::probe_every(10));
    if let Some(dir) = keep {
        probe = probe.with_jsonl(&dir.join("probe.jsonl"))?;
    }
    let name = format!("{} seed {seed}", clipping.name());
    on(LabEvent::Start {
        name: &name,
        index,
        total,
        steps: cfg.epochs * per_epoch(lab),
    });
    let t0 = Instant::now();
    let (_, history) = fit(m, &mut task, &cfg, &mut probe, &mut |p| {
        on(LabEvent::Step(p))
    })?;
    on(LabEvent::Done {
        name: &name,
        seconds: t0.elapsed().as_secs_f64(),
    });
    let records = probe.into_records();
    let run = keep.map(|_| PaperRun {
        name: clipping.name(),
        settings: format!(
            "cell=rnn task=adding T={STEPS} hidden={HIDDEN} recurrent_gain={GAIN} optimizer=sgd lr={LR} batch={} epochs={} {} seed={seed}",
            cfg.batch,
            cfg.epochs,
            clipping.name().replace("no clipping", "clip_norm=none")
        ),
        diagnosis: diagnose(&records),
        history: history.clone(),
        records,
    });
    Ok(SeedRun {
        diverged: diverged(&history),
        final_val: history.epochs.last().map_or(f64::NAN, |e| e.val_loss),
        history,
        run,
    })
}

fn run(lab: &PaperLab, on: &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError> {
    let data = format!("the adding problem (T = {STEPS})");
    let setup = Setup::own_data(lab, PAPER.name, &data)?;
    let seeds = if lab.quick { 4 } else { 10 };
    let total = VARIANTS.len() * seeds;
    let mut results: Vec<(Clipping, Vec<SeedRun>)> = Vec::new();
    for (v, &clipping) in VARIANTS.iter().enumerate() {
        let mut runs = Vec::new();
        for s in 0..seeds {
            let seed = lab.seed + s as u64;
            let keep = (s == 0).then(|| setup.dir.join(clipping.name()));
            let r = train_one(
                lab,
                clipping,
                seed,
                keep.as_deref(),
                on,
                (v * seeds + s, total),
            )?;
            runs.push(r);
        }
        results.push((clipping, runs));
    }
    let slice = cliff(lab)?;
    let claims = claims(&results, &slice);
    figure(&results, &slice, &setup.dir.join("cliff.png"))?;
    super::super::write_json(
        &setup.dir.join("runs.json"),
        &serde_json::json!(results
            .iter()
            .map(|(c, runs)| serde_json::json!({
                "variant": c.name(),
                "diverged": runs.iter().map(|r| r.diverged).collect::<Vec<_>>(),
                "final_val_mse": runs.iter().map(|r| r.final_val).collect::<Vec<_>>(),
            }))
            .collect::<Vec<_>>()),
    )?;
    let intro = format!(
        "A vanilla tanh RNN with {HIDDEN} units, its recurrent matrix orthogonal × {GAIN} at init (spectral norm {GAIN} > 1), trained by plain SGD at lr {LR} on the adding problem with sequences of {STEPS} steps (always predicting 1 scores MSE 1/6 ≈ 0.167), {seeds} seeds per variant: without clipping, clipping the gradient's norm at 0.1, 1 and 10 and at the automatic threshold (5 × the running median norm), and clipping each element at 0.1. A run diverges when a loss or gradient becomes non-finite (it then stops). The paper: the same tasks (adding, multiplication, temporal order) up to T = 200, with success rates over many runs. The sections below show each variant's first seed."
    );
    let mut runs = Vec::new();
    for (_, seeds) in results {
        runs.extend(seeds.into_iter().filter_map(|s| s.run));
    }
    setup.finish(
        &PAPER,
        &intro,
        claims,
        runs,
        &[(
            "cliff.png",
            "Training loss by clipping, and the loss along the gradient where the unclipped run's gradient spikes: the cliff an unclipped step jumps off",
        )],
    )
}

/// The loss of one batch along the steepest-descent direction where an unclipped run's
/// gradient spikes.
struct Slice {
    /// (distance moved, loss)
    points: Vec<(f64, f64)>,
    grad_norm: f64,
    /// The step of the unclipped run where it was taken (None: no spike, taken at init).
    step: Option<usize>,
    /// The median gradient norm before it.
    typical_norm: f64,
}

impl Slice {
    /// How far the gradient's direction is worth following: the distance of the lowest loss
    /// before the loss first rises above where it started.
    fn useful(&self) -> f64 {
        let l0 = self.points.first().map_or(f64::NAN, |p| p.1);
        self.points
            .iter()
            .take_while(|p| p.1 <= l0)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(f64::NAN, |p| p.0)
    }
}

/// A gradient norm 10× the median of those before it (after 10 steps) is a spike.
const SPIKE: f64 = 10.0;

/// Retraces the unclipped run of seed `lab.seed` with plain SGD until its gradient norm
/// spikes, then samples that batch's loss along −g/‖g‖ out to twice the unclipped step lr·‖g‖.
fn cliff(lab: &PaperLab) -> Result<Slice, LabError> {
    let device = crate::device();
    let cfg = train_config(lab, Clipping::None, lab.seed);
    let mut task = SeqTask::new(
        SeqTaskKind::Adding,
        STEPS,
        cfg.batch,
        per_epoch(lab),
        lab.seed,
        &device,
    )?;
    let mut model = model(lab.seed, &task);
    let grads = |task: &SeqTask, m: &SeqModel, b: &SeqData| {
        let g = task.loss(m, b, &mut Tap::off()).backward();
        GradientsParams::from_grads(g, m)
    };
    let mut sgd = OptimizerKind::Sgd.build();
    let mut norms: Vec<f64> = Vec::new();
    let mut found = None;
    'search: for epoch in 0..cfg.epochs {
        for (i, batch) in task.batches(epoch).into_iter().enumerate() {
            let g = grads(&task, &model, &batch);
            let n = clip::global_norm(&model, &g);
            let typical = median(&norms);
            if !n.is_finite() {
                break 'search;
            }
            if norms.len() >= 10 && n > SPIKE * typical {
                found = Some((epoch * per_epoch(lab) + i, batch, typical));
                break 'search;
            }
            norms.push(n);
            model = sgd.step(LR, model, g);
        }
    }
    let (step, batch, typical_norm) = match found {
        Some((s, b, t)) => (Some(s), b, t),
        None => {
            model = self::model(lab.seed, &task);
            (None, task.batches(0).remove(0), f64::NAN)
        }
    };
    let loss_at = |m: &SeqModel| task.loss(m, &batch, &mut Tap::off()).into_scalar::<f64>();
    let grad_norm = clip::global_norm(&model, &grads(&task, &model, &batch));
    let far = 2.0 * LR * grad_norm;
    let mut points = vec![(0.0, loss_at(&model))];
    for i in 0..=60 {
        let d = far * 10f64.powf(-6.0 + 6.0 * i as f64 / 60.0);
        let mut sgd = OptimizerKind::Sgd.build();
        let moved = sgd.step(d / grad_norm, model.clone(), grads(&task, &model, &batch));
        points.push((d, loss_at(&moved)));
    }
    Ok(Slice {
        points,
        grad_norm,
        step,
        typical_norm,
    })
}

fn median(v: &[f64]) -> f64 {
    let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
    super::percentile(&v, 50.0)
}

fn share(runs: &[SeedRun]) -> (usize, usize) {
    (runs.iter().filter(|r| r.diverged).count(), runs.len())
}

/// The median final validation MSE of the runs that did not diverge.
fn median_final(runs: &[SeedRun]) -> f64 {
    let v: Vec<f32> = runs
        .iter()
        .filter(|r| !r.diverged)
        .map(|r| r.final_val as f32)
        .collect();
    super::percentile(&v, 50.0)
}

fn claims(results: &[(Clipping, Vec<SeedRun>)], slice: &Slice) -> Vec<Claim> {
    let find = |c: Clipping| results.iter().find(|(k, _)| *k == c).map(|(_, r)| r);
    let Some(none) = find(Clipping::None) else {
        return Vec::new();
    };
    let (dn, n) = share(none);
    let all_clipped: Vec<String> = results
        .iter()
        .filter(|(c, _)| *c != Clipping::None)
        .map(|(c, r)| {
            let (d, n) = share(r);
            format!("{} {d}/{n} (MSE {:.3})", c.name(), median_final(r))
        })
        .collect();
    let clipped_less = results
        .iter()
        .filter(|(c, _)| *c != Clipping::None)
        .all(|(_, r)| share(r).0 < dn);
    let fixed_runs = results
        .iter()
        .filter(|(c, _)| matches!(c, Clipping::Norm(_)));
    let fixed: Vec<String> = fixed_runs
        .clone()
        .map(|(c, r)| {
            format!(
                "{} {}/{n} (median final MSE {:.3})",
                c.name(),
                share(r).0,
                median_final(r)
            )
        })
        .collect();
    let fixed_none =
        fixed_runs.clone().count() > 0 && fixed_runs.clone().all(|(_, r)| share(r).0 == 0);
    let unclipped = LR * slice.grad_norm;
    let useful = slice.useful();
    let where_ = match slice.step {
        Some(s) => format!(
            "at step {s} of the unclipped run ‖g‖ = {:.3e} ({:.0}× the median before)",
            slice.grad_norm,
            slice.grad_norm / slice.typical_norm
        ),
        None => format!("no spike; at init ‖g‖ = {:.3e}", slice.grad_norm),
    };
    vec![
        Claim {
            claim: "without clipping, SGD on an RNN with exploding gradients diverges".into(),
            paper: "gradients can explode only when the recurrent matrix's largest singular value exceeds 1 (tanh); SGD steps then jump far off (§2)".into(),
            ours: format!("{dn}/{n} unclipped runs diverged (non-finite, or final MSE > 10 × 0.167)"),
            agree: 2 * dn >= n,
        },
        Claim {
            claim: "rescaling the gradient's norm to a fixed threshold prevents it".into(),
            paper: "norm clipping (their Algorithm 1) keeps training stable, and is not very sensitive to the threshold (§3.2)".into(),
            ours: format!("diverged: {}", fixed.join(", ")),
            agree: fixed_none,
        },
        Claim {
            claim: "every clipping diverges less often than none".into(),
            paper: "clipping by norm, or each element by value (Mikolov 2012), bounds the step".into(),
            ours: format!("diverged: {}", all_clipped.join(", ")),
            agree: clipped_less,
        },
        Claim {
            claim: "where the gradient explodes, the loss has a cliff: the unclipped step goes far past where the gradient is any guide".into(),
            paper: "the error surface has steep walls; the gradient there is huge and a step along it moves far (their error-surface figure, §3)".into(),
            ours: format!(
                "{where_}: the loss falls along −g only for a distance of {useful:.2e}; the unclipped SGD step moves {unclipped:.3} ({:.0}× that), one clipped to norm 1 moves {LR}",
                unclipped / useful
            ),
            agree: slice.step.is_some() && unclipped > 10.0 * useful,
        },
    ]
}

fn figure(
    results: &[(Clipping, Vec<SeedRun>)],
    slice: &Slice,
    path: &std::path::Path,
) -> Result<(), LabError> {
    let step_losses = results
        .iter()
        .filter_map(|(c, runs)| {
            let h = &runs.first()?.history;
            Some(Series {
                name: c.name(),
                points: h
                    .step_loss
                    .iter()
                    .enumerate()
                    .map(|(i, &l)| (i as f64, l))
                    .collect(),
                ..Series::default()
            })
        })
        .collect();
    let unclipped = LR * slice.grad_norm;
    let top = slice
        .points
        .iter()
        .map(|p| p.1)
        .filter(|l| l.is_finite())
        .fold(f64::NAN, f64::max);
    let bottom = slice
        .points
        .iter()
        .map(|p| p.1)
        .filter(|l| l.is_finite() && *l > 0.0)
        .fold(f64::NAN, f64::min);
    let marker = |d: f64, name: &str| Series {
        name: name.into(),
        points: vec![(d, bottom), (d, top)],
        dashed: true,
        ..Series::default()
    };
    let panels_v = [
        Panel {
            caption: "first seed: training loss per step".into(),
            x_desc: "step".into(),
            y_desc: "batch MSE".into(),
            series: step_losses,
            log_y: true,
            log_x: false,
        },
        Panel {
            caption: match slice.step {
                Some(s) => format!("unclipped run, step {s} (gradient spike): loss along −g/‖g‖"),
                None => "at init: loss along −g/‖g‖".into(),
            },
            x_desc: "distance moved".into(),
            y_desc: "batch MSE".into(),
            log_x: true,
            series: vec![
                Series {
                    name: "loss along the gradient".into(),
                    points: slice.points.clone(),
                    ..Series::default()
                },
                marker(slice.useful(), "lowest loss before it rises"),
                marker(LR, "step clipped to norm 1"),
                marker(unclipped, "unclipped SGD step"),
            ],
            log_y: true,
        },
    ];
    panels::grid(
        path,
        "Pascanu et al. 2013 — exploding gradients in an RNN, with and without clipping",
        &panels_v,
        2,
        (720, 440),
    )?;
    Ok(())
}
