//! Probe a model you wrote yourself, the ordinary Burn way, and let gradscope say what its
//! gradients do.
//!
//!     cargo run --release --example probe_your_model
//!
//! What the model has to do, and nothing more:
//! 1. its `forward` takes a `&mut Tap` next to the input;
//! 2. every layer's output goes through `h = tap.point(name, block, act, pre, h)`, where `name`
//!    is the module path its parameters live under (`layers.3` owns `layers.3.weight`: update
//!    ratios are attributed by that prefix), `block` a short kind shown in reports (`dense`,
//!    `conv`; `head` for the output layer, which the diagnosis compares the others with), `act`
//!    and `pre` the activation and its input when the diagnosis should check saturation, dead
//!    units and mean-field theory (`None` otherwise).
//!
//! The training loop calls the probe around backward and the optimizer step; `Tap::off()` (what
//! `probe.tap(step)` gives on steps it skips) returns every `h` untouched at no cost.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;

use gradscope::prelude::*;

/// A plain deep MLP: sigmoid hidden layers, a linear head.
#[derive(Module, Debug)]
struct DeepMlp {
    layers: Vec<Linear>,
    head: Linear,
}

impl DeepMlp {
    fn new(features: usize, width: usize, depth: usize, classes: usize) -> Self {
        let device = gradscope::device();
        let layers = (0..depth)
            .map(|i| LinearConfig::new(if i == 0 { features } else { width }, width).init(&device))
            .collect();
        let head = LinearConfig::new(width, classes).init(&device);
        DeepMlp { layers, head }
    }

    /// The ordinary forward pass, with one probe point per layer.
    fn forward(&self, mut h: Tensor<2>, tap: &mut Tap) -> Tensor<2> {
        tap.input(&h);
        for (i, layer) in self.layers.iter().enumerate() {
            let pre = layer.forward(h);
            let out = Activation::Sigmoid.forward(pre.clone());
            h = tap.point(
                &format!("layers.{i}"),
                "dense",
                Some(Activation::Sigmoid),
                Some(&pre),
                out,
            );
        }
        let logits = self.head.forward(h);
        tap.point("head", "head", None, None, logits)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    gradscope::tune_allocator();
    let device = gradscope::device();
    // the embedded handwritten digits (8×8, 10 classes), standardised
    let mut data = gradscope::data::digits::load()?;
    let (mean, std) = data.feature_stats();
    data.standardise_with(&mean, &std);
    let mut model = DeepMlp::new(data.features, 64, 12, data.classes);
    let mut optimizer = SgdConfig::new().init();
    let mut probe = Probe::new(ProbeConfig {
        every: 5,
        ..Default::default()
    });
    let lr = 0.1;
    let mut rng = StdRng::seed_from_u64(0);
    let mut step = 0;
    for epoch in 0..3 {
        for batch in data.batches(64, &mut rng) {
            let x: Vec<f32> = batch
                .iter()
                .flat_map(|&i| data.x[i * data.features..(i + 1) * data.features].to_vec())
                .collect();
            let y: Vec<i64> = batch.iter().map(|&i| data.y[i] as i64).collect();
            let x =
                Tensor::<2>::from_data(TensorData::new(x, [batch.len(), data.features]), &device);
            let y = Tensor::<1, Int>::from_data(TensorData::new(y, [batch.len()]), &device);

            let mut tap = probe.tap(step); // records on every 5th step, free otherwise
            let loss = gradscope::train::loss::cross_entropy(model.forward(x, &mut tap), y);
            let loss_value = loss.clone().into_scalar::<f64>();
            let grads = loss.backward();
            let pending = probe.after_backward(step, epoch, loss_value, tap, &model, &grads);
            let grads = GradientsParams::from_grads(grads, &model);
            model = optimizer.step(lr, model, grads);
            probe.after_step(pending, &model, lr)?; // update ratios ‖ΔW‖/‖W‖
            step += 1;
        }
    }
    match diagnose(probe.records()) {
        Some(d) => println!("{d}"),
        None => println!("no probed steps"),
    }
    Ok(())
}
