//! A diagnosis' remedies as words a lab accepts when pasted back. The diagnosis speaks in
//! generic switches, some with placeholders (`lr=<lr/10>`, `steps=<shorter>`); here they get the
//! numbers of the run they are about, take the form the lab needs (the MLP labs run a fixed set
//! of variants whose own settings win over global keys, so a remedy is a new variant,
//! `add=act=relu,init=he`), and are kept only when the lab's parser takes every word.

use crate::diagnose::{Diagnosis, Remedy};
use crate::settings::round_sig;

/// The concrete `key=value` sets a remedy stands for (alternatives: `lr=<lr×3 or lr/3>` is two),
/// with `lr` and the sequence length `steps` of the run filled in; empty when a placeholder has
/// nothing to be filled from.
pub fn resolve(switch: &str, lr: f64, steps: Option<usize>) -> Vec<Vec<(String, String)>> {
    let alternatives: Vec<String> = match switch {
        s if s.contains("lr=<lr×3 or lr/3>") => vec![
            s.replace("lr=<lr×3 or lr/3>", &format!("lr={}", round_sig(lr * 3.0))),
            s.replace("lr=<lr×3 or lr/3>", &format!("lr={}", round_sig(lr / 3.0))),
        ],
        s if s.contains("lr=<lr/10>") => {
            vec![s.replace("lr=<lr/10>", &format!("lr={}", round_sig(lr / 10.0)))]
        }
        s if s.contains("steps=<shorter>") => match steps {
            Some(t) if t >= 4 => vec![s.replace("steps=<shorter>", &format!("T={}", t / 2))],
            _ => Vec::new(),
        },
        s => vec![s.to_string()],
    };
    alternatives
        .iter()
        .filter(|a| !a.contains('<'))
        .filter_map(|a| {
            a.split_whitespace()
                .map(|w| {
                    w.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                })
                .collect()
        })
        .collect()
}

/// Rewrites `d.remedies`: every remedy resolved ([`resolve`]), written by `form` from its pairs,
/// and kept only when `changes` says the lab takes every pair and they change the run's settings
/// (a remedy the run already follows is no remedy).
pub fn for_lab(
    d: &mut Diagnosis,
    lr: f64,
    steps: Option<usize>,
    changes: impl Fn(&[(String, String)]) -> bool,
    form: impl Fn(&[(String, String)]) -> String,
) {
    let mut out: Vec<Remedy> = Vec::new();
    for r in &d.remedies {
        for pairs in resolve(&r.switch, lr, steps) {
            if changes(&pairs) {
                let switch = form(&pairs);
                if !out.iter().any(|o| o.switch == switch) {
                    out.push(Remedy {
                        switch,
                        why: r.why.clone(),
                    });
                }
            }
        }
    }
    d.remedies = out;
}

/// Whether `pairs` are all settings of an MLP lab run and change `run`.
pub fn mlp_changes(run: &crate::lab::settings::Settings, pairs: &[(String, String)]) -> bool {
    let mut s = run.clone();
    pairs.iter().all(|(k, v)| s.set(k, v) == Ok(true)) && s != *run
}

/// Whether `pairs` are all keys of the recurrent lab and change `lab`.
pub fn recurrent_changes(
    lab: &crate::lab::recurrent::RecurrentLab,
    pairs: &[(String, String)],
) -> bool {
    let mut l = lab.clone();
    pairs.iter().all(|(k, v)| l.set(k, v) == Ok(true)) && l != *lab
}

/// `add=k=v,k2=v2`: a new variant of an MLP lab.
pub fn as_variant(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("add={}", items.join(","))
}

/// `k=v k2=v2`: global keys (the recurrent lab, whose cells take them all).
pub fn as_words(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    items.join(" ")
}

/// Every switch the diagnosis can emit, read from its source (`add("…"` calls), so that a test
/// of every front end covers the remedies added later too.
#[cfg(test)]
pub(crate) fn all_switches() -> Vec<String> {
    let src = include_str!("../diagnose/mod.rs");
    src.split("add(")
        .skip(1)
        .filter_map(|rest| {
            let rest = rest.trim_start().strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_string())
        })
        .collect()
}

/// A vanishing diagnosis holding `switches` as its remedies (for the front ends' tests).
#[cfg(test)]
pub(crate) fn diagnosis_with(switches: &[String]) -> Diagnosis {
    Diagnosis {
        verdict: crate::diagnose::Verdict::Vanishing,
        verdicts: vec![crate::diagnose::Verdict::Vanishing],
        evidence: Vec::new(),
        remedies: switches
            .iter()
            .map(|s| Remedy {
                switch: s.clone(),
                why: String::new(),
            })
            .collect(),
        first_last_init: 1.0,
        first_last_end: 1.0,
        per_layer_factor: 1.0,
        meanfield: None,
        nonfinite: None,
        layers: Vec::new(),
        activation: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every remedy an MLP lab prints, pasted after `gradscope lab vanishing`, adds a variant
    /// whose settings differ from the run's.
    #[test]
    fn every_mlp_lab_remedy_pastes_back_as_a_variant() {
        let all = all_switches();
        assert!(all.len() >= 15, "{all:?}");
        let lab = crate::lab::mlp::MlpLab::vanishing();
        // the remedies of the sigmoid variant's diagnosis
        let base = lab.variants()[0].settings.clone();
        let mut d = diagnosis_with(&all);
        for_lab(
            &mut d,
            base.train.lr,
            None,
            |p| mlp_changes(&base, p),
            as_variant,
        );
        assert!(d.remedies.len() >= 10, "{:?}", d.remedies);
        for r in &d.remedies {
            let (k, v) = r.switch.split_once('=').unwrap();
            assert_eq!(k, "add", "{}", r.switch);
            let mut pasted = lab.clone();
            assert_eq!(pasted.set(k, v), Ok(true), "{}", r.switch);
            let added = pasted.variants().pop().unwrap();
            assert_ne!(added.settings, base, "{} changes nothing", r.switch);
        }
    }

    /// Every remedy the recurrent lab prints is a set of its own keys that change its settings.
    #[test]
    fn every_recurrent_lab_remedy_pastes_back() {
        let lab = crate::lab::recurrent::RecurrentLab::default();
        let mut d = diagnosis_with(&all_switches());
        for_lab(
            &mut d,
            lab.train.lr,
            Some(100),
            |p| recurrent_changes(&lab, p),
            as_words,
        );
        let switches: Vec<&str> = d.remedies.iter().map(|r| r.switch.as_str()).collect();
        for want in ["cells=lstm", "cells=gru", "T=50", "forget_bias=2"] {
            assert!(switches.contains(&want), "{want} missing from {switches:?}");
        }
        for r in &d.remedies {
            let mut pasted = lab.clone();
            for w in r.switch.split_whitespace() {
                let (k, v) = w.split_once('=').unwrap();
                assert_eq!(pasted.set(k, v), Ok(true), "{}", r.switch);
            }
            assert_ne!(pasted, lab, "{} changes nothing", r.switch);
        }
    }

    #[test]
    fn placeholders_get_the_runs_numbers() {
        let one = |s: &str| {
            vec![(
                s.split('=').next().unwrap().to_string(),
                s.split('=').nth(1).unwrap().to_string(),
            )]
        };
        assert_eq!(resolve("lr=<lr/10>", 0.01, None), vec![one("lr=0.001")]);
        assert_eq!(
            resolve("lr=<lr×3 or lr/3>", 0.01, None),
            vec![one("lr=0.03"), one("lr=0.00333")]
        );
        assert_eq!(
            resolve("steps=<shorter>", 0.1, Some(100)),
            vec![one("T=50")]
        );
        assert!(resolve("steps=<shorter>", 0.1, None).is_empty());
        assert_eq!(
            resolve("act=relu init=he", 0.1, None),
            vec![vec![
                ("act".to_string(), "relu".to_string()),
                ("init".to_string(), "he".to_string())
            ]]
        );
    }
}
