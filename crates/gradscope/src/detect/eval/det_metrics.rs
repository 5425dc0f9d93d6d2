//! Detection metrics as Ultralytics 8.4's `val` reports them: P, R, mAP50 and mAP50-95, so that
//! the numbers gradscope prints compare with the numbers an Ultralytics user knows. They differ
//! from COCO's ([`super::metrics::coco_map`], pycocotools' definition) in three ways: every
//! detection counts (no 100-per-image cap), AP integrates the 101-point precision envelope with
//! the trapezoidal rule (COCO averages the 101 values), and the curve gets a sentinel at the
//! last recall reached. Written from the described algorithm (`DetectionValidator` /
//! `ap_per_class`):
//!
//! 1. Per image, detections in score order (highest first) each take, at every IoU threshold
//!    `0.5:0.05:0.95` (as `float32`), the unclaimed ground truth *of its class* with the highest
//!    IoU (the first on ties); a hit when that IoU reaches the threshold. IoU in `f32` with
//!    `1e-7` added to the union.
//! 2. All detections sorted by score; per class with labels: cumulative hits give recall
//!    `tp / (n + 1e-16)` and precision `tp / (tp + fp)`. AP per threshold: recall with sentinels
//!    `[0, r…, r_last, 1]`, precision `[1, p…, 0, 0]` made non-increasing from the right,
//!    interpolated at `linspace(0, 1, 101)` and integrated by the trapezoidal rule.
//! 3. P and R: each class's precision and recall as functions of the confidence threshold
//!    (`linspace(0, 1, 1000)`, linear between detection scores; precision 1 and recall 0 above
//!    the highest score), F1 per class, its mean over classes smoothed by a 101-wide box filter;
//!    P and R are read at the first maximum. A class with labels but no detection has AP, P and
//!    R 0. Means are over the classes that have labels.
//!
//! Checked against Ultralytics' own functions (`tools/reference/ultralytics_metrics.py`).

use super::metrics::{linspace, score_desc, DetBox, GtBox, N_IOU};

/// One class's numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ClassMetrics {
    pub p: f64,
    pub r: f64,
    pub ap50: f64,
    pub ap50_95: f64,
    /// Ground-truth boxes of the class.
    pub labels: usize,
}

/// What Ultralytics' validation table prints.
#[derive(Clone, Debug, PartialEq)]
pub struct DetMetrics {
    /// Means over the classes with labels.
    pub p: f64,
    pub r: f64,
    pub map50: f64,
    pub map50_95: f64,
    /// Per class; `None` for classes without labels.
    pub classes: Vec<Option<ClassMetrics>>,
    /// The confidence threshold P and R were read at.
    pub conf: f64,
    /// Per class with labels, its curves (the F1/P/R-confidence and precision-recall plots).
    pub curves: Vec<ClassCurve>,
}

impl DetMetrics {
    /// The 1000 points of [0, 1] the curves are read at: confidence thresholds for
    /// [`ClassCurve::p`], [`ClassCurve::r`] and F1, recalls for [`ClassCurve::pr`].
    pub fn grid() -> [f64; 1000] {
        linspace::<1000>(0.0, 1.0)
    }

    /// The mean over classes of one curve, smoothed as Ultralytics smooths F1 before it picks
    /// the confidence threshold (a box filter over a tenth of the grid) when `smoothed`.
    pub fn mean_curve(&self, curve: impl Fn(&ClassCurve) -> Vec<f64>, smoothed: bool) -> Vec<f64> {
        let k = self.curves.len().max(1) as f64;
        let mut mean = vec![0.0; 1000];
        for c in &self.curves {
            mean.iter_mut().zip(curve(c)).for_each(|(m, v)| *m += v / k);
        }
        if smoothed {
            smooth(&mean, 0.1)
        } else {
            mean
        }
    }
}

/// The IoU thresholds as `torch.linspace(0.5, 0.95, 10)` gives them in `float32`.
fn thresholds() -> [f32; N_IOU] {
    std::array::from_fn(|i| {
        let step = (0.95f32 - 0.5) / 9.0;
        if i < 5 {
            0.5 + step * i as f32
        } else {
            0.95 - step * (9 - i) as f32
        }
    })
}

/// `torchvision`-style IoU in `f32`, with `1e-7` added to the union.
fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |x: &[f32; 4]| (x[2] - x[0]) * (x[3] - x[1]);
    let v = inter / (area(a) + area(b) - inter + 1e-7);
    if v.is_finite() {
        v
    } else {
        0.0
    }
}

/// Step 1 for one image: each detection's hit at each threshold.
fn match_image(gts: &[&GtBox], dets: &[&DetBox], thr: &[f32; N_IOU]) -> Vec<[bool; N_IOU]> {
    let mut claimed = vec![[false; N_IOU]; gts.len()];
    dets.iter()
        .map(|d| {
            let ious: Vec<f32> = gts
                .iter()
                .map(|g| {
                    if g.class == d.class {
                        iou(&g.bbox, &d.bbox)
                    } else {
                        0.0
                    }
                })
                .collect();
            let mut hit = [false; N_IOU];
            if !ious.iter().any(|&v| v >= thr[0]) {
                return hit;
            }
            for t in 0..N_IOU {
                let mut best = (0usize, f32::NEG_INFINITY);
                for (k, &v) in ious.iter().enumerate() {
                    let v = if claimed[k][t] { 0.0 } else { v };
                    if v > best.1 {
                        best = (k, v);
                    }
                }
                hit[t] = best.1 >= thr[t];
                claimed[best.0][t] |= hit[t];
            }
            hit
        })
        .collect()
}

/// `numpy.interp(x, xp, fp, left, right)` for increasing `xp` (repeats allowed: the last of
/// equal `xp` values is used).
fn interp(x: f64, xp: &[f64], fp: &[f64], left: f64, right: f64) -> f64 {
    let n = xp.len();
    if n == 0 || x < xp[0] {
        return left;
    }
    if x > xp[n - 1] {
        return right;
    }
    let j = xp.partition_point(|&v| v <= x) - 1;
    if j == n - 1 || xp[j] == x {
        return fp[j];
    }
    let slope = (fp[j + 1] - fp[j]) / (xp[j + 1] - xp[j]);
    slope * (x - xp[j]) + fp[j]
}

/// Step 2: the precision envelope of one precision-recall curve, with its sentinels:
/// (recall, precision non-increasing from the right).
fn envelope(recall: &[f64], precision: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let last = recall.last().copied().unwrap_or(1.0);
    let mrec: Vec<f64> = [0.0]
        .into_iter()
        .chain(recall.iter().copied())
        .chain([last, 1.0])
        .collect();
    let mut mpre: Vec<f64> = [1.0]
        .into_iter()
        .chain(precision.iter().copied())
        .chain([0.0, 0.0])
        .collect();
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    (mrec, mpre)
}

/// The envelope read at each recall in `x`.
fn envelope_at(mrec: &[f64], mpre: &[f64], x: &[f64]) -> Vec<f64> {
    x.iter()
        .map(|&v| interp(v, mrec, mpre, mpre[0], mpre[mpre.len() - 1]))
        .collect()
}

/// Step 2: AP of one precision-recall curve.
fn average_precision(recall: &[f64], precision: &[f64]) -> f64 {
    let (mrec, mpre) = envelope(recall, precision);
    let x = linspace::<101>(0.0, 1.0);
    let y = envelope_at(&mrec, &mpre, &x);
    x.windows(2)
        .zip(y.windows(2))
        .map(|(xs, ys)| (xs[1] - xs[0]) * (ys[0] + ys[1]) / 2.0)
        .sum()
}

/// Ultralytics' `smooth`: a box filter of width `round(2·f·n) / 2 · 2 + 1`, edges repeated.
fn smooth(y: &[f64], f: f64) -> Vec<f64> {
    let nf = ((y.len() as f64 * f * 2.0).round() as usize) / 2 + 1;
    let pad = nf / 2;
    let padded: Vec<f64> = std::iter::repeat_n(y[0], pad)
        .chain(y.iter().copied())
        .chain(std::iter::repeat_n(y[y.len() - 1], pad))
        .collect();
    padded
        .windows(nf)
        .map(|w| w.iter().map(|v| v / nf as f64).sum())
        .collect()
}

/// One class with labels: the curves Ultralytics plots, each on 1000 points of [0, 1] (the
/// grid of [`DetMetrics::grid`]), and AP per IoU threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassCurve {
    pub class: usize,
    /// Precision against the confidence threshold (IoU 0.5).
    pub p: Vec<f64>,
    /// Recall against the confidence threshold (IoU 0.5).
    pub r: Vec<f64>,
    /// The precision envelope against recall (IoU 0.5): the curve AP50 integrates.
    pub pr: Vec<f64>,
    ap: [f64; N_IOU],
}

impl ClassCurve {
    /// F1 against the confidence threshold.
    pub fn f1(&self) -> Vec<f64> {
        self.p
            .iter()
            .zip(&self.r)
            .map(|(&p, &r)| f1(p, r))
            .collect()
    }

    /// AP at IoU 0.5.
    pub fn ap50(&self) -> f64 {
        self.ap[0]
    }
}

/// The harmonic mean of precision and recall, as Ultralytics computes it (`1e-16` in the
/// denominator).
fn f1(p: f64, r: f64) -> f64 {
    2.0 * p * r / (p + r + 1e-16)
}

/// Step 2 and the curves of step 3 for class `c` with `n` labels; `all` holds every detection
/// (score, class, hits) in score order, `x` the confidence grid.
fn class_curve(c: usize, n: usize, all: &[(f32, usize, [bool; N_IOU])], x: &[f64]) -> ClassCurve {
    let mine: Vec<&(f32, usize, [bool; N_IOU])> = all.iter().filter(|d| d.1 == c).collect();
    let mut out = ClassCurve {
        class: c,
        p: vec![0.0; x.len()],
        r: vec![0.0; x.len()],
        pr: vec![0.0; x.len()],
        ap: [0.0; N_IOU],
    };
    if mine.is_empty() {
        return out;
    }
    let neg_conf: Vec<f64> = mine.iter().map(|d| -(d.0 as f64)).collect();
    for t in 0..N_IOU {
        let (mut tp, mut recall, mut precision) = (0.0, Vec::new(), Vec::new());
        for (k, d) in mine.iter().enumerate() {
            tp += f64::from(u8::from(d.2[t]));
            recall.push(tp / (n as f64 + 1e-16));
            precision.push(tp / (k + 1) as f64);
        }
        out.ap[t] = average_precision(&recall, &precision);
        if t == 0 {
            // precision 1 and recall 0 above the highest score, the last values below the lowest
            let last = |v: &[f64]| v[v.len() - 1];
            let at =
                |v: f64, curve: &[f64], left: f64| interp(-v, &neg_conf, curve, left, last(curve));
            out.r = x.iter().map(|&v| at(v, &recall, 0.0)).collect();
            out.p = x.iter().map(|&v| at(v, &precision, 1.0)).collect();
            let (mrec, mpre) = envelope(&recall, &precision);
            out.pr = envelope_at(&mrec, &mpre, x);
        }
    }
    out
}

/// Ultralytics' validation numbers for `dets` against `gts` (boxes in the same pixels; classes
/// `>= nc` and detections with a non-finite score skipped).
pub fn det_metrics(gts: &[GtBox], dets: &[DetBox], nc: usize) -> DetMetrics {
    let thr = thresholds();
    let images = gts
        .iter()
        .map(|g| g.image)
        .chain(dets.iter().map(|d| d.image))
        .max()
        .map_or(0, |m| m + 1);
    let mut gt_by: Vec<Vec<&GtBox>> = vec![Vec::new(); images];
    let mut det_by: Vec<Vec<&DetBox>> = vec![Vec::new(); images];
    gts.iter()
        .filter(|g| g.class < nc)
        .for_each(|g| gt_by[g.image].push(g));
    // a detection without a finite score cannot be ranked: left out
    dets.iter()
        .filter(|d| d.class < nc && d.score.is_finite())
        .for_each(|d| det_by[d.image].push(d));
    // (score, class, hits) of every detection
    let mut all: Vec<(f32, usize, [bool; N_IOU])> = Vec::new();
    for (g, d) in gt_by.iter().zip(det_by.iter_mut()) {
        d.sort_by(|a, b| score_desc(a.score as f64, b.score as f64));
        let hits = match_image(g, d, &thr);
        all.extend(d.iter().zip(hits).map(|(d, h)| (d.score, d.class, h)));
    }
    all.sort_by(|a, b| score_desc(a.0 as f64, b.0 as f64));
    let mut labels = vec![0usize; nc];
    gts.iter()
        .filter(|g| g.class < nc)
        .for_each(|g| labels[g.class] += 1);

    let x = DetMetrics::grid();
    let curves: Vec<ClassCurve> = labels
        .iter()
        .enumerate()
        .filter(|(_, &n)| n > 0)
        .map(|(c, &n)| class_curve(c, n, &all, &x))
        .collect();
    let mut out = DetMetrics {
        p: 0.0,
        r: 0.0,
        map50: 0.0,
        map50_95: 0.0,
        classes: vec![None; nc],
        conf: 0.0,
        curves,
    };
    if out.curves.is_empty() {
        return out;
    }
    let k = out.curves.len() as f64;
    let smoothed = out.mean_curve(ClassCurve::f1, true);
    let best = smoothed
        .iter()
        .enumerate()
        .fold(0, |b, (i, &v)| if v > smoothed[b] { i } else { b });
    for cc in &out.curves {
        let m = ClassMetrics {
            p: cc.p[best],
            r: cc.r[best],
            ap50: cc.ap[0],
            ap50_95: cc.ap.iter().sum::<f64>() / N_IOU as f64,
            labels: labels[cc.class],
        };
        out.p += m.p / k;
        out.r += m.r / k;
        out.map50 += m.ap50 / k;
        out.map50_95 += m.ap50_95 / k;
        out.classes[cc.class] = Some(m);
    }
    out.conf = x[best];
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::eval::metrics::tests::{bad_boxes, det, gt};

    #[test]
    fn interp_is_numpys() {
        let xp = [0.0, 0.5, 0.5, 1.0];
        let fp = [1.0, 0.8, 0.4, 0.0];
        // numpy.interp([−1, 0, 0.25, 0.5, 0.75, 1, 2], xp, fp, left=9, right=7)
        let want = [9.0, 1.0, 0.9, 0.4, 0.2, 0.0, 7.0];
        for (x, w) in [-1.0, 0.0, 0.25, 0.5, 0.75, 1.0, 2.0].iter().zip(want) {
            assert!((interp(*x, &xp, &fp, 9.0, 7.0) - w).abs() < 1e-12, "{x}");
        }
    }

    #[test]
    fn ap_by_hand() {
        // Two boxes; hit 0.9, miss 0.8, hit 0.7: recall [.5, .5, 1], precision [1, .5, 2/3].
        // With sentinels, recall [0, .5, .5, 1, 1, 1] and envelope [1, 1, 2/3, 2/3, 0, 0]: read
        // at 0, .01, …, 1 that is 1 below .5, 2/3 from .5 (the last of equal recalls wins) and
        // 0 at 1; trapezoids of width .01
        let b = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, b), gt(1, 0, b)];
        let dets = [
            det(0, 0, b, 0.9),
            det(0, 0, [30.0, 30.0, 40.0, 40.0], 0.8),
            det(1, 0, b, 0.7),
        ];
        let m = det_metrics(&gts, &dets, 1);
        let want = 0.49 + 0.005 * (1.0 + 2.0 / 3.0) + 0.49 * 2.0 / 3.0 + 0.005 * 2.0 / 3.0;
        assert!((m.map50 - want).abs() < 1e-12, "{} vs {want}", m.map50);
        // P and R where the smoothed F1 peaks: all three kept (P 2/3, R 1, F1 0.8)
        assert!(
            (m.p - 2.0 / 3.0).abs() < 1e-9 && (m.r - 1.0).abs() < 1e-9,
            "{m:?}"
        );
    }

    #[test]
    fn classes_without_labels_are_left_out_and_rows_average_to_the_table() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, a), gt(0, 1, [20.0, 20.0, 30.0, 30.0]), gt(1, 1, a)];
        let dets = [
            det(0, 0, a, 0.9),
            det(0, 1, [20.0, 20.0, 30.0, 30.0], 0.6),
            det(1, 1, [50.0, 50.0, 60.0, 60.0], 0.7),
            det(1, 2, a, 0.8), // a class without labels
        ];
        let m = det_metrics(&gts, &dets, 3);
        assert!(m.classes[2].is_none());
        let (c0, c1) = (m.classes[0].unwrap(), m.classes[1].unwrap());
        assert_eq!((c0.labels, c1.labels), (1, 2));
        assert!(((c0.p + c1.p) / 2.0 - m.p).abs() < 1e-12);
        assert!(((c0.ap50 + c1.ap50) / 2.0 - m.map50).abs() < 1e-12);
    }

    #[test]
    fn bad_inputs_do_not_panic() {
        let (gts, dets) = bad_boxes();
        let m = det_metrics(&gts, &dets, 2);
        assert!(
            m.p.is_finite() && m.r.is_finite() && m.map50_95.is_finite(),
            "{m:?}"
        );
        assert_eq!(det_metrics(&[], &[], 2).map50, 0.0);
    }

    #[test]
    fn a_perfect_detector_scores_one_and_a_blind_one_zero() {
        let g = GtBox {
            image: 0,
            class: 0,
            bbox: [10.0, 10.0, 50.0, 50.0],
        };
        let d = DetBox {
            image: 0,
            class: 0,
            bbox: g.bbox,
            score: 0.9,
        };
        // AP 0.995, not 1: the envelope is read as 0 at recall 1 (the sentinel), and the last
        // trapezoid halves — Ultralytics' well-known ceiling
        let m = det_metrics(&[g], &[d], 1);
        assert!((m.map50 - 0.995).abs() < 1e-12 && (m.map50_95 - 0.995).abs() < 1e-12);
        assert_eq!((m.p, m.r), (1.0, 1.0));
        let m = det_metrics(&[g], &[], 1);
        assert_eq!((m.map50, m.p, m.r), (0.0, 0.0, 0.0));
    }
}
