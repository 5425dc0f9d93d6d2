//! `gradscope train | val | predict`: YOLO26 detection from the command line.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use gradscope::data::letterbox::unletterbox;
use gradscope::detect::args::DetectArgs;
use gradscope::detect::eval::validate::{validate, DetectSettings};
use gradscope::detect::input::sources::{load_val, resolve_data};
use gradscope::detect::model::Weights;
use gradscope::detect::predict::{load, predict, Checkpoint, Outputs};
use gradscope::detect::run::boxes::BoxStyle;
use gradscope::detect::run::new_run_dir;
use gradscope::detect::run::plots::validation_plots;
use gradscope::detect::train::{TrainEvent, Trainer};
use gradscope::settings::Command;
use gradscope::Device;
use indicatif::{ProgressBar, ProgressStyle};

/// The keys `command` reads, with their defaults (for `train`: the defaults with arguments; the
/// run without arguments is described first).
pub fn keys_help(command: Command) -> String {
    let cmd = command.word();
    let defaults = DetectArgs::default();
    let mut s = format!("gradscope {cmd} [key=value …]\n\n");
    s += match command {
        Command::Train => "With no arguments: YOLO26n on the embedded tree-crown tiles, epochs=10 imgsz=256 batch=2 nbs=2\nwarmup_epochs=1 close_mosaic=3. With any argument, the defaults below (Ultralytics').\n\n",
        Command::Val => "model= a checkpoint (runs/detect/train/weights/best.safetensors); other keys default to the\nsettings of the run that wrote it (its args.yaml), then to these.\n\n",
        Command::Predict => "model= a checkpoint, source= an image or a folder; other keys default to the settings of the\nrun that wrote the checkpoint (its args.yaml), then to these.\n\n",
        Command::Export => "model= a checkpoint (runs/detect/train/weights/best.safetensors); writes best.pt beside it,\nwhich Ultralytics loads: YOLO(\"best.pt\").val(data=…), .export(format=\"onnx\"), yolo predict model=best.pt.\n\n",
    };
    s += &format!("  {:<16} {:<14} {}\n", "key", "default", "what it takes");
    for spec in DetectArgs::SPECS
        .iter()
        .filter(|s| s.commands.contains(&command))
    {
        let d = defaults.get(spec.name).unwrap_or_default();
        s += &format!("  {:<16} {:<14} {}\n", spec.name, d, spec.help.trim());
    }
    s
}

fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

/// The words with Ultralytics' `imgsz` forms normalised, its warnings printed.
fn normalised(words: &[String]) -> Vec<String> {
    let (words, warnings) = DetectArgs::normalise_imgsz(words);
    for w in warnings {
        eprintln!("warning: {w}");
    }
    words
}

const HEADER: &str = "      Epoch   box_loss   cls_loss    l1_loss  Instances       Size";

pub fn train_cmd(args: &[&str]) -> Result<()> {
    let base = if args.is_empty() {
        DetectArgs::quick_default()
    } else {
        DetectArgs {
            epochs: 100,
            ..DetectArgs::default()
        }
    };
    let a = DetectArgs::parse(base, &normalised(&owned(args)), Command::Train)?;
    if let Some(group) = gradscope::train::replicas::Group::from_env() {
        return crate::replicas::run_replica(&a, group?);
    }
    if args.is_empty() {
        println!(
            "gradscope train: YOLO26n from scratch on the embedded NEON tree-crown tiles, {} epochs at {} px, batch {} (defaults for a quick run on a laptop CPU; `gradscope help train` lists every key)",
            a.epochs, a.imgsz, a.batch
        );
    }
    let style = ProgressStyle::with_template("{prefix} {msg} [{bar:24}] {pos}/{len} {elapsed}")
        .expect("valid template")
        .progress_chars("=> ");
    let mut bar: Option<ProgressBar> = None;
    let mut warnings = 0usize;
    let mut last_line = String::new();
    let mut on = |ev: TrainEvent| match ev {
        TrainEvent::Info(m) => println!("{m}"),
        TrainEvent::Warning(m) => {
            warnings += 1;
            if warnings <= 20 {
                eprintln!("warning: {m}");
            } else if warnings == 21 {
                eprintln!("warning: … (more warnings not shown)");
            }
        }
        TrainEvent::Iter {
            epoch,
            epochs,
            i,
            nb,
            items,
            instances,
            imgsz,
        } => {
            let b = bar.get_or_insert_with(|| {
                println!("\n{HEADER}");
                ProgressBar::new(nb as u64).with_style(style.clone())
            });
            let prefix = format!("{:>11}", format!("{}/{}", epoch + 1, epochs));
            let msg = format!(
                "{:>10.4}{:>11.4}{:>11.4}{:>11}{:>11}",
                items.box_, items.cls, items.l1, instances, imgsz
            );
            last_line = format!("{prefix}{msg}  {}/{nb}", i + 1);
            b.set_prefix(prefix);
            b.set_message(msg);
            b.set_position(i as u64 + 1);
        }
        TrainEvent::Epoch {
            val,
            names,
            diagnosis,
            ..
        } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            println!("{last_line}");
            if val.metrics.map50_95.is_finite() {
                print!("{}", val.table(names, false));
            }
            if let Some(d) = diagnosis {
                println!("{:>22} {} — {}", "gradients:", d.verdict, d.flow_line());
            }
        }
    };
    let (trainer, mut replicas) = if a.device.count() > 1 {
        let (t, r) = crate::replicas::start(&a, args, &mut on)?;
        (t, Some(r))
    } else {
        (Trainer::new(&a, &mut on)?, None)
    };
    let dir = trainer.dir().to_path_buf();
    let outcome = trainer.run().map_err(|e| {
        let why = replicas.as_mut().map(|r| r.failures()).unwrap_or_default();
        interrupted(&dir, e, &why)
    })?;
    if let Some(r) = replicas {
        r.finish()?;
    }
    println!(
        "\n{} epochs completed in {:.1} min. Results in {}",
        outcome.history.epochs.len(),
        outcome.seconds / 60.0,
        outcome.dir.display()
    );
    if let Some(v) = &outcome.last {
        print!("{}", v.table(&outcome.names, outcome.names.len() > 1));
        println!("best mAP50-95 {:.4}", outcome.best_map50_95);
    }
    if let Some(d) = &outcome.diagnosis {
        println!("\ngradient diagnosis (probe.jsonl, report.html):\n{d}");
    }
    crate::print_recoveries(&outcome.history, "");
    run_verdict(&outcome)
}

/// A run that failed after it started (a full disk, a file that could not be written, a replica
/// that died): exit code 1, the cause, and how to go on — from its last complete epoch when it
/// has one.
fn interrupted(
    dir: &Path,
    e: gradscope::detect::error::DetectError,
    replicas_failed: &[String],
) -> anyhow::Error {
    let mut cause = crate::chain_text(&anyhow::Error::new(e));
    for f in replicas_failed {
        cause = format!("{cause} ({f})");
    }
    let next = if dir.join("weights/last.state.safetensors").is_file() {
        format!(
            "once that is fixed, go on from its last complete epoch: gradscope train resume={}",
            dir.display()
        )
    } else {
        "it had not completed an epoch; once that is fixed, start it again".to_string()
    };
    crate::RunFailed(format!("the run stopped: {cause}; {next}")).into()
}

/// Exit status of a finished training run: an error (exit code 1) with the reason and what to
/// try when it stopped early, diverged, or never stepped the optimizer.
fn run_verdict(outcome: &gradscope::detect::train::TrainOutcome) -> Result<()> {
    let dir = outcome.dir.display();
    if let Some(reason) = &outcome.history.stopped {
        return Err(crate::RunFailed(format!(
            "training stopped after {} epochs: {reason}. Try a lower lr0, a longer warmup (warmup_epochs=3) or clip_norm=1; the last good weights are in {dir}/weights",
            outcome.history.epochs.len()
        ))
        .into());
    }
    if outcome.optimizer_steps == 0 {
        return Err(crate::RunFailed(format!(
            "no optimizer step was taken, so nothing was learnt: the run has fewer iterations than one accumulation needs. Use more epochs, a smaller batch, or nbs= equal to batch (see {dir})"
        ))
        .into());
    }
    if !outcome.diverged.is_empty() {
        let remedies: Vec<String> = outcome
            .diagnosis
            .as_ref()
            .map(|d| d.remedies.iter().map(|r| r.switch.clone()).collect())
            .unwrap_or_default();
        return Err(crate::RunFailed(format!(
            "training diverged: {}{}",
            outcome.diverged.join("; "),
            if remedies.is_empty() {
                String::new()
            } else {
                format!(". Try {}", remedies.join(" or "))
            }
        ))
        .into());
    }
    Ok(())
}

fn settings(a: &DetectArgs, default_conf: f64) -> DetectSettings {
    DetectSettings {
        conf: a.conf.unwrap_or(default_conf) as f32,
        max_det: a.max_det,
        end2end: a.end2end,
        iou: a.iou as f32,
        rect: a.rect,
        classes: a.classes.clone().map(|c| c.0),
    }
}

fn checkpoint_path(a: &[String]) -> Result<PathBuf> {
    let m = a
        .iter()
        .find_map(|w| w.strip_prefix("model="))
        .ok_or_else(|| anyhow::anyhow!("model= is required: a checkpoint such as runs/detect/train/weights/best.safetensors"))?;
    // found on disk, or a release name fetched as `train` does
    match gradscope::detect::model::weights_file("model", m, &mut |s| println!("{s}"))? {
        Some(Weights::Pt(p) | Weights::Safetensors(p)) => Ok(p),
        None => bail!("model={m}: expected a checkpoint (.pt or .safetensors)"),
    }
}

/// The checkpoint named by `model=`, and the arguments: its run's settings (through `base`),
/// then the command line (without `model=`, which is the checkpoint here).
fn checkpoint_and_args(
    args: &[&str],
    command: Command,
    base: impl FnOnce(DetectArgs) -> DetectArgs,
) -> Result<(Checkpoint, DetectArgs, Device)> {
    let words = normalised(&owned(args));
    // every word checked before the checkpoint is read
    let given = DetectArgs::parse(DetectArgs::default(), &words, command)?;
    // the command line's device: a checkpoint's run may have trained elsewhere
    gradscope::devices::select(&given.device)?;
    let ckpt = checkpoint_path(&words)?;
    let device = gradscope::device().inner();
    let ck = load(&ckpt, &device)?;
    let rest: Vec<String> = words
        .iter()
        .filter(|w| !w.starts_with("model="))
        .cloned()
        .collect();
    let a = DetectArgs::parse(base(ck.args.clone()), &rest, command)?;
    Ok((ck, a, device))
}

/// The settings `val` and `predict` start from: the training run's (data, imgsz, batch …), but
/// not where it wrote nor what it drew nor where it ran — as in Ultralytics, their folders go
/// under the default project (runs/detect/val, runs/detect/predict), they draw plots unless told
/// plots=false, and they run on the command line's device=.
fn evaluation_args(run: DetectArgs) -> DetectArgs {
    let d = DetectArgs::default();
    DetectArgs {
        project: d.project,
        plots: d.plots,
        device: d.device,
        source: d.source,
        save_json: d.save_json,
        ..run
    }
}

pub fn export_cmd(args: &[&str]) -> Result<()> {
    let words = normalised(&owned(args));
    // every word checked before the checkpoint is read
    DetectArgs::parse(DetectArgs::default(), &words, Command::Export)?;
    let ckpt = checkpoint_path(&words)?;
    let out = gradscope::detect::export::export_pt(&ckpt, &gradscope::device().inner())?;
    println!(
        "wrote {} ({:.1} MB), an Ultralytics checkpoint: in Python, YOLO(\"{}\")",
        out.display(),
        std::fs::metadata(&out).map_or(0.0, |m| m.len() as f64 / 1e6),
        out.display()
    );
    Ok(())
}

pub fn val_cmd(args: &[&str]) -> Result<()> {
    let (ck, a, device) = checkpoint_and_args(args, Command::Val, evaluation_args)?;
    let data = resolve_data(&a.data, &mut |m| println!("{m}"))?;
    if data.names.len() != ck.names.len() {
        bail!(
            "data={} has {} classes, the checkpoint {}",
            a.data,
            data.names.len(),
            ck.names.len()
        );
    }
    let val = load_val(&data, a.cache, &mut |warn, m| {
        if warn {
            eprintln!("warning: {m}")
        } else {
            println!("{m}")
        }
    })?;
    let s = settings(&a, 0.001);
    let v = validate(
        &ck.model,
        &val,
        a.imgsz,
        a.batch,
        ck.names.len(),
        &s,
        0.1,
        &device,
    )?;
    print!("{}", v.table(&ck.names, ck.names.len() > 1));
    println!("{}", v.coco_line());
    if !(a.plots || a.save_json) {
        return Ok(());
    }
    let dir = new_run_dir(&a.project, "val", false)?;
    if a.plots {
        validation_plots(&dir, &val, &v, &ck.names, a.imgsz)?;
    }
    if a.save_json {
        let path = dir.join("predictions.json");
        let rows: Vec<serde_json::Value> = v
            .dets
            .iter()
            .map(|d| {
                let img = &val.samples[d.image];
                // back from the letterboxed input to the image's own pixels
                let canvas = v.canvases[d.image];
                let [x1, y1, x2, y2] =
                    unletterbox(d.bbox, img.width, img.height, a.imgsz as u32, canvas);
                serde_json::json!({
                    "image_id": img.image.file_stem().and_then(|s| s.to_str()).unwrap_or_default(),
                    "category_id": d.class,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": d.score,
                })
            })
            .collect();
        std::fs::write(&path, serde_json::to_string(&rows)?)?;
        println!("COCO-format predictions: {}", path.display());
    }
    println!("Results saved to {}", dir.display());
    Ok(())
}

pub fn predict_cmd(args: &[&str]) -> Result<()> {
    let (ck, a, device) = checkpoint_and_args(args, Command::Predict, evaluation_args)?;
    let Some(source) = a.source.clone() else {
        bail!("source= is required: an image or a folder of images");
    };
    let dir = new_run_dir(&a.project, "predict", false)?;
    let s = settings(&a, 0.25);
    let outputs = Outputs {
        style: BoxStyle {
            line_width: a.line_width.map(|w| w as u32),
            labels: a.show_labels,
            conf: a.show_conf,
        },
        save_txt: a.save_txt,
        save_conf: a.save_conf,
    };
    let preds = predict(
        &ck,
        Path::new(&source),
        a.imgsz,
        &s,
        &outputs,
        &dir,
        &device,
        &mut |r| match r {
            Ok(p) => {
                let mut counts = std::collections::BTreeMap::new();
                for (c, _, _) in &p.boxes {
                    *counts.entry(*c).or_insert(0usize) += 1;
                }
                let what: Vec<String> = counts
                    .iter()
                    .map(|(c, n)| format!("{n} {}", ck.names.get(*c).cloned().unwrap_or_default()))
                    .collect();
                println!(
                    "{}: {}",
                    p.image.display(),
                    if what.is_empty() {
                        "no detections".into()
                    } else {
                        what.join(", ")
                    }
                );
            }
            Err(e) => eprintln!("warning: {e}"),
        },
    )?;
    if a.save_json {
        let rows: Vec<serde_json::Value> = preds
            .iter()
            .flat_map(|p| {
                p.boxes.iter().map(|(c, b, s)| {
                    serde_json::json!({
                        "image": p.image.display().to_string(),
                        "class": c,
                        "name": ck.names.get(*c),
                        "box_xyxy": b,
                        "score": s,
                    })
                })
            })
            .collect();
        std::fs::write(
            dir.join("predictions.json"),
            serde_json::to_string_pretty(&rows)?,
        )?;
    }
    println!("results saved to {}", dir.display());
    if a.save_txt {
        let n = std::fs::read_dir(dir.join("labels")).map_or(0, |d| d.count());
        println!("{n} label files saved to {}", dir.join("labels").display());
    }
    Ok(())
}
