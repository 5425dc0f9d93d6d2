//! Names out equal names in: a checkpoint means the same thing to gradscope and to Ultralytics,
//! for both head branches, and every way gradscope writes weights gives each tensor back under
//! its own name, bit for bit (fixture by `tools/reference/head_branches.py`).
//!
//! At initialisation Ultralytics' one-to-one branches are copies of the one-to-many ones, so a
//! test on initial weights cannot tell them apart: every one-to-one weight is moved by a
//! closed-form offset first, here and in the script.

mod common;

use std::path::{Path, PathBuf};

use burn::module::Module;
use gradscope::detect::optimize::ema::Ema;
use gradscope::detect::optimize::optimizer::GroupOptimizer;
use gradscope::detect::run::resume;
use gradscope::yolo::model::{Yolo, YoloConfig};
use gradscope::yolo::weights::{
    load_named, named_tensors, read_safetensors, save_ultralytics, NamedTensors,
};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Ultralytics' initial yolo26n with every one-to-one weight and bias moved by
/// 0.05·sin(0.37·i + 1.0).
fn perturbed() -> NamedTensors {
    let mut t = read_safetensors(&fixtures().join("yolo26n_seed0.safetensors")).unwrap();
    for (name, (_, v)) in t.iter_mut() {
        if name.contains("one2one_") && !name.contains("running_") {
            for (i, x) in v.iter_mut().enumerate() {
                *x = (*x as f64 + 0.05 * (0.37 * i as f64 + 1.0).sin()) as f32;
            }
        }
    }
    t
}

fn model(tensors: &NamedTensors) -> Yolo {
    let cfg = YoloConfig::from_name("yolo26n.yaml", 80).unwrap();
    load_named(
        cfg.init(&gradscope::device()),
        tensors,
        Path::new("perturbed"),
    )
    .unwrap()
}

#[test]
fn both_head_branches_mean_what_they_mean_in_ultralytics() {
    let f: Value =
        serde_json::from_str(include_str!("fixtures/head_branches.json")).expect("fixture");
    let got = common::head_sums(&model(&perturbed()));
    for (i, branch) in ["one2many", "one2one"].iter().enumerate() {
        for (j, key) in ["sum", "weighted"].iter().enumerate() {
            let want = f[branch][key].as_f64().unwrap();
            let ours = if j == 0 { got[i].0 } else { got[i].1 };
            eprintln!("{branch} {key}: ours {ours:.6} Ultralytics {want:.6}");
            assert!(
                (ours - want).abs() <= 1e-4 * want.abs().max(1.0),
                "{branch} {key}: ours {ours} vs Ultralytics {want}"
            );
        }
    }
    // the two branches really differ, so a swap would have failed above
    let a = f["one2many"]["weighted"].as_f64().unwrap();
    let b = f["one2one"]["weighted"].as_f64().unwrap();
    assert!((a - b).abs() > 1.0, "{a} vs {b}");
}

fn assert_same(what: &str, got: &NamedTensors, want: &NamedTensors) {
    assert_eq!(got.len(), want.len(), "{what}: tensor count");
    for (k, (shape, v)) in want {
        let (s2, v2) = got
            .get(k)
            .unwrap_or_else(|| panic!("{what}: {k} is missing"));
        assert_eq!(s2, shape, "{what}: {k}");
        let same = v.iter().zip(v2).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{what}: {k} differs");
    }
}

fn as_map(m: &impl Module) -> NamedTensors {
    named_tensors(m)
        .into_iter()
        .map(|(n, s, v)| (n, (s, v)))
        .collect()
}

#[test]
fn every_checkpoint_gradscope_writes_gives_each_tensor_back_by_name() {
    let tensors = perturbed();
    let m = model(&tensors);
    let dir = std::env::temp_dir().join(format!("gradscope-names-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // weights/{best,last}.safetensors
    let path = dir.join("best.safetensors");
    save_ultralytics(&m, &path).unwrap();
    assert_same(
        "best.safetensors",
        &read_safetensors(&path).unwrap(),
        &tensors,
    );
    // the resume state: training model and EMA, by the same names
    let ema = Ema::new(&m);
    let optim = GroupOptimizer::new(true);
    let counters = resume::Counters {
        epoch: 1,
        ema_updates: 0,
        last_opt: -1,
        opt_steps: 0,
        lr_scale: 1.0,
        best: 0.0,
        best_epoch: 1,
        adamw: true,
        muon: false,
    };
    // a ledger with what JSON cannot hold (NaN, ±∞) and values that need every digit
    let mut ledger = resume::Ledger::default();
    ledger.history.step_loss = vec![0.1, f64::NAN, 1.0 / 3.0];
    ledger.history.step_clip = vec![f64::NAN, 10.0, f64::INFINITY];
    ledger.history.epochs.push(gradscope::train::EpochStats {
        epoch: 0,
        train_loss: 2.5,
        val_loss: f64::NAN,
        val_metric: 1e-300,
    });
    ledger.diverged_at = Some((2, 0.1 + 0.2));
    ledger.diverged = vec!["loss grew ×1e3".into()];
    ledger.nan_in_a_row = 2;
    ledger
        .dead_windows
        .insert("model.0".into(), vec!["0110".into()]);
    let pending = burn::optim::GradientsParams::new();
    let state = resume::State {
        model: &m,
        ema: &ema,
        optim: &optim,
        pending: &pending,
        counters: &counters,
        ledger: &ledger,
    };
    resume::save(&dir, &state).unwrap();
    // the same state gives the same bytes (the counters are one sorted metadata entry)
    let first = std::fs::read(dir.join(resume::STATE_FILE)).unwrap();
    resume::save(&dir, &state).unwrap();
    assert!(
        first == std::fs::read(dir.join(resume::STATE_FILE)).unwrap(),
        "state files differ"
    );
    let fresh = YoloConfig::from_name("yolo26n.yaml", 80)
        .unwrap()
        .init(&gradscope::device());
    let back = resume::load(&dir.join(resume::STATE_FILE), fresh, &gradscope::device()).unwrap();
    assert_eq!(back.counters, counters);
    assert_same(
        "state: training model",
        &as_map(&back.model.valid()),
        &tensors,
    );
    assert_same(
        "state: EMA",
        &as_map(&back.ema.model(&back.model)),
        &tensors,
    );
    let bits = |v: &[f64]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    let (h, h2) = (&ledger.history, &back.ledger.history);
    assert_eq!(bits(&h2.step_loss), bits(&h.step_loss));
    assert_eq!(bits(&h2.step_clip), bits(&h.step_clip));
    assert!(h2.step_grad_norm.is_empty());
    let e = &h2.epochs[0];
    assert_eq!((e.epoch, e.train_loss, e.val_metric), (0, 2.5, 1e-300));
    assert!(e.val_loss.is_nan());
    assert_eq!(back.ledger.diverged_at, Some((2, 0.1 + 0.2)));
    assert_eq!(back.ledger.diverged, ledger.diverged);
    assert_eq!(back.ledger.nan_in_a_row, 2);
    assert_eq!(back.ledger.dead_windows, ledger.dead_windows);
    std::fs::remove_dir_all(&dir).ok();
}
