//! Ultralytics `.pt` checkpoints read in Rust: a real `last.pt` written by Ultralytics 8.4.190
//! (yolo26n trained one epoch on coco8 at 64 px by `tools/reference/make_pt_fixture.py`, float16
//! weights in a pickled DetectionModel) against what PyTorch reads from the same file and what
//! Ultralytics' model computes (fixture by `tools/reference/head_branches.py`).

mod common;

use std::path::{Path, PathBuf};

use gradscope::detect::args::DetectArgs;
use gradscope::detect::model::{initial_model, start, weights_file_in};
use gradscope::settings::Command;
use gradscope::yolo::model::YoloConfig;
use gradscope::yolo::pt::{identify, read_pt};
use gradscope::yolo::weights::{load_matching, load_named};
use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/yolo26n_coco8_ultralytics.pt")
}

fn reference() -> Value {
    serde_json::from_str(include_str!("fixtures/yolo26n_coco8_ultralytics.json")).unwrap()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-3)
}

#[test]
fn every_tensor_equals_what_pytorch_reads() {
    let ck = read_pt(&fixture()).unwrap();
    let f = reference();
    assert_eq!(ck.entry, f["entry"].as_str().unwrap());
    assert_eq!((ck.scale, ck.nc), ('n', 80));
    assert_eq!(ck.imgsz, Some(64));
    let want = f["tensors"].as_object().unwrap();
    assert_eq!(ck.tensors.len(), want.len(), "float tensors");
    for (name, w) in want {
        let (shape, v) = ck
            .tensors
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        let ws: Vec<usize> = w[0]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(*shape, ws, "{name}");
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        let weighted: f64 = v
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * (0.37 * i as f64 + 1.0).sin())
            .sum();
        // float16 → float32 is exact; only the order of the f64 sums differs
        assert!(close(sum, w[1].as_f64().unwrap(), 1e-9), "{name}: Σ {sum}");
        assert!(
            close(weighted, w[2].as_f64().unwrap(), 1e-9),
            "{name}: Σ·r {weighted}"
        );
    }
}

#[test]
fn the_loaded_model_computes_what_ultralytics_computes() {
    let ck = read_pt(&fixture()).unwrap();
    let cfg = YoloConfig::from_name("yolo26n.yaml", ck.nc).unwrap();
    let m = load_named(cfg.init(&gradscope::device()), &ck.tensors, &fixture()).unwrap();
    let f = reference();
    for (i, branch) in ["one2many", "one2one"].iter().enumerate() {
        let (s, w) = common::head_sums(&m)[i];
        let (ws, ww) = (
            f[branch]["sum"].as_f64().unwrap(),
            f[branch]["weighted"].as_f64().unwrap(),
        );
        eprintln!("{branch}: Σ {s:.4} vs {ws:.4}, Σ·r {w:.4} vs {ww:.4}");
        assert!(close(s, ws, 1e-4) && close(w, ww, 1e-3), "{branch}");
    }
}

#[test]
fn another_class_count_transfers_everything_but_the_class_outputs() {
    let ck = read_pt(&fixture()).unwrap();
    let cfg = YoloConfig::from_name("yolo26n.yaml", 1).unwrap();
    let (_, t) = load_matching(cfg.init(&gradscope::device()), &ck.tensors, &fixture());
    // the class branches are max(64, min(nc, 100)) channels wide: 80 for nc=80, 64 for nc=1, so
    // every class-branch tensor but the depthwise stems (17 per level and head) starts afresh
    assert_eq!((t.loaded, t.total), (492, 594), "{:?}", t.kept);
    assert!(t.kept.iter().all(|k| k.contains("cv3.")), "{:?}", t.kept);
    // through the trainer's entry point, with the line it prints
    let args = DetectArgs::parse(
        DetectArgs::default(),
        &[format!("model={}", fixture().display())],
        Command::Train,
    )
    .unwrap();
    let from = start(&args, &mut |_| {}).unwrap();
    let (_, line) = initial_model(&args, &from, 1, &gradscope::device()).unwrap();
    let line = line.unwrap();
    assert!(
        line.starts_with("transferred 492/594 tensors from"),
        "{line}"
    );
    assert!(
        line.contains("102 initialised afresh") && line.contains("nc=1"),
        "{line}"
    );
}

#[test]
fn what_is_not_a_yolo26_detector_is_refused_by_name() {
    let ck = read_pt(&fixture()).unwrap();
    let mut v8 = ck.tensors.clone();
    v8.insert(
        "model.22.dfl.conv.weight".into(),
        (vec![1, 16, 1, 1], vec![0.0; 16]),
    );
    let e = identify(Path::new("yolov8n.pt"), &v8)
        .unwrap_err()
        .to_string();
    assert!(e.contains("DFL") && e.contains("YOLOv8/YOLO11"), "{e}");
    let mut seg = ck.tensors.clone();
    seg.insert("model.23.cv4.0.0.conv.weight".into(), (vec![1], vec![0.0]));
    let e = identify(Path::new("seg.pt"), &seg).unwrap_err().to_string();
    assert!(e.contains("segmentation, pose or OBB"), "{e}");
    // not a PyTorch file at all
    let dir = std::env::temp_dir().join(format!("gradscope-pt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let text = dir.join("notes.pt");
    std::fs::write(&text, "not a checkpoint").unwrap();
    let e = read_pt(&text).unwrap_err().to_string();
    assert!(e.contains("not a PyTorch checkpoint"), "{e}");
    // a file that is nowhere: where it was looked for
    let e = weights_file_in(
        "model",
        "mine.pt",
        Some(&dir),
        "http://127.0.0.1:9",
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("model=mine.pt: no such file") && e.contains("GRADSCOPE_WEIGHTS"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `model=yolo26n.pt` that is nowhere on disk is fetched from the release URL into the weights
/// folder, whole and atomically; a short or non-checkpoint body leaves nothing behind; an
/// unreachable server says where to put the file.
#[test]
fn a_release_name_is_downloaded_atomically() {
    let dir = std::env::temp_dir().join(format!("gradscope-fetch-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let bytes = std::fs::read(fixture()).unwrap();
    let url = common::serve_once(bytes.clone());
    let mut said = Vec::new();
    let w = weights_file_in("model", "yolo26n.pt", Some(&dir), &url, &mut |m| {
        said.push(m)
    })
    .unwrap()
    .unwrap();
    let got = dir.join("yolo26n.pt");
    assert_eq!(w, gradscope::detect::model::Weights::Pt(got.clone()));
    assert_eq!(
        std::fs::read(&got).unwrap(),
        bytes,
        "the file arrives whole"
    );
    assert!(
        said[0].contains("downloading") && said[0].contains("MB"),
        "{said:?}"
    );
    // progress at each tenth, ending at 100%
    let progress: Vec<&String> = said.iter().filter(|m| m.contains("% (")).collect();
    assert!(progress.len() >= 9, "{said:?}");
    assert!(progress.last().unwrap().contains("100%"), "{said:?}");
    // found on disk now: no second download (nothing listens any more)
    let again = weights_file_in("model", "yolo26n.pt", Some(&dir), &url, &mut |_| {}).unwrap();
    assert_eq!(again, Some(gradscope::detect::model::Weights::Pt(got)));
    // an error page instead of weights: refused, no file left
    let url = common::serve_once(b"<html>rate limited</html>".to_vec());
    let e = weights_file_in("model", "yolo26s.pt", Some(&dir), &url, &mut |_| {}).unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("fewer than the 100000"), "{chain}");
    let url = common::serve_once(vec![b'x'; 200_000]);
    let e = weights_file_in("model", "yolo26s.pt", Some(&dir), &url, &mut |_| {}).unwrap_err();
    let chain = format!("{e}: {}", std::error::Error::source(&e).unwrap());
    assert!(chain.contains("not a PyTorch checkpoint"), "{chain}");
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("yolo26n.pt")],
        "nothing else written"
    );
    // nobody there: where to put the file
    let e = weights_file_in(
        "model",
        "yolo26m.pt",
        Some(&dir),
        "http://127.0.0.1:9",
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("download failed") && e.contains(&dir.display().to_string()),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// Names out equal names in: Ultralytics' weights → a gradscope model → every way gradscope
/// writes a checkpoint (`.safetensors`, `.pt`) → read back by name gives each tensor under its
/// original name, bit for bit. That Ultralytics itself loads the `.pt` (strict
/// `load_state_dict`) is checked by hand with `tools/reference/load_exported_pt.py`.
#[test]
fn written_checkpoints_read_back_bit_for_bit() {
    use gradscope::yolo::config::ModelDef;
    use gradscope::yolo::pt_write::{write_pt, PtExport};
    use gradscope::yolo::weights::{named_tensors, read_safetensors, save_ultralytics};

    let ck = read_pt(&fixture()).unwrap();
    let cfg = YoloConfig::from_name("yolo26n.yaml", ck.nc).unwrap();
    let m = load_named(cfg.init(&gradscope::device()), &ck.tensors, &fixture()).unwrap();
    let dir = std::env::temp_dir().join(format!("gs_pt_roundtrip_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = dir.join("w.safetensors");
    save_ultralytics(&m, &st).unwrap();
    let tensors = named_tensors(&m);
    let names: Vec<String> = (0..ck.nc).map(|i| format!("c{i}")).collect();
    let pt = dir.join("w.pt");
    write_pt(
        &PtExport {
            tensors: &tensors,
            def: &ModelDef::yolo26(),
            scale: 'n',
            names: &names,
            imgsz: 64,
            data: None,
        },
        &pt,
    )
    .unwrap();
    let back_pt = read_pt(&pt).unwrap();
    assert_eq!(back_pt.entry, "state_dict");
    assert_eq!(
        (back_pt.scale, back_pt.nc, back_pt.imgsz),
        ('n', 80, Some(64))
    );
    assert_eq!(back_pt.names.as_deref(), Some(&names[..]));
    // Ultralytics' own file keeps its names out of the reader's sight
    assert_eq!(ck.names, None);
    let back_st = read_safetensors(&st).unwrap();
    for (what, back) in [("pt", &back_pt.tensors), ("safetensors", &back_st)] {
        assert_eq!(back.len(), ck.tensors.len(), "{what}: tensor count");
        for (name, (shape, v)) in &ck.tensors {
            let (s, w) = back
                .get(name)
                .unwrap_or_else(|| panic!("{what}: {name} missing"));
            assert_eq!(s, shape, "{what}: {name}");
            let same = v.iter().zip(w).all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{what}: {name} differs");
        }
    }
    // atomic: nothing but the two files is left behind
    let mut left: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["w.pt", "w.safetensors"]);
    std::fs::remove_dir_all(&dir).unwrap();
}
