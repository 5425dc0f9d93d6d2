//! Fault injection: a training run crashed at named points (inside each checkpoint write,
//! between an epoch's row and its commit, mid-epoch), killed with SIGKILL at seeded random
//! instants, or stopped by a full disk, then resumed — and compared byte for byte with the same
//! run never interrupted: results.csv (but its time column), probe.jsonl, last/best weights and
//! the resume state. The settings make the gradient accumulation cross every epoch's end (11
//! iterations, accumulate 3), so the state must carry accumulated gradients too. Also: the
//! loader's thread count leaves the run's bytes unchanged.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

const CRASH_ENV: &str = "GRADSCOPE_CRASH_AT";

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("gradscope-faults-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn datasets() -> PathBuf {
    scratch().join("datasets")
}

/// The run's settings; `project` and `name` place it.
fn settings(project: &Path, name: &str) -> Vec<String> {
    [
        "data=trees",
        "epochs=3",
        "imgsz=64",
        "batch=4",
        "nbs=12",
        "plots=false",
        "seed=3",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([
        format!("project={}", project.display()),
        format!("name={name}"),
    ])
    .collect()
}

fn gradscope(args: &[String], crash: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gradscope"));
    c.args(args).env("GRADSCOPE_DATASETS", datasets());
    match crash {
        Some(at) => c.env(CRASH_ENV, at),
        None => c.env_remove(CRASH_ENV),
    };
    c.output().expect("the binary runs")
}

fn resume_args(run: &Path) -> Vec<String> {
    vec!["train".into(), format!("resume={}", run.display())]
}

/// The uninterrupted run (made once) and how long it took.
fn baseline() -> &'static (PathBuf, Duration) {
    static RUN: OnceLock<(PathBuf, Duration)> = OnceLock::new();
    RUN.get_or_init(|| {
        let project = scratch().join("runs");
        let mut args = vec!["train".to_string()];
        args.extend(settings(&project, "whole"));
        let t = Instant::now();
        let out = gradscope(&args, None);
        assert!(out.status.success(), "{}", stderr(&out));
        (project.join("whole"), t.elapsed())
    })
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Files that must equal the uninterrupted run's, byte for byte.
const SAME: &[&str] = &[
    "probe.jsonl",
    "weights/last.safetensors",
    "weights/best.safetensors",
    "weights/last.state.safetensors",
];

/// results.csv without its time column.
fn results_but_time(run: &Path) -> String {
    std::fs::read_to_string(run.join("results.csv"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let mut cols: Vec<&str> = l.split(',').collect();
            if cols.len() > 1 {
                cols.remove(1);
            }
            cols.join(",") + "\n"
        })
        .collect()
}

/// What differs between `run` and the uninterrupted run (empty: nothing), and no `.tmp` left.
fn differences(run: &Path) -> Vec<String> {
    let whole = &baseline().0;
    let mut out = Vec::new();
    if results_but_time(run) != results_but_time(whole) {
        out.push(format!(
            "results.csv:\n{}\nuninterrupted:\n{}",
            results_but_time(run),
            results_but_time(whole)
        ));
    }
    for f in SAME {
        let (a, b) = (std::fs::read(run.join(f)), std::fs::read(whole.join(f)));
        match (a, b) {
            (Ok(a), Ok(b)) if a == b => {}
            (Ok(a), Ok(b)) => out.push(format!(
                "{f}: {} vs {} bytes, contents differ",
                a.len(),
                b.len()
            )),
            (a, _) => out.push(format!("{f}: {:?}", a.err())),
        }
    }
    let tmps: Vec<String> = std::fs::read_dir(run.join("weights"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tmp"))
                .collect()
        })
        .unwrap_or_default();
    if !tmps.is_empty() {
        out.push(format!("temporary files left: {tmps:?}"));
    }
    out
}

/// Resumes `run` until it finishes (a run killed before its first epoch committed is started
/// again: there is nothing to resume). Returns the number of resumes.
fn finish(run: &Path, name: &str) -> usize {
    let out = gradscope(&resume_args(run), None);
    if out.status.success() {
        return 1;
    }
    let err = stderr(&out);
    assert!(
        err.contains("no complete epoch to resume from"),
        "{name}: resume failed: {err}"
    );
    assert_eq!(out.status.code(), Some(2), "{name}: {err}");
    let mut args = vec!["train".to_string(), "exist_ok=true".into()];
    args.extend(settings(run.parent().unwrap(), name));
    let out = gradscope(&args, None);
    assert!(out.status.success(), "{name}: restart: {}", stderr(&out));
    0
}

/// Crashes at each named point (see `gradscope::crash`), resumes, compares.
#[test]
fn crashes_at_named_points_resume_byte_for_byte() {
    let whole = &baseline().0;
    assert!(differences(whole).is_empty());
    // the second epoch's writes (and the first's), inside each, between row and commit, and
    // after optimizer steps inside an epoch
    let points = [
        "write-half:last.safetensors#2",
        "write:last.safetensors#2",
        "write-half:best.safetensors#1",
        "write:best.safetensors#1",
        "csv#1",
        "csv#2",
        "write-half:last.state.safetensors#1",
        "write:last.state.safetensors#2",
        "epoch#1",
        "epoch#2",
        "step#2",
        "step#9",
    ];
    let project = scratch().join("named");
    let mut failed = Vec::new();
    for (k, at) in points.iter().enumerate() {
        let name = format!("crash{k}");
        let mut args = vec!["train".to_string()];
        args.extend(settings(&project, &name));
        let out = gradscope(&args, Some(at));
        assert!(
            !out.status.success() && stderr(&out).contains("aborting here"),
            "{at}: the run did not crash there: {}",
            stderr(&out)
        );
        let run = project.join(&name);
        finish(&run, &name);
        let d = differences(&run);
        if !d.is_empty() {
            failed.push(format!("{at}: {}", d.join("; ")));
        }
    }
    // crashed again while resuming, as it rewrites results.csv and probe.jsonl
    for (k, again) in ["write-half:results.csv", "write:probe.jsonl"]
        .iter()
        .enumerate()
    {
        let name = format!("twice{k}");
        let mut args = vec!["train".to_string()];
        args.extend(settings(&project, &name));
        assert!(!gradscope(&args, Some("epoch#2")).status.success());
        let run = project.join(&name);
        let out = gradscope(&resume_args(&run), Some(again));
        assert!(!out.status.success(), "{again}: {}", stderr(&out));
        finish(&run, &name);
        let d = differences(&run);
        if !d.is_empty() {
            failed.push(format!("epoch#2 then {again}: {}", d.join("; ")));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// SIGKILL at seeded random instants of the run, then resume: the first kill within the first
/// third of the run's time (before or around its first commit), the others at random instants
/// after the first epoch committed (so that the resume continues a run, not restarts it).
#[test]
fn random_kills_resume_byte_for_byte() {
    let t = baseline().1;
    let project = scratch().join("killed");
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        // xorshift
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 1000) as f64 / 1000.0
    };
    let mut failed = Vec::new();
    let (mut restarted, mut finished) = (0, 0);
    let kills = 5;
    for k in 0..kills {
        let name = format!("kill{k}");
        let run = project.join(&name);
        let mut args = vec!["train".to_string()];
        args.extend(settings(&project, &name));
        let mut child = Command::new(env!("CARGO_BIN_EXE_gradscope"))
            .args(&args)
            .env("GRADSCOPE_DATASETS", datasets())
            .env_remove(CRASH_ENV)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let state = run.join("weights/last.state.safetensors");
        let running = |c: &mut std::process::Child| c.try_wait().unwrap().is_none();
        if k > 0 {
            while running(&mut child) && !state.is_file() {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let at = t.mul_f64(if k == 0 { 0.33 } else { 0.67 } * uniform());
        let t0 = Instant::now();
        while t0.elapsed() < at && running(&mut child) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if !running(&mut child) {
            finished += 1;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        if finish(&run, &name) == 0 {
            restarted += 1;
        }
        let d = differences(&run);
        if !d.is_empty() {
            failed.push(format!("kill {k} ({at:?}): {}", d.join("; ")));
        }
    }
    eprintln!(
        "{kills} kills: {restarted} before the first epoch committed, {finished} after the run had ended, the others resumed"
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A disk that fills up during the run (a small tmpfs in a user namespace): the run fails with
/// the file, "No space left on device" and the resume command on its last line, exit 1, no
/// temporary file left and the last committed state intact; with space again, the resumed run
/// equals the uninterrupted one. Skipped (with a message) where unprivileged user namespaces are not allowed.
#[test]
fn a_full_disk_fails_cleanly_and_resumes() {
    let probe = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "true"])
        .output();
    if !probe.is_ok_and(|o| o.status.success()) {
        eprintln!("skipped: this machine does not allow `unshare --user --mount` (needed for a private tmpfs)");
        return;
    }
    let whole = &baseline().0;
    let size = |f: &str| {
        std::fs::metadata(whole.join(f))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // room for everything the first epoch leaves and the second epoch's probe records, weights
    // and their temporary copies, but not for its resume state
    let (state, weights) = (
        size("weights/last.state.safetensors"),
        size("weights/last.safetensors"),
    );
    let room = size("probe.jsonl") + 4 * weights + state + state / 4;
    let dir = scratch().join("full");
    let mnt = dir.join("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let bin = env!("CARGO_BIN_EXE_gradscope");
    let run = mnt.join("runs/full");
    let first: Vec<String> = ["train".to_string()]
        .into_iter()
        .chain(settings(&mnt.join("runs"), "full"))
        .collect();
    let q = |a: &[String]| {
        a.iter()
            .map(|s| format!("'{s}'"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let script = format!(
        "set -u; mount -t tmpfs -o size={room} tmpfs '{m}' || exit 90
         '{bin}' {first} 2> '{d}/err1'; echo $? > '{d}/rc1'
         ls '{run}/weights' > '{d}/ls1'
         mount -o remount,size=1g '{m}' || exit 91
         '{bin}' train 'resume={run}' 2> '{d}/err2'; echo $? > '{d}/rc2'
         cp -r '{run}' '{d}/copy'",
        m = mnt.display(),
        d = dir.display(),
        run = run.display(),
        first = q(&first),
    );
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("GRADSCOPE_DATASETS", datasets())
        .env_remove(CRASH_ENV)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let err1 = read("err1");
    let last = err1.lines().last().unwrap_or_default();
    assert_eq!(read("rc1").trim(), "1", "{err1}");
    assert!(
        last.contains("No space left on device") && last.contains("gradscope train resume="),
        "last line: {last}"
    );
    assert!(!err1.contains("panicked"), "{err1}");
    assert!(
        !read("ls1").contains(".tmp"),
        "left behind: {}",
        read("ls1")
    );
    assert_eq!(read("rc2").trim(), "0", "resume: {}", read("err2"));
    let d = differences(&dir.join("copy"));
    assert!(d.is_empty(), "{}", d.join("\n"));
}

/// The loader's thread count (`workers`) does not change a run: one worker gives the same bytes
/// as the default (as many as the machine has, up to 8).
#[test]
fn loader_threads_do_not_change_the_run() {
    let project = scratch().join("workers");
    let mut args = vec!["train".to_string(), "workers=1".into()];
    args.extend(settings(&project, "one"));
    let out = gradscope(&args, None);
    assert!(out.status.success(), "{}", stderr(&out));
    let d = differences(&project.join("one"));
    assert!(d.is_empty(), "{}", d.join("\n"));
}
