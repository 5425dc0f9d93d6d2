//! What a training run starts from: its arguments (a resumed run's own), its data, its folder,
//! its model, EMA, optimizer and counters (fresh or from the state file), and its probe.
//! `say(warning, message)` reports what they find.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::Device;

use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::input::dataset::DetData;
use crate::detect::input::sources;
use crate::detect::optimize::ema::Ema;
use crate::detect::optimize::optimizer::GroupOptimizer;
use crate::detect::run as runs;
use crate::detect::run::resume;
use crate::detect::schedule::Plan;
use crate::probe::{Probe, ProbeConfig};
use crate::yolo::model::Yolo;

/// The arguments a run goes by: `args` themselves, or — resuming — the run's own, with its
/// folder and state file.
pub(crate) fn resumed_args(
    args: &DetectArgs,
    say: &mut dyn FnMut(bool, String),
) -> Result<(DetectArgs, Option<(PathBuf, PathBuf)>), DetectError> {
    let Some(r) = &args.resume else {
        return Ok((args.clone(), None));
    };
    let (run, state) = resume::locate(r, &args.model)?;
    let (mut a, _) = runs::run_args(&run)?;
    a.resume = None;
    say(false, format!("resuming {}", run.display()));
    if a.device.count() > 1 {
        say(
            true,
            format!(
                "the run trained on device={} (data-parallel); it goes on in this one process on device={}, with the same batch of {} (BatchNorm now normalises over the whole batch, not over each replica's share)",
                a.device.show(),
                args.device.part(0).show(),
                a.batch
            ),
        );
        a.device = args.device.part(0).clone();
    }
    Ok((a, Some((run, state))))
}

/// The class names and the decoded training and validation sets; no training images is an
/// error.
pub(crate) fn load_data(
    args: &DetectArgs,
    say: &mut dyn FnMut(bool, String),
) -> Result<(Vec<String>, DetData, DetData), DetectError> {
    let data = sources::resolve_data(&args.data, &mut |m| say(false, m))?;
    let (train, val) = sources::load_sets(&data, args.cache, say)?;
    if train.is_empty() {
        return Err(DetectError::Data(format!(
            "{}: no usable training images",
            data.root.display()
        )));
    }
    Ok((data.names, train, val))
}

/// The run folder: the resumed run's, or a new one holding args.yaml (and labels.jpg); its
/// weights folder exists and holds no stale temporary file.
pub(crate) fn run_folder(
    args: &DetectArgs,
    resumed: Option<&PathBuf>,
    train: &DetData,
    names: &[String],
) -> Result<PathBuf, DetectError> {
    let dir = match resumed {
        Some(run) => run.clone(),
        None => runs::new_run_dir(&args.project, &args.name, args.exist_ok)?,
    };
    let weights = dir.join("weights");
    std::fs::create_dir_all(&weights).map_err(|e| DetectError::io(&weights, e))?;
    runs::remove_stale_tmp(&weights)?;
    if resumed.is_none() {
        runs::write_args(&dir, args, names)?;
        if args.plots {
            crate::detect::run::plots::labels(train, names, &dir.join("labels.jpg"))?;
        }
    }
    Ok(dir)
}

/// Model, EMA, optimizer, counters and ledger: fresh for a new run, from `state` for a resumed
/// one.
pub(crate) fn training_state(
    model: Yolo,
    plan: &Plan,
    state: Option<&Path>,
    device: &Device,
) -> Result<resume::Resumed, DetectError> {
    if let Some(state) = state {
        return resume::load(state, model, device);
    }
    let optim = if plan.muon {
        GroupOptimizer::musgd()
    } else {
        GroupOptimizer::new(plan.adamw)
    };
    let counters = resume::Counters {
        epoch: 0,
        ema_updates: 0,
        last_opt: -1,
        opt_steps: 0,
        lr_scale: 1.0,
        best: f64::NEG_INFINITY,
        best_epoch: 0,
        adamw: plan.adamw,
        muon: plan.muon,
    };
    Ok(resume::Resumed {
        ema: Ema::new(&model),
        model,
        optim,
        pending: burn::optim::GradientsParams::new(),
        counters,
        ledger: resume::Ledger::default(),
    })
}

/// The probe, streaming to the run's probe.jsonl (cut back to `opt_steps` when resuming, its
/// dead-unit windows as the ledger saved them).
pub(crate) fn open_probe(
    args: &DetectArgs,
    dir: &Path,
    resumed: Option<&resume::Ledger>,
    opt_steps: usize,
) -> Result<Probe, DetectError> {
    let probe = Probe::new(ProbeConfig {
        enabled: args.probe,
        every: args.probe_every,
        ..ProbeConfig::default()
    });
    let jsonl = dir.join("probe.jsonl");
    Ok(match resumed {
        Some(ledger) => {
            let mut probe = probe.with_jsonl_resumed(&jsonl, opt_steps)?;
            probe.restore_dead_windows(&ledger.dead_windows);
            probe
        }
        None => probe.with_jsonl(&jsonl)?,
    })
}

/// The model, the plan (optimizer, accumulation, warmup) and frozen layers, one line each.
pub(crate) fn announce(args: &DetectArgs, model: &Yolo, plan: &Plan, info: &mut dyn FnMut(String)) {
    info(format!(
        "model {} ({} parameters), act={} bn={} shortcut={}",
        args.model,
        model.num_params(),
        args.act,
        args.bn,
        args.shortcut
    ));
    info(plan.describe());
    if !args.freeze.is_empty() {
        info(format!(
            "freeze={}: {} keep their weights",
            crate::settings::Value::show(&args.freeze),
            args.freeze.describe()
        ));
    }
}
