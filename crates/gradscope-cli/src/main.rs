//! The `gradscope` command line: `gradscope <command> [key=value …]`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context, Result};
use gradscope::diagnose::{diagnose, Diagnosis};
use gradscope::lab::mlp::{table, LabEvent, MlpLab, LAB_KEYS};
use gradscope::lab::papers::{self, PAPERS};
use gradscope::lab::recurrent::{
    table as recurrent_table, RecurrentLab, LAB_KEYS as RECURRENT_KEYS,
};
use gradscope::lab::settings::KEYS;
use gradscope::probe::read_history;
use gradscope::settings::Command;
use gradscope::train::History;
use gradscope::yolo::model::YoloConfig;
use indicatif::{ProgressBar, ProgressStyle};

mod detect;
mod paper;
mod replicas;

const USAGE: &str = "\
gradscope — train deep networks with gradient flow as a first-class signal

usage:
  gradscope train [key=value …]           YOLO26 detection training with the gradient probe on
                                          (no arguments: YOLO26n on the embedded tree-crown tiles)
  gradscope val model=<ckpt> [data=…]     validate a checkpoint: P, R, mAP50, mAP50-95
  gradscope predict model=<ckpt> source=<image|dir> [conf=0.25]
                                          draw detections on images
  gradscope export model=<ckpt> format=pt an Ultralytics .pt beside the checkpoint (Ultralytics loads it)
  gradscope lab vanishing [key=value …]   a deep net trained plain and with each remedy, side by side
  gradscope lab exploding [key=value …]   exploding gradients: no clipping, clip by norm, clip by value
  gradscope lab recurrent [key=value …]   vanilla RNN vs LSTM vs GRU through time (task=adding T=100)
  gradscope lab <paper> [quick=true]      a classic paper reproduced, its claims beside ours
  gradscope lab list                      every lab and paper
  gradscope diagnose <run folder | probe.jsonl>
                                          re-read a run's probe records and print the diagnosis
  gradscope info model=yolo26n.yaml [imgsz=640] [nc=80] [act=silu] [bn=true] [shortcut=true]
                                          YOLO26's layer table: parameters, output shapes, GFLOPs
  gradscope help lab [name]               the labs, or the keys a lab accepts
  gradscope help train|val|predict|export the keys detection accepts
  gradscope --version
";

/// A command that ran but did not do what was asked: a run stopped by NaN recovery, a run that
/// diverged or never stepped the optimizer, `val`/`predict` with nothing usable. Exit code 1;
/// every other error (bad settings, unreadable input) is exit code 2.
#[derive(Debug)]
pub struct RunFailed(pub String);

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunFailed {}

fn main() -> ExitCode {
    gradscope::tune_allocator();
    gradscope::quiet_on_closed_pipe();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match gradscope::on_workers(|| run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", chain_text(&e));
            let nothing_usable = e.chain().any(|c| {
                matches!(
                    c.downcast_ref::<gradscope::detect::error::DetectError>(),
                    Some(gradscope::detect::error::DetectError::NothingUsable(_))
                )
            });
            if e.downcast_ref::<RunFailed>().is_some() || nothing_usable {
                ExitCode::from(1)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// The error and its causes joined by ": ", leaving out a cause whose text an outer message
/// already holds (libraries often print their source inside their own message).
pub(crate) fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// The labs of `gradscope help lab` that are not papers.
const LABS: &str = "\
gradscope lab <name> [key=value …]

labs:
  vanishing   a deep MLP trained plain (sigmoid, tanh) and with each remedy (ReLU + He, SiLU + He
              + BatchNorm, SiLU + He + residual), side by side, diagnosed
  exploding   a deep ReLU net whose gradients blow up: no clipping (the NaN's producer named,
              NaN recovery), clipping by norm (fixed, automatic) and by value
  recurrent   a vanilla RNN, an LSTM and a GRU through time (task=adding T=100 by default)
";

/// `gradscope help lab` and `gradscope lab list`: every lab and what it shows, the papers
/// reproduced with the paper's claims beside ours.
fn labs_text() -> String {
    let mut s = LABS.to_string();
    s.push_str(
        "\npapers reproduced (their claims beside our measurements; quick=true: ≤ 2 minutes):\n",
    );
    for p in PAPERS {
        s.push_str(&format!(
            "  {:<15} {}\n                  {}\n",
            p.name, p.cite, p.claim
        ));
    }
    s.push_str("  (pennington2017 runs saxe2014, which reproduces both)\n");
    s.push_str("\n`gradscope help lab <name>` lists the keys a lab accepts.\n");
    s
}

/// The lab names, for "unknown lab" errors.
fn lab_names() -> String {
    let papers = PAPERS.iter().map(|p| p.name);
    ["vanishing", "exploding", "recurrent"]
        .into_iter()
        .chain(papers)
        .collect::<Vec<_>>()
        .join(", ")
}

fn run(args: &[String]) -> Result<()> {
    let words: Vec<&str> = args.iter().map(String::as_str).collect();
    match words.as_slice() {
        [] | ["help"] | ["-h"] | ["--help"] => {
            print!("{USAGE}");
            Ok(())
        }
        ["--version"] | ["-V"] => {
            println!("gradscope {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["help", "lab"] | ["lab", "help" | "--help" | "-h" | "list"] => {
            print!("{}", labs_text());
            Ok(())
        }
        ["help", "lab", name] | ["lab", name, "help" | "--help" | "-h"] => {
            print!("{}", lab_keys_help(name)?);
            Ok(())
        }
        ["lab", "vanishing", rest @ ..] => lab_mlp(MlpLab::vanishing(), rest),
        ["lab", "exploding", rest @ ..] => lab_mlp(MlpLab::exploding(), rest),
        ["lab", "recurrent", rest @ ..] => lab_recurrent(rest),
        ["lab", name, rest @ ..] => match papers::find(name) {
            Some(paper) => paper::lab_paper(paper, rest),
            None => bail!("unknown lab '{name}'; available: {}", lab_names()),
        },
        ["lab"] => bail!(
            "which lab? available: {} (`gradscope lab list` says what each shows)",
            lab_names()
        ),
        ["diagnose", path] => diagnose_cmd(Path::new(path)),
        ["diagnose", ..] => bail!("usage: gradscope diagnose <run folder | probe.jsonl>"),
        ["info", rest @ ..] => info_cmd(rest),
        ["help", "train"] | ["train", "help" | "--help" | "-h"] => {
            print!("{}", detect::keys_help(Command::Train));
            Ok(())
        }
        ["help", "val"] | ["val", "help" | "--help" | "-h"] => {
            print!("{}", detect::keys_help(Command::Val));
            Ok(())
        }
        ["help", "predict"] | ["predict", "help" | "--help" | "-h"] => {
            print!("{}", detect::keys_help(Command::Predict));
            Ok(())
        }
        ["help", "export"] | ["export", "help" | "--help" | "-h"] => {
            print!("{}", detect::keys_help(Command::Export));
            Ok(())
        }
        ["train", rest @ ..] => detect::train_cmd(rest),
        ["export", rest @ ..] => detect::export_cmd(rest),
        ["val", rest @ ..] => detect::val_cmd(rest),
        ["predict", rest @ ..] => detect::predict_cmd(rest),
        [other, ..] => bail!("unknown command '{other}'\n\n{USAGE}"),
    }
}

fn lab_keys_help(name: &str) -> Result<String> {
    let mut s = format!("gradscope lab {name} [key=value …]\n\nkeys:\n");
    let keys: Vec<(&str, &str)> = match name {
        "vanishing" | "exploding" => LAB_KEYS.iter().chain(KEYS).copied().collect(),
        "recurrent" => RECURRENT_KEYS.to_vec(),
        _ => match papers::find(name) {
            Some(p) => papers::KEYS
                .iter()
                .filter(|(k, _)| p.own_data.is_none() || !papers::is_data_key(k))
                .copied()
                .collect(),
            None => bail!("unknown lab '{name}'; available: {}", lab_names()),
        },
    };
    for (k, d) in keys {
        s.push_str(&format!("  {k:<14} {d}\n"));
    }
    Ok(s)
}

/// A progress bar per run of a lab.
pub(crate) fn progress_bars() -> impl FnMut(LabEvent) {
    let style =
        ProgressStyle::with_template("{prefix:>20} [{bar:32}] {pos:>5}/{len} {msg} {elapsed}")
            .expect("valid template")
            .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    move |ev| match ev {
        LabEvent::Start {
            name,
            index,
            total,
            steps,
        } => {
            let b = ProgressBar::new(steps as u64).with_style(style.clone());
            b.set_prefix(format!("{}/{} {name}", index + 1, total));
            bar = Some(b);
        }
        LabEvent::Step(p) => {
            if let Some(b) = &bar {
                b.set_position(p.step as u64);
                if p.step % 10 == 0 {
                    b.set_message(format!("loss {:.4}", p.loss));
                }
            }
        }
        LabEvent::Done { .. } => {
            if let Some(b) = bar.take() {
                b.finish();
            }
        }
    }
}

/// Splits `key=value`, naming the argument when it is not one.
pub(crate) fn split_kv(arg: &str) -> Result<(&str, &str)> {
    match arg.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k, v)),
        _ => bail!("argument '{arg}' is not key=value (example: depth=20); see `gradscope help lab vanishing`"),
    }
}

fn lab_mlp(mut lab: MlpLab, args: &[&str]) -> Result<()> {
    for arg in args {
        let (k, v) = split_kv(arg)?;
        if !lab.set(k, v).map_err(|e| anyhow!(e))? {
            let keys: Vec<&str> = LAB_KEYS.iter().chain(KEYS).map(|(k, _)| *k).collect();
            bail!(
                "unknown key '{k}' in '{arg}'; accepted: {}",
                keys.join(", ")
            );
        }
    }
    for w in lab.overridden() {
        eprintln!("warning: {w}");
    }
    let outcome = lab.run(&mut progress_bars())?;
    println!("\n{}", table(&outcome.variants).to_text());
    println!("first/last = ‖∂L/∂h‖ at the first hidden layer ÷ at the last, end of training\n");
    for v in &outcome.variants {
        summary(&v.name, v.diagnosis.as_ref(), &v.history, 1);
    }
    println!("\nreport: {}", outcome.report.display());
    println!(
        "per-run probe records: {}/<variant>/probe.jsonl (gradscope diagnose <folder>)",
        outcome.dir.display()
    );
    Ok(())
}

fn lab_recurrent(args: &[&str]) -> Result<()> {
    let mut lab = RecurrentLab::default();
    for arg in args {
        let (k, v) = split_kv(arg)?;
        if !lab.set(k, v).map_err(|e| anyhow!(e))? {
            let keys: Vec<&str> = RECURRENT_KEYS.iter().map(|(k, _)| *k).collect();
            bail!(
                "unknown key '{k}' in '{arg}'; accepted: {}",
                keys.join(", ")
            );
        }
    }
    let out = lab.run(&mut progress_bars())?;
    println!("\n{}", recurrent_table(&out).to_text());
    println!("first/last = ‖∂L/∂h_t‖ at the first time step ÷ at the last; per step = its geometric mean per step\n");
    for c in &out.cells {
        summary(c.cell.name(), c.diagnosis.as_ref(), &c.history, usize::MAX);
    }
    println!("\nreport: {}", out.report.display());
    Ok(())
}

fn info_cmd(args: &[&str]) -> Result<()> {
    let (mut model, mut imgsz, mut nc) = ("yolo26n.yaml".to_string(), 640usize, 80usize);
    let mut sw = gradscope::yolo::blocks::Switches::default();
    let flag = |k: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(anyhow!("{k}={v}: expected true or false")),
    };
    for arg in args {
        let (k, v) = split_kv(arg)?;
        match k {
            "model" => model = v.to_string(),
            "imgsz" => {
                imgsz = v
                    .parse()
                    .ok()
                    .filter(|n| n % 32 == 0 && *n >= 32)
                    .ok_or_else(|| {
                        anyhow!(
                            "imgsz={v}: expected a multiple of 32 (the largest stride), e.g. 640"
                        )
                    })?
            }
            "nc" => {
                nc = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| anyhow!("nc={v}: expected a class count ≥ 1"))?
            }
            "act" => sw.act = v.parse().map_err(|e: String| anyhow!("act={v}: {e}"))?,
            "bn" => sw.bn = flag(k, v)?,
            "shortcut" => sw.shortcut = flag(k, v)?,
            _ => {
                bail!("unknown key '{k}' in '{arg}'; accepted: model, imgsz, nc, act, bn, shortcut")
            }
        }
    }
    let mut cfg = YoloConfig::from_name(&model, nc).map_err(|e| anyhow!(e))?;
    cfg.switches = sw;
    let built = cfg.init(&gradscope::device());
    let info = gradscope::yolo::info::info(&cfg, &built, imgsz);
    print!("{}", info.table.to_text());
    println!(
        "{}: {} layers, {} parameters, {:.2} GFLOPs at {imgsz}×{imgsz} (both heads, BatchNorm unfused)",
        model.trim_end_matches(".yaml"),
        info.layers,
        info.params,
        info.gflops
    );
    Ok(())
}

/// A run's verdict with its top remedy, the first `evidence` lines, NaN recoveries and why it
/// stopped, if it did.
fn summary(name: &str, diagnosis: Option<&Diagnosis>, history: &History, evidence: usize) {
    if let Some(d) = diagnosis {
        let top = d
            .remedies
            .first()
            .map(|r| format!("; try {}", r.switch))
            .unwrap_or_default();
        println!("{name}: {}{top}", d.verdict);
        for e in d.evidence.iter().take(evidence) {
            println!("    {e}");
        }
    }
    print_recoveries(history, "    ");
}

/// NaN recoveries and why a run stopped early, if it did.
fn print_recoveries(history: &History, indent: &str) {
    for ev in &history.recoveries {
        let at = ev
            .producer
            .as_ref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        println!(
            "{indent}recovered from a non-finite {} at step {}{at}; lr → {:.3e}",
            ev.what, ev.step, ev.lr_after
        );
    }
    if let Some(s) = &history.stopped {
        println!("{indent}stopped early — {s}");
    }
}

/// A probe.jsonl, a run folder holding one, or a lab folder whose sub-folders hold them.
fn probe_files(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        bail!(
            "{} does not exist; pass a run folder (runs/vanishing/lab/sigmoid) or a probe.jsonl",
            path.display()
        );
    }
    let own = path.join("probe.jsonl");
    if own.is_file() {
        return Ok(vec![own]);
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(path)
        .with_context(|| format!("cannot list {}", path.display()))?
        .filter_map(|e| e.ok().map(|e| e.path().join("probe.jsonl")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    if found.is_empty() {
        bail!(
            "no probe.jsonl in {} or its sub-folders (was the run made with probe=false?)",
            path.display()
        );
    }
    Ok(found)
}

/// The remedies a lab wrote into its run.json, in that lab's pasteable form (`add=act=relu,…`,
/// `cells=lstm`); `None` for a run without one.
fn lab_remedies(run: &Path) -> Option<Vec<gradscope::diagnose::Remedy>> {
    let text = std::fs::read_to_string(run.join("run.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    serde_json::from_value(json.get("diagnosis")?.get("remedies")?.clone()).ok()
}

/// A detection run diagnosed as its trainer diagnosed it, from its probe records and its state
/// file (the divergence evidence, the head levels' assignment, the optimizer `auto` chose). A
/// run without a state file (stopped in its first epoch) gets what the records say; its
/// learning-rate remedies assume auto's choice for a short run.
fn detection_diagnosis(
    run: &Path,
    records: &[gradscope::probe::StepRecord],
    args: &gradscope::detect::args::DetectArgs,
    classes: usize,
) -> Option<Diagnosis> {
    use gradscope::detect::remedies::{diagnose_run, LrForm, RunFacts};
    use gradscope::detect::run::resume::{summary, STATE_FILE};
    use gradscope::detect::schedule::Choice;
    let state = summary(&run.join("weights").join(STATE_FILE)).ok();
    let long = state.as_ref().is_some_and(|(c, _)| c.muon);
    let (diverged, assigned) = state
        .map(|(_, ledger)| (ledger.diverged, ledger.assigned))
        .unwrap_or_default();
    let facts = RunFacts {
        args,
        lr: LrForm::of(&Choice::of(args, classes, long), args),
        diverged: &diverged,
        assigned,
    };
    diagnose_run(records, &facts)
}

fn diagnose_cmd(path: &Path) -> Result<()> {
    for file in probe_files(path)? {
        let history = read_history(&file)?;
        let records = history.records();
        let name = file
            .parent()
            .unwrap_or(Path::new("."))
            .display()
            .to_string();
        let seen = history.seen();
        if records.len() < seen {
            println!(
                "== {name} ({seen} probed steps; diagnosed from {} evenly spaced)",
                records.len()
            );
        } else {
            println!("== {name} ({seen} probed steps)");
        }
        let run = file.parent().unwrap_or(Path::new("."));
        let detection = run
            .join("args.yaml")
            .is_file()
            .then(|| gradscope::detect::run::run_args(run).ok())
            .flatten();
        let diagnosis = match detection {
            // a detection run: what its state knows, remedies in `gradscope train`'s keys
            Some((args, names)) => detection_diagnosis(run, records, &args, names.len()),
            None => diagnose(records).map(|mut d| {
                // a lab run: the remedies in the lab's own keys, as it wrote them
                if let Some(remedies) = lab_remedies(run) {
                    d.remedies = remedies;
                }
                d
            }),
        };
        match diagnosis {
            Some(d) => println!("{d}"),
            None => println!("no records: nothing to diagnose\n"),
        }
    }
    Ok(())
}
