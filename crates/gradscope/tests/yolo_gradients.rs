//! The claim that SiLU, BatchNorm and residual connections keep YOLO26's gradients alive,
//! measured: one probed step of YOLO26n on two tree tiles, as built and with all three removed.

use burn::tensor::{Tensor, TensorData};
use gradscope::detect::args::Cache;
use gradscope::detect::args::DetectArgs;
use gradscope::detect::input::dataset::DetData;
use gradscope::detect::input::sources::{load_sets, resolve_data, unpack_trees};
use gradscope::detect::model::build_model;
use gradscope::detect::objective::assign::Anchors;
use gradscope::detect::objective::loss::{yolo_loss, LossGains};
use gradscope::diagnose::{diagnose, Verdict};
use gradscope::probe::{Probe, ProbeConfig};
use gradscope::settings::Command;

fn tiles() -> DetData {
    let dir = std::env::temp_dir().join(format!("gradscope-yolo-grad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    unpack_trees(&dir.join("trees")).unwrap();
    let data = resolve_data(dir.join("trees/data.yaml").to_str().unwrap(), &mut |_| {}).unwrap();
    let (train, _) = load_sets(&data, Cache::Ram, &mut |_, _| {}).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    train
}

/// First-step diagnosis of YOLO26n with the given switches.
fn first_step(data: &DetData, switches: &[&str]) -> gradscope::diagnose::Diagnosis {
    let device = gradscope::device();
    let words: Vec<String> = switches.iter().map(|s| s.to_string()).collect();
    let args = DetectArgs::parse(DetectArgs::default(), &words, Command::Train).unwrap();
    let (_, model) = build_model(&args, 1, &device).unwrap();
    let s = 128;
    let b = data
        .val_batch(&[0, 1], s as u32, (s as u32, s as u32))
        .unwrap();
    let x = Tensor::<4>::from_data(TensorData::new(b.x, [2, 3, s, s]), &device);
    let mut probe = Probe::new(ProbeConfig::default());
    let mut tap = probe.tap(0);
    let out = model.forward(x, &mut tap);
    let anchors = Anchors::new(s, s, &[8, 16, 32]);
    let (loss, _) = yolo_loss(
        out.heads.one2many,
        out.heads.one2one,
        &b.targets,
        &anchors,
        (s, s),
        0.8,
        &LossGains::default(),
    );
    let lv = loss.clone().into_scalar::<f64>();
    let grads = loss.backward();
    let pending = probe.after_backward(0, 0, lv, tap, &model, &grads);
    probe.after_step(pending, &model, 0.0).unwrap();
    diagnose(probe.records()).unwrap()
}

#[test]
fn silu_batchnorm_and_shortcuts_keep_yolo26_gradients_alive() {
    let data = tiles();
    let built = first_step(&data, &[]);
    assert_eq!(built.verdict, Verdict::Healthy, "{built}");
    assert!(built.first_last_init > 0.1, "{built}");
    let ablated = first_step(&data, &["act=sigmoid", "bn=false", "shortcut=false"]);
    assert_eq!(ablated.verdict, Verdict::Vanishing, "{ablated}");
    assert!(ablated.first_last_init < 1e-4, "{ablated}");
}
