//! From raw head outputs to detections `[x1, y1, x2, y2, score, class]` in input pixels.
//!
//! Decoding: anchor points at cell centres (offset 0.5, in stride units), box = (anchor − (l, t),
//! anchor + (r, b)) · stride, score = sigmoid(logit).
//! End to end (one-to-one head): no NMS; keep the `max_det` anchors with the highest class score,
//! then the `max_det` best (anchor, class) pairs among them.
//! Classic (one-to-many head): confidence threshold, per-class NMS at an IoU threshold, best
//! `max_det`.

use rayon::prelude::*;

/// One detection: x1, y1, x2, y2 (pixels), score, class.
pub type Detection = [f32; 6];

/// Decoded boxes and class probabilities of one image from raw `[4 + nc, anchors]` outputs
/// (row-major: channel, anchor). `levels`: (height, width, stride) of each level, in order.
pub fn decode(
    raw: &[f32],
    nc: usize,
    levels: &[(usize, usize, usize)],
) -> (Vec<[f32; 4]>, Vec<f32>) {
    let anchors: usize = levels.iter().map(|(h, w, _)| h * w).sum();
    let at = |c: usize, a: usize| raw[c * anchors + a];
    let mut boxes = Vec::with_capacity(anchors);
    for &(h, w, s) in levels {
        for y in 0..h {
            for x in 0..w {
                let a = boxes.len();
                let (ax, ay, s) = (x as f32 + 0.5, y as f32 + 0.5, s as f32);
                boxes.push([
                    (ax - at(0, a)) * s,
                    (ay - at(1, a)) * s,
                    (ax + at(2, a)) * s,
                    (ay + at(3, a)) * s,
                ]);
            }
        }
    }
    // the class logits are rows of `anchors` values; the scores go anchor by anchor, so each
    // task takes a block of anchors and reads every class row's piece of it (one exp per value
    // either way; column by column, each read had been a cache line of its own)
    let mut scores = vec![0f32; anchors * nc];
    scores
        .par_chunks_mut(SCORE_BLOCK * nc.max(1))
        .enumerate()
        .for_each(|(b, out)| {
            let a0 = b * SCORE_BLOCK;
            let len = out.len() / nc.max(1);
            for c in 0..nc {
                let row = &raw[(4 + c) * anchors + a0..][..len];
                for (i, &x) in row.iter().enumerate() {
                    out[i * nc + c] = 1.0 / (1.0 + (-x).exp());
                }
            }
        });
    (boxes, scores)
}

/// Anchors per task of [`decode`]'s scores: 64 anchors of 80 classes are 20 KB of scores.
const SCORE_BLOCK: usize = 64;

/// Indices of the `k` largest values, largest first (ties: lower index first). The `k` are
/// selected first and only they are sorted (the order is total, so the result is a full sort's).
fn top_k(values: &[f32], k: usize) -> Vec<usize> {
    let order = |&a: &usize, &b: &usize| values[b].total_cmp(&values[a]).then(a.cmp(&b));
    let mut idx: Vec<usize> = (0..values.len()).collect();
    if k < idx.len() {
        if k > 0 {
            idx.select_nth_unstable_by(k - 1, order);
        }
        idx.truncate(k);
    }
    idx.sort_unstable_by(order);
    idx
}

/// End-to-end selection on the one-to-one head: `min(max_det, anchors)` detections, best first.
pub fn end2end(
    raw: &[f32],
    nc: usize,
    levels: &[(usize, usize, usize)],
    max_det: usize,
) -> Vec<Detection> {
    let (boxes, scores) = decode(raw, nc, levels);
    let k = max_det.min(boxes.len());
    let best: Vec<f32> = (0..boxes.len())
        .map(|a| {
            scores[a * nc..(a + 1) * nc]
                .iter()
                .copied()
                .fold(f32::NEG_INFINITY, f32::max)
        })
        .collect();
    let anchors = top_k(&best, k);
    let pairs: Vec<f32> = anchors
        .iter()
        .flat_map(|&a| scores[a * nc..(a + 1) * nc].to_vec())
        .collect();
    top_k(&pairs, k)
        .into_iter()
        .map(|i| {
            let (a, c) = (anchors[i / nc], i % nc);
            let b = boxes[a];
            [b[0], b[1], b[2], b[3], pairs[i], c as f32]
        })
        .collect()
}

pub fn iou(a: &[f32], b: &[f32]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let area = |r: &[f32]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    inter / (area(a) + area(b) - inter).max(f32::MIN_POSITIVE)
}

/// Classic post-processing on the one-to-many head: every (anchor, class) with score ≥ `conf`,
/// greedy NMS per class at `iou_thr`, the best `max_det` kept.
pub fn nms(
    raw: &[f32],
    nc: usize,
    levels: &[(usize, usize, usize)],
    conf: f32,
    iou_thr: f32,
    max_det: usize,
) -> Vec<Detection> {
    let (boxes, scores) = decode(raw, nc, levels);
    let mut cands: Vec<Detection> = Vec::new();
    for (a, b) in boxes.iter().enumerate() {
        for c in 0..nc {
            let s = scores[a * nc + c];
            if s >= conf {
                cands.push([b[0], b[1], b[2], b[3], s, c as f32]);
            }
        }
    }
    cands.sort_by(|x, y| y[4].total_cmp(&x[4]));
    let mut kept: Vec<Detection> = Vec::new();
    for d in cands {
        if kept.len() >= max_det {
            break;
        }
        if kept.iter().all(|k| k[5] != d[5] || iou(k, &d) <= iou_thr) {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One level of 1×2 cells, stride 10, two classes: raw[channel][anchor].
    fn raw(d: [[f32; 4]; 2], logits: [[f32; 2]; 2]) -> Vec<f32> {
        let dists = (0..4).flat_map(|c| [d[0][c], d[1][c]]);
        let classes = (0..2).flat_map(|c| [logits[0][c], logits[1][c]]);
        dists.chain(classes).collect()
    }

    /// The selection's order is a full sort's, ties by index included, for every k; and the
    /// blocked scores are each logit's sigmoid at its (anchor, class), over more anchors than
    /// one block and a level not a multiple of it.
    #[test]
    fn top_k_is_the_sorted_prefix_and_scores_sit_by_anchor() {
        let values: Vec<f32> = (0..200).map(|i| ((i * 37) % 23) as f32 * 0.5).collect();
        let mut full: Vec<usize> = (0..values.len()).collect();
        full.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        for k in [0, 1, 7, 23, 199, 200, 250] {
            assert_eq!(top_k(&values, k), full[..k.min(200)], "k = {k}");
        }
        let (nc, levels) = (3, [(9, 11, 8), (2, 3, 16)]);
        let anchors = 9 * 11 + 2 * 3;
        let raw: Vec<f32> = (0..(4 + nc) * anchors)
            .map(|i| (i as f32 * 0.37).sin() * 4.0)
            .collect();
        let (boxes, scores) = decode(&raw, nc, &levels);
        assert_eq!((boxes.len(), scores.len()), (anchors, anchors * nc));
        for a in 0..anchors {
            for c in 0..nc {
                let x = raw[(4 + c) * anchors + a];
                assert_eq!(scores[a * nc + c], 1.0 / (1.0 + (-x).exp()), "({a}, {c})");
            }
        }
    }

    #[test]
    fn decodes_distances_around_cell_centres() {
        let r = raw(
            [[0.5, 0.5, 0.5, 0.5], [1.0, 0.0, 2.0, 0.5]],
            [[0.0, 2.0], [-1.0, -3.0]],
        );
        let (boxes, scores) = decode(&r, 2, &[(1, 2, 10)]);
        assert_eq!(boxes[0], [0.0, 0.0, 10.0, 10.0]);
        assert_eq!(boxes[1], [5.0, 5.0, 35.0, 10.0]);
        assert!((scores[1] - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-7);
    }

    #[test]
    fn nms_suppresses_overlaps_of_the_same_class_only() {
        // two nearly identical boxes, both class 1; a third of class 0 at the same place
        let r = raw(
            [[0.5, 0.5, 0.5, 0.5], [0.6, 0.5, 0.4, 0.5]],
            [[3.0, 2.0], [-9.0, 1.0]],
        );
        let d = nms(&r, 2, &[(1, 1, 10), (1, 1, 10)], 0.25, 0.7, 300);
        // anchor 0 class 0 (0.95), anchor 0 class 1 (0.88), anchor 1 class 1 (0.73, suppressed)
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0][5], d[1][5]), (0.0, 1.0));
        let e = end2end(&r, 2, &[(1, 1, 10), (1, 1, 10)], 300);
        assert_eq!(e.len(), 2, "end to end keeps min(max_det, anchors)");
        assert_eq!(e[0][5], 0.0);
    }
}
