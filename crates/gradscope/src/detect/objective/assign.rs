//! Task-aligned assignment (TOOD, Feng et al. 2021) as YOLO26 trains with it, on the host.
//!
//! For one image with G ground-truth boxes and A anchors:
//! 1. candidates of box g: the anchors whose centre lies inside g. Small-target-aware (STAL): for
//!    this test only, a box side under `stal_min` pixels is widened to `stal_min` around its centre,
//!    so that a 4-px box still owns anchors of the stride-8 level;
//! 2. alignment t = s^α · u^β for each candidate, where s is the predicted score of g's class and
//!    u = max(CIoU(g, predicted box), 0);
//! 3. the `topk` candidates of each box by t; an anchor claimed by several boxes keeps the one it
//!    overlaps most (largest u);
//! 4. optionally (`topk2`, the one-to-one branch) each box keeps only its best `topk2` anchors;
//! 5. soft targets: anchor a assigned to g gets score t(a) · max_u(g) / max_t(g) for g's class.

/// One box in pixels: x1, y1, x2, y2.
pub type Xyxy = [f32; 4];

const EPS: f32 = 1e-9;

/// Anchor points (cell centres, pixels) and their strides, level by level, row-major.
#[derive(Clone, Debug)]
pub struct Anchors {
    pub points: Vec<[f32; 2]>,
    pub strides: Vec<f32>,
    /// (rows, columns, stride) per level.
    pub levels: Vec<(usize, usize, usize)>,
}

impl Anchors {
    /// For an `h` × `w` input and the given strides.
    pub fn new(h: usize, w: usize, strides: &[usize]) -> Self {
        let mut points = Vec::new();
        let mut st = Vec::new();
        let mut levels = Vec::new();
        for &s in strides {
            let (rows, cols) = (h / s, w / s);
            for y in 0..rows {
                for x in 0..cols {
                    points.push([(x as f32 + 0.5) * s as f32, (y as f32 + 0.5) * s as f32]);
                    st.push(s as f32);
                }
            }
            levels.push((rows, cols, s));
        }
        Anchors {
            points,
            strides: st,
            levels,
        }
    }

    pub fn len(&self) -> usize {
        self.points.len()
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct AssignConfig {
    pub topk: usize,
    /// Keep only this many anchors per box after resolving conflicts (one-to-one branch).
    pub topk2: Option<usize>,
    pub alpha: f32,
    pub beta: f32,
    /// STAL: minimum box side, in pixels, for the candidate test.
    pub stal_min: f32,
}

impl AssignConfig {
    /// One-to-many branch: top-10.
    pub fn one2many() -> Self {
        AssignConfig {
            topk: 10,
            topk2: None,
            alpha: 0.5,
            beta: 6.0,
            stal_min: 16.0,
        }
    }

    /// One-to-one branch: top-7, then one anchor per box.
    pub fn one2one() -> Self {
        AssignConfig {
            topk: 7,
            topk2: Some(1),
            ..Self::one2many()
        }
    }
}

/// The assignment of one image.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Per anchor: the ground-truth index it learns from, or None (background).
    pub gt: Vec<Option<usize>>,
    /// Per anchor: the soft target score of its box's class (0 for background).
    pub score: Vec<f32>,
}

impl Assignment {
    pub fn foreground(&self) -> usize {
        self.gt.iter().filter(|g| g.is_some()).count()
    }
}

/// Complete IoU (Zheng et al. 2020) of two xyxy boxes, as in the box loss: IoU − ρ²/c² − α·v,
/// with v = 4/π²·(atan(w₂/h₂) − atan(w₁/h₁))² and α = v / (v − IoU + 1).
pub fn ciou(a: &Xyxy, b: &Xyxy) -> f32 {
    let eps = 1e-7f32;
    let (w1, h1) = (a[2] - a[0], a[3] - a[1] + eps);
    let (w2, h2) = (b[2] - b[0], b[3] - b[1] + eps);
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = w1 * h1 + w2 * h2 - inter + eps;
    let iou = inter / union;
    let cw = a[2].max(b[2]) - a[0].min(b[0]);
    let ch = a[3].max(b[3]) - a[1].min(b[1]);
    let c2 = cw * cw + ch * ch + eps;
    let dx = b[0] + b[2] - a[0] - a[2];
    let dy = b[1] + b[3] - a[1] - a[3];
    let rho2 = (dx * dx + dy * dy) / 4.0;
    let v = 4.0 / (std::f32::consts::PI * std::f32::consts::PI)
        * ((w2 / h2).atan() - (w1 / h1).atan()).powi(2);
    let alpha = v / (v - iou + (1.0 + eps));
    iou - (rho2 / c2 + v * alpha)
}

/// Anchors whose centre is strictly inside `b` widened (STAL) to at least `min_side`.
fn candidates(b: &Xyxy, anchors: &Anchors, min_side: f32) -> Vec<usize> {
    let (cx, cy) = ((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0);
    let hw = ((b[2] - b[0]).max(min_side)) / 2.0;
    let hh = ((b[3] - b[1]).max(min_side)) / 2.0;
    let (x1, y1, x2, y2) = (cx - hw, cy - hh, cx + hw, cy + hh);
    let mut out = Vec::new();
    let mut offset = 0;
    for &(rows, cols, s) in &anchors.levels {
        let s = s as f32;
        // cell centres (i + 0.5)·s inside (x1, x2)
        let lo = |v: f32| ((v / s - 0.5).floor() as i64 + 1).max(0) as usize;
        let hi = |v: f32, n: usize| ((v / s - 0.5).ceil() as i64 - 1).min(n as i64 - 1);
        let (c0, c1) = (lo(x1), hi(x2, cols));
        let (r0, r1) = (lo(y1), hi(y2, rows));
        if c1 >= c0 as i64 && r1 >= r0 as i64 {
            for r in r0..=r1 as usize {
                for c in c0..=c1 as usize {
                    let a = offset + r * cols + c;
                    let [px, py] = anchors.points[a];
                    let d = (px - x1).min(py - y1).min(x2 - px).min(y2 - py);
                    if d > EPS {
                        out.push(a);
                    }
                }
            }
        }
        offset += rows * cols;
    }
    out
}

/// Assigns one image. `scores`: predicted class probabilities `[A × nc]` (anchor-major);
/// `boxes`: predicted boxes (pixels); `gts`: (class, box in pixels).
pub fn assign(
    scores: &[f32],
    boxes: &[Xyxy],
    anchors: &Anchors,
    gts: &[(usize, Xyxy)],
    nc: usize,
    cfg: &AssignConfig,
) -> Assignment {
    let a_n = anchors.len();
    // every (box, alignment, overlap) an anchor is a candidate of, and each box's top-k
    let mut cands_of: Vec<Vec<(usize, f32, f32)>> = vec![Vec::new(); a_n];
    let mut claims = vec![0u32; a_n];
    let mut chosen: Vec<Vec<(usize, f32, f32)>> = Vec::with_capacity(gts.len());
    for (g, (cls, b)) in gts.iter().enumerate() {
        let mut cand: Vec<(usize, f32, f32)> = candidates(b, anchors, cfg.stal_min)
            .into_iter()
            .map(|a| {
                let u = ciou(b, &boxes[a]).max(0.0);
                let s = scores[a * nc + cls];
                (a, s.powf(cfg.alpha) * u.powf(cfg.beta), u)
            })
            .collect();
        for &(a, t, u) in &cand {
            cands_of[a].push((g, t, u));
        }
        // a candidate whose alignment is 0 cannot win a top-k place over the other anchors
        cand.retain(|c| c.1 > 0.0);
        cand.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        cand.truncate(cfg.topk);
        for &(a, _, _) in &cand {
            claims[a] += 1;
        }
        chosen.push(cand);
    }
    // an anchor claimed by several boxes goes to the box it overlaps most among all the boxes
    // it is a candidate of (first on ties)
    let mut owner: Vec<Option<(usize, f32, f32)>> = vec![None; a_n];
    for (g, cand) in chosen.iter().enumerate() {
        for &(a, t, u) in cand {
            owner[a] = if claims[a] == 1 {
                Some((g, t, u))
            } else {
                cands_of[a]
                    .iter()
                    .fold(None, |best: Option<(usize, f32, f32)>, &x| match best {
                        Some(b) if b.2 >= x.2 => Some(b),
                        _ => Some(x),
                    })
            };
        }
    }
    if let Some(k2) = cfg.topk2 {
        let mut per_gt: Vec<Vec<(usize, f32)>> = vec![Vec::new(); gts.len()];
        for (a, o) in owner.iter().enumerate() {
            if let Some((g, t, _)) = o {
                per_gt[*g].push((a, *t));
            }
        }
        for list in &mut per_gt {
            list.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
            for &(a, _) in list.iter().skip(k2) {
                owner[a] = None;
            }
        }
    }
    let mut max_t = vec![0f32; gts.len()];
    let mut max_u = vec![0f32; gts.len()];
    for (g, t, u) in owner.iter().flatten() {
        max_t[*g] = max_t[*g].max(*t);
        max_u[*g] = max_u[*g].max(*u);
    }
    let gt: Vec<Option<usize>> = owner.iter().map(|o| o.map(|(g, _, _)| g)).collect();
    let score = owner
        .iter()
        .map(|o| match o {
            Some((g, t, _)) => t * max_u[*g] / (max_t[*g] + EPS),
            None => 0.0,
        })
        .collect();
    Assignment { gt, score }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 64×64 input: 8×8 + 4×4 + 2×2 = 84 anchors.
    fn anchors() -> Anchors {
        Anchors::new(64, 64, &[8, 16, 32])
    }

    /// Predictions equal to `b` everywhere with class score `s`.
    fn uniform(anchors: &Anchors, b: Xyxy, s: f32) -> (Vec<f32>, Vec<Xyxy>) {
        (vec![s; anchors.len()], vec![b; anchors.len()])
    }

    #[test]
    fn anchor_grid() {
        let a = anchors();
        assert_eq!(a.len(), 84);
        assert_eq!(a.points[0], [4.0, 4.0]);
        assert_eq!(a.points[64], [8.0, 8.0]);
        assert_eq!(a.points[83], [48.0, 48.0]);
    }

    #[test]
    fn candidates_are_the_centres_inside_the_box() {
        let a = anchors();
        // box (10, 10)–(30, 22): stride-8 centres x ∈ {12, 20, 28}, y ∈ {12, 20}; stride 16:
        // y = 24 > 22, none; stride 32: the centre (16, 16) is inside (anchor 64 + 16 = 80).
        let c = candidates(&[10.0, 10.0, 30.0, 22.0], &a, 0.0);
        let expected: Vec<usize> = vec![9, 10, 11, 17, 18, 19, 80];
        assert_eq!(c, expected);
    }

    #[test]
    fn stal_enlarges_a_4px_box() {
        let a = anchors();
        let tiny = [29.0, 29.0, 33.0, 33.0]; // centre (31, 31): no stride-8 centre inside
        assert!(candidates(&tiny, &a, 0.0).is_empty());
        // widened to 16 px: (23, 23)–(39, 39) holds stride-8 centres 28, 36 and the stride-16 (24, 24)
        let c = candidates(&tiny, &a, 16.0);
        assert_eq!(c, vec![27, 28, 35, 36, 64 + 5]);
        let (s, b) = uniform(&a, tiny, 0.5);
        let asg = assign(&s, &b, &a, &[(0, tiny)], 1, &AssignConfig::one2many());
        assert_eq!(asg.foreground(), 5);
    }

    #[test]
    fn topk_picks_the_best_aligned_and_targets_are_normalised() {
        let a = anchors();
        let gt = [0.0, 0.0, 64.0, 64.0]; // every anchor is a candidate
        let n = a.len();
        let mut scores = vec![0.1f32; n];
        let boxes = vec![gt; n];
        // anchors 5 and 40 predict the class best
        scores[5] = 0.9;
        scores[40] = 0.8;
        let cfg = AssignConfig {
            topk: 2,
            ..AssignConfig::one2many()
        };
        let asg = assign(&scores, &boxes, &a, &[(0, gt)], 1, &cfg);
        let fg: Vec<usize> = (0..n).filter(|&i| asg.gt[i].is_some()).collect();
        assert_eq!(fg, vec![5, 40]);
        // best anchor's target = max overlap (1 for a perfect box, up to eps)
        assert!((asg.score[5] - 1.0).abs() < 1e-5, "{}", asg.score[5]);
        let ratio = (0.8f32 / 0.9).sqrt();
        assert!((asg.score[40] - ratio).abs() < 1e-5, "{}", asg.score[40]);
    }

    #[test]
    fn shared_anchor_goes_to_the_box_it_overlaps_most() {
        let a = anchors();
        let g1 = [0.0, 0.0, 32.0, 32.0];
        let g2 = [8.0, 8.0, 48.0, 48.0];
        // every anchor predicts g1 exactly: overlap with g1 is 1, with g2 below
        let (s, b) = uniform(&a, g1, 0.5);
        let asg = assign(
            &s,
            &b,
            &a,
            &[(0, g1), (0, g2)],
            1,
            &AssignConfig::one2many(),
        );
        // anchor (12, 12) (index 9) is inside both: it goes to g1
        assert_eq!(asg.gt[9], Some(0));
        assert!(asg.gt.iter().flatten().all(|&g| g <= 1));
    }

    #[test]
    fn one2one_keeps_one_anchor_per_box() {
        let a = anchors();
        let g1 = [0.0, 0.0, 30.0, 30.0];
        let g2 = [34.0, 34.0, 64.0, 64.0];
        let (mut s, b) = uniform(&a, [0.0, 0.0, 64.0, 64.0], 0.3);
        s[18] = 0.9; // (20, 20) inside g1
        let asg = assign(&s, &b, &a, &[(0, g1), (0, g2)], 1, &AssignConfig::one2one());
        assert_eq!(asg.foreground(), 2);
        assert_eq!(asg.gt[18], Some(0));
        let asg = assign(
            &s,
            &b,
            &a,
            &[(0, g1), (0, g2)],
            1,
            &AssignConfig::one2many(),
        );
        assert!(asg.foreground() > 2);
    }

    #[test]
    fn no_boxes_all_background() {
        let a = anchors();
        let (s, b) = uniform(&a, [0.0, 0.0, 8.0, 8.0], 0.5);
        let asg = assign(&s, &b, &a, &[], 1, &AssignConfig::one2many());
        assert_eq!(asg.foreground(), 0);
        assert!(asg.score.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn ciou_hand_values() {
        // identical boxes: 1
        let b = [0.0, 0.0, 10.0, 10.0];
        assert!((ciou(&b, &b) - 1.0).abs() < 1e-5);
        // same shape shifted by 5 along x: IoU = 50/150, c = 15×10, ρ² = 25, v = 0
        let c = [5.0, 0.0, 15.0, 10.0];
        let expected = 50.0 / 150.0 - 25.0 / (225.0 + 100.0);
        assert!((ciou(&b, &c) - expected).abs() < 1e-5);
        // disjoint: negative
        assert!(ciou(&b, &[20.0, 20.0, 30.0, 30.0]) < 0.0);
    }
}
