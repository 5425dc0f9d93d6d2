//! The diagnosis' remedies for detection: each a `gradscope train` setting that works when pasted.

use crate::activation::Activation;
use crate::detect::args::DetectArgs;
use crate::diagnose::{Change, Diagnosis, Remedy, Verdict};
use crate::settings::round_sig;

/// The diagnosis' remedies in `gradscope train`'s own keys, each a `key=value` that works when
/// pasted: the building blocks YOLO26 is made of (SiLU, BatchNorm, residual bottlenecks) when an
/// ablation removed them, then the generic ones that apply (learning rate, warmup, clipping) with
/// values computed from this run's (`lr0`: the learning rate it used); remedies without a
/// detection key (init schemes, cells) are dropped.
pub fn yolo_remedies(d: &mut Diagnosis, args: &DetectArgs, lr0: f64) {
    let mut out: Vec<Remedy> = Vec::new();
    let mut push = |changes: Vec<Change>, switch: String, why: &str| {
        if !out.iter().any(|r| r.switch == switch) {
            out.push(Remedy {
                changes,
                why: why.into(),
                switch,
            });
        }
    };
    let starved = d.verdicts.iter().any(|v| {
        matches!(
            v,
            Verdict::Vanishing | Verdict::Saturation | Verdict::DeadUnits
        )
    });
    if starved {
        if args.act != Activation::Silu {
            push(vec![Change::Act(Activation::Silu)], "act=silu".into(), "SiLU passes the gradient with slope ≈ 1 on active units; sigmoid multiplies it by at most 0.25 in every layer");
        }
        if !args.bn {
            push(vec![Change::BatchNorm], "bn=true".into(), "BatchNorm after every conv keeps pre-activations at unit scale, out of the saturated range, at any depth");
        }
        if !args.shortcut {
            push(
                vec![Change::Residual],
                "shortcut=true".into(),
                "residual bottlenecks give the gradient an identity path around every block",
            );
        }
    }
    if d.verdicts.contains(&Verdict::Diverged) {
        let lower_lr = format!("lr0={}", round_sig(lr0 / 10.0));
        push(vec![Change::ScaleLr(0.1)], lower_lr, "a learning rate 10× smaller keeps each update inside the region where the loss is smooth");
        if args.warmup_epochs < 3.0 {
            push(vec![Change::WarmupEpochs(3.0)], "warmup_epochs=3".into(), "a longer warmup ramps the learning rate up while BatchNorm statistics and the optimizer's moments settle");
        }
        if args.clip_norm.is_none_or(|c| c > 1.0) {
            push(vec![Change::ClipNorm(1.0)], "clip_norm=1".into(), "a tighter clip bounds every step; clipping alone cannot stop a learning rate that is too large");
        }
    }
    for r in d.remedies.clone() {
        let words: Vec<String> = r
            .changes
            .iter()
            .filter_map(|c| detection_word(c, args, lr0))
            .fold(Vec::new(), |mut w, x| {
                if !w.contains(&x) {
                    w.push(x);
                }
                w
            });
        if !words.is_empty() {
            push(r.changes.clone(), words.join(" "), &r.why);
        }
    }
    d.remedies = out;
}

/// The diagnosis in a detection run's terms: why frozen layers do not move, then the remedies
/// in `gradscope train`'s keys ([`yolo_remedies`]).
pub fn for_run(d: &mut Diagnosis, args: &DetectArgs, lr0: f64) {
    frozen_evidence(d, args);
    yolo_remedies(d, args, lr0);
}

/// With `freeze=`, says that the frozen layers' update ratio of 0 is by design.
fn frozen_evidence(d: &mut Diagnosis, args: &DetectArgs) {
    if !args.freeze.is_empty() {
        d.evidence.push(format!(
            "{} are frozen (freeze={}): their update ratio is 0 by design; ∂L/∂h is still measured there",
            args.freeze.describe(),
            crate::settings::Value::show(&args.freeze)
        ));
    }
}

/// `gradscope train`'s word for a generic change, where detection has one and the run does not
/// already follow it: the activation is SiLU (what YOLO26 is built with), normalisation is
/// `bn=true`, identity paths are `shortcut=true`, the learning rate is `lr0` scaled from the one
/// the run used, a fixed clip threshold carries over. Init schemes, cells, the optimizer and the
/// labs' `clip_norm=auto` have no detection form.
fn detection_word(c: &Change, args: &DetectArgs, lr0: f64) -> Option<String> {
    match c {
        Change::Act(_) if args.act != Activation::Silu => Some("act=silu".into()),
        Change::BatchNorm if !args.bn => Some("bn=true".into()),
        Change::Residual | Change::ZeroInit if !args.shortcut => Some("shortcut=true".into()),
        Change::ScaleLr(k) => Some(format!("lr0={}", round_sig(lr0 * k))),
        Change::ClipNorm(t) if args.clip_norm != Some(*t) => Some(format!("clip_norm={t}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_numbers_for_the_learning_rate() {
        assert_eq!(round_sig(0.000133333), 0.000133);
        assert_eq!(format!("lr0={}", round_sig(0.002 / 10.0)), "lr0=0.0002");
    }

    /// Every remedy the detection front end prints is a `key=value` that `gradscope train`
    /// accepts, and applying it changes the setting it names.
    #[test]
    fn every_printed_remedy_pastes_back() {
        use crate::settings::Command;
        let ablated = DetectArgs::parse(
            DetectArgs::default(),
            &[
                "act=sigmoid".into(),
                "bn=false".into(),
                "shortcut=false".into(),
                "warmup_epochs=0".into(),
                "clip_norm=none".into(),
            ],
            Command::Train,
        )
        .unwrap();
        let verdicts = [
            Verdict::Diverged,
            Verdict::Vanishing,
            Verdict::NonFinite,
            Verdict::Saturation,
        ];
        let mut d = Diagnosis::with_remedies(&verdicts, crate::diagnose::remedy::catalogue());
        yolo_remedies(&mut d, &ablated, 0.00133);
        let switches: Vec<&str> = d.remedies.iter().map(|r| r.switch.as_str()).collect();
        assert!(switches.contains(&"lr0=0.000133"), "{switches:?}");
        assert!(switches.len() >= 6, "{switches:?}");
        for r in &d.remedies {
            let (k, _) = r.switch.split_once('=').expect("key=value");
            let after = DetectArgs::parse(
                ablated.clone(),
                std::slice::from_ref(&r.switch),
                Command::Train,
            )
            .unwrap_or_else(|e| panic!("remedy '{}' does not parse: {e}", r.switch));
            assert_ne!(
                after.get(k),
                ablated.get(k),
                "remedy '{}' changes nothing",
                r.switch
            );
        }
    }
}
