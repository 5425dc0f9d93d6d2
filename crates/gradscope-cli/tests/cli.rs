//! The command line as a user meets it: bad input gets a clear message and exit code 2, never
//! a panic; a small lab runs end to end and its records re-diagnose.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn gradscope(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Runs `gradscope args`, which must succeed; its standard output.
fn succeeds(args: &[&str]) -> String {
    let out = gradscope(args);
    assert!(
        out.status.success(),
        "gradscope {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn fails_with(args: &[&str], needles: &[&str]) {
    let out = gradscope(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{args:?} should fail cleanly; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    for n in needles {
        assert!(err.contains(n), "{args:?}: '{n}' missing from: {err}");
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gradscope-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn bad_arguments_name_the_argument_and_what_is_accepted() {
    fails_with(
        &["export", "model=best.safetensors", "format=onnx"],
        &["format=pt only", "yolo export model=best.pt format=onnx"],
    );
    fails_with(&["lab", "vanishing", "depth=-3"], &["depth=-3", "≥ 2"]);
    // a lab runs on one device; a GPU needs the gpu build (or, in it, a GPU)
    fails_with(
        &["lab", "recurrent", "device=0,1"],
        &["device=0,1", "one device", "gradscope train device=0,1"],
    );
    if !cfg!(feature = "gpu") {
        fails_with(
            &["lab", "vanishing", "device=0"],
            &["--features gpu", "device=cpu"],
        );
    }
    fails_with(
        &["lab", "vanishing", "act=foo"],
        &["act=foo", "sigmoid", "leaky_relu"],
    );
    fails_with(
        &["lab", "vanishing", "colour=red"],
        &["unknown key 'colour'", "depth", "probe_every"],
    );
    fails_with(
        &["lab", "vanishing", "depth"],
        &["'depth' is not key=value"],
    );
    fails_with(&["lab", "vanishing", "lr=abc"], &["lr=abc", "number"]);
    fails_with(
        &["lab", "vanishing", "add=act=foo"],
        &["add=act=foo", "act=foo"],
    );
    fails_with(&["lab", "nope"], &["unknown lab 'nope'", "recurrent"]);
    fails_with(
        &["lab", "recurrent", "task=foo"],
        &["task=foo", "adding", "sunspots"],
    );
    fails_with(
        &["lab", "recurrent", "cells=rnn,foo"],
        &["cells=rnn,foo", "lstm"],
    );
    fails_with(&["lab", "recurrent", "T=1"], &["T=1", "≥ 2"]);
    fails_with(
        &["lab", "recurrent", "depth=3"],
        &["unknown key 'depth'", "forget_bias"],
    );
    fails_with(
        &["lab", "exploding", "clip_norm=-1"],
        &["clip_norm=-1", "> 0"],
    );
    fails_with(&["lab", "exploding", "nan_recovery=x"], &["nan_recovery=x"]);
    fails_with(&["frobnicate"], &["unknown command 'frobnicate'"]);
    fails_with(&["train", "imgsz=5000"], &["imgsz=5024", "32 to 4096"]);
    fails_with(
        &["train", "epoch=3"],
        &["unknown argument 'epoch'", "epochs"],
    );
    fails_with(
        &["train", "data=no-such.yaml"],
        &["data=no-such.yaml", "coco8.yaml"],
    );
    fails_with(
        &["train", "resume=true", "model=nowhere/last.safetensors"],
        &["nowhere"],
    );
    fails_with(&["predict", "source=x.jpg"], &["model="]);
    fails_with(
        &["val", "model=missing.safetensors"],
        &["missing.safetensors"],
    );
    fails_with(
        &["info", "model=yolo99z.yaml"],
        &["model=yolo99z.yaml", "yolo26n.yaml"],
    );
    fails_with(&["info", "imgsz=100"], &["imgsz=100", "multiple of 32"]);
    fails_with(&["help", "lab", "nope"], &["unknown lab 'nope'"]);
    let labs = succeeds(&["help", "lab"]);
    for lab in ["vanishing", "exploding", "recurrent"] {
        assert!(labs.contains(lab), "{labs}");
    }
}

#[test]
fn missing_or_corrupt_data_files_are_named() {
    let d = tmp("data");
    let dir = d.to_str().unwrap();
    fails_with(
        &[
            "lab",
            "vanishing",
            "data=fashion",
            &format!("data_dir={dir}"),
        ],
        &[dir, "apt-get install dataset-fashion-mnist"],
    );
    std::fs::write(
        d.join("train-images-idx3-ubyte"),
        b"\x00\x00\x08\x03\x00\x00\x00\x02",
    )
    .unwrap();
    std::fs::write(
        d.join("train-labels-idx1-ubyte"),
        b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02",
    )
    .unwrap();
    fails_with(
        &[
            "lab",
            "vanishing",
            "data=fashion",
            &format!("data_dir={dir}"),
        ],
        &["train-images-idx3-ubyte", "truncated header"],
    );
    fails_with(
        &["diagnose", d.join("nothing").to_str().unwrap()],
        &["does not exist"],
    );
    let bad = d.join("probe.jsonl");
    std::fs::write(&bad, "{\"step\": 0}\nnot json\n").unwrap();
    fails_with(
        &["diagnose", bad.to_str().unwrap()],
        &["probe.jsonl", "line 1"],
    );
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_small_lab_runs_and_its_records_re_diagnose() {
    let d = tmp("lab");
    let stdout = succeeds(&[
        "lab",
        "vanishing",
        "depth=12",
        "width=32",
        "epochs=2",
        "only=sigmoid,relu+he",
        &format!("project={}", d.display()),
    ]);
    assert!(
        stdout.contains("sigmoid") && stdout.contains("vanishing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("relu+he") && stdout.contains("healthy"),
        "{stdout}"
    );
    let lab = d.join("vanishing").join("lab");
    assert!(lab.join("report.html").is_file());
    let text = succeeds(&["diagnose", lab.to_str().unwrap()]);
    assert!(
        text.contains("verdict: vanishing") && text.contains("verdict: healthy"),
        "{text}"
    );
    // the remedies in the lab's own pasteable form: a new variant, numbers filled in
    assert!(
        text.contains("add=act=relu,init=he"),
        "a remedy is suggested: {text}"
    );
    let remedies: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().split_once(". "))
        .filter(|(n, _)| n.parse::<usize>().is_ok())
        .map(|(_, rest)| rest.split_whitespace().next().unwrap_or(""))
        .collect();
    assert!(!remedies.is_empty(), "{text}");
    for r in remedies {
        assert!(r.starts_with("add=") && !r.contains('<'), "{r} in {text}");
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_exploding_lab_names_the_producer_and_clipping_trains() {
    let d = tmp("exploding");
    let stdout = succeeds(&[
        "lab",
        "exploding",
        "epochs=3",
        "only=no-clipping,clip_norm=1",
        &format!("project={}", d.display()),
    ]);
    assert!(
        stdout.contains("produced the first non-finite"),
        "the producer is named: {stdout}"
    );
    assert!(
        stdout.contains("recovered from a non-finite"),
        "NaN recovery is reported: {stdout}"
    );
    let row = stdout
        .lines()
        .find(|l| l.starts_with("clip_norm=1"))
        .expect("clip_norm=1 row");
    assert!(
        !row.contains("NaN") && !row.contains("non-finite"),
        "clipping trains: {row}"
    );
    assert!(d.join("exploding/lab/grad_norm.png").is_file());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn the_recurrent_lab_runs_a_short_comparison() {
    let d = tmp("recurrent");
    let stdout = succeeds(&[
        "lab",
        "recurrent",
        "T=8",
        "hidden=8",
        "epochs=1",
        "per_epoch=5",
        &format!("project={}", d.display()),
    ]);
    for cell in ["rnn", "lstm", "gru"] {
        assert!(
            stdout.lines().any(|l| l.starts_with(cell)),
            "{cell} row: {stdout}"
        );
    }
    assert!(
        stdout.contains("0.1667"),
        "the adding baseline 1/6 is shown: {stdout}"
    );
    let dir = d.join("recurrent/adding8");
    assert!(dir.join("through_time.png").is_file() && dir.join("report.html").is_file());
    let diag = succeeds(&["diagnose", dir.to_str().unwrap()]);
    assert!(diag.contains("time step"), "{diag}");
    // remedies, if any, in the recurrent lab's own keys with the numbers filled in
    assert!(!diag.contains('<'), "no placeholder: {diag}");
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn info_prints_the_yolo26n_layer_table() {
    let text = succeeds(&["info", "model=yolo26n.yaml"]);
    assert!(text.contains("2572280 parameters"), "{text}");
    let p3 = text
        .lines()
        .find(|l| l.trim_start().starts_with("16 "))
        .expect("layer 16");
    assert!(p3.contains("64×80×80"), "P3 at 640: {p3}");
    let detect = text
        .lines()
        .find(|l| l.contains("Detect"))
        .expect("Detect row");
    assert!(detect.contains("309656"), "{detect}");
}

/// Output into a pipe whose reader has gone (`gradscope … | head`, once head has its lines) ends
/// the program quietly by SIGPIPE, as Unix tools do, not with a panic.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_output_quietly() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["info", "model=yolo26n.yaml"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    // the reader goes away before anything is written
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("it ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.signal(), Some(13), "ended by SIGPIPE: {err}");
}

/// Kill a training run after its first epoch, resume it, and compare with an uninterrupted
/// run: the resumed epochs' training losses are the same.
#[test]
fn a_killed_run_resumes_exactly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tmp("resume");
    let data = dir.join("datasets");
    let common = |name: &str| -> Vec<String> {
        vec![
            "epochs=3".into(),
            "imgsz=64".into(),
            "batch=4".into(),
            "nbs=4".into(),
            "warmup_epochs=0".into(),
            "data=trees".into(),
            // a setting the resumed run must get back from args.yaml
            "plots=false".into(),
            format!("project={}", dir.join("runs").display()),
            format!("name={name}"),
        ]
    };
    let run = |args: &[String]| {
        let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .arg("train")
            .args(args)
            .env("GRADSCOPE_DATASETS", &data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let trained = run(&common("whole"));
    // its records re-diagnosed as the trainer diagnosed them, with what its state file knows
    // (the head levels' assignment, the optimizer auto chose)
    let diagnosed = succeeds(&["diagnose", &dir.join("runs/whole").display().to_string()]);
    let from = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no '{key}' in {text}"))
    };
    assert_eq!(from(&diagnosed, "verdict:"), from(&trained, "verdict:"));
    let levels = "  - head levels (";
    assert_eq!(from(&diagnosed, levels), from(&trained, levels));
    // the same run, killed as soon as its first epoch is validated
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .arg("train")
        .args(common("killed"))
        .env("GRADSCOPE_DATASETS", &data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let state = dir.join("runs/killed/weights/last.state.safetensors");
    for line in reader.lines() {
        let line = line.unwrap();
        if line.contains("gradients:") && state.is_file() {
            break;
        }
    }
    child.kill().unwrap();
    let _ = child.wait();
    let rows = |name: &str| -> Vec<Vec<f64>> {
        std::fs::read_to_string(dir.join(format!("runs/{name}/results.csv")))
            .unwrap()
            .lines()
            .skip(1)
            .map(|l| l.split(',').map(|x| x.parse().unwrap()).collect())
            .collect()
    };
    assert!(
        rows("killed").len() < 3,
        "the run was killed before its end"
    );
    let args_yaml = dir.join("runs/killed/args.yaml");
    let started_with = std::fs::read_to_string(&args_yaml).unwrap();
    assert!(started_with.contains("plots: false"), "{started_with}");
    let out = gradscope(&[
        "train",
        "resume=true",
        &format!(
            "model={}",
            dir.join("runs/killed/weights/last.safetensors").display()
        ),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (a, b) = (rows("whole"), rows("killed"));
    assert_eq!(b.len(), 3);
    // the resumed run went by the settings it was started with: args.yaml unchanged, no plots
    assert_eq!(std::fs::read_to_string(&args_yaml).unwrap(), started_with);
    assert!(!dir.join("runs/killed/results.png").exists());
    assert!(dir.join("runs/killed/weights/last.safetensors").is_file());
    // epochs 2 and 3: train box, cls and l1 losses, mAP, val losses
    for e in 1..3 {
        for c in [2, 3, 4, 8, 9, 10, 11] {
            let (x, y) = (a[e][c], b[e][c]);
            assert!(
                (x - y).abs() <= 1e-4 * x.abs().max(1e-3),
                "epoch {} column {c}: uninterrupted {x}, resumed {y}",
                e + 1
            );
        }
    }
    // the run exported as an Ultralytics .pt validates exactly as the checkpoint it came from
    let best = dir.join("runs/whole/weights/best.safetensors");
    let out = succeeds(&["export", &format!("model={}", best.display())]);
    let pt = dir.join("runs/whole/weights/best.pt");
    assert!(out.contains("wrote") && pt.is_file(), "{out}");
    let table = |model: &std::path::Path| {
        let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(["val", &format!("model={}", model.display()), "data=trees"])
            .current_dir(&dir)
            .env("GRADSCOPE_DATASETS", &data)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text.lines()
            .find(|l| l.trim_start().starts_with("all"))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("no table: {text}"))
    };
    assert_eq!(table(&pt), table(&best));
    // each val wrote its plots, as Ultralytics' val does, in a folder of its own
    for run in ["val", "val2"] {
        for f in [
            "val_batch0_labels.jpg",
            "val_batch0_pred.jpg",
            "PR_curve.png",
            "F1_curve.png",
            "confusion_matrix.png",
        ] {
            let p = dir.join("runs/detect").join(run).join(f);
            assert!(p.is_file(), "{} missing", p.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// On one thread the pool's only worker runs the job, and the pictures and files made beside the
/// training must not wait for it while it waits for them: the run ends (it hung once, when the
/// validation pictures split their work over the pool) with every picture drawn.
#[test]
fn a_run_on_one_thread_draws_its_pictures_and_ends() {
    let dir = tmp("one-thread");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args([
            "train",
            "epochs=2",
            "imgsz=64",
            "batch=4",
            "nbs=4",
            "warmup_epochs=0",
        ])
        .arg("data=trees")
        .arg(format!("project={}", dir.join("runs").display()))
        .arg("name=one")
        .env("GRADSCOPE_DATASETS", dir.join("datasets"))
        .env("RAYON_NUM_THREADS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > std::time::Duration::from_secs(120) {
            let _ = child.kill();
            panic!("a 2-epoch run on one thread did not end in 120 s");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let run = dir.join("runs/one");
    for f in [
        "train_batch0.jpg",
        "val_batch0_pred.jpg",
        "PR_curve.png",
        "results.png",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn exits_with(code: i32, args: &[&str], env: &[(&str, &std::path::Path)], needles: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .output()
        .expect("the binary runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}; stderr: {err}");
    assert!(!err.contains("panicked"), "{args:?} panicked: {err}");
    let last = err.lines().last().unwrap_or_default();
    for n in needles {
        assert!(
            last.contains(n),
            "{args:?}: '{n}' missing from the last line: {last}"
        );
    }
}

/// Exit code 0 only when the command did what was asked; 1 when it ran and failed (with the
/// reason and what to try on the last line); 2 for bad input.
#[test]
fn exit_codes_say_what_happened() {
    let dir = tmp("exit");
    let data = dir.join("datasets");
    let env = [("GRADSCOPE_DATASETS", data.as_path())];
    let project = format!("project={}", dir.join("runs").display());
    // a GPU in a CPU-only binary: the build command that adds it; a list: not built
    exits_with(
        2,
        &["train", "device=0"],
        &env,
        &["device=0", "--features gpu", "device=cpu"],
    );
    exits_with(
        2,
        &["val", "model=x.safetensors", "device=cuda:0"],
        &env,
        &["device=cuda:0", "--features cuda", "network"],
    );
    exits_with(2, &["train", "device=0,1"], &env, &["device=0,1"]);
    exits_with(
        2,
        &["train", "device=gpu"],
        &env,
        &["device=gpu", "vulkan:N"],
    );
    exits_with(
        2,
        &["train", "lr0=1000"],
        &env,
        &["lr0=1000", "between 0.0 and 1.0"],
    );
    exits_with(2, &["train", "hsv_v=50"], &env, &["hsv_v=50"]);
    // a release name that is nowhere and cannot be fetched (nothing listens on port 9)
    let offline = [
        ("GRADSCOPE_DATASETS", data.as_path()),
        ("GRADSCOPE_RELEASES_URL", Path::new("http://127.0.0.1:9")),
        ("GRADSCOPE_WEIGHTS", dir.as_path()),
    ];
    exits_with(
        2,
        &["train", "model=yolo26x.pt", &project],
        &offline,
        &["model=yolo26x.pt", "download failed", "127.0.0.1:9"],
    );
    exits_with(
        2,
        &["train", "model=mine.pt", &project],
        &offline,
        &["model=mine.pt: no such file", "GRADSCOPE_WEIGHTS"],
    );
    // starting weights named twice: refused, not one of them silently ignored
    let pt = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../gradscope/tests/fixtures/yolo26n_coco8_ultralytics.pt");
    let (model, pretrained) = (
        format!("model={}", pt.display()),
        format!("pretrained={}", pt.display()),
    );
    exits_with(
        2,
        &["train", &model, &pretrained, &project],
        &offline,
        &["would be ignored", "model=yolo26n.yaml"],
    );
    assert!(
        !dir.join("runs").exists(),
        "no run folder for refused input"
    );
    // a run that flies apart: SGD at lr0=1 from the first step (no warmup) with batches of 2.
    // Depending on the last bits of sums it either grows or collapses (every score driven to 0,
    // the loss a millionfold down); both are divergence and both must exit 1 with the remedy
    exits_with(
        1,
        &[
            "train",
            "data=trees",
            "epochs=3",
            "imgsz=160",
            "optimizer=SGD",
            "lr0=1",
            "warmup_epochs=0",
            "batch=2",
            "nbs=2",
            &project,
        ],
        &env,
        &["training diverged", "Try lr0=0.1"],
    );
    // predict on nothing usable
    let pt = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../gradscope/tests/fixtures/yolo26n_coco8_ultralytics.pt"
    );
    let text = dir.join("notes.jpg");
    std::fs::write(&text, "not an image").unwrap();
    let model = format!("model={pt}");
    let source = format!("source={}", text.display());
    exits_with(
        1,
        &["predict", &model, &source, &project],
        &env,
        &["could be decoded"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let source = format!("source={}", empty.display());
    exits_with(
        1,
        &["predict", &model, &source, &project],
        &env,
        &["no images"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `device=cpu,cpu`: two processes, each on half of every batch, their gradients summed over
/// loopback. With the warmup off and 42 images in 7 batches of 6, that is the one-device run at
/// batch 3 accumulating two batches per step (same `nbs`): every parameter, optimizer moment and
/// EMA weight is bit for bit the same, and so are the logged training losses. BatchNorm's running
/// statistics are rank 0's alone (each replica normalises its own share), so they and what
/// validation reads from them differ. A batch that does not split is refused before any work.
#[test]
fn two_cpu_replicas_train_what_one_process_accumulates() {
    let dir = tmp("replicas");
    let data = dir.join("datasets");
    let run = |name: &str, extra: &[&str]| {
        let mut args: Vec<String> = [
            "train",
            "data=trees",
            "epochs=2",
            "imgsz=64",
            "nbs=6",
            "warmup_epochs=0",
            "plots=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("project={}", dir.join("runs").display()));
        args.push(format!("name={name}"));
        let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(&args)
            .env("GRADSCOPE_DATASETS", &data)
            .env("TMPDIR", &dir)
            .output()
            .unwrap();
        (out, dir.join("runs").join(name))
    };
    let (out, two) = run("two", &["device=cpu,cpu", "batch=6"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("data-parallel: 2 replicas (device=cpu,cpu), 3 images each"),
        "{text}"
    );
    let (out, one) = run("one", &["batch=3"]);
    assert!(out.status.success());
    let csv = |d: &Path| {
        std::fs::read_to_string(d.join("results.csv"))
            .unwrap()
            .lines()
            .map(|l| l.split(',').skip(2).take(3).collect::<Vec<_>>().join(","))
            .collect::<Vec<_>>()
    };
    assert_eq!(csv(&two), csv(&one), "training losses per epoch");
    let state = |d: &Path| std::fs::read(d.join("weights/last.state.safetensors")).unwrap();
    let (a, b) = (state(&two), state(&one));
    let (a, b) = (
        safetensors::SafeTensors::deserialize(&a).unwrap(),
        safetensors::SafeTensors::deserialize(&b).unwrap(),
    );
    let (mut same, mut running) = (0, 0);
    for (name, t) in a.tensors() {
        if name.starts_with("hist.") {
            continue; // the step losses: a mean over replicas, and one process's last batch
        }
        let u = b.tensor(&name).unwrap();
        if name.contains("running_") {
            running += 1;
        } else {
            assert!(t.data() == u.data(), "{name} differs");
            same += 1;
        }
    }
    assert!(
        same > 1000 && running > 100,
        "{same} compared, {running} running statistics"
    );
    assert!(
        !dir.read_dir().unwrap().flatten().any(|e| e
            .file_name()
            .to_string_lossy()
            .starts_with("gradscope-replica-")),
        "a replica left its scratch folder"
    );
    let (out, _) = run("odd", &["device=cpu,cpu", "batch=5"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("batch=5 does not split over 2 devices") && err.contains("batch=6"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A replica that dies mid-run stops rank 0 with exit code 1, saying which replica and what it
/// said; the run then goes on from its last epoch in one process.
#[test]
fn a_replica_that_dies_stops_the_run_with_its_reason() {
    let dir = tmp("replica-dies");
    let run = dir.join("runs/dies");
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args([
            "train",
            "data=trees",
            "epochs=2",
            "imgsz=64",
            "batch=4",
            "nbs=4",
            "plots=false",
            "device=cpu,cpu",
            &format!("project={}", dir.join("runs").display()),
            "name=dies",
        ])
        .env("GRADSCOPE_DATASETS", dir.join("datasets"))
        .env("GRADSCOPE_CRASH_AT", "step@rank1#13")
        .env("TMPDIR", &dir)
        .output()
        .unwrap();
    let left: Vec<_> = dir
        .read_dir()
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("gradscope-replica-")
        })
        .collect();
    assert!(
        left.is_empty(),
        "the dead replica's scratch folder is left: {left:?}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("rank 1 left")
            && last.contains("replica 1 failed")
            && last.contains("GRADSCOPE_CRASH_AT=step@rank1#13: aborting here")
            && last.contains(&format!("gradscope train resume={}", run.display())),
        "{last}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["train", &format!("resume={}", run.display())])
        .env("GRADSCOPE_DATASETS", dir.join("datasets"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("it goes on in this one process on device=cpu"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
