//! `gradscope train`: YOLO26 detection training as the reference trainer does it, with the
//! gradient probe on.
//!
//! Per iteration: a batch (augmented in parallel, prepared while the previous step runs),
//! forward with probe points on every layer, the two-branch loss (ProgLoss), backward; gradients
//! accumulate until `nbs` images (nominal batch) have been seen, then are clipped at global norm
//! 10, the optimizer steps (three parameter groups) and the EMA follows. Warmup over
//! min(warmup_epochs, epochs − 1) epochs ramps the weight groups' learning rate from 0 and the bias
//! group's from `warmup_bias_lr` (0 with `optimizer=auto`), SGD's momentum from
//! `warmup_momentum`, and the accumulation from 1. After every epoch the EMA model is validated, a results.csv row is
//! written, `last` and `best` (by mAP50-95) are saved atomically, and the gradient diagnosis runs
//! on the probe records so far. A non-finite loss or gradient is undone (parameters, optimizer
//! and accumulated gradients), the learning rate halved, the batch skipped; `nan_recovery` in a
//! row stop the run with the producing layer named.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use super::args::DetectArgs;
use super::assign::Anchors;
use super::dataset::{epoch_order, prefetch};
use super::ema::Ema;
use super::loss::{one2many_weight, yolo_loss, LossGains, LossItems};
use super::optimizer::{DetOptimizer, GroupLr, GroupOptimizer};
use super::resume;
use super::runs;
use super::validate::{validate, DetectSettings, ValResult};
use crate::diagnose::{diagnose, Diagnosis};
use crate::probe::{Probe, ProbeConfig};
use crate::train::clip;
use crate::train::recovery::{GoodState, RecoveryEvent};
use crate::train::{EpochStats, History};
use crate::yolo::blocks::Switches;
use crate::yolo::model::{Yolo, YoloConfig};

/// Reported to the caller as training goes.
pub enum TrainEvent<'a> {
    /// Set-up lines (data summary, model, optimizer).
    Info(String),
    /// A warning (a dropped label row, a skipped image).
    Warning(String),
    /// After each iteration: mean losses of the epoch so far.
    Iter {
        epoch: usize,
        epochs: usize,
        i: usize,
        nb: usize,
        items: &'a LossItems,
        instances: usize,
        imgsz: usize,
    },
    /// After each epoch's validation.
    Epoch {
        epoch: usize,
        val: &'a ValResult,
        names: &'a [String],
        diagnosis: Option<&'a Diagnosis>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("{0}")]
    Args(String),
    #[error("{0}")]
    Data(String),
    #[error("{0}")]
    Io(String),
}

pub struct TrainOutcome {
    pub dir: PathBuf,
    pub last: Option<ValResult>,
    pub best_map50_95: f64,
    pub diagnosis: Option<Diagnosis>,
    pub history: History,
    pub seconds: f64,
    pub names: Vec<String>,
}

/// The model for `args`, with the ablation switches, for `nc` classes.
pub fn build_model(
    args: &DetectArgs,
    nc: usize,
    device: &Device,
) -> Result<(YoloConfig, Yolo), DetectError> {
    let mut cfg = YoloConfig::from_name(&args.model, nc).map_err(DetectError::Args)?;
    // a seeded initialisation: the same seed builds the same network
    device.seed(args.seed);
    cfg.switches = Switches {
        act: args.act,
        bn: args.bn,
        shortcut: args.shortcut,
    };
    let model = cfg.init(device);
    Ok((cfg, model))
}

/// Linear or cosine learning-rate factor at `epoch` (lf in the reference trainer).
pub fn lr_factor(epoch: usize, epochs: usize, lrf: f64, cos: bool) -> f64 {
    let x = epoch as f64 / epochs.max(1) as f64;
    if cos {
        ((1.0 - (x * std::f64::consts::PI).cos()) / 2.0) * (lrf - 1.0) + 1.0
    } else {
        (1.0 - x).max(0.0) * (1.0 - lrf) + lrf
    }
}

fn interp(x: f64, x1: f64, y0: f64, y1: f64) -> f64 {
    if x1 <= 0.0 {
        return y1;
    }
    let t = (x / x1).clamp(0.0, 1.0);
    y0 + (y1 - y0) * t
}

/// Trains as `args` says, reporting to `on`.
pub fn train(
    args_in: &DetectArgs,
    on: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, DetectError> {
    let t0 = Instant::now();
    let device = crate::device();
    // resume: the run's own arguments, its folder and state file
    let resume = match &args_in.resume {
        Some(r) => Some(resume::locate(r, &args_in.model)?),
        None => None,
    };
    let args_owned = match &resume {
        Some((run, _)) => {
            let (mut a, _) = super::predict::run_args(run)?;
            a.resume = None;
            on(TrainEvent::Info(format!("resuming {}", run.display())));
            a
        }
        None => args_in.clone(),
    };
    let args = &args_owned;
    let data = runs::resolve_data(&args.data, &mut |m| on(TrainEvent::Info(m)))?;
    let nc = data.names.len();
    let (train, val) = runs::load_sets(&data, &mut |warn, m| {
        on(if warn {
            TrainEvent::Warning(m)
        } else {
            TrainEvent::Info(m)
        })
    })?;
    if train.is_empty() {
        return Err(DetectError::Data(format!(
            "{}: no usable training images",
            data.root.display()
        )));
    }
    let (_cfg, mut model) = build_model(args, nc, &device)?;
    let dir = match &resume {
        Some((run, _)) => run.clone(),
        None => runs::new_run_dir(&args.project, &args.name, args.exist_ok)?,
    };
    let weights = dir.join("weights");
    std::fs::create_dir_all(&weights)
        .map_err(|e| DetectError::Io(format!("{}: {e}", weights.display())))?;
    if resume.is_none() {
        runs::write_args(&dir, args, &data.names)?;
        if args.plots {
            super::plots::labels(&train, &data.names, &dir.join("labels.jpg"))?;
        }
    }
    on(TrainEvent::Info(format!(
        "model {} ({} parameters), act={} bn={} shortcut={}",
        args.model,
        model.num_params(),
        args.act,
        args.bn,
        args.shortcut
    )));

    let imgsz = args.imgsz;
    // the nominal batch size counts for accumulation and decay even when the set is smaller
    let batch = args.batch.max(1);
    let nb = train.len().div_ceil(batch);
    let nbs = args.nbs.max(1);
    let accumulate_full = ((nbs as f64 / batch as f64).round() as usize).max(1);
    let weight_decay = args.weight_decay * (batch * accumulate_full) as f64 / nbs as f64;
    let iterations = (train.len() as f64 / batch.max(nbs) as f64).ceil() as usize * args.epochs;
    let (adamw, muon, lr0, momentum) = match args.optimizer {
        DetOptimizer::Auto => {
            if iterations > 10_000 {
                (false, true, 0.01, 0.9)
            } else {
                let lr = (0.002 * 5.0 / (4.0 + nc as f64) * 1e6).round() / 1e6;
                (true, false, lr, 0.9)
            }
        }
        DetOptimizer::Sgd => (false, false, args.lr0.unwrap_or(0.01), args.momentum),
        DetOptimizer::Musgd => (false, true, args.lr0.unwrap_or(0.01), args.momentum),
        DetOptimizer::Adamw => (true, false, args.lr0.unwrap_or(0.001), args.momentum),
    };
    let lr0 = if args.optimizer == DetOptimizer::Auto {
        lr0
    } else {
        args.lr0.unwrap_or(lr0)
    };
    on(TrainEvent::Info(format!(
        "optimizer: {} (lr0 {lr0}, momentum {momentum}) with groups: weights (decay {weight_decay:.2e}), norm weights and biases (no decay); batch {batch}, nominal batch {nbs} (accumulate {accumulate_full}), {nb} iterations per epoch",
        if adamw {
            "AdamW"
        } else if muon {
            "MuSGD (Muon + SGD on conv weights, Nesterov)"
        } else {
            "SGD (Nesterov)"
        }
    )));
    // warmup leaves at least the last epoch for regular training
    let warmup_epochs = args.warmup_epochs.min(args.epochs.saturating_sub(1) as f64);
    let nw = if warmup_epochs > 0.0 {
        (warmup_epochs * nb as f64).round() as usize
    } else {
        0
    };
    // auto starts the bias warmup at zero; Adam's β₁ has no warmup (it is not a momentum)
    let warmup_bias_lr = if args.optimizer == DetOptimizer::Auto {
        0.0
    } else {
        args.warmup_bias_lr
    };

    let mut optim = if muon {
        GroupOptimizer::musgd()
    } else {
        GroupOptimizer::new(adamw)
    };
    let mut ema = Ema::new(&model);
    let mut start = resume::Counters {
        epoch: 0,
        ema_updates: 0,
        last_opt: -1,
        opt_steps: 0,
        lr_scale: 1.0,
        best: f64::NEG_INFINITY,
        adamw,
        muon,
    };
    if let Some((_, state)) = &resume {
        let (m, e, o, c) = resume::load(state, model, &device)?;
        (model, ema, optim, start) = (m, e, o, c);
        if start.epoch >= args.epochs {
            return Err(DetectError::Args(format!(
                "{}: the run already finished its {} epochs; nothing to resume",
                dir.display(),
                args.epochs
            )));
        }
        on(TrainEvent::Info(format!(
            "continuing at epoch {}",
            start.epoch + 1
        )));
    }
    let mut probe = Probe::new(ProbeConfig {
        enabled: args.probe,
        every: args.probe_every,
        ..ProbeConfig::default()
    })
    .with_jsonl_mode(&dir.join("probe.jsonl"), resume.is_some())
    .map_err(|e| DetectError::Io(e.to_string()))?;
    let anchors = Anchors::new(imgsz, imgsz, &[8, 16, 32]);
    let gains = LossGains::default();
    let train = Arc::new(train);
    let settings = DetectSettings {
        conf: args.conf.unwrap_or(0.001) as f32,
        max_det: args.max_det,
        end2end: args.end2end,
        iou: args.iou as f32,
    };

    let plain = device.clone().inner();
    let mut hist = History::default();
    let mut csv = runs::ResultsCsv::open(&dir, start.epoch)?;
    let mut best = start.best;
    let mut last_val: Option<ValResult> = None;
    let mut diagnosis = None;
    let mut lr_scale = start.lr_scale; // halved by NaN recovery
    let mut in_a_row = 0;
    let mut opt_steps = start.opt_steps;
    let mut last_opt = start.last_opt;
    let mut acc = GradientsAccumulator::new();
    let mut good = GoodState::capture(&model, &optim);
    'epochs: for epoch in start.epoch..args.epochs {
        let w = one2many_weight(epoch, args.epochs);
        let mosaic = epoch + args.close_mosaic < args.epochs;
        if !mosaic && args.augment.mosaic > 0.0 && epoch + args.close_mosaic == args.epochs {
            on(TrainEvent::Info(format!(
                "closing mosaic for the last {} epochs",
                args.close_mosaic
            )));
        }
        let order = epoch_order(train.len(), batch, args.seed, epoch);
        let rx = prefetch(
            train.clone(),
            order,
            imgsz as u32,
            args.augment,
            mosaic,
            args.seed,
            epoch,
        );
        let mut mean = LossItems::default();
        let mut seen = 0usize;
        let lf = lr_factor(epoch, args.epochs, args.lrf, args.cos_lr);
        for i in 0..nb {
            let b = match rx.recv() {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Err(DetectError::Data(e)),
                Err(_) => break,
            };
            let ni = i + nb * epoch;
            // warmup: accumulation, per-group lr and momentum
            let (accumulate, lrs, mom) = if ni <= nw && nw > 0 {
                let acc = (interp(ni as f64, nw as f64, 1.0, nbs as f64 / batch as f64).round()
                    as usize)
                    .max(1);
                let lr_w = interp(ni as f64, nw as f64, 0.0, lr0 * lf);
                let lr_b = interp(ni as f64, nw as f64, warmup_bias_lr, lr0 * lf);
                let m = if adamw {
                    momentum
                } else {
                    interp(ni as f64, nw as f64, args.warmup_momentum, momentum)
                };
                (acc, [lr_w, lr_w, lr_b], m)
            } else {
                (accumulate_full, [lr0 * lf; 3], momentum)
            };
            let lrs = lrs.map(|l| l * lr_scale);
            let will_step = ni as i64 - last_opt >= accumulate as i64;
            let n = b.len();
            let instances: usize = b.targets.iter().map(Vec::len).sum();
            let x = Tensor::<4>::from_data(TensorData::new(b.x, [n, 3, imgsz, imgsz]), &device);
            let loss_of = |model: &Yolo, tap: &mut crate::probe::Tap| {
                let out = model.forward(x.clone(), tap);
                yolo_loss(
                    out.heads.one2many,
                    out.heads.one2one,
                    &b.targets,
                    &anchors,
                    (imgsz, imgsz),
                    w,
                    &gains,
                )
            };
            let step = opt_steps;
            let mut tap = if will_step {
                probe.tap(step)
            } else {
                crate::probe::Tap::off()
            };
            let (loss, items) = loss_of(&model, &mut tap);
            let loss_v = loss.clone().into_scalar::<f64>();
            let grads = loss.backward();
            let mut pending = probe.after_backward(step, epoch, loss_v, tap, &model, &grads);
            let gp = GradientsParams::from_grads(grads, &model);
            let mut nonfinite = !loss_v.is_finite();
            if !nonfinite {
                acc.accumulate(&model, gp);
            }
            let mut gnorm = f64::NAN;
            if !nonfinite && will_step {
                let mut g = acc.grads();
                gnorm = match args.clip_norm {
                    Some(c) => clip::clip_norm(&model, &mut g, c),
                    None => clip::global_norm(&model, &g),
                };
                if gnorm.is_finite() {
                    model = optim.step(
                        model,
                        g,
                        GroupLr {
                            lr: lrs,
                            momentum: mom,
                            weight_decay,
                        },
                    );
                    ema.update(&model);
                    last_opt = ni as i64;
                    opt_steps += 1;
                    probe
                        .after_step(pending.take(), &model, lrs[0])
                        .map_err(|e| DetectError::Io(e.to_string()))?;
                    good = GoodState::capture(&model, &optim);
                    hist.step_loss.push(loss_v);
                    hist.step_grad_norm.push(gnorm);
                    hist.step_clip.push(args.clip_norm.unwrap_or(f64::NAN));
                } else {
                    nonfinite = true;
                }
            }
            if nonfinite {
                if pending.is_none() {
                    // not probed: replay the batch with the probe on to find the producer
                    let mut tap = probe.replay_tap(step);
                    let (l, _) = loss_of(&model, &mut tap);
                    let lv = l.clone().into_scalar::<f64>();
                    let g = l.backward();
                    pending = probe.after_backward(step, epoch, lv, tap, &model, &g);
                }
                let producer = probe
                    .after_step(pending, &model, lrs[0])
                    .ok()
                    .flatten()
                    .and_then(|r| r.nonfinite.clone());
                in_a_row += 1;
                let what = if loss_v.is_finite() {
                    "gradient"
                } else {
                    "loss"
                };
                // undo: last good parameters and optimizer state, no accumulated gradients
                (model, optim) = good.restore();
                acc = GradientsAccumulator::new();
                if in_a_row >= args.nan_recovery {
                    hist.stopped = Some(format!(
                        "non-finite {what} at epoch {} iteration {i}, {in_a_row} in a row",
                        epoch + 1
                    ));
                    break 'epochs;
                }
                lr_scale *= 0.5;
                hist.recoveries.push(RecoveryEvent {
                    step: ni,
                    what: what.into(),
                    producer,
                    lr_after: lrs[0] * 0.5,
                });
                on(TrainEvent::Warning(format!(
                    "non-finite {what} at epoch {} iteration {i} (|g| = {gnorm}): step undone, learning rate halved",
                    epoch + 1
                )));
                continue;
            }
            in_a_row = 0;
            seen += 1;
            mean.add(&items, 1.0);
            let m = mean.scaled(1.0 / seen as f64);
            on(TrainEvent::Iter {
                epoch,
                epochs: args.epochs,
                i,
                nb,
                items: &m,
                instances,
                imgsz,
            });
        }
        let train_items = mean.scaled(1.0 / seen.max(1) as f64);
        let v = if args.val || epoch + 1 == args.epochs {
            validate(&ema.model, &val, imgsz, batch * 2, nc, &settings, w, &plain)
        } else {
            ValResult::skipped(val.len(), nc)
        };
        diagnosis = diagnose(probe.records()).map(|mut d| {
            yolo_remedies(&mut d, args);
            d
        });
        let fitness = v.coco.map50_95;
        runs::save_weights(&ema.model, &weights.join("last.safetensors"))?;
        if fitness > best {
            best = fitness;
            runs::save_weights(&ema.model, &weights.join("best.safetensors"))?;
        }
        resume::save(
            &weights,
            &model,
            &ema,
            &optim,
            &resume::Counters {
                epoch: epoch + 1,
                ema_updates: ema.updates,
                last_opt,
                opt_steps,
                lr_scale,
                best,
                adamw,
                muon,
            },
        )?;
        let lr_now = lr0 * lf * lr_scale;
        csv.row(
            epoch + 1,
            t0.elapsed().as_secs_f64(),
            &train_items,
            &v,
            [lr_now; 3],
        )?;
        hist.epochs.push(EpochStats {
            epoch,
            train_loss: train_items.box_ + train_items.cls + train_items.l1,
            val_loss: v.losses.box_ + v.losses.cls + v.losses.l1,
            val_metric: v.coco.map50_95,
        });
        on(TrainEvent::Epoch {
            epoch,
            val: &v,
            names: &data.names,
            diagnosis: diagnosis.as_ref(),
        });
        if args.plots {
            runs::epoch_report(
                &dir,
                args,
                &csv,
                &hist,
                probe.records(),
                diagnosis.as_ref(),
                &val,
                &v,
                &data.names,
            )?;
        }
        last_val = Some(v);
    }
    Ok(TrainOutcome {
        dir,
        last: last_val,
        best_map50_95: best.max(0.0),
        diagnosis,
        history: hist,
        seconds: t0.elapsed().as_secs_f64(),
        names: data.names.clone(),
    })
}

/// The diagnosis' remedies in `gradscope train`'s own keys: the building blocks YOLO26 is made of
/// (SiLU, BatchNorm, residual bottlenecks) when an ablation removed them, then the generic ones
/// that apply (clipping, learning rate); remedies without a detection key (init schemes, cells)
/// are dropped.
pub fn yolo_remedies(d: &mut Diagnosis, args: &DetectArgs) {
    use crate::diagnose::{Remedy, Verdict};
    let mut out: Vec<Remedy> = Vec::new();
    let mut push = |s: String, why: &str| {
        if !out.iter().any(|r| r.switch == s) {
            out.push(Remedy {
                switch: s,
                why: why.into(),
            });
        }
    };
    let starved = d.verdicts.iter().any(|v| {
        matches!(
            v,
            Verdict::Vanishing | Verdict::Saturation | Verdict::DeadUnits
        )
    });
    if starved {
        if args.act != crate::nn::activation::Activation::Silu {
            push("act=silu".into(), "SiLU passes the gradient with slope ≈ 1 on active units; sigmoid multiplies it by at most 0.25 in every layer");
        }
        if !args.bn {
            push("bn=true".into(), "BatchNorm after every conv keeps pre-activations at unit scale, out of the saturated range, at any depth");
        }
        if !args.shortcut {
            push(
                "shortcut=true".into(),
                "residual bottlenecks give the gradient an identity path around every block",
            );
        }
    }
    for r in d.remedies.clone() {
        let k = r.switch.split('=').next().unwrap_or("");
        match k {
            "clip_norm" => push(r.switch.clone(), &r.why),
            "lr" => push("lr0=<lr0/10>".into(), &r.why),
            "norm" if !args.bn => push("bn=true".into(), &r.why),
            "residual" | "zero_init" if !args.shortcut => push("shortcut=true".into(), &r.why),
            "act" if args.act != crate::nn::activation::Activation::Silu => {
                push("act=silu".into(), &r.why)
            }
            _ => {}
        }
    }
    d.remedies = out;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lr_schedules() {
        assert_eq!(lr_factor(0, 10, 0.01, false), 1.0);
        assert!((lr_factor(10, 10, 0.01, false) - 0.01).abs() < 1e-12);
        assert!((lr_factor(5, 10, 0.01, true) - 0.505).abs() < 1e-12);
        assert_eq!(interp(50.0, 100.0, 0.1, 0.01), 0.055);
    }
}
