//! Training on the real digits: the diagnosis separates vanishing gradients from the remedies,
//! and the remedies learn. (Release mode: `cargo test --release`.)

use gradscope::data::{digits, prepare};
use gradscope::diagnose::{diagnose, Verdict};
use gradscope::lab::settings::Settings;
use gradscope::lab::vanishing::VanishingLab;
use gradscope::nn::mlp::MlpConfig;
use gradscope::probe::{Probe, ProbeConfig};
use gradscope::train::{train_classifier, History, TrainConfig};

fn run(overrides: &[(&str, &str)], epochs: usize) -> (Verdict, f64, History) {
    let (train, val) = prepare(&digits::load().unwrap(), 0.2, 0);
    let mut s = Settings {
        model: MlpConfig::new(64, 10),
        train: TrainConfig {
            epochs,
            ..TrainConfig::default()
        },
    };
    for (k, v) in overrides {
        assert_eq!(s.set(k, v), Ok(true), "{k}={v}");
    }
    let dev = gradscope::device();
    let mut probe = Probe::new(ProbeConfig {
        every: 5,
        ..ProbeConfig::default()
    });
    let (_, hist) = train_classifier(
        s.model.init(&dev),
        &train,
        &val,
        &s.train,
        &mut probe,
        &dev,
        &mut |_| {},
    )
    .unwrap();
    let d = diagnose(probe.records()).expect("records");
    (d.verdict, d.first_last_end, hist)
}

#[test]
fn deep_sigmoid_vanishes_and_the_remedies_are_healthy_and_learn() {
    let (v, fl, h) = run(
        &[("depth", "20"), ("act", "sigmoid"), ("init", "default")],
        3,
    );
    assert_eq!(v, Verdict::Vanishing, "first/last {fl}");
    assert!(fl < 1e-3, "first/last {fl}");
    assert!(
        h.epochs.last().unwrap().val_acc < 0.3,
        "a vanishing 20-layer sigmoid net does not learn in 3 epochs"
    );

    let remedies: [&[(&str, &str)]; 2] = [
        &[
            ("depth", "20"),
            ("act", "relu"),
            ("init", "he"),
            ("norm", "batch"),
        ],
        &[
            ("depth", "20"),
            ("act", "silu"),
            ("init", "he"),
            ("residual", "true"),
            ("zero_init", "true"),
        ],
    ];
    for r in remedies {
        let (v, fl, h) = run(r, 10);
        assert_eq!(v, Verdict::Healthy, "{r:?}: first/last {fl}");
        let acc = h.epochs.last().unwrap().val_acc;
        assert!(acc >= 0.9, "{r:?}: val accuracy {acc}");
    }
}

#[test]
fn residual_without_zero_init_or_norm_is_called_exploding() {
    // He-initialised residual branches each add variance: the gradient grows on its way back.
    let (v, fl, _) = run(
        &[
            ("depth", "20"),
            ("act", "silu"),
            ("init", "he"),
            ("residual", "true"),
        ],
        1,
    );
    assert!(
        matches!(v, Verdict::Exploding | Verdict::NonFinite),
        "{v} (first/last {fl})"
    );
}

#[test]
fn the_lab_writes_its_report_and_probe_records() {
    let dir = std::env::temp_dir().join(format!("gradscope-lab-test-{}", std::process::id()));
    let mut lab = VanishingLab::default();
    for (k, v) in [
        ("depth", "6"),
        ("width", "16"),
        ("epochs", "1"),
        ("only", "sigmoid,relu+he"),
        ("add", "act=gelu,init=he"),
    ] {
        assert_eq!(lab.set(k, v), Ok(true));
    }
    lab.project = dir.clone();
    let out = lab.run(&mut |_| {}).unwrap();
    assert_eq!(out.variants.len(), 3);
    for f in ["report.html", "heatmap.png", "layers.png", "curves.png"] {
        let p = out.dir.join(f);
        assert!(
            std::fs::metadata(&p)
                .map(|m| m.len() > 1000)
                .unwrap_or(false),
            "{}",
            p.display()
        );
    }
    let html = std::fs::read_to_string(out.dir.join("report.html")).unwrap();
    assert!(html.contains("gelu+he") && html.contains("heatmap.png"));
    let recs = gradscope::probe::read_jsonl(&out.dir.join("relu+he").join("probe.jsonl")).unwrap();
    // 1437 samples / batch 64 = 23 steps; every 5th is probed: 0, 5, 10, 15, 20
    assert_eq!(
        recs.iter().map(|r| r.step).collect::<Vec<_>>(),
        vec![0, 5, 10, 15, 20]
    );
    assert_eq!(recs[0].layers.len(), 6, "5 hidden layers and the head");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_injected_nan_stops_training_and_names_the_producer() {
    use gradscope::probe::Fault;
    let (train, val) = prepare(&digits::load().unwrap(), 0.2, 0);
    let mut cfg = MlpConfig::new(64, 10);
    cfg.depth = 8;
    let dev = gradscope::device();
    let mut probe = Probe::new(ProbeConfig::default()).inject(
        3,
        Fault::ForwardNan {
            layer: "layers.4".into(),
        },
    );
    let t = TrainConfig {
        epochs: 1,
        ..TrainConfig::default()
    };
    let (_, hist) = train_classifier(
        cfg.init(&dev),
        &train,
        &val,
        &t,
        &mut probe,
        &dev,
        &mut |_| {},
    )
    .unwrap();
    let why = hist.stopped.expect("training stops on a non-finite loss");
    assert!(why.contains("step 3") && why.contains("layers.4"), "{why}");
    assert_eq!(hist.step_loss.len(), 4, "steps 0..=3 ran, nothing after");
    let last = probe.records().last().unwrap();
    assert_eq!(last.nonfinite.as_ref().unwrap().layer, "layers.4");
}
