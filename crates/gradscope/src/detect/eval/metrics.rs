//! Detection metrics on the host: COCO mAP (pycocotools' definition) and a confusion matrix.
//! The numbers Ultralytics' `val` prints are [`super::det_metrics`].
//!
//! [`coco_map`] re-implements the documented behaviour of pycocotools' `COCOeval` for bounding
//! boxes with the default parameters that the usual "mAP50-95" refers to: area range "all",
//! at most 100 detections, IoU thresholds `0.50:0.05:0.95` and 101 recall points `0:0.01:1`,
//! no crowd annotations. The steps, each in its own function below:
//!
//! 1. Boxes are grouped per (image, class). Within a group the detections are sorted by score,
//!    highest first (stable, so ties keep their input order), and only the first
//!    [`MAX_DETS`] are kept: the cap is per image *and class*, as in `evaluateImg`.
//! 2. IoU is pycocotools' `bbIou` on `x, y, w, h` boxes in `f64` with areas `w * h` (no `+1`).
//! 3. At each IoU threshold `t`, each detection in score order takes the still-unmatched ground
//!    truth of highest IoU, provided that IoU is at least `min(t, 1 - 1e-10)`; when two ground
//!    truths have the same IoU the later one wins, as in the reference loop.
//! 4. Per class, the detections of all images (in image order) are merged by a stable sort on
//!    score; cumulative true and false positives give recall `tp / n_gt` and precision
//!    `tp / (tp + fp + 2^-52)`; precision is made monotone from the right and read at each recall
//!    threshold with a left binary search (0 past the highest recall reached). AP is the mean of
//!    the 101 values.
//! 5. Classes without ground truth (reported as -1 by pycocotools) are left out of the means.
//!
//! Ground-truth areas are the box areas `w * h` (COCO files may carry a segmentation area
//! instead), and a box whose area lies outside `[0, 1e10]` (a box with `x2 < x1` say) is treated
//! as pycocotools treats an annotation outside the "all" area range: an ignored ground truth, or,
//! for an unmatched detection, an ignored detection. The thresholds are computed as `numpy.linspace`
//! computes them (`0.7000000000000001`, not `0.7`, for instance), since recalls such as `7 / 10`
//! fall exactly on them.
//!
//! Inputs are never trusted: boxes of a class `>= nc` are skipped, and NaN scores or coordinates
//! give IoU 0 and sort last instead of panicking.

use std::cmp::Ordering;
use std::collections::BTreeMap;

/// A ground-truth box: image index, class index and `[x1, y1, x2, y2]` in pixels.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GtBox {
    /// Index of the image the box belongs to.
    pub image: usize,
    /// Class index, `0..nc`.
    pub class: usize,
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
}

/// A detection: image index, class index, `[x1, y1, x2, y2]` in pixels and confidence.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetBox {
    /// Index of the image the box belongs to.
    pub image: usize,
    /// Class index, `0..nc`.
    pub class: usize,
    /// `[x1, y1, x2, y2]` in pixels.
    pub bbox: [f32; 4],
    /// Confidence score.
    pub score: f32,
}

/// Detections kept per image and class, COCO's `maxDets`.
pub const MAX_DETS: usize = 100;

/// Number of IoU thresholds, `0.50:0.05:0.95`.
pub const N_IOU: usize = 10;

/// Number of recall points, `0:0.01:1`.
pub const N_RECALL: usize = 101;

/// Index of IoU 0.75 among [`iou_thresholds`].
const IOU75: usize = 5;

/// pycocotools' `np.spacing(1)`, added to the precision denominator.
const PRECISION_EPS: f64 = f64::EPSILON;

/// Upper end of COCO's "all" area range, `1e5 ** 2`.
const MAX_AREA: f64 = 1e10;

/// COCO bbox evaluation results. Per-class entries are `None` for classes without ground truth.
#[derive(Clone, Debug, PartialEq)]
pub struct CocoResult {
    /// The IoU thresholds, as `numpy.linspace(0.5, 0.95, 10)` gives them.
    pub iou_thresholds: [f64; N_IOU],
    /// AP of each class at each IoU threshold.
    pub ap: Vec<Option<[f64; N_IOU]>>,
    /// AP of each class at IoU 0.5.
    pub ap50: Vec<Option<f64>>,
    /// AP of each class averaged over the ten IoU thresholds.
    pub ap50_95: Vec<Option<f64>>,
    /// Mean AP at IoU 0.5 over classes with ground truth (`stats[1]`); 0 when there are none.
    pub map50: f64,
    /// Mean AP at IoU 0.75 over classes with ground truth (`stats[2]`); 0 when there are none.
    pub map75: f64,
    /// Mean AP over IoU 0.5..0.95 and classes with ground truth (`stats[0]`); 0 when none.
    pub map50_95: f64,
}

/// `numpy.linspace(start, stop, N)`: `i * step + start` with `step = (stop - start) / (N - 1)`,
/// the last point set to `stop`.
pub(super) fn linspace<const N: usize>(start: f64, stop: f64) -> [f64; N] {
    let mut out = [start; N];
    if N < 2 {
        return out;
    }
    let step = (stop - start) / (N - 1) as f64;
    for (i, v) in out.iter_mut().enumerate() {
        *v = i as f64 * step + start;
    }
    out[N - 1] = stop;
    out
}

/// COCO's IoU thresholds `0.50:0.05:0.95`, bit for bit as pycocotools builds them.
pub fn iou_thresholds() -> [f64; N_IOU] {
    linspace::<N_IOU>(0.5, 0.95)
}

/// COCO's recall points `0:0.01:1`, bit for bit as pycocotools builds them.
fn recall_thresholds() -> [f64; N_RECALL] {
    linspace::<N_RECALL>(0.0, 1.0)
}

/// A box as pycocotools sees it: `[x, y, w, h]` in `f64`.
fn xywh(b: &[f32; 4]) -> [f64; 4] {
    let [x1, y1, x2, y2] = b.map(f64::from);
    [x1, y1, x2 - x1, y2 - y1]
}

/// Box area `w * h` in `f64` (negative for a box with `x2 < x1` and `y2 >= y1`).
fn area(b: &[f32; 4]) -> f64 {
    let [_, _, w, h] = xywh(b);
    w * h
}

/// Whether an area falls outside COCO's "all" range `[0, 1e10]` (NaN counts as outside).
fn outside_area_range(a: f64) -> bool {
    !(0.0..=MAX_AREA).contains(&a)
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes, computed as pycocotools' `bbIou`
/// (no crowd): 0 when the boxes do not overlap, and 0 for non-finite results (NaN input).
pub fn box_iou(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let d = xywh(a);
    let g = xywh(b);
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w.is_nan() || w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h.is_nan() || h <= 0.0 {
        return 0.0;
    }
    let inter = w * h;
    let iou = inter / (d[2] * d[3] + g[2] * g[3] - inter);
    if iou.is_finite() {
        iou
    } else {
        0.0
    }
}

/// Descending order of scores as `argsort(-score)` gives it: equal scores compare equal (so a
/// stable sort keeps their order) and NaN comes last.
pub(super) fn score_desc(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => b.partial_cmp(&a).unwrap_or(Ordering::Equal),
    }
}

/// What one detection turned out to be at one IoU threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    /// Matched a counted ground truth.
    Tp,
    /// Matched nothing.
    Fp,
    /// Matched an ignored ground truth, or unmatched with an area outside the range.
    Ignored,
}

/// The evaluation of one (image, class): kept detection scores in descending order, their
/// outcome at each threshold (`outcomes[t][d]`) and the number of counted ground truths.
struct ImageEval {
    scores: Vec<f64>,
    outcomes: Vec<Vec<Outcome>>,
    n_gt: usize,
}

/// Ground truths and detections of one (class, image).
type Group<'a> = (Vec<&'a GtBox>, Vec<&'a DetBox>);

/// Groups boxes by (class, image), both ascending, keeping input order inside each group;
/// boxes of a class `>= nc` are dropped.
fn group_by_class_image<'a>(
    gts: &'a [GtBox],
    dets: &'a [DetBox],
    nc: usize,
) -> BTreeMap<(usize, usize), Group<'a>> {
    let mut groups: BTreeMap<(usize, usize), Group<'a>> = BTreeMap::new();
    for g in gts.iter().filter(|g| g.class < nc) {
        groups.entry((g.class, g.image)).or_default().0.push(g);
    }
    for d in dets.iter().filter(|d| d.class < nc) {
        groups.entry((d.class, d.image)).or_default().1.push(d);
    }
    groups
}

/// The detections of a group sorted by score, highest first (stable), cut to [`MAX_DETS`].
fn top_detections<'a>(dets: &[&'a DetBox]) -> Vec<&'a DetBox> {
    let mut sorted = dets.to_vec();
    sorted.sort_by(|a, b| score_desc(f64::from(a.score), f64::from(b.score)));
    sorted.truncate(MAX_DETS);
    sorted
}

/// Greedy matching at one threshold, pycocotools' `evaluateImg` loop. `ious[d][g]`, ground
/// truths ordered counted-first; returns each detection's outcome.
fn match_at(
    ious: &[Vec<f64>],
    gt_ignored: &[bool],
    det_outside: &[bool],
    threshold: f64,
) -> Vec<Outcome> {
    let mut gt_taken = vec![false; gt_ignored.len()];
    let mut outcomes = Vec::with_capacity(ious.len());
    for (row, &outside) in ious.iter().zip(det_outside) {
        let mut best = threshold.min(1.0 - 1e-10);
        let mut matched: Option<usize> = None;
        for (g, &iou) in row.iter().enumerate() {
            if gt_taken[g] {
                continue;
            }
            // Once matched to a counted ground truth, never move on to an ignored one.
            if matched.is_some_and(|m| !gt_ignored[m]) && gt_ignored[g] {
                break;
            }
            if iou < best {
                continue;
            }
            best = iou;
            matched = Some(g);
        }
        outcomes.push(match matched {
            Some(g) => {
                gt_taken[g] = true;
                if gt_ignored[g] {
                    Outcome::Ignored
                } else {
                    Outcome::Tp
                }
            }
            None if outside => Outcome::Ignored,
            None => Outcome::Fp,
        });
    }
    outcomes
}

/// Evaluates one (image, class) group at the given IoU thresholds.
fn evaluate_group(gts: &[&GtBox], dets: &[&DetBox], thresholds: &[f64]) -> ImageEval {
    // Counted ground truths first, ignored ones last (stable).
    let mut gts = gts.to_vec();
    gts.sort_by_key(|g| outside_area_range(area(&g.bbox)));
    let gt_ignored: Vec<bool> = gts
        .iter()
        .map(|g| outside_area_range(area(&g.bbox)))
        .collect();
    let dets = top_detections(dets);
    let det_outside: Vec<bool> = dets
        .iter()
        .map(|d| outside_area_range(area(&d.bbox)))
        .collect();
    let ious: Vec<Vec<f64>> = dets
        .iter()
        .map(|d| gts.iter().map(|g| box_iou(&d.bbox, &g.bbox)).collect())
        .collect();
    ImageEval {
        scores: dets.iter().map(|d| f64::from(d.score)).collect(),
        outcomes: thresholds
            .iter()
            .map(|&t| match_at(&ious, &gt_ignored, &det_outside, t))
            .collect(),
        n_gt: gt_ignored.iter().filter(|&&ig| !ig).count(),
    }
}

/// Per-class evaluation: every image's [`ImageEval`] for that class, in image order.
fn evaluate_classes(
    gts: &[GtBox],
    dets: &[DetBox],
    nc: usize,
    thresholds: &[f64],
) -> Vec<Vec<ImageEval>> {
    let mut per_class: Vec<Vec<ImageEval>> = (0..nc).map(|_| Vec::new()).collect();
    for ((class, _image), (g, d)) in group_by_class_image(gts, dets, nc) {
        per_class[class].push(evaluate_group(&g, &d, thresholds));
    }
    per_class
}

/// The detections of all images of one class merged by a stable sort on score (highest
/// first): `(score, outcome at threshold t)`, ignored detections dropped.
fn merged_detections(evals: &[ImageEval], t: usize) -> Vec<(f64, bool)> {
    let mut all: Vec<(f64, Outcome)> = evals
        .iter()
        .flat_map(|e| e.scores.iter().copied().zip(e.outcomes[t].iter().copied()))
        .collect();
    all.sort_by(|a, b| score_desc(a.0, b.0));
    all.into_iter()
        .filter(|&(_, o)| o != Outcome::Ignored)
        .map(|(s, o)| (s, o == Outcome::Tp))
        .collect()
}

/// COCO's 101-point interpolated AP of score-sorted detections (`true` = true positive) against
/// `n_gt > 0` ground truths.
fn average_precision(is_tp: &[bool], n_gt: usize) -> f64 {
    let mut recall = Vec::with_capacity(is_tp.len());
    let mut precision = Vec::with_capacity(is_tp.len());
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for &hit in is_tp {
        if hit {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        recall.push(tp / n_gt as f64);
        precision.push(tp / (fp + tp + PRECISION_EPS));
    }
    // Precision envelope: monotone non-increasing in recall.
    for i in (1..precision.len()).rev() {
        if precision[i] > precision[i - 1] {
            precision[i - 1] = precision[i];
        }
    }
    let sum: f64 = recall_thresholds()
        .iter()
        .map(|&r| {
            let i = recall.partition_point(|&x| x < r);
            precision.get(i).copied().unwrap_or(0.0)
        })
        .sum();
    sum / N_RECALL as f64
}

/// Mean of the `Some` values, 0 when there are none.
fn mean_present(values: impl Iterator<Item = Option<f64>>) -> f64 {
    let (sum, n) = values
        .flatten()
        .fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        0.0
    } else {
        sum / n as f64
    }
}

/// COCO bbox mAP exactly as pycocotools' `COCOeval` computes it (area "all", 100 detections per
/// image and class, IoU `0.50:0.05:0.95`, 101 recall points); see the module documentation.
/// Classes `>= nc` are ignored; classes without ground truth get `None` and are left out of the
/// means; with no ground truth at all every mean is 0.
pub fn coco_map(gts: &[GtBox], dets: &[DetBox], nc: usize) -> CocoResult {
    let thresholds = iou_thresholds();
    let ap: Vec<Option<[f64; N_IOU]>> = evaluate_classes(gts, dets, nc, &thresholds)
        .iter()
        .map(|evals| {
            let n_gt: usize = evals.iter().map(|e| e.n_gt).sum();
            (n_gt > 0).then(|| {
                std::array::from_fn(|t| {
                    let merged = merged_detections(evals, t);
                    let hits: Vec<bool> = merged.iter().map(|&(_, hit)| hit).collect();
                    average_precision(&hits, n_gt)
                })
            })
        })
        .collect();
    let ap50: Vec<Option<f64>> = ap.iter().map(|a| a.map(|a| a[0])).collect();
    let ap50_95: Vec<Option<f64>> = ap
        .iter()
        .map(|a| a.map(|a| a.iter().sum::<f64>() / N_IOU as f64))
        .collect();
    CocoResult {
        iou_thresholds: thresholds,
        map50: mean_present(ap50.iter().copied()),
        map75: mean_present(ap.iter().map(|a| a.map(|a| a[IOU75]))),
        map50_95: mean_present(ap50_95.iter().copied()),
        ap,
        ap50,
        ap50_95,
    }
}

/// Confusion matrix of size `(nc + 1) x (nc + 1)`, indexed `[predicted class][true class]`, the
/// last row and column standing for background.
///
/// Per image, detections with score `>= conf` are matched one-to-one to ground truths of any
/// class by IoU `>= iou` (and `> 0`), greedily from the highest IoU down (ties: earlier ground
/// truth, then earlier detection). A matched pair counts at `[pred][gt]`, an unmatched ground
/// truth at `[nc][gt]` (missed), an unmatched detection at `[pred][nc]` (false alarm). Boxes of a
/// class `>= nc` are ignored.
pub fn confusion_matrix(
    gts: &[GtBox],
    dets: &[DetBox],
    nc: usize,
    conf: f32,
    iou: f32,
) -> Vec<Vec<usize>> {
    let mut matrix = vec![vec![0usize; nc + 1]; nc + 1];
    let mut images: BTreeMap<usize, Group<'_>> = BTreeMap::new();
    for g in gts.iter().filter(|g| g.class < nc) {
        images.entry(g.image).or_default().0.push(g);
    }
    for d in dets.iter().filter(|d| d.class < nc && d.score >= conf) {
        images.entry(d.image).or_default().1.push(d);
    }
    for (g, d) in images.values() {
        confusion_image(g, d, f64::from(iou), &mut matrix);
    }
    matrix
}

/// Adds one image's matches, misses and false alarms to the confusion matrix.
fn confusion_image(gts: &[&GtBox], dets: &[&DetBox], iou: f64, matrix: &mut [Vec<usize>]) {
    let bg = matrix.len() - 1;
    let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
    for (gi, g) in gts.iter().enumerate() {
        for (di, d) in dets.iter().enumerate() {
            let v = box_iou(&d.bbox, &g.bbox);
            if v > 0.0 && v >= iou {
                pairs.push((v, gi, di));
            }
        }
    }
    pairs.sort_by(|a, b| score_desc(a.0, b.0));
    let mut gt_used = vec![false; gts.len()];
    let mut det_used = vec![false; dets.len()];
    for (_, gi, di) in pairs {
        if gt_used[gi] || det_used[di] {
            continue;
        }
        gt_used[gi] = true;
        det_used[di] = true;
        matrix[dets[di].class][gts[gi].class] += 1;
    }
    for (g, _) in gts.iter().zip(&gt_used).filter(|(_, &used)| !used) {
        matrix[bg][g.class] += 1;
    }
    for (d, _) in dets.iter().zip(&det_used).filter(|(_, &used)| !used) {
        matrix[d.class][bg] += 1;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn gt(image: usize, class: usize, bbox: [f32; 4]) -> GtBox {
        GtBox { image, class, bbox }
    }

    pub(crate) fn det(image: usize, class: usize, bbox: [f32; 4], score: f32) -> DetBox {
        DetBox {
            image,
            class,
            bbox,
            score,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn thresholds_match_numpy_linspace() {
        let t = iou_thresholds();
        assert_eq!(t[0], 0.5);
        assert_eq!(t[5], 0.75);
        assert_eq!(t[8], 0.8999999999999999);
        assert_eq!(t[9], 0.95);
        let r = recall_thresholds();
        assert_eq!(r[0], 0.0);
        assert_eq!(r[7], 0.07);
        assert_eq!(r[35], 0.35000000000000003);
        assert_eq!(r[70], 0.7000000000000001);
        assert_eq!(r[95], 0.9500000000000001);
        assert_eq!(r[100], 1.0);
    }

    #[test]
    fn iou_by_hand() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(box_iou(&a, &a), 1.0);
        assert_eq!(box_iou(&a, &[0.0, 0.0, 10.0, 5.0]), 0.5);
        assert_eq!(box_iou(&a, &[5.0, 0.0, 15.0, 10.0]), 50.0 / 150.0);
        assert_eq!(box_iou(&a, &[10.0, 0.0, 20.0, 10.0]), 0.0);
        assert_eq!(box_iou(&a, &[f32::NAN, 0.0, 10.0, 10.0]), 0.0);
    }

    #[test]
    fn perfect_detections_give_map_one() {
        let boxes = [[10.0, 10.0, 50.0, 60.0], [100.0, 80.0, 200.0, 150.0]];
        let gts: Vec<GtBox> = (0..4).map(|i| gt(i / 2, i % 2, boxes[i % 2])).collect();
        let dets: Vec<DetBox> = gts
            .iter()
            .map(|g| det(g.image, g.class, g.bbox, 0.9))
            .collect();
        let r = coco_map(&gts, &dets, 2);
        assert!(close(r.map50, 1.0) && close(r.map75, 1.0) && close(r.map50_95, 1.0));
        for c in 0..2 {
            assert!(r.ap[c].is_some_and(|a| a.iter().all(|&v| close(v, 1.0))));
        }
    }

    #[test]
    fn false_positive_above_true_positive_halves_ap() {
        // Sorted: FP (P 0, R 0), TP (P 1/2, R 1). Envelope 1/2 at every recall point.
        let b = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, b)];
        let dets = [det(0, 0, [50.0, 50.0, 60.0, 60.0], 0.9), det(0, 0, b, 0.8)];
        let r = coco_map(&gts, &dets, 1);
        assert!(close(r.map50, 0.5) && close(r.map50_95, 0.5));
    }

    #[test]
    fn interleaved_false_positive_by_hand() {
        // Two GTs; TP 0.9, FP 0.8, TP 0.7: recall [.5, .5, 1], envelope [1, 2/3, 2/3].
        // Recall points 0..=0.50 (51 of them) read 1, the other 50 read 2/3.
        let gts = [
            gt(0, 0, [0.0, 0.0, 10.0, 10.0]),
            gt(1, 0, [0.0, 0.0, 10.0, 10.0]),
        ];
        let dets = [
            det(0, 0, [0.0, 0.0, 10.0, 10.0], 0.9),
            det(0, 0, [30.0, 30.0, 40.0, 40.0], 0.8),
            det(1, 0, [0.0, 0.0, 10.0, 10.0], 0.7),
        ];
        let r = coco_map(&gts, &dets, 1);
        let expected = (51.0 + 50.0 * 2.0 / 3.0) / 101.0;
        assert!(close(r.map50, expected), "{} vs {expected}", r.map50);
    }

    #[test]
    fn iou_threshold_is_inclusive() {
        // IoU exactly 0.5: a match at 0.5 only; IoU exactly 0.75: a match up to 0.75.
        let gts = [
            gt(0, 0, [0.0, 0.0, 10.0, 10.0]),
            gt(1, 0, [0.0, 0.0, 10.0, 10.0]),
        ];
        let dets = [
            det(0, 0, [0.0, 0.0, 10.0, 5.0], 0.9),
            det(1, 0, [0.0, 0.0, 10.0, 7.5], 0.8),
        ];
        let ap = coco_map(&gts, &dets, 1).ap[0].unwrap();
        assert!(close(ap[0], 1.0));
        // 0.55..0.75: only the second detection matches, after a false positive: precision
        // 1/2 up to recall 1/2, so 51 of the 101 recall points read 1/2 and the rest 0.
        for &v in &ap[1..=5] {
            assert!(close(v, 51.0 * 0.5 / 101.0), "{ap:?}");
        }
        assert!(ap[6..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn class_without_gt_is_excluded() {
        let b = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, b)];
        let dets = [det(0, 0, b, 0.9), det(0, 1, b, 0.95)];
        let r = coco_map(&gts, &dets, 3);
        assert_eq!(r.ap[1], None);
        assert_eq!(r.ap[2], None);
        assert_eq!(r.ap50_95[1], None);
        assert!(close(r.map50_95, 1.0));
    }

    #[test]
    fn class_with_gt_but_no_detections_scores_zero() {
        let b = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, b), gt(0, 1, b)];
        let dets = [det(0, 0, b, 0.9)];
        let r = coco_map(&gts, &dets, 2);
        assert_eq!(r.ap50[1], Some(0.0));
        assert!(close(r.map50, 0.5));
    }

    #[test]
    fn only_top_100_per_image_and_class_count() {
        let b = [0.0, 0.0, 10.0, 10.0];
        let gts = [gt(0, 0, b)];
        let fps = |n: usize| -> Vec<DetBox> {
            (0..n)
                .map(|i| {
                    det(
                        0,
                        0,
                        [100.0 + i as f32, 100.0, 110.0 + i as f32, 110.0],
                        0.9,
                    )
                })
                .collect()
        };
        // 100 higher-scored false positives push the true positive out.
        let mut dets = fps(100);
        dets.push(det(0, 0, b, 0.5));
        assert_eq!(coco_map(&gts, &dets, 1).map50, 0.0);
        // With 99 it is the 100th: precision 1/100 at recall 1.
        let mut dets = fps(99);
        dets.push(det(0, 0, b, 0.5));
        let expected = 1.0 / (100.0 + PRECISION_EPS);
        assert!(close(coco_map(&gts, &dets, 1).map50, expected));
        // The cap is per class: detections of another class do not push it out.
        let mut dets: Vec<DetBox> = fps(150)
            .into_iter()
            .map(|d| DetBox { class: 1, ..d })
            .collect();
        dets.push(det(0, 0, b, 0.5));
        assert!(close(coco_map(&gts, &dets, 2).ap50[0].unwrap(), 1.0));
    }

    #[test]
    fn empty_inputs_give_zero() {
        let r = coco_map(&[], &[], 3);
        assert_eq!((r.map50, r.map75, r.map50_95), (0.0, 0.0, 0.0));
        assert!(r.ap.iter().all(Option::is_none));
        assert_eq!(coco_map(&[], &[], 0).map50_95, 0.0);
        let dets = [det(0, 0, [0.0, 0.0, 1.0, 1.0], 0.5)];
        assert_eq!(coco_map(&[], &dets, 1).map50_95, 0.0);
        assert_eq!(
            confusion_matrix(&[], &[], 2, 0.25, 0.45),
            vec![vec![0; 3]; 3]
        );
        assert_eq!(
            confusion_matrix(&[], &[], 0, 0.25, 0.45),
            vec![vec![0; 1]; 1]
        );
    }

    /// Boxes of an unknown class, inverted, NaN and infinite, and a NaN score (for nc=2).
    pub(crate) fn bad_boxes() -> (Vec<GtBox>, Vec<DetBox>) {
        let gts = vec![
            gt(0, 7, [0.0, 0.0, 10.0, 10.0]),
            gt(0, 0, [10.0, 10.0, 0.0, 5.0]),
            gt(0, 0, [f32::NAN; 4]),
        ];
        let dets = vec![
            det(0, 0, [0.0, 0.0, 10.0, 10.0], f32::NAN),
            det(0, 9, [0.0, 0.0, 10.0, 10.0], 0.3),
            det(0, 0, [f32::INFINITY, 0.0, 1.0, 1.0], 0.4),
        ];
        (gts, dets)
    }

    #[test]
    fn bad_inputs_do_not_panic() {
        let (gts, dets) = bad_boxes();
        let r = coco_map(&gts, &dets, 2);
        assert!(r.map50_95.is_finite());
        let m = confusion_matrix(&gts, &dets, 2, 0.0, 0.5);
        assert_eq!(m.len(), 3);
    }

    #[test]
    fn confusion_matrix_by_hand() {
        let a = [0.0, 0.0, 10.0, 10.0];
        let b = [20.0, 20.0, 30.0, 30.0];
        let c = [50.0, 50.0, 60.0, 60.0];
        let gts = [gt(0, 0, a), gt(0, 1, b), gt(1, 1, c)];
        let dets = [
            det(0, 0, a, 0.9),                        // correct: [0][0]
            det(0, 0, b, 0.8),                        // wrong class: [0][1]
            det(0, 1, a, 0.7),                        // duplicate: false alarm [1][bg]
            det(1, 0, [70.0, 70.0, 80.0, 80.0], 0.6), // false alarm [0][bg]
            det(1, 1, c, 0.1),                        // below conf: gt missed [bg][1]
        ];
        let m = confusion_matrix(&gts, &dets, 2, 0.25, 0.45);
        assert_eq!(m, vec![vec![1, 1, 1], vec![0, 0, 1], vec![0, 1, 0]]);
    }
}
