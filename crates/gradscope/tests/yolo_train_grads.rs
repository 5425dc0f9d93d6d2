//! YOLO26n in training mode against Ultralytics: the gradient of every parameter and every
//! BatchNorm running statistic after one forward, on Ultralytics' own weights
//! (fixture by `tools/reference/yolo_train_grads.py`). This is what guards the fused kernels
//! (BatchNorm + SiLU, convolution gradients) against PyTorch. (Release mode.)

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor, TensorData};
use gradscope::probe::Tap;
use gradscope::yolo::model::YoloConfig;
use gradscope::yolo::weights::{load_ultralytics, named_tensors, ultralytics_name};

fn wave(n: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..n).map(|i| f(i as f64) as f32).collect()
}

fn direction(n: usize) -> Vec<f64> {
    wave(n, |i| (0.37 * i + 1.0).sin())
        .into_iter()
        .map(f64::from)
        .collect()
}

/// (‖v‖, Σ v·r)
fn summary(v: &[f32]) -> (f64, f64) {
    let r = direction(v.len());
    let norm = v.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let dot = v.iter().zip(&r).map(|(&x, r)| x as f64 * r).sum();
    (norm, dot)
}

struct Grads<'a> {
    path: Vec<String>,
    grads: &'a Gradients,
    out: Vec<(String, Vec<f32>)>,
}

impl ModuleVisitor for Grads<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = param.val().grad(self.grads) {
            let v = g
                .into_data()
                .convert::<f32>()
                .try_into_vec::<f32>()
                .unwrap();
            self.out.push((ultralytics_name(&self.path), v));
        }
    }
}

#[test]
fn training_step_gradients_and_running_statistics_equal_ultralytics() {
    let f: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/yolo_train_grads.json")).unwrap();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let dev = common::test_device();
    let model = YoloConfig::from_name("yolo26n.yaml", 80)
        .unwrap()
        .init(&dev);
    let model = load_ultralytics(model, &dir.join("yolo26n_seed0.safetensors")).unwrap();
    let shape = [2, 3, 64, 64];
    let n: usize = shape.iter().product();
    let x = Tensor::<4>::from_data(
        TensorData::new(
            wave(n, |i| 0.5 + 0.45 * (0.7 * i).sin() * (0.013 * i).cos()),
            shape,
        ),
        &dev,
    );
    let out = model.forward(x, &mut Tap::off());
    let o2m = out.heads.one2many;
    let o2o = out.heads.one2one;
    let dims = o2m.dims();
    assert_eq!(dims.to_vec(), vec![2, 84, 84]);
    let numel = dims.iter().product();
    let weights = |f: &dyn Fn(f64) -> f64| {
        Tensor::<3>::from_data(TensorData::new(wave(numel, f), dims), &dev)
    };
    let loss = (o2m * weights(&|i| (0.1 * i + 0.3).sin())).sum()
        + (o2o * weights(&|i| (0.07 * i).cos())).sum();
    let loss_value = loss.clone().into_scalar::<f64>();
    let want_loss = f["loss"].as_f64().unwrap();
    assert!(
        (loss_value - want_loss).abs() <= 1e-3 * want_loss.abs().max(1.0),
        "loss {loss_value} vs Ultralytics {want_loss}"
    );
    let grads = loss.backward();

    let mut v = Grads {
        path: Vec::new(),
        grads: &grads,
        out: Vec::new(),
    };
    model.visit(&mut v);
    let reference = f["grads"].as_object().unwrap();
    let max_norm = reference
        .values()
        .map(|v| v[0].as_f64().unwrap())
        .fold(0.0, f64::max);
    let mut worst = (0.0f64, String::new());
    let mut checked = 0;
    for (name, g) in &v.out {
        let want = &reference
            .get(name)
            .unwrap_or_else(|| panic!("{name} not in the fixture"));
        let (want_norm, want_dot) = (want[0].as_f64().unwrap(), want[1].as_f64().unwrap());
        let (norm, dot) = summary(g);
        let r_norm = direction(g.len()).iter().map(|r| r * r).sum::<f64>().sqrt();
        // norm: relative; direction: the error projected on r, relative to ‖g‖·‖r‖ (Cauchy–Schwarz).
        // A few BatchNorm biases feed a linear path into another BatchNorm, which removes any
        // per-channel shift: their exact gradient is 0 and both sides hold f32 rounding noise
        // (‖g‖ ~1e-5 where gradients here are 1e0–1e5), so errors are measured against at least
        // 1e-6 of the largest gradient norm.
        let scale = want_norm.max(1e-6 * max_norm);
        let e_norm = (norm - want_norm).abs() / scale;
        let e_dot = (dot - want_dot).abs() / (scale * r_norm);
        let e = e_norm.max(e_dot);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(
            e < 1e-3,
            "{name}: ‖g‖ {norm} vs {want_norm}, Σg·r {dot} vs {want_dot}"
        );
        checked += 1;
    }
    assert_eq!(
        checked,
        reference.len(),
        "every Ultralytics parameter has a gradient"
    );
    eprintln!(
        "{checked} parameter gradients, worst relative error {:e} ({})",
        worst.0, worst.1
    );

    // running statistics after the one training forward (momentum 0.03, unbiased variance)
    let running = f["running"].as_object().unwrap();
    let mut n_stats = 0;
    for (name, _, v) in named_tensors(&model) {
        if let Some(want) = running.get(&name) {
            let sum: f64 = v.iter().map(|&x| x as f64).sum();
            let (_, dot) = summary(&v);
            let (ws, wd) = (want[0].as_f64().unwrap(), want[1].as_f64().unwrap());
            let scale = v.iter().map(|&x| (x as f64).abs()).sum::<f64>().max(1e-6);
            assert!(
                (sum - ws).abs() / scale < 1e-4 && (dot - wd).abs() / scale < 1e-4,
                "{name}: Σ {sum} vs {ws}, Σv·r {dot} vs {wd}"
            );
            n_stats += 1;
        }
    }
    assert_eq!(n_stats, running.len(), "every running statistic compared");
}
