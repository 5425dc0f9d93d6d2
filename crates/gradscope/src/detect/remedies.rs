//! A detection run's diagnosis in its own terms: the gradient rules on its probe records, then
//! what only the trainer knows (divergence, the head levels' assignment), and remedies as
//! `gradscope train` settings that work when pasted. The trainer and `gradscope diagnose` both
//! diagnose through [`diagnose_run`].

use crate::activation::Activation;
use crate::detect::args::DetectArgs;
use crate::detect::branches::{judge, Assigned};
use crate::detect::optimize::optimizer::DetOptimizer;
use crate::detect::schedule::Choice;
use crate::diagnose::{diagnose, Change, Diagnosis, Remedy, Verdict};
use crate::probe::StepRecord;
use crate::settings::round_sig;

/// What a detection run knows beside its probe records.
pub struct RunFacts<'a> {
    pub args: &'a DetectArgs,
    /// The learning rate it trained at, and how a remedy sets another.
    pub lr: LrForm,
    /// The divergence evidence in force (empty: none).
    pub diverged: &'a [String],
    /// Targets assigned per head level in the last epoch (zero image size: not known).
    pub assigned: Assigned,
}

/// The run's diagnosis: the gradient rules on `records`, a divergence put first, the remedies
/// in `gradscope train`'s keys, and the head levels judged (the starved-branch finding).
pub fn diagnose_run(records: &[StepRecord], run: &RunFacts) -> Option<Diagnosis> {
    let mut d = diagnose(records)?;
    if !run.diverged.is_empty() {
        d.verdicts.insert(0, Verdict::Diverged);
        d.verdict = Verdict::Diverged;
        d.evidence.splice(0..0, run.diverged.iter().cloned());
    }
    for_run(&mut d, run.args, run.lr);
    if run.assigned.imgsz > 0 {
        judge(&mut d, &run.assigned);
    }
    Some(d)
}

/// How a remedy sets a run's learning rate so that the run changes in that alone.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrForm {
    /// The learning rate the run used (lr0 after `optimizer=auto` chose it).
    pub lr0: f64,
    /// With `optimizer=auto`, the optimizer it chose: auto ignores `lr0=` (as Ultralytics' does),
    /// so a remedy names the optimizer with the momentum and bias warmup auto gave it.
    pub auto: Option<DetOptimizer>,
    /// The momentum the run trained with.
    pub momentum: f64,
}

impl LrForm {
    /// How a remedy sets the learning rate of a run that trains with `choice`: `optimizer=auto`
    /// named as what it chose.
    pub fn of(choice: &Choice, args: &DetectArgs) -> Self {
        LrForm {
            lr0: choice.lr0,
            auto: (args.optimizer == DetOptimizer::Auto).then(|| choice.optimizer()),
            momentum: choice.momentum,
        }
    }

    /// The `gradscope train` words that train at `lr` and otherwise as the run did.
    pub fn words(&self, lr: f64) -> String {
        let lr0 = format!("lr0={}", round_sig(lr));
        match self.auto {
            Some(o) => format!(
                "optimizer={o} {lr0} momentum={} warmup_bias_lr=0",
                self.momentum
            ),
            None => lr0,
        }
    }
}

/// The diagnosis' remedies in `gradscope train`'s own keys, each a `key=value` that works when
/// pasted: the building blocks YOLO26 is made of (SiLU, BatchNorm, residual bottlenecks) when an
/// ablation removed them, then the generic ones that apply (learning rate, warmup, clipping) with
/// values computed from this run's (`lr`: the learning rate it used, and how to set one); remedies without a
/// detection key (init schemes, cells) are dropped.
pub fn yolo_remedies(d: &mut Diagnosis, args: &DetectArgs, lr: LrForm) {
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
        let lower_lr = lr.words(lr.lr0 / 10.0);
        push(vec![Change::ScaleLr(0.1)], lower_lr, "a learning rate 10× smaller keeps each update inside the region where the loss is smooth");
        if args.warmup_epochs < 3.0 {
            push(vec![Change::WarmupEpochs(3.0)], "warmup_epochs=3".into(), "a longer warmup ramps the learning rate up while BatchNorm statistics and the optimizer's moments settle");
        }
        if args.clip_norm.is_none_or(|c| c > 1.0) {
            push(vec![Change::ClipNorm(1.0)], "clip_norm=1".into(), "a tighter clip bounds every step; clipping alone cannot stop a learning rate that is too large");
        }
    }
    // A run whose updates are already too large (diverged, exploding, non-finite) is never told
    // to raise its learning rate, whatever a slow-loss reading of its records suggests.
    let too_large = d.verdicts.iter().any(|v| {
        matches!(
            v,
            Verdict::Diverged | Verdict::Exploding | Verdict::NonFinite
        )
    });
    for r in d.remedies.clone() {
        if too_large
            && r.changes
                .iter()
                .any(|c| matches!(c, Change::ScaleLr(k) if *k > 1.0))
        {
            continue;
        }
        let words: Vec<String> = r
            .changes
            .iter()
            .filter_map(|c| detection_word(c, args, lr))
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
pub fn for_run(d: &mut Diagnosis, args: &DetectArgs, lr: LrForm) {
    frozen_evidence(d, args);
    yolo_remedies(d, args, lr);
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
/// `bn=true`, identity paths are `shortcut=true`, the learning rate is scaled from the one the
/// run used (in [`LrForm::words`]), a fixed clip threshold carries over. Init schemes, cells, the optimizer and the
/// labs' `clip_norm=auto` have no detection form.
fn detection_word(c: &Change, args: &DetectArgs, lr: LrForm) -> Option<String> {
    match c {
        Change::Act(_) if args.act != Activation::Silu => Some("act=silu".into()),
        Change::BatchNorm if !args.bn => Some("bn=true".into()),
        Change::Residual | Change::ZeroInit if !args.shortcut => Some("shortcut=true".into()),
        Change::ScaleLr(k) => Some(lr.words(lr.lr0 * k)),
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

    /// Every remedy the detection front end prints is `key=value` words that `gradscope train`
    /// accepts, and applying them changes what they name: a setting, or — for the learning
    /// rate — the rate the run's plan trains at, and nothing else of the plan. With
    /// `optimizer=auto`, which ignores `lr0=`, and with an explicit optimizer.
    #[test]
    fn every_printed_remedy_pastes_back() {
        use crate::detect::schedule::Plan;
        use crate::settings::Command;
        let diverged = [
            Verdict::Diverged,
            Verdict::Vanishing,
            Verdict::NonFinite,
            Verdict::Saturation,
        ];
        let stalled = [Verdict::Vanishing, Verdict::Saturation];
        for (optimizer, verdicts) in [
            ("auto", &diverged[..]),
            ("SGD", &diverged[..]),
            ("auto", &stalled[..]),
            ("SGD", &stalled[..]),
        ] {
            let ablated = DetectArgs::parse(
                DetectArgs::default(),
                &[
                    "act=sigmoid".into(),
                    "bn=false".into(),
                    "shortcut=false".into(),
                    "warmup_epochs=0".into(),
                    "clip_norm=none".into(),
                    format!("optimizer={optimizer}"),
                ],
                Command::Train,
            )
            .unwrap();
            let (images, nc) = (128, 80);
            let plan = Plan::new(&ablated, images, nc);
            let mut d = Diagnosis::with_remedies(verdicts, crate::diagnose::remedy::catalogue());
            yolo_remedies(&mut d, &ablated, LrForm::of(&plan.choice(), &ablated));
            let switches: Vec<&str> = d.remedies.iter().map(|r| r.switch.as_str()).collect();
            assert!(switches.len() >= 6, "{switches:?}");
            let mut lr_remedies = 0;
            for r in &d.remedies {
                let words: Vec<String> = r.switch.split_whitespace().map(String::from).collect();
                let after = DetectArgs::parse(ablated.clone(), &words, Command::Train)
                    .unwrap_or_else(|e| panic!("remedy '{}' does not parse: {e}", r.switch));
                if r.switch.contains("lr0=") {
                    lr_remedies += 1;
                    let (was, now) = (plan.clone(), Plan::new(&after, images, nc));
                    let wanted: f64 = words
                        .iter()
                        .find_map(|w| w.strip_prefix("lr0="))
                        .unwrap()
                        .parse()
                        .unwrap();
                    assert_eq!(now.lr0, wanted, "'{}' trains at {}", r.switch, now.lr0);
                    assert_ne!(now.lr0, was.lr0, "'{}' changes nothing", r.switch);
                    assert_eq!(
                        (now.adamw, now.muon, now.momentum, now.warmup_bias_lr),
                        (was.adamw, was.muon, was.momentum, was.warmup_bias_lr),
                        "'{}' changes more than the learning rate",
                        r.switch
                    );
                } else {
                    let (k, _) = words[0].split_once('=').expect("key=value");
                    assert_ne!(
                        after.get(k),
                        ablated.get(k),
                        "remedy '{}' changes nothing",
                        r.switch
                    );
                }
            }
            assert!(lr_remedies >= 2, "{switches:?}");
        }
    }

    /// A run that diverged is offered smaller learning rates only, even where its records also
    /// read as a slowly falling loss (whose remedies include a 3× larger one); a run that only
    /// stalls is offered both directions.
    #[test]
    fn a_diverged_run_is_never_told_to_raise_its_learning_rate() {
        let args = DetectArgs {
            optimizer: DetOptimizer::Sgd,
            lr0: Some(0.1),
            ..DetectArgs::default()
        };
        let lr = LrForm::of(&Choice::of(&args, 80, true), &args);
        let rates = |verdicts: &[Verdict]| -> Vec<f64> {
            let mut d = Diagnosis::with_remedies(verdicts, crate::diagnose::remedy::catalogue());
            yolo_remedies(&mut d, &args, lr);
            d.remedies
                .iter()
                .flat_map(|r| r.switch.split_whitespace())
                .filter_map(|w| w.strip_prefix("lr0="))
                .map(|v| v.parse().unwrap())
                .collect()
        };
        let diverged = rates(&[Verdict::Diverged, Verdict::Healthy]);
        assert!(diverged.contains(&0.01), "{diverged:?}");
        assert!(diverged.iter().all(|&r| r < 0.1), "{diverged:?}");
        let stalled = rates(&[Verdict::Healthy]);
        assert!(stalled.iter().any(|&r| r > 0.1), "{stalled:?}");
    }

    /// The words name auto's choice; a named optimizer needs `lr0=` alone.
    #[test]
    fn learning_rate_words() {
        let args = DetectArgs::default();
        assert_eq!(args.optimizer, DetOptimizer::Auto);
        let adamw = LrForm::of(&Choice::of(&args, 80, false), &args);
        assert_eq!(adamw.lr0, 0.000119);
        assert_eq!(
            adamw.words(0.000357),
            "optimizer=AdamW lr0=0.000357 momentum=0.9 warmup_bias_lr=0"
        );
        let long = LrForm::of(&Choice::of(&args, 80, true), &args);
        assert_eq!((long.lr0, long.auto), (0.01, Some(DetOptimizer::Musgd)));
        let sgd = DetectArgs {
            optimizer: DetOptimizer::Sgd,
            ..args
        };
        assert_eq!(
            LrForm::of(&Choice::of(&sgd, 80, true), &sgd).words(0.001),
            "lr0=0.001"
        );
    }
}
