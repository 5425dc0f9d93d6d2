//! A diagnosis' remedies as words a lab accepts when pasted back. Each typed change
//! ([`Change`]) becomes a lab key with the numbers of the run it is about (`lr=0.001`, `T=50`);
//! the lab then writes the pairs in the form it needs (the MLP labs run a fixed set of variants
//! whose own settings win over global keys, so a remedy is a new variant,
//! `add=act=relu,init=he`) and keeps only remedies its parser takes whole.

use crate::diagnose::{Change, Diagnosis, Remedy};
use crate::settings::round_sig;

/// A lab key and value for `c`, given the run's learning rate and sequence length; `None` when
/// the change needs a number the run does not have (no sequence to halve, or one too short).
pub fn pair(c: &Change, lr: f64, steps: Option<usize>) -> Option<(String, String)> {
    Some(match c {
        Change::ScaleLr(k) => ("lr".into(), round_sig(lr * k).to_string()),
        Change::HalveSequence => {
            let t = steps.filter(|&t| t >= 4)?;
            ("T".into(), (t / 2).to_string())
        }
        other => {
            let (k, v) = other.key_value();
            (k.to_string(), v)
        }
    })
}

/// The lab pairs for every change of `r` (`None` if one has no lab form).
pub fn pairs(r: &Remedy, lr: f64, steps: Option<usize>) -> Option<Vec<(String, String)>> {
    r.changes.iter().map(|c| pair(c, lr, steps)).collect()
}

/// Rewrites `d.remedies` for a lab: every remedy's pairs ([`pairs`]) written by `form`, kept only
/// when `changes` says the lab takes every pair and they change the run's settings (a remedy the
/// run already follows is no remedy).
pub fn for_lab(
    d: &mut Diagnosis,
    lr: f64,
    steps: Option<usize>,
    changes: impl Fn(&[(String, String)]) -> bool,
    form: impl Fn(&[(String, String)]) -> String,
) {
    let mut out: Vec<Remedy> = Vec::new();
    for r in &d.remedies {
        let Some(p) = pairs(r, lr, steps) else {
            continue;
        };
        if changes(&p) {
            let switch = form(&p);
            if !out.iter().any(|o| o.switch == switch) {
                out.push(Remedy {
                    switch,
                    ..r.clone()
                });
            }
        }
    }
    d.remedies = out;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activation::Activation;
    use crate::nn::init::Init;

    fn one(k: &str, v: &str) -> Option<(String, String)> {
        Some((k.to_string(), v.to_string()))
    }

    #[test]
    fn changes_get_the_runs_numbers() {
        assert_eq!(pair(&Change::ScaleLr(0.1), 0.01, None), one("lr", "0.001"));
        assert_eq!(pair(&Change::ScaleLr(3.0), 0.01, None), one("lr", "0.03"));
        assert_eq!(
            pair(&Change::ScaleLr(1.0 / 3.0), 0.01, None),
            one("lr", "0.00333")
        );
        assert_eq!(pair(&Change::HalveSequence, 0.1, Some(100)), one("T", "50"));
        assert_eq!(pair(&Change::HalveSequence, 0.1, None), None);
        assert_eq!(pair(&Change::HalveSequence, 0.1, Some(3)), None);
        let r = Remedy::new(
            vec![Change::Act(Activation::Relu), Change::Init(Init::He)],
            "",
        );
        assert_eq!(
            pairs(&r, 0.1, None),
            Some(vec![
                ("act".to_string(), "relu".to_string()),
                ("init".to_string(), "he".to_string())
            ])
        );
    }
}
