//! The diagnosis' remedies for detection: each a `gradscope train` setting that works when pasted.

use crate::detect::args::DetectArgs;
use crate::diagnose::{Diagnosis, Verdict};
use crate::settings::round_sig;

/// The diagnosis' remedies in `gradscope train`'s own keys, each a `key=value` that works when
/// pasted: the building blocks YOLO26 is made of (SiLU, BatchNorm, residual bottlenecks) when an
/// ablation removed them, then the generic ones that apply (learning rate, warmup, clipping) with
/// values computed from this run's (`lr0`: the learning rate it used); remedies without a
/// detection key (init schemes, cells) are dropped.
pub fn yolo_remedies(d: &mut Diagnosis, args: &DetectArgs, lr0: f64) {
    use crate::diagnose::Remedy;
    let mut out: Vec<Remedy> = Vec::new();
    let mut push = |s: String, why: &str| {
        if !out.iter().any(|r| r.switch == s) {
            out.push(Remedy {
                switch: s,
                why: why.into(),
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
        if args.act != crate::activation::Activation::Silu {
            push("act=silu".into(), "SiLU passes the gradient with slope ≈ 1 on active units; sigmoid multiplies it by at most 0.25 in every layer");
        }
        if !args.bn {
            push("bn=true".into(), "BatchNorm after every conv keeps pre-activations at unit scale, out of the saturated range, at any depth");
        }
        if !args.shortcut {
            push(
                "shortcut=true".into(),
                "residual bottlenecks give the gradient an identity path around every block",
            );
        }
    }
    let lower_lr = format!("lr0={}", round_sig(lr0 / 10.0));
    if d.verdicts.contains(&Verdict::Diverged) {
        push(lower_lr.clone(), "a learning rate 10× smaller keeps each update inside the region where the loss is smooth");
        if args.warmup_epochs < 3.0 {
            push("warmup_epochs=3".into(), "a longer warmup ramps the learning rate up while BatchNorm statistics and the optimizer's moments settle");
        }
        if args.clip_norm.is_none_or(|c| c > 1.0) {
            push("clip_norm=1".into(), "a tighter clip bounds every step; clipping alone cannot stop a learning rate that is too large");
        }
    }
    for r in d.remedies.clone() {
        let k = r.switch.split('=').next().unwrap_or("");
        match k {
            // a fixed threshold carries over; the labs' `auto` has no detection form
            "clip_norm"
                if DetectArgs::default()
                    .set(k, &r.switch[k.len() + 1..], crate::settings::Command::Train)
                    .is_ok() =>
            {
                push(r.switch.clone(), &r.why)
            }
            "lr" => push(lower_lr.clone(), &r.why),
            "norm" if !args.bn => push("bn=true".into(), &r.why),
            "residual" | "zero_init" if !args.shortcut => push("shortcut=true".into(), &r.why),
            "act" if args.act != crate::activation::Activation::Silu => {
                push("act=silu".into(), &r.why)
            }
            _ => {}
        }
    }
    d.remedies = out;
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
        let generic = crate::lab::remedies::all_switches();
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
        let mut d = crate::lab::remedies::diagnosis_with(&generic);
        d.verdict = Verdict::Diverged;
        d.verdicts = vec![
            Verdict::Diverged,
            Verdict::Vanishing,
            Verdict::NonFinite,
            Verdict::Saturation,
        ];
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
