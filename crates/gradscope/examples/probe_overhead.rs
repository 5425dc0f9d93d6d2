//! Benchmark (not a test): the probe's cost per training step, in one run.
//!
//! The engine benchmark's MLP (784 → 18×256 → 10, sigmoid, batch 128) trained for one epoch of
//! 50 steps with the probe off, on every step, every 10th and every 50th step; the settings are
//! interleaved over several rounds so that machine noise hits them alike.
//!
//!     cargo run --release --example probe_overhead [rounds]

use std::time::Instant;

use gradscope::activation::Activation;
use gradscope::data::Dataset;
use gradscope::diagnose::evidence::median;
use gradscope::nn::init::{standard_normal, Init};
use gradscope::nn::mlp::MlpConfig;
use gradscope::probe::{Probe, ProbeConfig};
use gradscope::train::{train_classifier, OptimizerKind, TrainConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn main() {
    gradscope::tune_allocator();
    gradscope::on_workers(run);
}

fn run() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut rng = StdRng::seed_from_u64(0);
    let n = 128 * 50;
    let data = Dataset {
        name: "gaussian".into(),
        x: (0..n * 784)
            .map(|_| standard_normal(&mut rng) as f32)
            .collect(),
        y: (0..n).map(|i| i % 10).collect(),
        features: 784,
        classes: 10,
    };
    let val = data.take(1);
    let mut cfg = MlpConfig::new(784, 10);
    cfg.depth = 20;
    cfg.width = 256;
    cfg.act = Activation::Sigmoid;
    cfg.init = Init::Default;
    let train = TrainConfig {
        optimizer: OptimizerKind::Sgd,
        lr: 0.01,
        batch: 128,
        epochs: 1,
        ..TrainConfig::default()
    };
    let dev = gradscope::device();
    let settings = [
        (
            "probe=false",
            ProbeConfig {
                enabled: false,
                ..ProbeConfig::default()
            },
        ),
        (
            "probe_every=1",
            ProbeConfig {
                every: 1,
                ..ProbeConfig::default()
            },
        ),
        (
            "probe_every=10",
            ProbeConfig {
                every: 10,
                ..ProbeConfig::default()
            },
        ),
        (
            "probe_every=50",
            ProbeConfig {
                every: 50,
                ..ProbeConfig::default()
            },
        ),
    ];
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); settings.len()];
    for round in 0..=rounds {
        for (i, (_, pc)) in settings.iter().enumerate() {
            let mut probe = Probe::new(pc.clone());
            let model = cfg.init(&dev);
            let t0 = Instant::now();
            let _ = train_classifier(model, &data, &val, &train, &mut probe, &dev, &mut |_| {})
                .unwrap();
            let per_step = t0.elapsed().as_secs_f64() * 1e3 / (n / 128) as f64;
            if round > 0 {
                times[i].push(per_step); // round 0 warms up
            }
        }
    }
    let base = median(times[0].clone());
    println!(
        "20-layer MLP (784→256×18→10, sigmoid, batch 128), {rounds} interleaved rounds of 50 steps"
    );
    println!("{:<16} {:>12} {:>8}", "setting", "ms/step", "ratio");
    for (i, (name, _)) in settings.iter().enumerate() {
        let m = median(times[i].clone());
        println!("{name:<16} {m:>12.2} {:>8.3}", m / base);
    }
}
