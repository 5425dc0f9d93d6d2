//! Recurrent networks with a probe point on every time step: a vanilla tanh RNN, an LSTM with a
//! configurable forget-gate bias, and a GRU. The cells are written here (not burn's `Lstm`/`Gru`)
//! because the probe needs each step's hidden state *inside* the recurrence: ∂L/∂h_t must include
//! every path through h_{t+1}, …, h_T, which only a leaf added to h_t itself measures.
//!
//! Gate equations (PyTorch's conventions, so weights map one to one):
//!   RNN   h_t = tanh(x_t W + b + h_{t−1} U)
//!   LSTM  [i f g o] = x_t W + b + h_{t−1} U;  c_t = σ(f)⊙c_{t−1} + σ(i)⊙tanh(g);  h_t = σ(o)⊙tanh(c_t)
//!   GRU   r = σ(x W_r + b_ir + h U_r + b_hr), z = σ(x W_z + b_iz + h U_z + b_hz),
//!         n = tanh(x W_n + b_in + r⊙(h U_n + b_hn)),  h_t = (1−z)⊙n + z⊙h_{t−1}
//! Probe points are named `t.0` … `t.{T−1}` (block `step:<cell>`), and for the LSTM also its
//! cell state `c.0` … (block `memory:lstm`), the path that carries long-range gradients; a head reads the last hidden state
//! (`forward_last`) or every hidden state (`forward_all`).

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::{sigmoid, tanh};
use burn::tensor::{Device, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::init::{orthogonal, uniform};
use crate::choice::choice;
use crate::kernels::{linear, lstm};
use crate::probe::stats::act_stats_of;
use crate::probe::Tap;

choice! {
    /// The recurrent cell.
    pub enum CellKind ("cell") {
        /// Elman RNN with tanh.
        Rnn = "rnn",
        /// Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate, Gers et al. 2000).
        Lstm = "lstm",
        /// Gated recurrent unit (Cho et al. 2014).
        Gru = "gru",
    }
}

impl CellKind {
    /// Gate blocks per step: 1 (RNN), 4 (LSTM), 3 (GRU).
    pub fn gates(self) -> usize {
        match self {
            CellKind::Rnn => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RecurrentConfig {
    pub cell: CellKind,
    pub input: usize,
    pub hidden: usize,
    pub output: usize,
    /// LSTM forget-gate bias at init (1.0: Gers et al. 2000, Jozefowicz et al. 2015).
    pub forget_bias: f64,
    /// `Some(g)`: every recurrent matrix U starts orthogonal × g, so its spectral norm is
    /// exactly g; `None`: PyTorch's default U(±1/√hidden).
    pub recurrent_gain: Option<f64>,
    pub seed: u64,
}

impl RecurrentConfig {
    pub fn new(cell: CellKind, input: usize, hidden: usize, output: usize) -> Self {
        RecurrentConfig {
            cell,
            input,
            hidden,
            output,
            forget_bias: 1.0,
            recurrent_gain: None,
            seed: 0,
        }
    }

    pub fn init(&self, device: &Device) -> SeqModel {
        let mut rng = StdRng::seed_from_u64(self.seed);
        let (h, g) = (self.hidden, self.cell.gates());
        let bound = 1.0 / (h as f64).sqrt();
        let lin = |i: usize, o: usize, w: Vec<f32>, b: Option<Vec<f32>>| {
            let mut l = LinearConfig::new(i, o).with_bias(b.is_some()).init(device);
            l.weight = Param::from_tensor(Tensor::from_data(TensorData::new(w, [i, o]), device));
            l.bias =
                b.map(|b| Param::from_tensor(Tensor::from_data(TensorData::new(b, [o]), device)));
            l
        };
        let w_in = uniform(self.input * g * h, bound, &mut rng);
        let mut b_in = uniform(g * h, bound, &mut rng);
        if self.cell == CellKind::Lstm {
            // gate order i, f, g, o: the forget gate is the second block
            b_in[h..2 * h]
                .iter_mut()
                .for_each(|b| *b = self.forget_bias as f32);
        }
        let w_rec = match self.recurrent_gain {
            // one orthogonal H×H block per gate, side by side
            Some(gain) => {
                let blocks: Vec<Vec<f32>> =
                    (0..g).map(|_| orthogonal(h, h, gain, &mut rng)).collect();
                (0..h)
                    .flat_map(|r| {
                        blocks
                            .iter()
                            .flat_map(move |b| b[r * h..(r + 1) * h].to_vec())
                    })
                    .collect()
            }
            None => uniform(h * g * h, bound, &mut rng),
        };
        // the GRU keeps a separate hidden bias (it sits inside r⊙(·)); RNN and LSTM need only one
        let b_rec = (self.cell == CellKind::Gru).then(|| uniform(g * h, bound, &mut rng));
        let w_head = uniform(h * self.output, bound, &mut rng);
        let b_head = uniform(self.output, bound, &mut rng);
        SeqModel {
            input: lin(self.input, g * h, w_in, Some(b_in)),
            recurrent: lin(h, g * h, w_rec, b_rec),
            head: lin(h, self.output, w_head, Some(b_head)),
            cell: self.cell,
            hidden: h,
        }
    }
}

#[derive(Module, Debug)]
pub struct SeqModel {
    /// x_t → gates (W, b): `[input, gates·hidden]`.
    pub input: Linear,
    /// h_{t−1} → gates (U): `[hidden, gates·hidden]`.
    pub recurrent: Linear,
    pub head: Linear,
    #[module(skip)]
    pub cell: CellKind,
    #[module(skip)]
    pub hidden: usize,
}

/// Gate block `k` (of width `h`) of a `[B, gates·H]` tensor.
pub(crate) fn block(t: &Tensor<2>, k: usize, h: usize) -> Tensor<2> {
    let [b, _] = t.dims();
    t.clone().slice([0..b, k * h..(k + 1) * h])
}

impl SeqModel {
    /// Runs the cell over `x` `[batch, T, input]` from the state (h₀, c₀) (zeros when `None`).
    /// Returns every hidden state (each through a probe point) and the final cell state.
    pub fn run(
        &self,
        x: Tensor<3>,
        state: Option<(Tensor<2>, Tensor<2>)>,
        tap: &mut Tap,
    ) -> (Vec<Tensor<2>>, Tensor<2>) {
        let [b, t_len, i] = x.dims();
        let h = self.hidden;
        let device = x.device();
        tap.input(&x);
        // Input projection step by step: slicing a precomputed `[B, T, gates·H]` projection
        // costs a full-size zero tensor per step in the backward (the slice's gradient), which
        // was most of an LSTM step; slicing x (`[B, T, input]`) is cheap.
        let x_at = |t: usize| x.clone().slice([0..b, t..t + 1]).reshape([b, i]);
        let (mut hs, mut c) = state.unwrap_or_else(|| {
            (
                Tensor::zeros([b, h], &device),
                Tensor::zeros([b, h], &device),
            )
        });
        let mut out = Vec::with_capacity(t_len);
        for t in 0..t_len {
            let xt = linear::forward(&self.input, x_at(t));
            let hu = linear::forward(&self.recurrent, hs.clone());
            let next = match self.cell {
                CellKind::Rnn => tanh(xt + hu),
                CellKind::Lstm => {
                    // one sigmoid over all four blocks; the g block is recomputed with tanh
                    // (this step-by-step path runs with an initial state or an injected fault;
                    // otherwise the whole sequence is one fused operation, `run_fused`)
                    let z = xt + hu;
                    let s = sigmoid(z.clone());
                    let (ig, fg, og) = (block(&s, 0, h), block(&s, 1, h), block(&s, 3, h));
                    let gg = tanh(block(&z, 2, h));
                    c = tap.point(
                        &format!("c.{t}"),
                        "memory:lstm",
                        None,
                        None,
                        fg * c + ig * gg,
                    );
                    og * tanh(c.clone())
                }
                CellKind::Gru => {
                    let r = sigmoid(block(&xt, 0, h) + block(&hu, 0, h));
                    let z = sigmoid(block(&xt, 1, h) + block(&hu, 1, h));
                    let n = tanh(block(&xt, 2, h) + r * block(&hu, 2, h));
                    (z.clone().neg() + 1.0) * n + z * hs
                }
            };
            hs = tap.point(&format!("t.{t}"), self.block_name(), None, None, next);
            out.push(hs.clone());
        }
        (out, c)
    }

    /// The probe's block name for a time step: `step:rnn`, `step:lstm`, `step:gru`.
    pub fn block_name(&self) -> &'static str {
        match self.cell {
            CellKind::Rnn => "step:rnn",
            CellKind::Lstm => "step:lstm",
            CellKind::Gru => "step:gru",
        }
    }

    /// The LSTM over the whole sequence as one fused operation (flex, zero initial state, no
    /// injected fault), its steps still probed: every hidden state `[batch, T, hidden]`.
    fn run_fused(&self, x: &Tensor<3>, tap: &mut Tap) -> Option<Tensor<3>> {
        if self.cell != CellKind::Lstm || tap.has_fault() || self.recurrent.bias.is_some() {
            return None;
        }
        let b = self.input.bias.as_ref()?.val();
        let (h_all, steps) = lstm::sequence(
            x,
            &self.input.weight.val(),
            &b,
            &self.recurrent.weight.val(),
            tap.is_recording(),
        )?;
        tap.input(x);
        for (t, s) in steps.into_iter().enumerate() {
            let c = act_stats_of(s.c, s.len);
            tap.external_measured(&format!("c.{t}"), "memory:lstm", c, s.c_grad);
            let h = act_stats_of(s.h, s.len);
            tap.external_measured(&format!("t.{t}"), self.block_name(), h, s.h_grad);
        }
        Some(h_all)
    }

    /// The head applied to the last hidden state: `[batch, output]`.
    pub fn forward_last(&self, x: Tensor<3>, tap: &mut Tap) -> Tensor<2> {
        if let Some(h_all) = self.run_fused(&x, tap) {
            let [b, t, h] = h_all.dims();
            return linear::forward(&self.head, h_all.slice([0..b, t - 1..t]).reshape([b, h]));
        }
        let (hs, _) = self.run(x, None, tap);
        let last = hs
            .into_iter()
            .last()
            .expect("sequences have at least one step");
        linear::forward(&self.head, last)
    }

    /// The head applied to every hidden state: `[batch, T, output]`.
    pub fn forward_all(&self, x: Tensor<3>, tap: &mut Tap) -> Tensor<3> {
        if let Some(h_all) = self.run_fused(&x, tap) {
            return linear::forward(&self.head, h_all);
        }
        let (hs, _) = self.run(x, None, tap);
        linear::forward(&self.head, Tensor::stack(hs, 1))
    }

    /// Spectral norm ‖U‖₂ of each gate's recurrent matrix (power iteration on the host).
    pub fn recurrent_spectral_norms(&self) -> Vec<f64> {
        let h = self.hidden;
        let g = self.cell.gates();
        let w: Vec<f32> = self
            .recurrent
            .weight
            .val()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap_or_default();
        (0..g)
            .map(|k| {
                // U_k[r][c] = w[r·(g·h) + k·h + c]
                let at = |r: usize, c: usize| w[r * g * h + k * h + c] as f64;
                spectral_norm(h, at)
            })
            .collect()
    }
}

/// Largest singular value of an n×n matrix by power iteration on AᵀA.
pub fn spectral_norm(n: usize, a: impl Fn(usize, usize) -> f64) -> f64 {
    let mut v = vec![1.0 / (n as f64).sqrt(); n];
    let mut sigma = 0.0;
    for _ in 0..200 {
        let av: Vec<f64> = (0..n)
            .map(|r| (0..n).map(|c| a(r, c) * v[c]).sum())
            .collect();
        let atav: Vec<f64> = (0..n)
            .map(|c| (0..n).map(|r| a(r, c) * av[r]).sum())
            .collect();
        let norm = atav.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm == 0.0 {
            return 0.0;
        }
        let next = norm.sqrt();
        v = atav.iter().map(|x| x / norm).collect();
        if (next - sigma).abs() < 1e-10 * next {
            return next;
        }
        sigma = next;
    }
    sigma
}
