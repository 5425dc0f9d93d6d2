//! Mutation fuzzing of what gradscope reads from users: YOLO label files, data.yaml, model yamls
//! and safetensors checkpoints. Each target starts from the seed inputs in `tests/fuzz_seeds/`,
//! applies random mutations (bit flips, byte insertions and deletions, spliced tokens that parsers
//! trip on: `nan`, `-1`, `1e999`, `:`, `[`, a BOM, huge numbers), and runs the reader under
//! `catch_unwind`: an error is fine, a panic fails the test and saves the input beside the seeds
//! as `crash-<target>-<n>`. Stable Rust, no extra crates, seeded (the same inputs every run).
//!
//! CI runs 2 000 inputs per target. The documented long run (README, "Fuzzing"):
//! `GRADSCOPE_FUZZ_N=1000000 cargo test --release -p gradscope --test fuzz -- --nocapture`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use gradscope::data::detect::{load_split, DataYaml};
use gradscope::yolo::config::ModelDef;
use gradscope::yolo::pt::identify;
use gradscope::yolo::weights::read_safetensors;

fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_seeds")
}

fn runs() -> usize {
    std::env::var("GRADSCOPE_FUZZ_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

/// xorshift64*: a small seeded generator, so that every run tries the same inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const TOKENS: &[&[u8]] = &[
    b"nan",
    b"-1",
    b"1e999",
    b"-0",
    b"0.5",
    b":",
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b"\n",
    b"\r\n",
    b" ",
    b"\t",
    b"#",
    b"\xef\xbb\xbf",
    b"\xff",
    b"\0",
    b"99999999999999999999",
    b"inf",
    b"~",
    b"null",
    b"&a",
    b"*a",
    b"!!binary",
    b"'",
    b"\"",
    b"- ",
    b"names:",
    b"train:",
    b"path:",
    b"nc:",
    b"scales:",
    b"Detect",
    b"Conv",
    b"C3k2",
    b"[-1, 1, Conv, [64, 3, 2]]",
];

/// One mutation of `input`, 1–4 edits.
fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.insert(at, rng.next() as u8),
            2 if !v.is_empty() => {
                let end = (at + 1 + rng.below(8)).min(v.len());
                v.drain(at.min(v.len() - 1)..end);
            }
            3 | 4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            _ if !v.is_empty() => {
                // duplicate a slice (grows nesting and repeats keys)
                let a = at.min(v.len() - 1);
                let b = (a + 1 + rng.below(32)).min(v.len());
                let piece = v[a..b].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, piece);
            }
            _ => v.push(b'\n'),
        }
    }
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = seeds_dir().join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Runs `read` on `runs()` mutations of the target's seeds; a panic saves the input and fails.
fn fuzz(target: &str, seed: u64, mut read: impl FnMut(&[u8])) {
    let corpus = seeds(target);
    let mut rng = Rng(seed);
    let n = runs();
    let t0 = std::time::Instant::now();
    for i in 0..n {
        let base = &corpus[rng.below(corpus.len())];
        let input = mutate(base, &mut rng);
        if catch_unwind(AssertUnwindSafe(|| read(&input))).is_err() {
            let path = seeds_dir().join(format!("crash-{target}-{i}"));
            std::fs::write(&path, &input).unwrap();
            panic!("{target}: input {i} panicked; saved as {}", path.display());
        }
    }
    eprintln!(
        "fuzz {target}: {n} inputs, no panic, {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("gs_fuzz_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn label_files() {
    let dir = scratch("labels");
    let (images, labels) = (dir.join("images"), dir.join("labels"));
    std::fs::create_dir_all(&images).unwrap();
    std::fs::create_dir_all(&labels).unwrap();
    let img = images.join("a.png");
    image::RgbImage::new(16, 16).save(&img).unwrap();
    fuzz("labels", 1, |input| {
        std::fs::write(labels.join("a.txt"), input).unwrap();
        let (samples, _) = load_split(std::slice::from_ref(&img), 3);
        // what is kept is in range: class < nc, coordinates in [0, 1]
        for l in samples.iter().flat_map(|s| &s.labels) {
            assert!(l.class < 3);
            for v in [l.cx, l.cy, l.w, l.h] {
                assert!((0.0..=1.0).contains(&v), "{v}");
            }
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn data_yamls() {
    let dir = scratch("data");
    let file = dir.join("data.yaml");
    fuzz("data_yaml", 2, |input| {
        std::fs::write(&file, input).unwrap();
        let _ = DataYaml::read(&file, &dir);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn model_yamls() {
    fuzz("model_yaml", 3, |input| {
        let _ = ModelDef::parse(&String::from_utf8_lossy(input), "fuzz.yaml");
    });
}

#[test]
fn safetensors_checkpoints() {
    let dir = scratch("st");
    let file = dir.join("w.safetensors");
    fuzz("safetensors", 4, |input| {
        std::fs::write(&file, input).unwrap();
        if let Ok(t) = read_safetensors(&file) {
            let _ = identify(&file, &t);
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
