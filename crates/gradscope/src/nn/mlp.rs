//! A deep multilayer perceptron whose remedies are switches: activation, initialisation,
//! normalisation and residual connections.
//!
//! Plain layer `i`:     h_i = φ(norm(W_i h_{i−1} + b_i))
//! Residual block `i`:  h_i = h_{i−1} + W_i φ(norm(h_{i−1})) + b_i      (pre-activation form,
//!                      He et al. 2016, "Identity mappings in deep residual networks")
//! `depth` counts the linear layers including the classifier head, so `depth=20` is 19 hidden
//! layers and a head; with residual connections the first hidden layer stays plain (it changes
//! the width), the other 18 are residual blocks. Every hidden layer and the head are probe points
//! named `layers.<i>` and `head`.

use crate::kernels::linear;
use burn::module::{Module, Param};
use burn::nn::{BatchNorm, BatchNormConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::init::Init;
use crate::activation::Activation;
use crate::choice::choice;
use crate::probe::Tap;

choice! {
    /// Normalisation inside each hidden layer.
    pub enum NormKind ("norm") {
        None = "none",
        Batch = "batch",
        Layer = "layer",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MlpConfig {
    pub input: usize,
    pub classes: usize,
    pub depth: usize,
    pub width: usize,
    pub act: Activation,
    pub init: Init,
    pub norm: NormKind,
    pub residual: bool,
    /// Start every residual branch at exactly zero (its last linear layer zeroed), so the
    /// network begins as a shallow one and gradients reach the first layer unattenuated
    /// (Goyal et al. 2017; Zhang et al. 2019, Fixup).
    pub zero_init: bool,
    /// Multiplies every hidden weight matrix at init (1 = the scheme as published); > 1 makes
    /// each layer amplify the signal and its gradient — a way to *make* gradients explode.
    pub gain: f64,
    /// `Some(σ_b)`: every hidden bias starts N(0, σ_b²) (the mean-field setting of Poole et al.
    /// 2016 and Schoenholz et al. 2017); `None`: the init scheme's own biases.
    #[serde(default)]
    pub bias_std: Option<f64>,
    pub seed: u64,
}

impl MlpConfig {
    pub fn new(input: usize, classes: usize) -> Self {
        MlpConfig {
            input,
            classes,
            depth: 20,
            width: 128,
            act: Activation::Relu,
            init: Init::He,
            norm: NormKind::None,
            residual: false,
            zero_init: false,
            gain: 1.0,
            bias_std: None,
            seed: 0,
        }
    }

    pub fn init(&self, device: &Device) -> Mlp {
        assert!(
            self.depth >= 2,
            "an MLP needs at least one hidden layer and a head"
        );
        let mut rng = StdRng::seed_from_u64(self.seed);
        let hidden = self.depth - 1;
        let layers = (0..hidden)
            .map(|i| {
                let fan_in = if i == 0 { self.input } else { self.width };
                let residual = self.residual && i > 0;
                let mut linear = dense(
                    fan_in, self.width, self.init, self.act, self.gain, &mut rng, device,
                );
                if let Some(std) = self.bias_std {
                    let b = super::init::normal(self.width, std, &mut rng);
                    linear.bias = Some(Param::from_tensor(Tensor::from_data(
                        TensorData::new(b, [self.width]),
                        device,
                    )));
                }
                if residual && self.zero_init {
                    linear = zeroed(linear, device);
                }
                // plain: the norm acts on W h; residual: on h. Both have `width` features.
                let bn = (self.norm == NormKind::Batch)
                    .then(|| BatchNormConfig::new(self.width).init(device));
                let ln = (self.norm == NormKind::Layer)
                    .then(|| LayerNormConfig::new(self.width).init(device));
                Block { linear, bn, ln }
            })
            .collect();
        // The head is a linear read-out: LeCun-scaled unless the framework default was asked for.
        let head_init = if self.init == Init::Default {
            Init::Default
        } else {
            Init::Lecun
        };
        let head = dense(
            self.width,
            self.classes,
            head_init,
            Activation::Sigmoid,
            1.0,
            &mut rng,
            device,
        );
        Mlp {
            layers,
            head,
            act: self.act,
            residual: self.residual,
            block_names: self.block_names(),
        }
    }

    fn block_names(&self) -> Vec<(String, String)> {
        (0..self.depth - 1)
            .map(|i| {
                let kind = if self.residual && i > 0 {
                    "residual"
                } else {
                    "dense"
                };
                let block = match self.norm {
                    NormKind::None => kind.to_string(),
                    n => format!("{kind}+{n}"),
                };
                (format!("layers.{i}"), block)
            })
            .collect()
    }
}

fn dense(
    fan_in: usize,
    fan_out: usize,
    init: Init,
    act: Activation,
    gain: f64,
    rng: &mut StdRng,
    device: &Device,
) -> Linear {
    let mut l = LinearConfig::new(fan_in, fan_out).init(device);
    let mut w = init.weights(fan_in, fan_out, act, rng);
    if gain != 1.0 {
        w.iter_mut().for_each(|x| *x *= gain as f32);
    }
    let b = init.bias(fan_in, fan_out, rng);
    l.weight = Param::from_tensor(Tensor::from_data(
        TensorData::new(w, [fan_in, fan_out]),
        device,
    ));
    l.bias = Some(Param::from_tensor(Tensor::from_data(
        TensorData::new(b, [fan_out]),
        device,
    )));
    l
}

fn zeroed(mut l: Linear, device: &Device) -> Linear {
    let [i, o] = l.weight.dims();
    l.weight = Param::from_tensor(Tensor::zeros([i, o], device));
    l.bias = Some(Param::from_tensor(Tensor::zeros([o], device)));
    l
}

#[derive(Module, Debug)]
pub struct Block {
    pub linear: Linear,
    pub bn: Option<BatchNorm>,
    pub ln: Option<LayerNorm>,
}

impl Block {
    fn norm(&self, x: Tensor<2>) -> Tensor<2> {
        match (&self.bn, &self.ln) {
            (Some(bn), _) => bn.forward(x),
            (_, Some(ln)) => ln.forward(x),
            _ => x,
        }
    }
}

#[derive(Module, Debug)]
pub struct Mlp {
    pub layers: Vec<Block>,
    pub head: Linear,
    #[module(skip)]
    pub act: Activation,
    #[module(skip)]
    pub residual: bool,
    /// (probe point name, block description) per hidden layer
    #[module(skip)]
    block_names: Vec<(String, String)>,
}

impl Mlp {
    /// Logits `[batch, classes]` for inputs `[batch, features]`, with a probe point on every
    /// hidden layer's output and on the logits.
    pub fn forward(&self, x: Tensor<2>, tap: &mut Tap) -> Tensor<2> {
        tap.input(&x);
        let mut h = x;
        for (i, (b, (name, block))) in self.layers.iter().zip(&self.block_names).enumerate() {
            if self.residual && i > 0 {
                let branch = linear::forward(&b.linear, self.act.forward(b.norm(h.clone())));
                h = tap.point(name, block, None, None, h + branch);
            } else {
                let z = b.norm(linear::forward(&b.linear, h));
                h = tap.activate(name, block, self.act, z);
            }
        }
        let logits = linear::forward(&self.head, h);
        tap.point("head", "head", None, None, logits)
    }
}
