//! The paper labs as a user runs them, in their quick mode: each reproduces its paper's
//! qualitative claim on the embedded digits, checked here on the numbers the run wrote (its
//! variants' `run.json` histories and the measurements in `claims.json`), not only on the lab's
//! own verdict.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs `gradscope lab <name> quick=true` into a fresh folder; (its run folder, stdout).
fn quick(name: &str) -> (PathBuf, String) {
    let project =
        std::env::temp_dir().join(format!("gradscope-papers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&project);
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["lab", name, "quick=true"])
        .arg(format!("project={}", project.display()))
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "gradscope lab {name} quick=true: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = project.join(name).join("lab");
    for file in ["report.html", "claims.json"] {
        assert!(dir.join(file).is_file(), "{name}: no {file}");
    }
    let last = stdout.lines().last().unwrap_or("");
    assert!(
        last.starts_with(&format!("{name}: our measurements agree with")),
        "{last}"
    );
    (dir, stdout)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

/// A variant's per-epoch training losses and validation metrics.
fn epochs(dir: &Path, variant: &str) -> Vec<(f64, f64)> {
    let run = json(&dir.join(variant).join("run.json"));
    run["history"]["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["train_loss"].as_f64().unwrap(),
                e["val_metric"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// The claim whose text starts with `start`: (what we measured, whether it agrees).
fn claim(dir: &Path, start: &str) -> (String, bool) {
    let c = json(&dir.join("claims.json"));
    let found = c["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["claim"].as_str().unwrap().starts_with(start))
        .unwrap_or_else(|| panic!("no claim '{start}' in {c}"));
    (
        found["ours"].as_str().unwrap().to_string(),
        found["agree"].as_bool().unwrap(),
    )
}

/// The numbers in a text, in order.
fn numbers(text: &str) -> Vec<f64> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == 'e'))
        .filter_map(|w| w.trim_matches('.').parse().ok())
        .collect()
}

/// He et al. 2015: the 30-layer ReLU net stays at chance from Xavier init and learns from He
/// init; at init the gradient ratio across the net is theory's 2^-14 (Xavier) and 1 (He).
#[test]
fn he2015_30_layers_stall_from_xavier_and_learn_from_he() {
    let (dir, _) = quick("he2015");
    let ln10 = 10f64.ln();
    let xavier = epochs(&dir, "30 layers, Xavier");
    let he = epochs(&dir, "30 layers, He");
    let (x_end, h_end) = (xavier.last().unwrap().0, he.last().unwrap().0);
    assert!(x_end > 0.9 * ln10, "30-layer Xavier learnt: loss {x_end}");
    assert!(
        h_end < 0.5 * ln10,
        "30-layer He did not learn: loss {h_end}"
    );
    let (x_acc, h_acc) = (xavier.last().unwrap().1, he.last().unwrap().1);
    assert!(
        h_acc > x_acc + 0.3,
        "val accuracy He {h_acc}, Xavier {x_acc}"
    );
    let (ours, agree) = claim(&dir, "30 layers, Xavier: gradient");
    let ratio = numbers(&ours)[0];
    let theory = 0.5f64.powi(14);
    assert!(agree && (ratio / theory).log10().abs() < 0.6, "{ours}");
    let (ours, agree) = claim(&dir, "30 layers, He: gradient");
    assert!(agree && (0.25..4.0).contains(&numbers(&ours)[0]), "{ours}");
}

/// Ioffe & Szegedy 2015: with BatchNorm the sigmoid net is ahead early, and its units' inputs
/// stay put while the plain net's drift.
#[test]
fn ioffe2015_batchnorm_learns_sooner_and_keeps_inputs_stable() {
    let (dir, _) = quick("ioffe2015");
    let plain = epochs(&dir, "without BatchNorm");
    let bn = epochs(&dir, "with BatchNorm");
    let early = plain.len().div_ceil(10) - 1;
    assert!(
        bn[early].1 > plain[early].1 + 0.2,
        "after {} epochs: BN {} vs {}",
        early + 1,
        bn[early].1,
        plain[early].1
    );
    let (ours, agree) = claim(&dir, "without BatchNorm a sigmoid's input");
    let n = numbers(&ours);
    let (plain_drift, bn_drift) = (n[n.len() - 2], n[n.len() - 1]);
    assert!(
        agree && plain_drift > 3.0 * bn_drift,
        "drift without BN {plain_drift}, with {bn_drift}: {ours}"
    );
}

/// Glorot & Bengio 2010: at init, tanh's back-propagated gradients shrink toward the input with
/// the standard init as mean-field theory says, and much less with normalised init; sigmoid
/// ends worst.
#[test]
fn glorot2010_standard_init_shrinks_gradients_as_theory_says() {
    let (dir, _) = quick("glorot2010");
    let (ours, agree) = claim(&dir, "tanh at init: back-propagated");
    let n = numbers(&ours);
    // layer 1 ÷ layer 5: standard, its theory, normalised, its theory
    let (std_, std_th, norm, norm_th) = (n[2], n[3], n[4], n[5]);
    assert!(agree, "{ours}");
    assert!(std_ < 0.1 && norm > 0.2, "{ours}");
    assert!((std_ / std_th - 1.0).abs() < 0.5 && (norm / norm_th - 1.0).abs() < 0.5);
    let sigmoid = epochs(&dir, "sigmoid").last().unwrap().1;
    for v in ["tanh", "tanh N", "softsign", "softsign N"] {
        let acc = epochs(&dir, v).last().unwrap().1;
        assert!(acc > sigmoid, "{v} {acc} vs sigmoid {sigmoid}");
    }
}

#[test]
fn lab_list_names_every_paper_and_its_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["lab", "list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let papers = gradscope::lab::papers::PAPERS.iter().map(|p| p.name);
    for name in ["vanishing", "exploding", "recurrent"]
        .into_iter()
        .chain(papers)
    {
        assert!(text.contains(name), "{name} missing: {text}");
    }
    assert!(text.contains("glorot2010") && text.contains("schoenholz2017"));
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["lab", "he2015", "depth=3"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("unknown key 'depth'") && err.contains("quick"),
        "{err}"
    );
    // a lab that makes its own data refuses the data keys instead of ignoring them
    let out = Command::new(env!("CARGO_BIN_EXE_gradscope"))
        .args(["lab", "pascanu2013", "data=fashion"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("adding problem") && err.contains("data= does not apply"),
        "{err}"
    );
}

/// He et al. 2016: plain nets with BatchNorm train worse as they deepen, with gradients the
/// probe calls healthy; the residual net of the deepest depth trains far better.
#[test]
fn he2016_plain_nets_degrade_with_healthy_gradients_residual_nets_do_not() {
    let (dir, _) = quick("he2016");
    let loss = |v: &str| epochs(&dir, v).last().unwrap().0;
    let (p8, p20, p32) = (loss("plain 8"), loss("plain 20"), loss("plain 32"));
    assert!(p8 < p20 && p20 < p32, "plain: {p8} {p20} {p32}");
    let r32 = loss("residual 32");
    assert!(r32 < 0.25 * p32, "residual 32 {r32} vs plain 32 {p32}");
    let run = json(&dir.join("plain 32").join("run.json"));
    let verdict = run["diagnosis"]["verdict"].as_str().unwrap_or("");
    assert_eq!(verdict, "healthy", "plain 32's verdict");
    // the diagnosis itself names the degradation
    let evidence = run["diagnosis"]["evidence"].to_string();
    assert!(
        evidence.contains("optimisation problem, not vanishing gradients"),
        "{evidence}"
    );
    let (ours, agree) = claim(&dir, "the 32-layer plain net's gradients are healthy");
    assert!(agree && ours.contains("an optimisation problem"), "{ours}");
}

/// Pascanu et al. 2013: an RNN whose recurrent matrix starts at spectral norm 1.5 diverges
/// under plain SGD without clipping in most seeds, never with a fixed norm threshold; where its
/// gradient spikes, the unclipped step goes far past where the loss still falls.
#[test]
fn pascanu2013_norm_clipping_stops_the_divergence() {
    let (dir, _) = quick("pascanu2013");
    let runs = json(&dir.join("runs.json"));
    let diverged = |variant: &str| {
        let v = runs
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variant"] == variant)
            .unwrap_or_else(|| panic!("no {variant} in {runs}"));
        let d = v["diverged"].as_array().unwrap();
        (d.iter().filter(|x| x.as_bool().unwrap()).count(), d.len())
    };
    let (d, n) = diverged("no clipping");
    assert!(2 * d >= n, "only {d}/{n} unclipped runs diverged");
    for c in ["clip_norm=0.1", "clip_norm=1", "clip_norm=10"] {
        assert_eq!(diverged(c).0, 0, "{c} diverged");
    }
    let (ours, agree) = claim(&dir, "where the gradient explodes");
    assert!(agree, "{ours}");
}

/// Saxe et al. 2014 / Pennington et al. 2017: orthogonal weights give a deep linear net a
/// Jacobian whose singular values are all 1; Gaussian ones spread them wider with depth; the
/// orthogonal net's learning time does not grow with depth.
#[test]
fn saxe2014_orthogonal_init_is_an_isometry_at_any_depth() {
    let (dir, _) = quick("saxe2014");
    let (ours, agree) = claim(&dir, "deep linear, orthogonal: every Jacobian");
    let n = numbers(&ours);
    assert!(
        agree && (n[0] - 1.0).abs() < 1e-3 && (n[1] - 1.0).abs() < 1e-3,
        "{ours}"
    );
    let (ours, agree) = claim(&dir, "deep linear, Gaussian: the spectrum");
    assert!(agree, "{ours}");
    let (ours, agree) = claim(&dir, "deep linear, orthogonal: learning time");
    assert!(agree, "{ours}");
    // the deepest orthogonal linear net learns no slower than the shallowest
    let time = |v: &str| {
        let run = json(&dir.join(v).join("run.json"));
        let l: Vec<f64> = run["history"]["step_loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect();
        (10..=l.len()).find(|&i| l[i - 10..i].iter().sum::<f64>() / 10.0 < 0.5 * 10f64.ln())
    };
    let (shallow, deep) = (time("linear 4 orthogonal"), time("linear 32 orthogonal"));
    assert!(
        matches!((shallow, deep), (Some(s), Some(d)) if d <= s),
        "{shallow:?} {deep:?}"
    );
}

/// Schoenholz et al. 2017: the library's mean-field recursions put tanh's transition where the
/// paper does, and 6ξ_c separates the tanh nets that train from those that do not in at least
/// 80% of the grid; the measured per-layer gradient factor is √χ₁.
#[test]
fn schoenholz2017_six_xi_separates_trainable_from_untrainable() {
    let (dir, _) = quick("schoenholz2017");
    let (ours, agree) = claim(&dir, "the order-to-chaos transition");
    let crit = numbers(&ours)[1];
    assert!(agree && (crit - 1.76).abs() < 0.05, "{ours}");
    let (ours, agree) = claim(&dir, "a network trains when");
    let n = numbers(&ours);
    let (right, cells) = (n[1], n[2]);
    assert!(agree && right >= 0.8 * cells, "{ours}");
    let (ours, agree) = claim(&dir, "at init the gradient's norm");
    assert!(agree, "{ours}");
    // the deepest cell far into the chaotic phase does not train; the shallowest does
    let acc = |v: &str| epochs(&dir, v).last().unwrap().1;
    assert!(acc("σw²=4 L=64") < 0.3 && acc("σw²=4 L=4") > 0.6);
}
