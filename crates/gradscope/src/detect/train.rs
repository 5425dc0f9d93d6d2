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
//! row stop the run with the producing layer named. On several devices each replica takes its
//! share of every batch and their gradients are summed before clipping ([`crate::detect::parallel`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{Device, Tensor, TensorData};

use crate::detect::args::DetectArgs;
use crate::detect::eval::validate::{validate, DetectSettings, ValResult};
use crate::detect::input::dataset::{prefetch, Batch, DetData};
use crate::detect::model::initial_model;
use crate::detect::objective::assign::{Anchors, Xyxy};
use crate::detect::objective::loss::{one2many_weight, yolo_loss, LossGains, LossItems};
use crate::detect::optimize::ema::Ema;
use crate::detect::optimize::freeze::freeze;
use crate::detect::optimize::optimizer::{Gathered, GroupLr, GroupOptimizer};
use crate::detect::parallel;
use crate::detect::remedies;
use crate::detect::run as runs;
use crate::detect::run::resume;
use crate::detect::schedule::{lr_factor, Plan};
use crate::detect::setup;
use crate::diagnose::divergence::{divergence, RunTrace};
use crate::diagnose::Diagnosis;
use crate::kernels::update::Clip;
use crate::probe::{Probe, Tap};
use crate::train::clip;
use crate::train::recovery::{localise, Decision, GoodState, Recovery};
use crate::train::replicas::Group;
use crate::train::{EpochStats, History};
use crate::yolo::model::Yolo;

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

pub use crate::detect::error::DetectError;

pub struct TrainOutcome {
    pub dir: PathBuf,
    /// Evidence that the run diverged (empty when it did not): see [`crate::diagnose::divergence`].
    pub diverged: Vec<String>,
    /// Optimizer steps taken over the whole run (resumed runs included).
    pub optimizer_steps: usize,
    pub last: Option<ValResult>,
    pub best_map50_95: f64,
    pub diagnosis: Option<Diagnosis>,
    pub history: History,
    pub seconds: f64,
    pub names: Vec<String>,
}

/// Whether the epoch loop goes on after a step.
enum Flow {
    Continue,
    Stop,
}

/// What one epoch's iterations leave for its end.
struct EpochState {
    epoch: usize,
    /// ProgLoss weight of the one-to-many branch.
    w: f64,
    /// Learning-rate schedule factor.
    lf: f64,
    mean: LossItems,
    seen: usize,
    /// Target boxes in the epoch's batches so far.
    targets: usize,
}

/// One iteration's loss and gradients, over every replica.
struct Iteration {
    loss: f64,
    items: LossItems,
    grads: GradientsParams,
    pending: Option<crate::probe::Pending>,
    /// The batches they come from (1, or the replicas that had images).
    shares: usize,
    instances: usize,
}

/// An iteration whose loss or gradient was not finite.
struct Failed {
    what: &'static str,
    gnorm: f64,
    /// Iteration in the epoch, and in the run.
    i: usize,
    ni: usize,
    lr: f64,
    pending: Option<crate::probe::Pending>,
}

/// A detection training run: set up once ([`Trainer::new`]), then epoch by epoch, iteration by
/// iteration ([`Trainer::run`]).
pub struct Trainer<'o> {
    args: DetectArgs,
    on: &'o mut dyn FnMut(TrainEvent),
    t0: Instant,
    dir: PathBuf,
    names: Vec<String>,
    train: Arc<DetData>,
    /// The threads that augment training batches (`workers`).
    loader: Arc<rayon::ThreadPool>,
    val: Arc<DetData>,
    plan: Plan,
    device: Device,
    model: Yolo,
    ema: Ema,
    optim: GroupOptimizer,
    acc: GradientsAccumulator<Yolo>,
    good: GoodState<Yolo, GroupOptimizer>,
    recovery: Recovery,
    /// Epoch to start at, optimizer steps, last stepped iteration, lr scale, best fitness.
    counters: resume::Counters,
    probe: Probe,
    anchors: Anchors,
    gains: LossGains,
    settings: DetectSettings,
    hist: History,
    csv: runs::ResultsCsv,
    /// Writes each epoch's checkpoints, results.csv row and resume state behind the training.
    writes: runs::behind::Behind,
    /// Draws the first training batches' and each epoch's validation pictures beside the
    /// training (finished before the next epoch's are started, and before the run reports).
    pictures: runs::batches::Drawing,
    /// The last epoch's validation, shared with the thread drawing its pictures.
    last_val: Option<Arc<ValResult>>,
    diagnosis: Option<Diagnosis>,
    diverged: Vec<String>,
    /// The first epoch (1-based) the divergence rules fired at, and the best fitness before it.
    diverged_at: Option<(usize, f64)>,
    /// Targets assigned per head level and the boxes' size, for the head-level findings.
    assigned: crate::detect::branches::Assigned,
    /// The other replicas in data-parallel training.
    replicas: Option<Group>,
}

/// Trains as `args` says, reporting to `on`.
pub fn train(
    args: &DetectArgs,
    on: &mut dyn FnMut(TrainEvent),
) -> Result<TrainOutcome, DetectError> {
    Trainer::new(args, on)?.run()
}

impl<'o> Trainer<'o> {
    /// Resume state, data, model, optimizer, EMA, probe and run folder.
    pub fn new(
        args_in: &DetectArgs,
        on: &'o mut dyn FnMut(TrainEvent),
    ) -> Result<Self, DetectError> {
        if args_in.device.count() > 1 {
            return Err(DetectError::Args(format!(
                "device={}: several devices train as one process per device; `gradscope train` starts them",
                args_in.device.show()
            )));
        }
        Self::start(args_in, None, on)
    }

    /// One replica of data-parallel training, its place and links in `group`: rank 0 writes the
    /// run, the others train beside it and write nothing a user reads.
    pub fn replica(
        args: &DetectArgs,
        group: Group,
        on: &'o mut dyn FnMut(TrainEvent),
    ) -> Result<Self, DetectError> {
        Self::start(args, Some(group), on)
    }

    fn start(
        args_in: &DetectArgs,
        mut group: Option<Group>,
        on: &'o mut dyn FnMut(TrainEvent),
    ) -> Result<Self, DetectError> {
        let t0 = Instant::now();
        let replica_args;
        let args_in = match &group {
            Some(g) => {
                replica_args = parallel::replica_args(args_in, g)?;
                crate::devices::select(args_in.device.part(g.rank()))?;
                // rank 0 fetches the data first: the others wait, then find it there
                if g.rank() > 0 {
                    group.as_mut().map(|g| g.broadcast(&mut [0])).transpose()?;
                }
                &replica_args
            }
            None => {
                crate::devices::select(&args_in.device)?;
                args_in
            }
        };
        let device = crate::device();
        let mut say = |warn: bool, m: String| {
            on(if warn {
                TrainEvent::Warning(m)
            } else {
                TrainEvent::Info(m)
            })
        };
        let (args, resume) = setup::resumed_args(args_in, &mut say)?;
        // weights files named by model=/pretrained= exist, before any data is read
        let start = crate::detect::model::start(&args, &mut |m| say(false, m))?;
        let (names, train, val) = setup::load_data(&args, &mut say)?;
        if let Some(g) = group.as_mut().filter(|g| g.rank() == 0) {
            g.broadcast(&mut [0])?;
        }
        let (mut model, transferred) = initial_model(&args, &start, names.len(), &device)?;
        if let Some(g) = &mut group {
            model = g.broadcast_params(model)?;
        }
        if let Some(line) = transferred {
            on(TrainEvent::Info(line));
        }
        let dir = setup::run_folder(&args, resume.as_ref().map(|(run, _)| run), &train, &names)?;
        let plan = Plan::new(&args, train.len(), names.len());
        setup::announce(&args, &model, &plan, &mut |m| on(TrainEvent::Info(m)));
        if let Some(m) = plan.auto_ignored(&args) {
            on(TrainEvent::Warning(m));
        }
        let state = resume.as_ref().map(|(_, state)| state.as_path());
        let resume::Resumed {
            model,
            ema,
            optim,
            pending,
            counters,
            ledger,
        } = setup::training_state(model, &plan, state, &device)?;
        if state.is_some() {
            if counters.epoch >= args.epochs {
                return Err(DetectError::Args(format!(
                    "{}: the run already finished its {} epochs; nothing to resume",
                    dir.display(),
                    args.epochs
                )));
            }
            on(TrainEvent::Info(format!(
                "continuing at epoch {}",
                counters.epoch + 1
            )));
        }
        let resumed = state.is_some().then_some(&ledger);
        let probe = setup::open_probe(&args, &dir, resumed, counters.opt_steps)?;
        let csv = runs::ResultsCsv::open(&dir, counters.epoch)?;
        let median_box = crate::detect::branches::median_box(&train.samples, plan.imgsz);
        let loader = crate::detect::input::dataset::loader_pool(args.workers)
            .map_err(|e| DetectError::Args(format!("workers={}: {e}", args.workers)))?;
        let mut acc = GradientsAccumulator::new();
        acc.accumulate(&model, pending);
        Ok(Trainer {
            anchors: Anchors::new(plan.imgsz, plan.imgsz, &[8, 16, 32]),
            gains: LossGains::default(),
            settings: DetectSettings {
                conf: args.conf.unwrap_or(0.001) as f32,
                max_det: args.max_det,
                end2end: args.end2end,
                iou: args.iou as f32,
                // Ultralytics' trainer validates on rectangular batches too
                rect: true,
                classes: None,
            },
            acc,
            good: GoodState::capture(&model, &optim),
            recovery: Recovery::resumed(args.nan_recovery, ledger.nan_in_a_row),
            names,
            train: Arc::new(train),
            loader,
            hist: ledger.history,
            last_val: None,
            diagnosis: None,
            diverged: ledger.diverged,
            diverged_at: ledger.diverged_at,
            assigned: crate::detect::branches::Assigned {
                per_level: ledger.assigned.per_level,
                median_box,
                imgsz: plan.imgsz,
            },
            replicas: group,
            args,
            on,
            t0,
            dir,
            val: Arc::new(val),
            plan,
            device,
            model,
            ema,
            optim,
            counters,
            probe,
            csv,
            writes: runs::behind::Behind::default(),
            pictures: runs::batches::Drawing::default(),
        })
    }

    /// The run folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every remaining epoch: its iterations, then validation, checkpoints and the report.
    pub fn run(mut self) -> Result<TrainOutcome, DetectError> {
        'epochs: for epoch in self.counters.epoch..self.args.epochs {
            let mut st = self.start_epoch(epoch);
            let order = parallel::shares(
                self.train.len(),
                self.plan.batch,
                self.replicas.as_ref(),
                self.args.seed,
                epoch,
            );
            let mosaic = epoch + self.args.close_mosaic < self.args.epochs;
            let rx = prefetch(
                self.loader.clone(),
                self.train.clone(),
                order,
                self.plan.imgsz as u32,
                self.args.augment(),
                mosaic,
                self.args.seed,
                epoch,
            );
            for i in 0..self.plan.nb {
                let b = match rx.recv() {
                    Ok(Ok(b)) => b,
                    Ok(Err(e)) => return Err(e.into()),
                    Err(_) => break,
                };
                if epoch == 0 && i < 3 && self.args.plots {
                    self.pictures
                        .train_batch(&b, i, &self.train, &self.names, &self.dir);
                }
                if let Flow::Stop = self.step(&mut st, i, b)? {
                    break 'epochs;
                }
            }
            if let Flow::Stop = self.epoch_end(st)? {
                break;
            }
        }
        // the last epoch's files and pictures on disk before the run reports them
        self.writes.wait()?;
        self.pictures.finish()?;
        Ok(TrainOutcome {
            dir: self.dir,
            diverged: self.diverged,
            optimizer_steps: self.counters.opt_steps,
            // the pictures are finished: the result is no longer shared
            last: self
                .last_val
                .map(|v| Arc::try_unwrap(v).unwrap_or_else(|v| (*v).clone())),
            best_map50_95: self.counters.best.max(0.0),
            diagnosis: self.diagnosis,
            history: self.hist,
            seconds: self.t0.elapsed().as_secs_f64(),
            names: self.names,
        })
    }

    fn start_epoch(&mut self, epoch: usize) -> EpochState {
        let args = &self.args;
        if args.mosaic > 0.0 && args.close_mosaic > 0 && epoch + args.close_mosaic == args.epochs {
            (self.on)(TrainEvent::Info(format!(
                "closing mosaic for the last {} epochs",
                args.close_mosaic
            )));
        }
        EpochState {
            epoch,
            w: one2many_weight(epoch, args.epochs),
            lf: lr_factor(epoch, args.epochs, args.lrf, args.cos_lr),
            mean: LossItems::default(),
            seen: 0,
            targets: 0,
        }
    }

    /// One iteration: forward with the probe, the two-branch loss, backward and accumulation;
    /// when `nbs` images are accumulated, clipping, the optimizer step and the EMA. A non-finite
    /// loss or gradient is undone and localised.
    fn step(&mut self, st: &mut EpochState, i: usize, b: Batch) -> Result<Flow, DetectError> {
        if self.writes.failed() {
            // the last epoch's files could not be written: stop now, not an epoch later
            self.writes.wait()?;
        }
        let ni = i + self.plan.nb * st.epoch;
        let (accumulate, lrs, mom) = self.plan.at(ni, st.lf, &self.args);
        let lrs = lrs.map(|l| l * self.counters.lr_scale);
        let will_step = ni as i64 - self.counters.last_opt >= accumulate as i64;
        // the update will see this backward's gradient alone (nothing accumulated before it, no
        // replica's added): the probe takes its gradient norms from the update's pass
        let own = will_step && self.replicas.is_none() && ni as i64 - self.counters.last_opt == 1;
        let (n, imgsz) = (b.len(), self.plan.imgsz);
        let x = Tensor::<4>::from_data(TensorData::new(b.x, [n, 3, imgsz, imgsz]), &self.device);
        let Iteration {
            loss: loss_v,
            items,
            grads: gp,
            mut pending,
            shares,
            instances,
        } = self.iteration(st, &x, &b.targets, will_step, own)?;
        let mut finite = loss_v.is_finite();
        if finite {
            self.acc.accumulate(&self.model, gp);
        }
        let mut gnorm = f64::NAN;
        if finite && will_step {
            let g = match pending {
                // a probed step's update measures the weights for the probe
                Some(_) => GroupOptimizer::gather_named(&self.model, self.acc.grads()),
                None => GroupOptimizer::gather(&self.model, self.acc.grads()),
            };
            gnorm = g.global_norm();
            finite = gnorm.is_finite();
            if finite {
                // clipping by norm happens inside the optimizer's pass
                let scale = match self.args.clip_norm {
                    Some(c) => clip::on_update(Some(gnorm), c, None),
                    None => Clip::NONE,
                };
                self.optimizer_step(g, scale, lrs, mom, ni, pending.take())?;
                crate::crash::point("step");
                if let Some(g) = &self.replicas {
                    crate::crash::point(&format!("step@rank{}", g.rank()));
                }
                self.hist.step_loss.push(loss_v);
                self.hist.step_grad_norm.push(gnorm);
                self.hist
                    .step_clip
                    .push(self.args.clip_norm.unwrap_or(f64::NAN));
            }
        }
        if !finite {
            let what = if loss_v.is_finite() {
                "gradient"
            } else {
                "loss"
            };
            let failed = Failed {
                what,
                gnorm,
                i,
                ni,
                lr: lrs[0],
                pending,
            };
            return self.recover(st, failed, x, &b.targets);
        }
        self.recovery.finite();
        st.seen += shares;
        st.targets += instances;
        st.mean.add(&items, 1.0);
        let m = st.mean.scaled(1.0 / st.seen as f64);
        (self.on)(TrainEvent::Iter {
            epoch: st.epoch,
            epochs: self.args.epochs,
            i,
            nb: self.plan.nb,
            items: &m,
            instances,
            imgsz,
        });
        Ok(Flow::Continue)
    }

    /// The iteration's loss and gradients (probed when `probed`; `own`: the update will see this
    /// backward's gradient alone): of this process's batch, summed over the replicas in
    /// data-parallel training.
    fn iteration(
        &mut self,
        st: &EpochState,
        x: &Tensor<4>,
        targets: &[Vec<(usize, Xyxy)>],
        probed: bool,
        own: bool,
    ) -> Result<Iteration, DetectError> {
        let instances = targets.iter().map(Vec::len).sum();
        let step = self.counters.opt_steps;
        let (loss, items, grads, pending) = if !targets.is_empty() {
            let imgsz = self.plan.imgsz;
            let objective = Objective::new(&self.anchors, &self.gains, targets, imgsz, st.w);
            let mut tap = if probed {
                self.probe.tap(step)
            } else {
                Tap::off()
            };
            let (loss, items) = objective.loss(&self.model, x.clone(), &mut tap);
            let loss_v = loss.clone().into_scalar::<f64>();
            let grads = loss.backward();
            // the weights' norms and update ratios come from the optimizer's pass, and so do
            // the gradient norms when that pass sees this backward's gradient alone
            let (model, probe) = (&self.model, &mut self.probe);
            let pending = if own {
                probe.after_backward_for_update(step, st.epoch, loss_v, tap, model, &grads)
            } else {
                probe.after_backward_grads(step, st.epoch, loss_v, tap, model, &grads)
            };
            let mut gp = GradientsParams::from_grads(grads, &self.model);
            freeze(&self.model, &self.args.freeze, &mut gp);
            (loss_v, items, gp, pending)
        } else {
            // a replica the data ran out for this iteration
            (0.0, LossItems::default(), GradientsParams::new(), None)
        };
        let Some(g) = &mut self.replicas else {
            return Ok(Iteration {
                loss,
                items,
                grads,
                pending,
                shares: 1,
                instances,
            });
        };
        let own = (!targets.is_empty()).then_some((loss, items));
        let device = self.device.clone().inner();
        let sum = parallel::sum(g, &self.model, grads, own, instances, &device)?;
        Ok(Iteration {
            loss: sum.loss,
            items: sum.items,
            grads: sum.grads,
            pending,
            shares: sum.shares,
            instances: sum.instances,
        })
    }

    /// A non-finite loss or gradient: the producer localised (the step replayed with the probe
    /// on), the last good state back, then recovery (learning rate halved) or the stop.
    fn recover(
        &mut self,
        st: &EpochState,
        f: Failed,
        x: Tensor<4>,
        targets: &[Vec<(usize, Xyxy)>],
    ) -> Result<Flow, DetectError> {
        let step = self.counters.opt_steps;
        let (i, ni) = (f.i, f.ni);
        let objective = Objective::new(&self.anchors, &self.gains, targets, self.plan.imgsz, st.w);
        let replay = |probe: &mut Probe| {
            let mut tap = probe.replay_tap(step);
            let (l, _) = objective.loss(&self.model, x.clone(), &mut tap);
            let lv = l.clone().into_scalar::<f64>();
            let g = l.backward();
            probe.after_backward(step, st.epoch, lv, tap, &self.model, &g)
        };
        let producer = match &self.replicas {
            Some(g) if g.rank() > 0 => None,
            _ => localise(&mut self.probe, f.pending, replay, &self.model, f.lr)?,
        };
        // undo: last good parameters and optimizer state, no accumulated gradients
        (self.model, self.optim) = self.good.restore();
        self.acc = GradientsAccumulator::new();
        let at = format!("epoch {} iteration {i}", st.epoch + 1);
        Ok(
            match self.recovery.failed(f.what, ni, &at, producer, f.lr) {
                Decision::Stop(reason) => {
                    self.hist.stopped = Some(reason);
                    Flow::Stop
                }
                Decision::Recover(event) => {
                    self.counters.lr_scale *= 0.5;
                    (self.on)(TrainEvent::Warning(format!(
                        "non-finite {} at {at} (|g| = {}): step undone, learning rate halved",
                        f.what, f.gnorm
                    )));
                    self.hist.recoveries.push(event);
                    Flow::Continue
                }
            },
        )
    }

    /// The EMA model on the validation set (eval mode, BatchNorm on its running statistics);
    /// `w`: the ProgLoss weight of the reported losses.
    fn validate(&self, w: f64) -> Result<ValResult, DetectError> {
        let plain = self.device.clone().inner();
        let (imgsz, batch, nc) = (self.plan.imgsz, self.plan.batch, self.names.len());
        let (model, settings) = (self.ema.model(&self.model), &self.settings);
        Ok(validate(
            &model,
            &self.val,
            imgsz,
            batch * 2,
            nc,
            settings,
            w,
            &plain,
        )?)
    }

    /// The run's evidence so far: the divergence rules on its losses and BatchNorm statistics,
    /// then the gradient diagnosis (diverged first when they fired), remedies in `train`'s keys.
    /// A divergence stays until an epoch validates better than the best before it: a model
    /// that blew up and then collapsed (no box assigned, losses near 0, mAP 0) has not recovered.
    fn judge(
        &mut self,
        epoch: usize,
        val_loss: Option<f64>,
        train_loss: f64,
        fitness: f64,
        unassigned: bool,
    ) {
        let now = divergence(&RunTrace {
            step_loss: &self.hist.step_loss,
            last_val_loss: val_loss,
            last_train_loss: Some(train_loss),
            bn_var_max: bn_var_max(&self.model),
            unassigned,
        });
        match self.diverged_at {
            _ if !now.is_empty() => {
                self.diverged_at
                    .get_or_insert((epoch + 1, self.counters.best.max(0.0)));
                self.diverged = now;
            }
            Some((e, best)) if fitness.is_nan() || fitness <= best => {
                let last = format!(
                    "the run diverged at epoch {e} and has not recovered: mAP50-95 {fitness:.4} now, {best:.4} before it"
                );
                if self.diverged.last() != Some(&last) {
                    self.diverged
                        .retain(|l| !l.starts_with("the run diverged at epoch"));
                    self.diverged.push(last);
                }
            }
            _ => {
                self.diverged_at = None;
                self.diverged.clear();
            }
        }
        let run = remedies::RunFacts {
            args: &self.args,
            lr: remedies::LrForm::of(&self.plan.choice(), &self.args),
            diverged: &self.diverged,
            assigned: self.assigned,
        };
        self.diagnosis = remedies::diagnose_run(self.probe.records(), &run);
    }

    /// last.safetensors, best.safetensors when `fitness` is the best so far, and every
    /// `save_period` epochs epochN.safetensors (EMA weights): copied out here, made into a file
    /// and written behind the training.
    fn save_weights(
        &mut self,
        weights: &Path,
        epoch: usize,
        fitness: f64,
    ) -> Result<(), DetectError> {
        let tensors = crate::yolo::weights::named_tensors(&self.ema.model(&self.model));
        let mut names = vec![weights.join("last.safetensors")];
        if fitness > self.counters.best {
            self.counters.best = fitness;
            self.counters.best_epoch = epoch + 1;
            names.push(weights.join("best.safetensors"));
        }
        let period = self.args.save_period;
        if period > 0 && (epoch + 1).is_multiple_of(period as usize) {
            names.push(weights.join(format!("epoch{}.safetensors", epoch + 1)));
        }
        // one set of bytes for every name, written one file after another
        self.writes.write(move || {
            let bytes = crate::yolo::weights::safetensors_bytes(&tensors, &[], None, &names[0])?;
            for path in &names {
                crate::yolo::weights::write_file(&bytes, path)?;
            }
            Ok(())
        });
        Ok(())
    }

    /// The optimizer step on the accumulated gradients (clipped on the way in by `clip`), the
    /// EMA, the probe's update ratios, and the new last good state.
    fn optimizer_step(
        &mut self,
        g: Gathered,
        clip: Clip,
        lrs: [f64; 3],
        momentum: f64,
        ni: usize,
        pending: Option<crate::probe::Pending>,
    ) -> Result<(), DetectError> {
        // the clone shares the tensors; the old handles are dropped when the new model is in place
        let measured;
        (self.model, measured) = self.optim.apply_measured(
            self.model.clone(),
            g,
            GroupLr {
                lr: lrs,
                momentum,
                weight_decay: self.plan.weight_decay,
            },
            clip,
            Some(&mut self.ema),
        );
        self.counters.last_opt = ni as i64;
        self.counters.opt_steps += 1;
        self.probe.after_update(pending, &measured, lrs[0])?;
        self.good = GoodState::capture(&self.model, &self.optim);
        Ok(())
    }

    /// Hands the resume state to the writer, after the epoch's other files: the epoch's commit
    /// point. A run killed before it is written resumes at this
    /// epoch's start, cutting this epoch's results.csv row and probe records; the gradients
    /// accumulated since the last optimizer step go with it (taken out and put back unchanged).
    fn commit(&mut self, weights: &Path, epoch: usize) -> Result<(), DetectError> {
        self.counters.epoch = epoch + 1;
        self.counters.ema_updates = self.ema.updates;
        let pending = self.acc.grads();
        let ledger = resume::Ledger {
            history: std::mem::take(&mut self.hist),
            diverged: self.diverged.clone(),
            diverged_at: self.diverged_at,
            nan_in_a_row: self.recovery.in_a_row(),
            dead_windows: self.probe.dead_windows(),
            assigned: self.assigned,
        };
        let file = resume::prepare(
            weights,
            &resume::State {
                model: &self.model,
                ema: &self.ema,
                optim: &self.optim,
                pending: &pending,
                counters: &self.counters,
                ledger: &ledger,
            },
        );
        self.hist = ledger.history;
        self.acc.accumulate(&self.model, pending);
        self.writes.write(move || {
            file.write()?;
            crate::crash::point("epoch");
            Ok(())
        });
        Ok(())
    }

    /// The epoch's end on rank 0 (or the only process); every replica then goes on or stops as
    /// rank 0 decided.
    fn epoch_end(&mut self, st: EpochState) -> Result<Flow, DetectError> {
        let Some(rank) = self.replicas.as_ref().map(Group::rank) else {
            return self.end_epoch(st);
        };
        let flow = if rank == 0 {
            self.end_epoch(st)?
        } else {
            Flow::Continue
        };
        let mut stop = [matches!(flow, Flow::Stop) as u8];
        if let Some(g) = &mut self.replicas {
            g.broadcast(&mut stop)?;
        }
        Ok(if stop[0] == 1 {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }

    /// Validation (every epoch, or the last with `val=false`), the diagnosis so far, `last` and
    /// `best` checkpoints, the resume state, the results.csv row and the epoch's plots.
    fn end_epoch(&mut self, st: EpochState) -> Result<Flow, DetectError> {
        // the previous epoch's files, written during this one, before this epoch's
        self.writes.wait()?;
        let (epoch, args) = (st.epoch, &self.args);
        let train_items = st.mean.scaled(1.0 / st.seen.max(1) as f64);
        let validated = args.val || epoch + 1 == args.epochs;
        self.assigned.per_level = train_items.assigned;
        let v = if validated {
            self.validate(st.w)?
        } else {
            ValResult::skipped(self.val.len(), self.names.len())
        };
        let v = Arc::new(v);
        // the epoch had boxes to learn from and the assigner gave none of them an anchor
        let unassigned = st.targets > 0 && train_items.assigned.iter().all(|&a| a == 0.0);
        self.judge(
            epoch,
            validated.then_some(v.losses.total()),
            train_items.total(),
            v.metrics.map50_95,
            unassigned,
        );
        let weights = self.dir.join("weights");
        self.save_weights(&weights, epoch, v.metrics.map50_95)?;
        let lr_now = self.plan.lr0 * st.lf * self.counters.lr_scale;
        let time = self.t0.elapsed().as_secs_f64();
        let line = self
            .csv
            .row(epoch + 1, time, &train_items, &v, [lr_now; 3])?;
        self.writes.write(move || {
            line.write()?;
            crate::crash::point("csv");
            Ok(())
        });
        self.hist.epochs.push(EpochStats {
            epoch,
            train_loss: train_items.total(),
            val_loss: v.losses.total(),
            val_metric: v.metrics.map50_95,
        });
        self.commit(&weights, epoch)?;
        let args = &self.args;
        (self.on)(TrainEvent::Epoch {
            epoch,
            val: &v,
            names: &self.names,
            diagnosis: self.diagnosis.as_ref(),
        });
        if args.plots {
            runs::plots::epoch_report(
                &self.dir,
                args,
                &self.csv,
                &self.hist,
                self.probe.records(),
                self.diagnosis.as_ref(),
                &self.val,
                &v,
                &self.names,
                &mut self.pictures,
            )?;
        }
        self.last_val = Some(v);
        let since = epoch + 1 - self.counters.best_epoch.min(epoch + 1);
        // an epoch without validation (val=false) has no fitness to judge, as in Ultralytics
        if validated && args.patience > 0 && since >= args.patience && epoch + 1 < args.epochs {
            (self.on)(TrainEvent::Info(format!(
                "stopping early: mAP50-95 has not improved for {since} epochs (best {:.4} after epoch {}, saved as weights/best.safetensors); patience=0 trains every epoch",
                self.counters.best.max(0.0),
                self.counters.best_epoch
            )));
            return Ok(Flow::Stop);
        }
        Ok(Flow::Continue)
    }
}

/// The largest BatchNorm running variance of `model` (non-finite first), with its name.
fn bn_var_max(model: &Yolo) -> Option<(String, f64)> {
    crate::yolo::weights::named_tensors_where(&model.valid(), |name| name.ends_with("running_var"))
        .into_iter()
        .map(|(name, _, v)| {
            let m = v.iter().fold(0f64, |m, &x| {
                if x.is_finite() && m.is_finite() {
                    m.max(x as f64)
                } else {
                    f64::INFINITY
                }
            });
            (name, m)
        })
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

/// The training objective of one batch: both heads' losses, ProgLoss-weighted.
struct Objective<'a> {
    targets: &'a [Vec<(usize, Xyxy)>],
    anchors: &'a Anchors,
    imgsz: usize,
    w: f64,
    gains: &'a LossGains,
}

impl<'a> Objective<'a> {
    fn new(
        anchors: &'a Anchors,
        gains: &'a LossGains,
        targets: &'a [Vec<(usize, Xyxy)>],
        imgsz: usize,
        w: f64,
    ) -> Self {
        Objective {
            targets,
            anchors,
            imgsz,
            w,
            gains,
        }
    }

    fn loss(&self, model: &Yolo, x: Tensor<4>, tap: &mut Tap) -> (Tensor<1>, LossItems) {
        let out = model.forward(x, tap);
        yolo_loss(
            out.heads.one2many,
            out.heads.one2one,
            self.targets,
            self.anchors,
            (self.imgsz, self.imgsz),
            self.w,
            self.gains,
        )
    }
}
