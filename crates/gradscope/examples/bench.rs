//! Training-step and inference benchmarks of gradscope, one per process, for `bench/run.sh`,
//! which runs the same shapes and maths in PyTorch (`bench/torch_bench.py`) and prints ratios.
//!
//! `cargo run --release -p gradscope --example bench -- <name> [timed steps]`; prints one JSON
//! line: engine, bench, median and minimum ms per step, peak RSS (VmHWM), first loss.
//!
//! - `mlp` / `mlp_probe`: 784→256, 18×256→256, 256→10, sigmoid, batch 128, cross-entropy, SGD
//!   lr 0.01 — without / with the gradient probe on every step;
//! - `conv`: 8×3×160×160; Conv s2 3→16, Conv s2 16→32, Bottleneck 32, Conv s2 32→64,
//!   Bottleneck 64 (every conv bias-free + BatchNorm + SiLU), global average pool, Linear 64→10,
//!   cross-entropy, SGD lr 0.01;
//! - `lstm`: 32×100×8, LSTM hidden 128, Linear 128→1 on the last h, MSE, SGD lr 0.01;
//! - `yolo_step` / `yolo_step_probe`: YOLO26n (nc 80), batch 4 at 640, the two-branch loss,
//!   backward, clip at norm 10, AdamW, EMA — without / with the gradient probe;
//! - `yolo_infer`: YOLO26n at batch 1, 640, forward and end-to-end top-k;
//! - `mlp_probe_alt`, `conv_probe_alt`, `lstm_probe_alt`, `yolo_probe_alt`: the probe's cost as
//!   a ratio that machine noise hardly moves: the probe on every second step, each probed step
//!   timed against the unprobed step right after it; prints the median and range of those ratios
//!   and each kind's median ms.
//! - `conv_census`: one YOLO26n training step (as `yolo_phases`) with the convolutions' census
//!   on (`gradscope::kernels::census`): per kernel its time, its calls and the speed-up its
//!   loops' splits allow at most on 2, 4, 8 and 16 threads — run at one thread, a bound on how
//!   the step's convolutions can scale on a bigger machine, measured on this one.
//!
//! `BENCH_BATCH` and `BENCH_IMGSZ` set the YOLO training benchmarks' batch and input side
//! (default 4 at 640).

use std::time::Instant;

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::GradientsParams;
use burn::tensor::{Int, Tensor, TensorData};
use gradscope::activation::Activation;
use gradscope::detect::objective::assign::Anchors;
use gradscope::detect::objective::loss::{yolo_loss, LossGains};
use gradscope::detect::optimize::ema::Ema;
use gradscope::detect::optimize::optimizer::{GroupLr, GroupOptimizer};
use gradscope::diagnose::evidence::median;
use gradscope::kernels::census;
use gradscope::nn::init::Init;
use gradscope::nn::mlp::MlpConfig;
use gradscope::nn::recurrent::{CellKind, RecurrentConfig};
use gradscope::probe::params::Measured;
use gradscope::probe::{Probe, ProbeConfig, Tap};
use gradscope::train::clip::on_update;
use gradscope::train::loss::cross_entropy;
use gradscope::train::optim::Clip;
use gradscope::train::{Optimizer, OptimizerKind};
use gradscope::yolo::blocks::{Bottleneck, Conv, Switches};
use gradscope::yolo::model::YoloConfig;
use gradscope::yolo::postprocess::end2end;

fn rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Deterministic values in [lo, hi): the same formula as bench/torch_bench.py.
fn det(n: usize, lo: f32, hi: f32, salt: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let mut z = (i ^ (salt << 40)).wrapping_add(0x9E3779B97F4A7C15);
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            z ^= z >> 31;
            lo + (hi - lo) * ((z >> 40) as f32 / 16_777_216.0)
        })
        .collect()
}

/// Runs `warmup` + `timed` steps of `step` (which returns the loss); median and min ms.
fn time(warmup: usize, timed: usize, mut step: impl FnMut() -> f64) -> (f64, f64, f64) {
    let loss0 = step();
    for _ in 1..warmup {
        step();
    }
    let ms: Vec<f64> = (0..timed)
        .map(|_| {
            let t = Instant::now();
            step();
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let min = ms.iter().copied().fold(f64::INFINITY, f64::min);
    (median(ms), min, loss0)
}

/// For the `_alt` benchmarks: steps alternate probed (even) and unprobed (odd); each pair's
/// ratio probed ÷ unprobed. Returns the median ratio, its range, and the median ms of each.
fn time_alternating(warmup: usize, pairs: usize, mut step: impl FnMut() -> f64) -> [f64; 5] {
    for _ in 0..2 * warmup {
        step();
    }
    let mut timed = || {
        let t = Instant::now();
        step();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (on, off): (Vec<f64>, Vec<f64>) = (0..pairs).map(|_| (timed(), timed())).unzip();
    let ratios: Vec<f64> = on.iter().zip(&off).map(|(a, b)| a / b).collect();
    let low = ratios.iter().copied().fold(f64::INFINITY, f64::min);
    let high = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    [median(ratios), low, high, median(on), median(off)]
}

/// Times `step` as `name` asks: plain (median, min, first loss) or alternating (see
/// [`time_alternating`]).
fn measure(name: &str, warmup: usize, timed: usize, step: impl FnMut() -> f64) -> Timing {
    if name.ends_with("_alt") {
        Timing::Alternating(time_alternating(warmup, timed, step))
    } else {
        let (median, min, loss0) = time(warmup, timed, step);
        Timing::Plain(median, min, loss0)
    }
}

enum Timing {
    Plain(f64, f64, f64),
    Alternating([f64; 5]),
}

/// The probe's settings for benchmark `name`: off, on every step (`_probe`), or on every
/// second step (`_alt`).
fn probe_for(name: &str) -> ProbeConfig {
    ProbeConfig {
        enabled: name.ends_with("_probe") || name.ends_with("_alt"),
        every: if name.ends_with("_alt") { 2 } else { 1 },
        ..ProbeConfig::default()
    }
}

#[derive(Module, Debug)]
struct ConvNet {
    c1: Conv,
    c2: Conv,
    b2: Bottleneck,
    c3: Conv,
    b3: Bottleneck,
    fc: Linear,
}

impl ConvNet {
    /// The convolutional trunk, each block's output a probe point as the YOLO model's layers are.
    fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> Tensor<4> {
        let h = tap.point("c1", "Conv", None, None, self.c1.forward(x));
        let h = tap.point("c2", "Conv", None, None, self.c2.forward(h));
        let h = tap.point("b2", "Bottleneck", None, None, self.b2.forward(h));
        let h = tap.point("c3", "Conv", None, None, self.c3.forward(h));
        tap.point("b3", "Bottleneck", None, None, self.b3.forward(h))
    }
}

/// YOLO26n (nc 80, seed 0), a fixed batch of 4 images at 640 with three boxes each, AdamW, EMA.
struct YoloBench {
    model: gradscope::yolo::model::Yolo,
    opt: GroupOptimizer,
    ema: Ema,
    x: Tensor<4>,
    targets: Vec<Vec<(usize, [f32; 4])>>,
    anchors: Anchors,
    /// The input side.
    size: usize,
}

/// `BENCH_IMGSZ`: the YOLO training benchmarks' input side (default 640; a multiple of 32).
/// `BENCH_BATCH=2 BENCH_IMGSZ=256`: the shapes of the default `gradscope train`.
fn yolo_size() -> usize {
    std::env::var("BENCH_IMGSZ")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|s: &usize| *s >= 32 && s.is_multiple_of(32))
        .unwrap_or(640)
}

impl YoloBench {
    fn new() -> Self {
        let device = gradscope::device();
        let cfg = YoloConfig::from_name("yolo26n.yaml", 80).expect("built in");
        device.seed(0);
        let model = cfg.init(&device);
        let (s, b) = (yolo_size(), yolo_batch());
        // the boxes below are for 640
        let f = s as f32 / 640.0;
        let x = Tensor::<4>::from_data(
            TensorData::new(det(b * 3 * s * s, 0.0, 1.0, 5), [b, 3, s, s]),
            &device,
        );
        // three boxes per image, the same in bench/torch_bench.py
        let targets = (0..b)
            .map(|i| {
                (0..3)
                    .map(|k| {
                        let o = (60 * k + 40 * (i % 4)) as f32;
                        let b = [o + 20.0, o + 30.0, o + 140.0, o + 200.0];
                        ((i * 3 + k) % 80, b.map(|v| v * f))
                    })
                    .collect()
            })
            .collect();
        YoloBench {
            ema: Ema::new(&model),
            model,
            opt: GroupOptimizer::new(true),
            x,
            targets,
            anchors: Anchors::new(s, s, &[8, 16, 32]),
            size: s,
        }
    }

    fn loss(&self, heads: gradscope::yolo::head::HeadOutput) -> Tensor<1> {
        let s = self.size;
        yolo_loss(
            heads.one2many,
            heads.one2one,
            &self.targets,
            &self.anchors,
            (s, s),
            0.8,
            &LossGains::default(),
        )
        .0
    }

    /// Clip at norm 10, AdamW (lr 0.001, decay 5e-4), EMA, as the trainer does them: the
    /// gradient norm read, the clipping inside the optimizer's pass.
    /// `measure`: a probed step, whose update pass also measures the weights for the probe.
    fn update(&mut self, grads: burn::tensor::Gradients, measure: bool) -> Vec<Measured> {
        let g = GradientsParams::from_grads(grads, &self.model);
        let g = if measure {
            GroupOptimizer::gather_named(&self.model, g)
        } else {
            GroupOptimizer::gather(&self.model, g)
        };
        let clip = on_update(Some(g.global_norm()), 10.0, None);
        let lr = GroupLr {
            lr: [0.001; 3],
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let model = self.model.clone();
        let measured;
        (self.model, measured) = self
            .opt
            .apply_measured(model, g, lr, clip, Some(&mut self.ema));
        measured
    }
}

/// The labs' loop after the forward (the MLP, conv and LSTM benchmarks): backward, the probe's
/// reading of it, one SGD pass at lr 0.01 that also measures what the probe reads of the weights
/// on a probed step, then the record. Returns the loss.
fn labs_step<M: Module + Clone>(
    m: &mut M,
    opt: &mut Optimizer,
    probe: &mut Probe,
    step: &mut usize,
    tap: Tap,
    loss: Tensor<1>,
) -> f64 {
    let v = loss.clone().into_scalar::<f64>();
    let grads = loss.backward();
    let pending = probe.after_backward_for_update(*step, 0, v, tap, m, &grads);
    let g = GradientsParams::from_grads(grads, m);
    let measured;
    (*m, measured) = opt.step_measured(0.01, m.clone(), g, Clip::NONE, pending.is_some());
    let _ = probe.after_update(pending, &measured, 0.01);
    *step += 1;
    v
}

fn labels(n: usize, classes: i64) -> Tensor<1, Int> {
    let y: Vec<i64> = (0..n as i64).map(|i| (i * 7 + 3) % classes).collect();
    Tensor::from_data(TensorData::new(y, [n]), &gradscope::device())
}

/// `BENCH_BATCH`: the YOLO training benchmarks' batch (default 4).
fn yolo_batch() -> usize {
    std::env::var("BENCH_BATCH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

fn main() {
    gradscope::tune_allocator();
    // BENCH_DEVICE=0 (a binary built with --features gpu): the benchmarks on that device
    if let Ok(v) = std::env::var("BENCH_DEVICE") {
        let chosen = gradscope::devices::DeviceSpec::parse(&v)
            .map_err(|e| e.to_string())
            .and_then(|spec| {
                gradscope::devices::select(&spec).map_err(|e| format!("{e}: {}", e.source))
            });
        if let Err(e) = chosen {
            eprintln!("BENCH_DEVICE={v}: {e}");
            std::process::exit(2);
        }
    }
    // BENCH_OUTSIDE_POOL=1: issue the work from the main thread, as before `on_workers`
    if std::env::var_os("BENCH_OUTSIDE_POOL").is_some() {
        run()
    } else {
        gradscope::on_workers(run)
    }
}

/// The MLP benchmark's model (seeded), input batch and labels.
fn mlp_bench(device: &gradscope::Device) -> (gradscope::nn::mlp::Mlp, Tensor<2>, Tensor<1, Int>) {
    device.seed(0);
    let mut cfg = MlpConfig::new(784, 10);
    cfg.depth = 20;
    cfg.width = 256;
    cfg.act = Activation::Sigmoid;
    cfg.init = Init::Default;
    let x = Tensor::<2>::from_data(
        TensorData::new(det(128 * 784, 0.0, 1.0, 1), [128, 784]),
        device,
    );
    (cfg.init(device), x, labels(128, 10))
}

fn run() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let name = args.first().map(String::as_str).unwrap_or("mlp");
    let timed: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let device = gradscope::device();
    // the labs' SGD: one pass per parameter (with the gradient norm a training loop needs)
    let sgd = || OptimizerKind::Sgd.build();
    let timing = match name {
        "mlp" | "mlp_probe" | "mlp_probe_alt" => {
            let (mut m, x, y) = mlp_bench(&device);
            let mut opt = sgd();
            let mut probe = Probe::new(probe_for(name));
            let mut step = 0;
            measure(name, 3, timed, || {
                let mut tap = probe.tap(step);
                let loss = cross_entropy(m.forward(x.clone(), &mut tap), y.clone()).mean();
                labs_step(&mut m, &mut opt, &mut probe, &mut step, tap, loss)
            })
        }
        "mlp_phases" => {
            let (mut m, x, y) = mlp_bench(&device);
            let mut opt = sgd();
            let mut acc = [0f64; 4];
            for _ in 0..timed {
                let t0 = Instant::now();
                let loss = cross_entropy(m.forward(x.clone(), &mut Tap::off()), y.clone()).mean();
                let _ = loss.clone().into_scalar::<f64>();
                let t1 = Instant::now();
                let grads = loss.backward();
                let t2 = Instant::now();
                let g = GradientsParams::from_grads(grads, &m);
                let t3 = Instant::now();
                m = opt.step(0.01, m.clone(), g);
                let t4 = Instant::now();
                for (a, d) in acc.iter_mut().zip([t1 - t0, t2 - t1, t3 - t2, t4 - t3]) {
                    *a += d.as_secs_f64() * 1e3 / timed as f64;
                }
            }
            println!(
                "forward {:.2} backward {:.2} from_grads {:.2} step {:.2}",
                acc[0], acc[1], acc[2], acc[3]
            );
            return;
        }
        "conv" | "conv_probe_alt" => {
            device.seed(0);
            let sw = Switches::default();
            let mut m = ConvNet {
                c1: Conv::new(3, 16, 3, 2, 1, true, sw, &device),
                c2: Conv::new(16, 32, 3, 2, 1, true, sw, &device),
                b2: Bottleneck::new(32, 32, 1.0, 3, sw, &device),
                c3: Conv::new(32, 64, 3, 2, 1, true, sw, &device),
                b3: Bottleneck::new(64, 64, 1.0, 3, sw, &device),
                fc: LinearConfig::new(64, 10).init(&device),
            };
            let mut opt = sgd();
            let x = Tensor::<4>::from_data(
                TensorData::new(det(8 * 3 * 160 * 160, 0.0, 1.0, 2), [8, 3, 160, 160]),
                &device,
            );
            let y = labels(8, 10);
            let mut probe = Probe::new(probe_for(name));
            let mut step = 0;
            measure(name, 3, timed, || {
                let mut tap = probe.tap(step);
                let h = m.forward(x.clone(), &mut tap);
                let [b, c, _, _] = h.dims();
                let pooled = h.reshape([b, c, 20 * 20]).mean_dim(2).reshape([b, c]);
                let loss = cross_entropy(m.fc.forward(pooled), y.clone()).mean();
                labs_step(&mut m, &mut opt, &mut probe, &mut step, tap, loss)
            })
        }
        "lstm" | "lstm_probe_alt" => {
            let mut m = RecurrentConfig::new(CellKind::Lstm, 8, 128, 1).init(&device);
            let mut opt = sgd();
            let x = Tensor::<3>::from_data(
                TensorData::new(det(32 * 100 * 8, -1.0, 1.0, 3), [32, 100, 8]),
                &device,
            );
            let y =
                Tensor::<2>::from_data(TensorData::new(det(32, -1.0, 1.0, 4), [32, 1]), &device);
            let mut probe = Probe::new(probe_for(name));
            let mut step = 0;
            measure(name, 3, timed, || {
                let mut tap = probe.tap(step);
                let out = m.forward_last(x.clone(), &mut tap);
                let loss = (out - y.clone()).powf_scalar(2.0).mean();
                labs_step(&mut m, &mut opt, &mut probe, &mut step, tap, loss)
            })
        }
        "yolo_step" | "yolo_step_probe" | "yolo_probe_alt" => {
            let mut y = YoloBench::new();
            let mut probe = Probe::new(probe_for(name));
            let mut step = 0;
            measure(name, 2, timed, || {
                let mut tap = probe.tap(step);
                let out = y.model.forward(y.x.clone(), &mut tap);
                let loss = y.loss(out.heads);
                let v = loss.clone().into_scalar::<f64>();
                let grads = loss.backward();
                // as the trainer does when a step sees one batch's gradient: the parameters'
                // norms from the update's pass
                let pending = probe.after_backward_for_update(step, 0, v, tap, &y.model, &grads);
                let measured = y.update(grads, pending.is_some());
                let _ = probe.after_update(pending, &measured, 0.001);
                step += 1;
                v
            })
        }
        "conv_census" => {
            let mut y = YoloBench::new();
            let step = |y: &mut YoloBench| {
                let out = y.model.forward(y.x.clone(), &mut Tap::off());
                let grads = y.loss(out.heads).backward();
                y.update(grads, false);
            };
            step(&mut y);
            let t = Instant::now();
            census::start();
            step(&mut y);
            let calls = census::stop();
            let step_ms = t.elapsed().as_secs_f64() * 1e3;
            let threads = [2, 4, 8, 16];
            let summary = |calls: &[census::Call]| {
                let ms: f64 = calls.iter().map(|c| c.secs * 1e3).sum();
                // the time in loops cut into fewer tasks than 16 threads
                let few: f64 = calls
                    .iter()
                    .filter(|c| c.tasks < 16)
                    .map(|c| c.secs * 1e3)
                    .sum();
                let bounds: Vec<String> = threads
                    .iter()
                    .map(|&p| format!("\"{p}\": {:.2}", census::ceiling(calls, p)))
                    .collect();
                format!(
                    "{{\"calls\": {}, \"ms\": {ms:.1}, \"ms_under_16_tasks\": {few:.1}, \"ceiling\": {{{}}}}}",
                    calls.len(),
                    bounds.join(", ")
                )
            };
            let kinds: Vec<String> = ["conv_forward", "conv_input_grad", "conv_weight_grad"]
                .iter()
                .map(|k| {
                    let of: Vec<census::Call> =
                        calls.iter().filter(|c| c.kind == *k).cloned().collect();
                    format!("\"{k}\": {}", summary(&of))
                })
                .collect();
            // the longest loops of fewer tasks than 16 threads, on stderr
            let mut few: Vec<&census::Call> = calls.iter().filter(|c| c.tasks < 16).collect();
            few.sort_by(|a, b| b.secs.total_cmp(&a.secs));
            for c in few.iter().take(10) {
                eprintln!(
                    "{:>7.2} ms {:>3} tasks  {:<16} {}",
                    c.secs * 1e3,
                    c.tasks,
                    c.kind,
                    c.shape
                );
            }
            println!(
                "{{\"engine\": \"gradscope\", \"bench\": \"conv_census\", \"threads\": {}, \"step_ms\": {step_ms:.1}, \"all\": {}, {}}}",
                rayon::current_num_threads(),
                summary(&calls),
                kinds.join(", ")
            );
            return;
        }
        "yolo_phases" => {
            // where a YOLO26n training step spends its time (batch 4 at 640, probe off)
            let mut y = YoloBench::new();
            // and, from the other workers' idle time, the serial fraction of each phase
            let mut acc = [0f64; 4];
            let mut idle = [0f64; 4];
            let n = timed.max(1);
            let mark = || (Instant::now(), gradscope::idle_seconds());
            for k in 0..n + 1 {
                let m0 = mark();
                let out = y.model.forward(y.x.clone(), &mut Tap::off());
                // sync (forward done on a device) with one value: a whole copy would add a serial
                // pass to the forward that a training step does not have
                let one = out
                    .heads
                    .one2many
                    .clone()
                    .detach()
                    .slice([0..1, 0..1, 0..1]);
                drop(one.into_data());
                let m1 = mark();
                let loss = y.loss(out.heads);
                let _ = loss.clone().into_scalar::<f64>();
                let m2 = mark();
                let grads = loss.backward();
                let m3 = mark();
                y.update(grads, false);
                let m4 = mark();
                if k > 0 {
                    for (i, (a, b)) in [(m0, m1), (m1, m2), (m2, m3), (m3, m4)]
                        .into_iter()
                        .enumerate()
                    {
                        acc[i] += (b.0 - a.0).as_secs_f64() * 1e3 / n as f64;
                        idle[i] += (b.1 - a.1) * 1e3 / n as f64;
                    }
                }
            }
            let p = rayon::current_num_threads();
            let e = |wall: f64, idle: f64| gradscope::serial_fraction(wall, idle, p);
            let (wall, idle_all) = (acc.iter().sum::<f64>(), idle.iter().sum::<f64>());
            println!(
                "{{\"engine\": \"gradscope\", \"bench\": \"yolo_phases\", \"threads\": {p}, \"forward_ms\": {:.1}, \"loss_ms\": {:.1}, \"backward_ms\": {:.1}, \"clip_optimizer_ema_ms\": {:.1}, \"serial\": {{\"forward\": {:.3}, \"loss\": {:.3}, \"backward\": {:.3}, \"clip_optimizer_ema\": {:.3}, \"step\": {:.3}}}}}",
                acc[0],
                acc[1],
                acc[2],
                acc[3],
                e(acc[0], idle[0]),
                e(acc[1], idle[1]),
                e(acc[2], idle[2]),
                e(acc[3], idle[3]),
                e(wall, idle_all)
            );
            return;
        }
        "yolo_infer" => {
            let cfg = YoloConfig::from_name("yolo26n.yaml", 80).expect("built in");
            let plain = device.clone().inner();
            plain.seed(0);
            let model = cfg.init(&plain).valid();
            let s = 640;
            let x = Tensor::<4>::from_data(
                TensorData::new(det(3 * s * s, 0.0, 1.0, 6), [1, 3, s, s]),
                &plain,
            );
            let anchors = Anchors::new(s, s, &[8, 16, 32]);
            measure(name, 3, timed, || {
                let out = model.forward(x.clone(), &mut Tap::off());
                let raw: Vec<f32> = out
                    .heads
                    .one2one
                    .into_data()
                    .convert::<f32>()
                    .try_into_vec::<f32>()
                    .unwrap_or_default();
                end2end(&raw, 80, &anchors.levels, 300).len() as f64
            })
        }
        other => {
            eprintln!(
                "unknown bench '{other}': mlp, mlp_probe, mlp_probe_alt, mlp_phases, conv, lstm, yolo_step, yolo_step_probe, yolo_probe_alt, yolo_phases, conv_census, yolo_infer"
            );
            std::process::exit(2);
        }
    };
    match timing {
        Timing::Plain(median, min, loss0) => println!(
            "{{\"engine\": \"gradscope\", \"bench\": \"{name}\", \"ms\": {median:.3}, \"ms_min\": {min:.3}, \"rss_mb\": {:.1}, \"loss0\": {loss0:.7}}}",
            rss_mb()
        ),
        Timing::Alternating([ratio, lo, hi, on, off]) => println!(
            "{{\"engine\": \"gradscope\", \"bench\": \"{name}\", \"ratio\": {ratio:.4}, \"ratio_min\": {lo:.4}, \"ratio_max\": {hi:.4}, \"probed_ms\": {on:.3}, \"plain_ms\": {off:.3}}}"
        ),
    }
}
