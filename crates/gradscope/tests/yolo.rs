//! YOLO26 against Ultralytics: parameters layer by layer for every scale, feature-map shapes,
//! SPPF's padding. (Release mode: `cargo test --release`.)

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use gradscope::probe::params::snapshot;
use gradscope::probe::Tap;
use gradscope::yolo::blocks::{Sppf, Switches};
use gradscope::yolo::model::YoloConfig;

#[test]
fn parameters_per_layer_equal_ultralytics_for_every_scale() {
    let f: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/yolo26_layers.json")).unwrap();
    for scale in ['n', 's', 'm', 'l', 'x'] {
        let reference = &f["scales"][scale.to_string()];
        let cfg = YoloConfig::from_name(&format!("yolo26{scale}.yaml"), 80).unwrap();
        let model = cfg.init(&gradscope::device());
        let mut per_layer = [0u64; 24];
        for p in snapshot(&model, None) {
            let layer: usize = p.path.split('.').nth(1).unwrap().parse().unwrap();
            per_layer[layer] += p.shape.iter().product::<usize>() as u64;
        }
        let layers = reference["layers"].as_array().unwrap();
        for (i, l) in layers.iter().enumerate() {
            let want = l["params"].as_u64().unwrap();
            assert_eq!(
                per_layer[i], want,
                "yolo26{scale} layer {i} ({})",
                l["module"]
            );
        }
        assert_eq!(
            per_layer.iter().sum::<u64>(),
            reference["total_params"].as_u64().unwrap(),
            "yolo26{scale}"
        );
    }
}

#[test]
fn yolo26n_feature_maps_at_640() {
    let dev = Device::flex(); // inference: no autodiff
    let model = YoloConfig::from_name("yolo26n.yaml", 80)
        .unwrap()
        .init(&gradscope::device())
        .valid();
    let x: Tensor<4> = Tensor::zeros([1, 3, 640, 640], &dev);
    let out = model.forward(x, &mut Tap::off());
    let shapes: Vec<[usize; 4]> = out.features.iter().map(|f| f.dims()).collect();
    assert_eq!(
        shapes,
        vec![[1, 64, 80, 80], [1, 128, 40, 40], [1, 256, 20, 20]]
    );
    assert_eq!(out.heads.one2many.dims(), [1, 84, 8400]);
    assert_eq!(out.heads.one2one.dims(), [1, 84, 8400]);
}

#[test]
fn sppf_pools_all_negative_inputs_to_their_true_maxima() {
    let dev = gradscope::device();
    // identity-like cv1: a 1×1 conv from 2 to 1 channel with weight (1, 0); BN at running stats 0/1
    let sw = Switches {
        bn: false,
        ..Switches::default()
    };
    let mut sppf = Sppf::new(2, 2, 5, 3, false, sw, &dev);
    sppf.cv1.conv.weight = burn::module::Param::from_tensor(Tensor::from_data(
        TensorData::new(vec![1.0f32, 0.0], [1, 2, 1, 1]),
        &dev,
    ));
    sppf.cv1.conv.bias = Some(burn::module::Param::from_tensor(Tensor::zeros([1], &dev)));
    let sppf = sppf.valid();
    // a 6×6 map of negative values; the largest (−1) sits in a corner
    let mut v: Vec<f32> = (0..36).map(|i| -2.0 - i as f32).collect();
    v[0] = -1.0;
    let mut data = v.clone();
    data.extend(vec![-5.0f32; 36]);
    let x: Tensor<4> = Tensor::from_data(TensorData::new(data, [1, 2, 6, 6]), &Device::flex());
    let y0 = sppf.cv1.forward(x);
    let opts = burn::tensor::ops::MaxPoolOptions::new([5, 5])
        .with_stride([1, 1])
        .with_padding([2, 2]);
    let p1 = burn::tensor::module::max_pool2d(y0, opts)
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    // zero padding would give 0 at the border; −∞ padding gives the true window maxima (all < 0)
    assert!(p1.iter().all(|&m| m < 0.0), "{p1:?}");
    assert_eq!(p1[0], -1.0);
    assert_eq!(
        p1[2 * 6 + 2],
        -1.0,
        "the corner is inside the 5×5 window of (2, 2)"
    );
}

#[test]
fn ultralytics_weights_give_ultralytics_outputs() {
    use gradscope::yolo::weights::{load_ultralytics, read_safetensors};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let model = YoloConfig::from_name("yolo26n.yaml", 80)
        .unwrap()
        .init(&gradscope::device());
    let model = load_ultralytics(model, &dir.join("yolo26n_seed0.safetensors"))
        .unwrap()
        .valid();
    let reference = read_safetensors(&dir.join("yolo26n_seed0_outputs.safetensors")).unwrap();
    let (shape, input) = &reference["input"];
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(input.clone(), [shape[0], shape[1], shape[2], shape[3]]),
        &Device::flex(),
    );
    let out = model.forward(x, &mut Tap::off());
    for (name, ours) in [
        ("one2many", out.heads.one2many),
        ("one2one", out.heads.one2one),
    ] {
        let (s, want) = &reference[name];
        assert_eq!(ours.dims().to_vec(), *s, "{name} shape");
        let got = ours.into_data().try_into_vec::<f32>().unwrap();
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: max |Δ| {worst:e}, output scale {scale}");
        assert!(
            worst <= 1e-3 * scale,
            "{name}: max |Δ| {worst} vs output scale {scale}"
        );
    }
}

#[test]
fn one_to_one_loss_reaches_only_its_branch_and_one_to_many_reaches_everything_else() {
    let dev = gradscope::device();
    let model = YoloConfig::from_name("yolo26n.yaml", 4).unwrap().init(&dev);
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(vec![0.5f32; 3 * 64 * 64], [1, 3, 64, 64]),
        &dev,
    );
    let with_grad = |loss: Tensor<1>| -> Vec<(String, bool)> {
        let grads = loss.backward();
        snapshot(&model, Some(&grads))
            .into_iter()
            .map(|p| (p.path, p.grad.is_some_and(|g| g.0 > 0.0)))
            .collect()
    };
    let out = model.forward(x.clone(), &mut Tap::off());
    for (path, has) in with_grad(out.heads.one2many.powf_scalar(2.0).mean()) {
        assert_eq!(
            has,
            !path.contains("one2one"),
            "one-to-many loss and {path}"
        );
    }
    let out = model.forward(x, &mut Tap::off());
    for (path, has) in with_grad(out.heads.one2one.powf_scalar(2.0).mean()) {
        assert_eq!(
            has,
            path.contains("one2one"),
            "one-to-one loss (detached features) and {path}"
        );
    }
}

#[test]
fn end_to_end_detections_equal_ultralytics_top_k() {
    use gradscope::yolo::postprocess::end2end;
    use gradscope::yolo::weights::{load_ultralytics, read_safetensors};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = read_safetensors(&dir.join("yolo26n_seed0_outputs.safetensors")).unwrap();
    // the reference one-to-one raw output through our post-processing …
    let (_, o2o) = &reference["one2one"];
    let levels = [(20, 20, 8), (10, 10, 16), (5, 5, 32)];
    let ours = end2end(o2o, 80, &levels, 300);
    let (shape, want) = &reference["topk"];
    assert_eq!(shape, &vec![1, 300, 6]);
    assert_eq!(ours.len(), 300);
    // scores are best-first in both; equal scores (fp16-rounded logits) may come in either order,
    // so each detection must match a reference row with the same score and class
    let rows: Vec<&[f32]> = want.chunks(6).collect();
    let mut used = vec![false; rows.len()];
    for (i, d) in ours.iter().enumerate() {
        assert!(
            (d[4] - rows[i][4]).abs() < 1e-6,
            "detection {i}: score {} vs {}",
            d[4],
            rows[i][4]
        );
        let hit = rows.iter().enumerate().position(|(j, w)| {
            !used[j]
                && w[5] == d[5]
                && (w[4] - d[4]).abs() < 1e-6
                && (0..4).all(|c| (w[c] - d[c]).abs() < 1e-3)
        });
        let j = hit.unwrap_or_else(|| panic!("detection {i} {d:?} has no match in the reference"));
        used[j] = true;
    }
    // … and our own model's output gives the same detections
    let model = load_ultralytics(
        YoloConfig::from_name("yolo26n.yaml", 80)
            .unwrap()
            .init(&gradscope::device()),
        &dir.join("yolo26n_seed0.safetensors"),
    )
    .unwrap()
    .valid();
    let (s, input) = &reference["input"];
    let x: Tensor<4> = Tensor::from_data(
        TensorData::new(input.clone(), [s[0], s[1], s[2], s[3]]),
        &Device::flex(),
    );
    let raw = model
        .forward(x, &mut Tap::off())
        .heads
        .one2one
        .into_data()
        .try_into_vec::<f32>()
        .unwrap();
    let mine = end2end(&raw, 80, &levels, 300);
    let same = mine
        .iter()
        .zip(&ours)
        .filter(|(a, b)| a[5] == b[5] && (a[4] - b[4]).abs() < 1e-4)
        .count();
    assert!(same >= 295, "{same}/300 detections agree");
}

#[test]
fn ablation_switches_remove_batchnorm_and_residual_adds() {
    use gradscope::activation::Activation;
    use gradscope::yolo::blocks::Inner;
    use gradscope::yolo::model::Block;
    let dev = gradscope::device();
    let mut cfg = YoloConfig::from_name("yolo26n.yaml", 80).unwrap();
    cfg.switches = Switches {
        act: Activation::Relu,
        bn: false,
        shortcut: false,
    };
    let m = cfg.init(&dev);
    let params = snapshot(&m, None);
    assert!(
        params.iter().all(|p| !p.path.contains(".bn.")),
        "bn=false: no BatchNorm"
    );
    // each Conv trades BatchNorm's γ, β (2·c) for a bias (c): fewer parameters than 2,572,280
    let total: usize = params
        .iter()
        .map(|p| p.shape.iter().product::<usize>())
        .sum();
    assert!(total < 2_572_280 && total > 2_400_000, "{total}");
    let Some(Block::C3k2(c)) = &m.model[2] else {
        panic!("layer 2 is a C3k2")
    };
    let Inner::Bottleneck(b) = &c.m[0] else {
        panic!("yolo26n layer 2 has Bottleneck inner blocks")
    };
    assert!(!b.add, "shortcut=false removes the residual add");
    assert_eq!(b.cv1.act, Some(Activation::Relu));
    let x: Tensor<4> = Tensor::zeros([1, 3, 64, 64], &dev);
    let out = m.forward(x, &mut Tap::off());
    assert_eq!(out.heads.one2many.dims(), [1, 84, 84]);
}

#[test]
fn saved_weights_use_ultralytics_names_and_load_back() {
    use gradscope::yolo::weights::{load_ultralytics, read_safetensors, save_ultralytics};
    let dev = gradscope::device();
    let dir = std::env::temp_dir().join(format!("gradscope-yolo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/yolo26n_seed0.safetensors");
    let cfg = YoloConfig::from_name("yolo26n.yaml", 80).unwrap();
    let a = load_ultralytics(cfg.init(&dev), &fixture).unwrap();
    let path = dir.join("w.safetensors");
    save_ultralytics(&a, &path).unwrap();
    let saved = read_safetensors(&path).unwrap();
    let original = read_safetensors(&fixture).unwrap();
    assert_eq!(
        saved.len(),
        original.len(),
        "every tensor, BatchNorm statistics included"
    );
    for (k, (shape, v)) in &original {
        let (s2, v2) = saved
            .get(k)
            .unwrap_or_else(|| panic!("{k} missing from the saved file"));
        assert_eq!(s2, shape, "{k}");
        assert_eq!(v2, v, "{k}: values survive a round trip");
    }
    let b = load_ultralytics(cfg.init(&dev), &path).unwrap();
    let x: Tensor<4> = Tensor::ones([1, 3, 64, 64], &Device::flex());
    let (ya, yb) = (
        a.valid().forward(x.clone(), &mut Tap::off()),
        b.valid().forward(x, &mut Tap::off()),
    );
    let d = (ya.heads.one2one - yb.heads.one2one)
        .abs()
        .max()
        .into_scalar::<f32>();
    assert_eq!(d, 0.0);
    std::fs::remove_dir_all(&dir).ok();
}
