//! The head's three levels as the diagnosis sees them: how much gradient each head input (P3,
//! P4, P5 at strides 8, 16, 32) receives, and how many targets the assigner gave that level. A
//! level that receives almost no gradient because almost no target lands at its stride is a
//! *starved branch*: its layers have nothing to learn from. That is a property of the data and
//! the image size, not a vanishing gradient, and the remedy is the image size.

use crate::data::detect::Sample;
use crate::diagnose::{Diagnosis, Remedy, Verdict};

/// A head input receiving less than this fraction of the strongest one's RMS gradient, with
/// less than [`STARVED_SHARE`] of the assigned targets, is starved.
pub const STARVED_BELOW: f64 = 1e-2;
/// See [`STARVED_BELOW`].
pub const STARVED_SHARE: f64 = 0.02;

/// The levels' names and strides, in the order of the head inputs.
const LEVELS: [(&str, usize); 3] = [("P3", 8), ("P4", 16), ("P5", 32)];

/// What the trainer knows about the head's levels.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Assigned {
    /// Anchors assigned a target per iteration at each level (mean over the last epoch).
    pub per_level: [f64; 3],
    /// Median of the training boxes' longer side, in pixels of the network input.
    pub median_box: f64,
    pub imgsz: usize,
}

/// The median longer side of the training boxes at `imgsz` (each image letterboxed into it).
pub fn median_box(samples: &[Sample], imgsz: usize) -> f64 {
    let mut sides: Vec<f64> = samples
        .iter()
        .flat_map(|s| {
            let r = imgsz as f64 / s.width.max(s.height).max(1) as f64;
            s.labels
                .iter()
                .map(move |l| (l.w as f64 * s.width as f64).max(l.h as f64 * s.height as f64) * r)
        })
        .filter(|x| x.is_finite())
        .collect();
    if sides.is_empty() {
        return f64::NAN;
    }
    sides.sort_by(f64::total_cmp);
    sides[sides.len() / 2]
}

/// Adds the head-branch line to `d` and, for each starved level, the finding with its cause and
/// the `imgsz` remedy. Nothing when the diagnosis has not three head inputs.
pub fn judge(d: &mut Diagnosis, a: &Assigned) {
    let heads: Vec<(String, f64)> = d
        .head_inputs()
        .into_iter()
        .map(|(n, r)| (n.to_string(), r))
        .collect();
    if heads.len() != LEVELS.len() {
        return;
    }
    let total: f64 = a.per_level.iter().sum();
    if total == 0.0 {
        // no level had anything to learn from: no level is starved for the others' sake (a run
        // that collapsed, or a batch without boxes; the divergence rules speak of the first)
        d.evidence.push(
            "head levels: no anchor was assigned a target in the last epoch, at any level".into(),
        );
        return;
    }
    let share = |k: usize| a.per_level[k] / total;
    let line: Vec<String> = heads
        .iter()
        .zip(LEVELS)
        .enumerate()
        .map(|(k, ((name, rel), (level, stride)))| {
            format!(
                "{level} (stride {stride}, {name}) {rel:.2e} of the gradient, {:.1}% of the targets",
                100.0 * share(k)
            )
        })
        .collect();
    d.evidence.push(format!(
        "head levels (RMS ‖∂L/∂h‖ of each head input ÷ the strongest; anchors assigned a target, last epoch): {}",
        line.join("; ")
    ));
    for (k, ((name, rel), (level, stride))) in heads.iter().zip(LEVELS).enumerate() {
        if !(*rel < STARVED_BELOW && share(k) < STARVED_SHARE) {
            continue;
        }
        d.evidence.push(format!(
            "starved branch: {level} ({name}, stride {stride}) receives {rel:.2e} of the gradient of the head input that receives most, because {:.1}% of the assigned targets are at its stride ({:.2} anchors per iteration). The objects are small for imgsz={}: the median box is {:.0} px, a stride-{stride} cell {stride} px, so the assigner puts them on finer levels and {level}'s branch has almost nothing to learn from. This is not a vanishing gradient (the other levels train); it matters only if the data you will predict on has large objects",
            100.0 * share(k),
            a.per_level[k],
            a.imgsz,
            a.median_box,
        ));
        if !d.verdicts.contains(&Verdict::StarvedBranch) {
            d.verdicts.retain(|v| *v != Verdict::Healthy);
            d.verdicts.push(Verdict::StarvedBranch);
        }
        let bigger = a.imgsz * 2;
        if bigger <= crate::detect::args::MAX_IMGSZ
            && !d.remedies.iter().any(|r| r.switch.starts_with("imgsz="))
        {
            d.remedies.push(Remedy {
                changes: Vec::new(),
                switch: format!("imgsz={bigger}"),
                why: format!(
                    "twice the image size doubles every object's size in pixels, moving objects up to the {level} level (stride {stride})"
                ),
            });
        }
    }
    if d.verdict == Verdict::Healthy && d.verdicts.contains(&Verdict::StarvedBranch) {
        d.verdict = Verdict::StarvedBranch;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::LayerDiagnosis;

    fn diagnosis(rel: [f64; 3]) -> Diagnosis {
        let mut d = Diagnosis::with_remedies(&[Verdict::Healthy], Vec::new());
        for (name, r) in ["model.16", "model.19", "model.22"].iter().zip(rel) {
            d.layers.push(LayerDiagnosis {
                name: name.to_string(),
                block: "output:C3k2".into(),
                verdict: Verdict::Healthy,
                grad_h_rel: r,
                grad_h_norm: r,
                update_ratio: 1e-3,
                dead_frac: None,
                sat_frac: None,
                measured_factor: None,
                predicted_factor: None,
            });
        }
        d
    }

    fn assigned(per_level: [f64; 3]) -> Assigned {
        Assigned {
            per_level,
            median_box: 13.0,
            imgsz: 256,
        }
    }

    #[test]
    fn a_level_without_targets_and_gradient_is_a_starved_branch() {
        let mut d = diagnosis([1.0, 0.31, 5.2e-4]);
        judge(&mut d, &assigned([120.0, 9.0, 0.2]));
        assert_eq!(d.verdict, Verdict::StarvedBranch);
        assert_eq!(d.verdicts, [Verdict::StarvedBranch]);
        let text = d.evidence.join("\n");
        assert!(
            text.contains("P5 (stride 32, model.22) 5.20e-4 of the gradient, 0.2% of the targets"),
            "{text}"
        );
        assert!(
            text.contains("starved branch: P5 (model.22, stride 32)"),
            "{text}"
        );
        assert!(text.contains("median box is 13 px"), "{text}");
        assert_eq!(d.remedies.len(), 1);
        assert_eq!(d.remedies[0].switch, "imgsz=512");
        // the remedy is a setting `gradscope train` accepts, and it changes the image size
        let words = vec![d.remedies[0].switch.clone()];
        let a = crate::detect::args::DetectArgs::parse(
            crate::detect::args::DetectArgs::default(),
            &words,
            crate::settings::Command::Train,
        )
        .unwrap();
        assert_eq!(a.imgsz, 512);
    }

    #[test]
    fn no_level_is_starved_when_none_was_assigned_anything() {
        // the trees run at lr0=1 that collapsed: P3 and P4 with almost no gradient, no anchor
        // assigned anywhere; it was called a starved branch twice, with "0.0% of the targets"
        let mut d = diagnosis([4.66e-4, 8.31e-3, 1.0]);
        judge(&mut d, &assigned([0.0; 3]));
        assert_eq!(d.verdict, Verdict::Healthy);
        assert!(d.remedies.is_empty());
        let text = d.evidence.join("\n");
        assert!(text.contains("no anchor was assigned a target"), "{text}");
        assert!(!text.contains("starved"), "{text}");
    }

    #[test]
    fn weak_gradient_with_targets_or_targets_without_weak_gradient_is_not_starved() {
        // little gradient but 5% of the targets: the level learns
        let mut d = diagnosis([1.0, 0.31, 5.2e-4]);
        judge(&mut d, &assigned([100.0, 10.0, 5.8]));
        assert_eq!(d.verdict, Verdict::Healthy);
        // few targets, but the gradient reaches it
        let mut d = diagnosis([1.0, 0.31, 0.05]);
        judge(&mut d, &assigned([120.0, 9.0, 0.2]));
        assert_eq!(d.verdict, Verdict::Healthy);
        assert!(d.remedies.is_empty());
        // a verdict already there stays the main one
        let mut d = diagnosis([1.0, 0.31, 5.2e-4]);
        d.verdict = Verdict::Vanishing;
        d.verdicts = vec![Verdict::Vanishing];
        judge(&mut d, &assigned([120.0, 9.0, 0.2]));
        assert_eq!(d.verdict, Verdict::Vanishing);
        assert_eq!(d.verdicts, [Verdict::Vanishing, Verdict::StarvedBranch]);
    }

    #[test]
    fn the_median_box_is_measured_at_the_input_size() {
        use crate::data::detect::Label;
        let sample = |w: f32, h: f32| Sample {
            image: "a.jpg".into(),
            width: 400,
            height: 200,
            labels: vec![Label {
                class: 0,
                cx: 0.5,
                cy: 0.5,
                w,
                h,
            }],
        };
        // 0.1 × 400 = 40 px and 0.5 × 200 = 100 px on a 400-px image letterboxed into 200
        let s = [sample(0.1, 0.1), sample(0.1, 0.5), sample(0.05, 0.05)];
        assert!((median_box(&s, 200) - 20.0).abs() < 1e-5);
    }
}
