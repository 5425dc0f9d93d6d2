//! The probe's gradients against central finite differences and against PyTorch, mean-field
//! theory at initialisation, and localisation of injected NaN/∞.

mod common;

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use common::*;
use gradscope::activation::Activation;
use gradscope::diagnose::meanfield_factors;
use gradscope::nn::init::{standard_normal, Init};
use gradscope::nn::mlp::{Mlp, MlpConfig, NormKind};
use gradscope::probe::{Fault, ParamRecord, Phase, Probe, ProbeConfig, StepRecord, Tap};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs().max(1e-30)
}

fn small(act: Activation, norm: NormKind, residual: bool) -> MlpConfig {
    let mut c = MlpConfig::new(5, 3);
    c.depth = 4;
    c.width = 6;
    c.act = act;
    c.init = Init::Xavier;
    c.norm = norm;
    c.residual = residual;
    c
}

/// Central differences of the loss w.r.t. every element of one linear layer's weight.
fn fd_weight_norm(
    m: &Mlp,
    layer: Option<usize>,
    x: &Tensor<2>,
    y: &burn::tensor::Tensor<1, burn::tensor::Int>,
) -> f64 {
    let dev = gradscope::device();
    let lin = |m: &Mlp| match layer {
        Some(k) => m.layers[k].linear.weight.val(),
        None => m.head.weight.val(),
    };
    let w = lin(m);
    let dims = w.dims();
    let base: Vec<f32> = w.into_data().try_into_vec::<f32>().unwrap();
    let eps = 1e-2f32;
    let mut sq = 0.0;
    for i in 0..base.len() {
        let at = |d: f32| {
            let mut v = base.clone();
            v[i] += d;
            let mut mm = m.clone();
            let p = Param::from_tensor(Tensor::from_data(TensorData::new(v, dims), &dev));
            match layer {
                Some(k) => mm.layers[k].linear.weight = p,
                None => mm.head.weight = p,
            }
            loss_of(&mm, x, y, None)
        };
        let g = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        sq += g * g;
    }
    sq.sqrt()
}

/// Central differences of the loss w.r.t. every element of a probe point's output.
fn fd_activation_norm(
    m: &Mlp,
    layer: &str,
    numel: usize,
    x: &Tensor<2>,
    y: &burn::tensor::Tensor<1, burn::tensor::Int>,
) -> f64 {
    let eps = 1e-2f32;
    let mut sq = 0.0;
    for index in 0..numel {
        let at = |delta: f32| {
            loss_of(
                m,
                x,
                y,
                Some(Fault::Nudge {
                    layer: layer.into(),
                    index,
                    delta,
                }),
            )
        };
        let g = (at(eps) - at(-eps)) / (2.0 * eps as f64);
        sq += g * g;
    }
    sq.sqrt()
}

#[test]
fn probe_gradients_equal_finite_differences() {
    let dev = gradscope::device();
    let x = tensor2(det(7, 4 * 5, 1.0), [4, 5]);
    let y = labels(4, 3);
    for (act, norm, residual) in [
        (Activation::Sigmoid, NormKind::None, false),
        (Activation::Tanh, NormKind::Layer, false),
        (Activation::Silu, NormKind::None, true),
    ] {
        let m = small(act, norm, residual).init(&dev);
        let (_, rec) = probe_once(&m, &x, &y, None);
        for (k, l) in rec.layers.iter().enumerate() {
            let fd_h = fd_activation_norm(&m, &l.name, l.act.numel, &x, &y);
            assert!(
                rel(l.grad_h.norm, fd_h) < 3e-3,
                "{act} {}: ‖∂L/∂h‖ probe {} vs FD {fd_h}",
                l.name,
                l.grad_h.norm
            );
            let w = l
                .params
                .iter()
                .find(|p| p.name.ends_with("weight") && p.shape.len() == 2)
                .unwrap();
            let layer = (l.name != "head").then_some(k);
            let fd_w = fd_weight_norm(&m, layer, &x, &y);
            assert!(
                rel(w.grad_norm, fd_w) < 3e-3,
                "{act} {}: ‖∂L/∂W‖ probe {} vs FD {fd_w}",
                l.name,
                w.grad_norm
            );
        }
    }
}

#[test]
fn probe_gradients_equal_pytorch() {
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/mlp_grads.json")).expect("fixture parses");
    let n = |k: &str| fixture[k].as_u64().unwrap() as usize;
    let (input, width, classes, batch, depth) =
        (n("input"), n("width"), n("classes"), n("batch"), n("depth"));
    let x = tensor2(det(1000, batch * input, 1.0), [batch, input]);
    let y = labels(batch, classes);
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut c = MlpConfig::new(input, classes);
        c.depth = depth;
        c.width = width;
        let scale = match name {
            "sigmoid" => {
                c.act = Activation::Sigmoid;
                1.0
            }
            "residual_batchnorm_silu" => {
                c.act = Activation::Silu;
                c.norm = NormKind::Batch;
                c.residual = true;
                0.5
            }
            other => panic!("unknown fixture case {other}"),
        };
        let m = set_det_weights(c.init(&gradscope::device()), scale);
        let (loss, rec) = probe_once(&m, &x, &y, None);
        let ref_loss = case["loss"].as_f64().unwrap();
        assert!(
            rel(loss, ref_loss) < 1e-5,
            "{name}: loss {loss} vs torch {ref_loss}"
        );
        let layers = case["layers"].as_array().unwrap();
        assert_eq!(layers.len(), rec.layers.len(), "{name}: probe points");
        let mut compared = 0;
        for (r, l) in layers.iter().zip(&rec.layers) {
            assert_eq!(r["name"].as_str().unwrap(), l.name);
            let gh = r["grad_h"].as_f64().unwrap();
            assert!(
                rel(l.grad_h.norm, gh) < 1e-4,
                "{name} {}: ‖∂L/∂h‖ {} vs torch {gh}",
                l.name,
                l.grad_h.norm
            );
            let params = r["params"].as_object().unwrap();
            assert_eq!(
                params.len(),
                l.params.len(),
                "{name} {}: parameters {:?}",
                l.name,
                params.keys()
            );
            for p in &l.params {
                let t = params
                    .get(&p.name)
                    .unwrap_or_else(|| panic!("{name}: torch has no {}.{}", l.name, p.name));
                let t = t.as_f64().unwrap();
                if t < 1e-12 {
                    // exactly zero in theory (a bias followed by BatchNorm): fp32 round-off only
                    assert!(
                        p.grad_norm < 1e-6,
                        "{name} {}.{}: {} should be ~0",
                        l.name,
                        p.name,
                        p.grad_norm
                    );
                    compared += 1;
                    continue;
                }
                assert!(
                    rel(p.grad_norm, t) < 1e-4,
                    "{name} {}.{}: ‖∂L/∂θ‖ {} vs torch {t}",
                    l.name,
                    p.name,
                    p.grad_norm
                );
                compared += 1;
            }
        }
        assert!(
            compared >= 2 * depth,
            "{name}: only {compared} parameters compared"
        );
    }
}

/// A 20-layer width-256 net at init on Gaussian inputs; geometric means of the measured and
/// predicted per-layer factors ‖∂L/∂h_{l−1}‖/‖∂L/∂h_l‖.
fn meanfield_at_init(act: Activation, init: Init) -> (f64, f64) {
    let dev = gradscope::device();
    let mut c = MlpConfig::new(256, 10);
    c.depth = 21;
    c.width = 256;
    c.act = act;
    c.init = init;
    c.seed = 3;
    let m = c.init(&dev);
    let mut rng = StdRng::seed_from_u64(11);
    let xs: Vec<f32> = (0..256 * 256)
        .map(|_| standard_normal(&mut rng) as f32)
        .collect();
    let (_, rec) = probe_once(&m, &tensor2(xs, [256, 256]), &labels(256, 10), None);
    let f = meanfield_factors(&rec);
    assert_eq!(f.len(), 19, "dense layers with a predecessor");
    let geo = |v: Vec<f64>| (v.iter().map(|x| x.ln()).sum::<f64>() / v.len() as f64).exp();
    (
        geo(f.iter().map(|x| x.2).collect()),
        geo(f.iter().map(|x| x.1).collect()),
    )
}

#[test]
fn relu_with_he_init_passes_gradients_unchanged() {
    let (measured, predicted) = meanfield_at_init(Activation::Relu, Init::He);
    assert!(
        (measured - 1.0).abs() < 0.1,
        "measured per-layer factor {measured}"
    );
    assert!((predicted - 1.0).abs() < 0.1, "predicted √χ₁ {predicted}");
}

#[test]
fn relu_with_variance_one_over_n_loses_a_factor_root_two_per_layer() {
    let (measured, predicted) = meanfield_at_init(Activation::Relu, Init::Lecun);
    let expect = 1.0 / 2f64.sqrt();
    assert!(rel(measured, expect) < 0.1, "measured {measured} vs 1/√2");
    assert!(
        rel(predicted, expect) < 0.1,
        "predicted {predicted} vs 1/√2"
    );
}

#[test]
fn sigmoid_with_lecun_init_matches_the_mean_field_prediction() {
    let (measured, predicted) = meanfield_at_init(Activation::Sigmoid, Init::Lecun);
    assert!(
        rel(measured, predicted) < 0.1,
        "measured {measured} vs √χ₁ {predicted}"
    );
    assert!(
        predicted < 0.26,
        "sigmoid' ≤ 1/4 bounds the factor: {predicted}"
    );
}

fn relu_net() -> (Mlp, Tensor<2>, burn::tensor::Tensor<1, burn::tensor::Int>) {
    let mut c = MlpConfig::new(5, 3);
    c.depth = 8;
    c.width = 12;
    (
        c.init(&gradscope::device()),
        tensor2(det(5, 6 * 5, 1.0), [6, 5]),
        labels(6, 3),
    )
}

#[test]
fn forward_nan_is_blamed_on_the_layer_that_made_it() {
    let (m, x, y) = relu_net();
    for k in [0, 3, 6] {
        let layer = format!("layers.{k}");
        let (_, rec) = probe_once(
            &m,
            &x,
            &y,
            Some(Fault::ForwardNan {
                layer: layer.clone(),
            }),
        );
        let nf = rec.nonfinite.expect("non-finite detected");
        assert_eq!(
            (nf.phase, nf.layer.as_str()),
            (Phase::Forward, layer.as_str())
        );
        // every later layer carries the NaN, no earlier one does
        assert!(rec.layers[..k].iter().all(|l| l.act.nan == 0));
        assert!(rec.layers[k..].iter().all(|l| l.act.nan > 0));
    }
    let (_, clean) = probe_once(&m, &x, &y, None);
    assert!(clean.nonfinite.is_none());
}

#[test]
fn backward_inf_is_blamed_on_the_layer_that_made_it() {
    let (m, x, y) = relu_net();
    for k in [1, 4, 6] {
        let layer = format!("layers.{k}");
        let (loss, rec) = probe_once(
            &m,
            &x,
            &y,
            Some(Fault::BackwardInf {
                layer: layer.clone(),
            }),
        );
        assert!(loss.is_finite(), "the forward pass is untouched");
        assert!(rec.layers.iter().all(|l| l.act.nan + l.act.inf == 0));
        let nf = rec.nonfinite.expect("non-finite gradient detected");
        assert_eq!(
            (nf.phase, nf.layer.as_str()),
            (Phase::Backward, layer.as_str())
        );
        // the layer's own output gradient is finite, its input's is not
        assert_eq!(rec.layers[k].grad_h.nan + rec.layers[k].grad_h.inf, 0);
        if k > 0 {
            assert!(rec.layers[k - 1].grad_h.nan + rec.layers[k - 1].grad_h.inf > 0);
        }
    }
}

/// An MLP beside a trainable parameter that takes no part in the loss (no gradient).
#[derive(Module, Debug)]
struct Spare {
    net: Mlp,
    spare: Param<Tensor<1>>,
}

/// One probed AdamW step of `model`, recorded the way the labs' trainer does (`by_update`:
/// the taps at the backward, the parameters from `Optimizer::step_measured`) or by a walk
/// of the model before and after the step.
fn one_step<M: Module + Clone>(
    model: &M,
    loss: impl Fn(&M, &mut Tap) -> Tensor<1>,
    by_update: bool,
) -> StepRecord {
    use gradscope::train::optim::{Clip, OptimizerKind};
    let mut probe = Probe::new(ProbeConfig::default());
    let mut opt = OptimizerKind::Adamw.build();
    let mut tap = probe.tap(0);
    let l = loss(model, &mut tap);
    let lv = l.clone().into_scalar::<f64>();
    let grads = l.backward();
    if by_update {
        let pending = probe.after_backward_for_update(0, 0, lv, tap, model, &grads);
        let gp = GradientsParams::from_grads(grads, model);
        let (_, measured) = opt.step_measured(0.1, model.clone(), gp, Clip::NONE, true);
        probe.after_update(pending, &measured, 0.1).unwrap();
    } else {
        let pending = probe.after_backward(0, 0, lv, tap, model, &grads);
        let gp = GradientsParams::from_grads(grads, model);
        let new = opt.step(0.1, model.clone(), gp);
        probe.after_step(pending, &new, 0.1).unwrap();
    }
    probe.into_records().remove(0)
}

/// Two records hold the same layers and parameters (names, shapes, order) with the same
/// norms and update ratios (NaN where the other is).
fn assert_same(a: &StepRecord, b: &StepRecord) {
    let close = |x: f64, y: f64, what: &str| {
        let ok = (x.is_nan() && y.is_nan()) || (x - y).abs() <= 1e-5 * x.abs().max(y.abs());
        assert!(ok, "{what}: {x} against {y}");
    };
    close(a.grad_norm, b.grad_norm, "step gradient norm");
    let params = |a: &[ParamRecord], b: &[ParamRecord], at: &str| {
        let names = |r: &[ParamRecord]| -> Vec<(String, Vec<usize>)> {
            r.iter()
                .map(|p| (p.name.clone(), p.shape.clone()))
                .collect()
        };
        assert_eq!(names(a), names(b), "{at}");
        for (p, q) in a.iter().zip(b) {
            let at = format!("{at} {}", p.name);
            close(p.grad_norm, q.grad_norm, &format!("{at} gradient norm"));
            close(p.norm, q.norm, &format!("{at} norm"));
            close(
                p.update_ratio,
                q.update_ratio,
                &format!("{at} update ratio"),
            );
        }
    };
    assert_eq!(a.layers.len(), b.layers.len());
    for (l, m) in a.layers.iter().zip(&b.layers) {
        assert_eq!(l.name, m.name);
        close(
            l.grad_w_norm,
            m.grad_w_norm,
            &format!("{} gradient norm", l.name),
        );
        close(l.w_norm, m.w_norm, &format!("{} norm", l.name));
        close(
            l.update_ratio,
            m.update_ratio,
            &format!("{} update", l.name),
        );
        params(&l.params, &m.params, &l.name);
    }
    params(&a.other_params, &b.other_params, "other parameters");
}

/// Eight samples of five features and their labels among three classes.
fn eight_samples(dev: &burn::tensor::Device) -> (Tensor<2>, Tensor<1, burn::tensor::Int>) {
    let x = Tensor::<2>::from_data(
        TensorData::new(
            (0..40).map(|i| (i % 7) as f32 / 3.0 - 1.0).collect(),
            [8, 5],
        ),
        dev,
    );
    let y = Tensor::<1, burn::tensor::Int>::from_data(
        TensorData::new(vec![0i64, 1, 2, 0, 1, 2, 0, 1], [8]),
        dev,
    );
    (x, y)
}

/// The labs' trainer completes a probed step's record from the optimizer's pass, without
/// walking the model: the record is the one a walk before and after the step gives, the
/// parameters under their layers; a trainable parameter without a gradient has its norm and
/// a zero gradient norm and update ratio in both.
#[test]
fn a_record_completed_by_the_update_pass_is_the_walks() {
    let dev = gradscope::device();
    let mut c = MlpConfig::new(5, 3);
    (c.depth, c.width) = (4, 6);
    let net = c.init(&dev);
    let (x, y) = eight_samples(&dev);
    let ce = |logits| gradscope::train::loss::cross_entropy(logits, y.clone());
    let mlp = |m: &Mlp, t: &mut Tap| ce(m.forward(x.clone(), t));
    let (walk, pass) = (one_step(&net, mlp, false), one_step(&net, mlp, true));
    assert!(walk.layers.iter().all(|l| !l.params.is_empty()));
    assert_same(&walk, &pass);

    let spare = Spare {
        net,
        spare: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![3f32, 4.0], [2]),
            &dev,
        )),
    };
    let with = |m: &Spare, t: &mut Tap| ce(m.net.forward(x.clone(), t));
    let (walk, pass) = (one_step(&spare, with, false), one_step(&spare, with, true));
    let s = walk
        .other_params
        .iter()
        .find(|p| p.name == "spare")
        .unwrap();
    assert!(
        s.norm == 5.0 && s.grad_norm == 0.0 && s.update_ratio == 0.0,
        "{s:?}"
    );
    assert_same(&walk, &pass);
}

/// One probed step of `model` as the detection trainer makes it (grouped optimizer `opt`,
/// clipping by global norm at `clip_at` inside the update's pass): the gradient norms read by a
/// walk after the backward (`by_update` false: the trainer's path when gradients accumulate) or
/// taken from the update's pass.
fn one_detection_step<M: Module + Clone>(
    model: &M,
    loss: impl Fn(&M, &mut Tap) -> Tensor<1>,
    by_update: bool,
    mut opt: gradscope::detect::optimize::optimizer::GroupOptimizer,
    clip_at: f64,
) -> StepRecord {
    use gradscope::detect::optimize::optimizer::{GroupLr, GroupOptimizer};
    let mut probe = Probe::new(ProbeConfig::default());
    let mut tap = probe.tap(0);
    let l = loss(model, &mut tap);
    let lv = l.clone().into_scalar::<f64>();
    let grads = l.backward();
    let pending = if by_update {
        probe.after_backward_for_update(0, 0, lv, tap, model, &grads)
    } else {
        probe.after_backward_grads(0, 0, lv, tap, model, &grads)
    };
    let g = GroupOptimizer::gather_named(model, GradientsParams::from_grads(grads, model));
    let clip = gradscope::train::clip::on_update(Some(g.global_norm()), clip_at, None);
    assert!(clip.scale < 1.0, "the clipping should bite: {clip:?}");
    let lr = GroupLr {
        lr: [0.01; 3],
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    let (_, measured) = opt.apply_measured(model.clone(), g, lr, clip, None);
    probe.after_update(pending, &measured, 0.01).unwrap();
    probe.into_records().remove(0)
}

/// The detection trainer completes a probed step's record from its optimizer's pass when that
/// pass sees this backward's gradient alone: the record is the one its walk after the backward
/// gives — with AdamW and with MuSGD (whose Muon step reads the clipped gradient: the record
/// keeps the gradient's norm as it came), under clipping, and with a trainable parameter that
/// gets no gradient (as a frozen one).
#[test]
fn a_detection_record_from_the_update_pass_is_the_walks() {
    use gradscope::detect::optimize::optimizer::GroupOptimizer;
    let dev = gradscope::device();
    let mut c = MlpConfig::new(5, 3);
    (c.depth, c.width) = (4, 6);
    let net = Spare {
        net: c.init(&dev),
        spare: Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![3f32, 4.0], [2]),
            &dev,
        )),
    };
    let (x, y) = eight_samples(&dev);
    let loss = |m: &Spare, t: &mut Tap| {
        gradscope::train::loss::cross_entropy(m.net.forward(x.clone(), t), y.clone())
    };
    for musgd in [false, true] {
        let opt = || {
            if musgd {
                GroupOptimizer::musgd()
            } else {
                GroupOptimizer::new(true)
            }
        };
        let walk = one_detection_step(&net, loss, false, opt(), 0.05);
        let pass = one_detection_step(&net, loss, true, opt(), 0.05);
        // the MLP's parameters sit under `net.`, outside the probe points' names
        assert!(walk.other_params.len() > 2, "{:?}", walk.other_params);
        let spare = |r: &StepRecord| {
            r.other_params
                .iter()
                .find(|p| p.name == "spare")
                .cloned()
                .unwrap()
        };
        let s = spare(&pass);
        assert!(
            s.norm == 5.0 && s.grad_norm == 0.0 && s.update_ratio == 0.0,
            "musgd {musgd}: {s:?}"
        );
        assert_same(&walk, &pass);
    }
}
