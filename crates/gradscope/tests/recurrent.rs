//! Through time: the probe's ‖∂L/∂h_t‖ against finite differences and PyTorch, the LSTM's cell
//! path, clipping, and a short training run. (Release mode: `cargo test --release`.)

mod common;

use burn::module::Param;
use burn::tensor::{Tensor, TensorData};
use common::det;
use gradscope::nn::recurrent::{CellKind, RecurrentConfig, SeqModel};
use gradscope::probe::{Fault, Probe, ProbeConfig, StepRecord, Tap};

fn t3(v: Vec<f32>, s: [usize; 3]) -> Tensor<3> {
    Tensor::from_data(TensorData::new(v, s), &gradscope::device())
}

fn param<const D: usize>(v: Vec<f32>, s: [usize; D]) -> Param<Tensor<D>> {
    Param::from_tensor(Tensor::from_data(
        TensorData::new(v, s),
        &gradscope::device(),
    ))
}

fn mse(m: &SeqModel, x: &Tensor<3>, y: &Tensor<2>, tap: &mut Tap) -> Tensor<1> {
    (m.forward_last(x.clone(), tap) - y.clone())
        .powf_scalar(2.0)
        .mean()
}

fn probe_once(m: &SeqModel, x: &Tensor<3>, y: &Tensor<2>) -> (f64, StepRecord) {
    probe_with(m, x, y, Tap::on())
}

fn probe_with(m: &SeqModel, x: &Tensor<3>, y: &Tensor<2>, mut tap: Tap) -> (f64, StepRecord) {
    let mut probe = Probe::new(ProbeConfig::default());
    let loss = mse(m, x, y, &mut tap);
    let lv = loss.clone().into_scalar::<f64>();
    let grads = loss.backward();
    let pending = probe.after_backward(0, 0, lv, tap, m, &grads);
    probe.after_step(pending, m, 0.0).unwrap();
    (lv, probe.into_records().remove(0))
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

#[test]
fn lstm_gradients_through_time_equal_pytorch() {
    let f: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/lstm_grads.json")).unwrap();
    let n = |k: &str| f[k].as_u64().unwrap() as usize;
    let (i, h, steps, b) = (n("input"), n("hidden"), n("steps"), n("batch"));
    let s = f["scale"].as_f64().unwrap();
    let mut m = RecurrentConfig::new(CellKind::Lstm, i, h, 1).init(&gradscope::device());
    m.input.weight = param(det(1, i * 4 * h, s), [i, 4 * h]);
    m.recurrent.weight = param(det(2, h * 4 * h, s), [h, 4 * h]);
    m.input.bias = Some(param(det(3, 4 * h, s), [4 * h]));
    assert!(m.recurrent.bias.is_none(), "one bias per LSTM gate");
    m.head.weight = param(det(4, h, s), [h, 1]);
    m.head.bias = Some(param(det(5, 1, s), [1]));
    let x = t3(det(6, b * steps * i, 1.0), [b, steps, i]);
    let y: Tensor<2> = Tensor::from_data(
        TensorData::new(det(7, b, 1.0), [b, 1]),
        &gradscope::device(),
    );
    let (loss, rec) = probe_once(&m, &x, &y);
    assert!(rel(loss, f["loss"].as_f64().unwrap()) < 1e-5, "loss {loss}");
    let want = f["grad_h"].as_array().unwrap();
    let hs: Vec<_> = rec
        .layers
        .iter()
        .filter(|l| l.name.starts_with("t."))
        .collect();
    assert_eq!(hs.len(), steps);
    for (t, (l, w)) in hs.iter().zip(want).enumerate() {
        let w = w.as_f64().unwrap();
        assert_eq!(l.name, format!("t.{t}"));
        assert!(
            rel(l.grad_h.norm, w) < 1e-4,
            "‖∂L/∂h_{t}‖ {} vs torch {w}",
            l.grad_h.norm
        );
    }
    let want_c = f["grad_c"].as_array().unwrap();
    let cs: Vec<_> = rec
        .layers
        .iter()
        .filter(|l| l.name.starts_with("c."))
        .collect();
    assert_eq!(cs.len(), steps);
    for (t, (l, w)) in cs.iter().zip(want_c).enumerate() {
        let w = w.as_f64().unwrap();
        assert_eq!(l.name, format!("c.{t}"));
        assert!(
            rel(l.grad_h.norm, w) < 1e-4,
            "‖∂L/∂c_{t}‖ {} vs torch {w}",
            l.grad_h.norm
        );
    }
    // the fused sequence measures c_t and h_t in place: the numbers of the step-by-step burn path
    // (which a tap with a fault takes; this one changes nothing)
    let nothing = Fault::Nudge {
        layer: "no such layer".into(),
        index: 0,
        delta: 0.0,
    };
    let (_, step_by_step) = probe_with(&m, &x, &y, Tap::on().with_fault(Some(nothing)));
    assert_eq!(rec.layers.len(), step_by_step.layers.len());
    for (a, b) in rec.layers.iter().zip(&step_by_step.layers) {
        assert_eq!((&a.name, a.act.numel), (&b.name, b.act.numel));
        for (what, x, y) in [
            ("mean", a.act.mean, b.act.mean),
            ("std", a.act.std, b.act.std),
            ("‖∂L/∂h‖", a.grad_h.norm, b.grad_h.norm),
        ] {
            assert!(
                (x - y).abs() <= 1e-5 * y.abs().max(1e-3),
                "{} {what}: fused {x} vs step by step {y}",
                a.name
            );
        }
    }
    // the recurrent weight is under no probe point: it is reported among other_params
    let u = rec
        .other_params
        .iter()
        .find(|p| p.name == "recurrent.weight")
        .unwrap();
    let w = f["grad_weight_hh"].as_f64().unwrap();
    assert!(
        rel(u.grad_norm, w) < 1e-4,
        "‖∂L/∂U‖ {} vs torch {w}",
        u.grad_norm
    );
}

#[test]
fn rnn_gradients_through_time_equal_finite_differences() {
    for cell in [CellKind::Rnn, CellKind::Gru, CellKind::Lstm] {
        let m = RecurrentConfig::new(cell, 2, 5, 1).init(&gradscope::device());
        let x = t3(det(11, 3 * 6 * 2, 1.0), [3, 6, 2]);
        let y: Tensor<2> = Tensor::from_data(
            TensorData::new(det(12, 3, 1.0), [3, 1]),
            &gradscope::device(),
        );
        let (_, rec) = probe_once(&m, &x, &y);
        for l in &rec.layers {
            let eps = 1e-2f32;
            let mut sq = 0.0;
            for index in 0..l.act.numel {
                let at = |delta: f32| {
                    let mut tap = Tap::off().with_fault(Some(Fault::Nudge {
                        layer: l.name.clone(),
                        index,
                        delta,
                    }));
                    mse(&m, &x, &y, &mut tap).into_scalar::<f64>()
                };
                let g = (at(eps) - at(-eps)) / (2.0 * eps as f64);
                sq += g * g;
            }
            let fd = sq.sqrt();
            assert!(
                rel(l.grad_h.norm, fd) < 3e-3,
                "{cell} {}: probe {} vs FD {fd}",
                l.name,
                l.grad_h.norm
            );
        }
    }
}

/// An LSTM whose gates ignore the input and the hidden state: f = σ(bias_f) at every step.
fn forced_forget(bias_f: f32, steps: usize) -> f64 {
    let dev = gradscope::device();
    let h = 3;
    let mut m = RecurrentConfig::new(CellKind::Lstm, 1, h, 1).init(&dev);
    m.input.weight = param(vec![0.0; 4 * h], [1, 4 * h]);
    m.recurrent.weight = param(vec![0.0; h * 4 * h], [h, 4 * h]);
    let mut b = vec![0.5f32; 4 * h];
    b[h..2 * h].iter_mut().for_each(|v| *v = bias_f);
    m.input.bias = Some(param(b, [4 * h]));
    let x = t3(vec![1.0; 2 * steps], [2, steps, 1]);
    let c0: Tensor<2> =
        Tensor::from_data(TensorData::new(vec![0.3f32; 2 * h], [2, h]), &dev).require_grad();
    let h0: Tensor<2> = Tensor::zeros([2, h], &dev);
    let (_, c_t) = m.run(x, Some((h0, c0.clone())), &mut Tap::off());
    let grads = c_t.sum().backward();
    let g = c0
        .grad(&grads)
        .unwrap()
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    // every element gets the same gradient ∂ΣC_T/∂c₀ = Π f_t
    assert!(g
        .iter()
        .all(|&v| (v - g[0]).abs() <= 1e-6 * g[0].abs().max(1e-30)));
    g[0] as f64
}

#[test]
fn the_lstm_cell_path_carries_the_gradient_scaled_by_the_forget_gate() {
    let t = 20;
    let open = forced_forget(50.0, t); // σ(50) = 1 in f32
    assert!(
        (open - 1.0).abs() < 1e-6,
        "forget gate 1: gradient reaches c₀ unchanged, got {open}"
    );
    let half = forced_forget(0.0, t); // σ(0) = 0.5
    let expect = 0.5f64.powi(t as i32);
    assert!(
        rel(half, expect) < 1e-5,
        "forget gate 0.5: {half} vs 0.5^{t} = {expect}"
    );
}

#[test]
fn the_lstm_beats_the_adding_baseline_at_short_sequences() {
    use gradscope::lab::recurrent::{SeqTask, SeqTaskKind};
    use gradscope::train::{fit, OptimizerKind, TrainConfig};
    let dev = gradscope::device();
    let mut task = SeqTask::new(SeqTaskKind::Adding, 10, 32, 100, 1, &dev).unwrap();
    let model = RecurrentConfig::new(CellKind::Lstm, 2, 32, 1).init(&dev);
    let cfg = TrainConfig {
        optimizer: OptimizerKind::Adam,
        lr: 0.01,
        epochs: 4,
        ..TrainConfig::default()
    };
    let mut probe = Probe::new(ProbeConfig {
        enabled: false,
        ..ProbeConfig::default()
    });
    let (_, hist) = fit(model, &mut task, &cfg, &mut probe, &mut |_| {}).unwrap();
    let mse = hist.epochs.last().unwrap().val_metric;
    assert!(
        mse < 0.05,
        "LSTM val MSE {mse} after 400 steps (baseline 1/6)"
    );
}

#[test]
fn clipping_by_norm_keeps_the_direction_and_by_value_clamps() {
    use burn::optim::GradientsParams;
    use gradscope::train::clip::{clip_norm, clip_value, global_norm};
    let dev = gradscope::device();
    let m = RecurrentConfig::new(CellKind::Rnn, 2, 4, 1).init(&dev);
    let x = t3(det(21, 2 * 5 * 2, 3.0), [2, 5, 2]);
    let y: Tensor<2> = Tensor::from_data(TensorData::new(vec![5.0f32, -5.0], [2, 1]), &dev);
    let grads = || GradientsParams::from_grads(mse(&m, &x, &y, &mut Tap::off()).backward(), &m);
    let flat = |gp: &GradientsParams| -> Vec<f32> {
        gradscope::probe::params::snapshot(&m, None)
            .into_iter()
            .flat_map(|p| {
                let id = param_id(&m, &p.path);
                match p.shape.len() {
                    1 => gp
                        .get::<1>(id)
                        .unwrap()
                        .into_data()
                        .try_into_vec::<f32>()
                        .unwrap(),
                    _ => gp
                        .get::<2>(id)
                        .unwrap()
                        .into_data()
                        .try_into_vec::<f32>()
                        .unwrap(),
                }
            })
            .collect()
    };
    let g = grads();
    let before = flat(&g);
    let norm = global_norm(&m, &g);
    for c in [norm * 0.1, norm * 2.0] {
        let mut gp = grads();
        let reported = clip_norm(&m, &mut gp, c);
        assert!(rel(reported, norm) < 1e-6);
        let after = flat(&gp);
        let n_after = after
            .iter()
            .map(|v| (*v as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(
            rel(n_after, norm.min(c)) < 1e-5,
            "‖ĝ‖ {n_after} vs min(‖g‖, c) {}",
            norm.min(c)
        );
        let dot: f64 = before
            .iter()
            .zip(&after)
            .map(|(a, b)| *a as f64 * *b as f64)
            .sum();
        assert!(
            (dot / (norm * n_after) - 1.0).abs() < 1e-6,
            "direction kept"
        );
    }
    let v = before.iter().map(|x| x.abs()).fold(0f32, f32::max) as f64 * 0.3;
    let mut gp = grads();
    clip_value(&m, &mut gp, v);
    for (a, b) in before.iter().zip(flat(&gp)) {
        assert!(
            (b as f64 - (*a as f64).clamp(-v, v)).abs() < 1e-7,
            "{a} → {b}"
        );
    }
}

/// The ParamId of the parameter at `path`.
fn param_id(m: &SeqModel, path: &str) -> burn::module::ParamId {
    match path {
        "input.weight" => m.input.weight.id,
        "input.bias" => m.input.bias.as_ref().unwrap().id,
        "recurrent.weight" => m.recurrent.weight.id,
        "recurrent.bias" => m.recurrent.bias.as_ref().unwrap().id,
        "head.weight" => m.head.weight.id,
        "head.bias" => m.head.bias.as_ref().unwrap().id,
        other => panic!("unknown parameter {other}"),
    }
}
