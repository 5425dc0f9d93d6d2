//! YOLO26's training loss for one head branch, and the two branches combined (ProgLoss).
//!
//! Per branch, with targets from the task-aligned assigner ([`crate::detect::objective::assign`]) and
//! S = Σ target scores (at least 1):
//! - box: Σ_fg (1 − CIoU(pred, target)) · w / S, where w is the anchor's target score;
//! - l1: Σ_fg mean(|pred ltrb − target ltrb|) · w / S, distances in pixels divided by the image
//!   width (l, r) or height (t, b);
//! - cls: Σ BCE-with-logits(logits, target scores) / S over every anchor and class.
//!
//! Gains box 7.5, cls 0.5, l1 1.5. Both branches: total = w·L_one2many + (1 − w)·L_one2one with w
//! going linearly from 0.8 at the first epoch to 0.1 at the last; the total is multiplied by the
//! batch size, as the reference trainer does.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::detect::objective::assign::{assign, Anchors, AssignConfig, Assignment, Xyxy};

#[derive(Clone, Copy, Debug)]
pub struct LossGains {
    pub box_: f64,
    pub cls: f64,
    pub l1: f64,
}

impl Default for LossGains {
    fn default() -> Self {
        LossGains {
            box_: 7.5,
            cls: 0.5,
            l1: 1.5,
        }
    }
}

/// Loss components after their gains, for display (`box_loss cls_loss l1_loss`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossItems {
    pub box_: f64,
    pub cls: f64,
    pub l1: f64,
    /// Anchors assigned a target at each head level (strides 8, 16, 32: P3, P4, P5), both
    /// branches, over the batch: what each level of the head learns from.
    pub assigned: [f64; 3],
}

impl LossItems {
    /// Every item times `f` (a sum into a mean).
    pub fn scaled(&self, f: f64) -> LossItems {
        LossItems {
            box_: self.box_ * f,
            cls: self.cls * f,
            l1: self.l1 * f,
            assigned: self.assigned.map(|a| a * f),
        }
    }

    /// box + cls + l1.
    pub fn total(&self) -> f64 {
        self.box_ + self.cls + self.l1
    }

    pub fn add(&mut self, o: &LossItems, w: f64) {
        self.box_ += w * o.box_;
        self.cls += w * o.cls;
        self.l1 += w * o.l1;
        for (a, b) in self.assigned.iter_mut().zip(o.assigned) {
            *a += w * b;
        }
    }
}

/// ProgLoss weight of the one-to-many branch at `epoch` of `epochs`.
pub fn one2many_weight(epoch: usize, epochs: usize) -> f64 {
    if epochs <= 1 {
        return 0.8;
    }
    let f = epoch.min(epochs - 1) as f64 / (epochs - 1) as f64;
    0.8 - 0.7 * f
}

/// Differentiable CIoU of `[F, 4]` xyxy boxes (`pred`) against constant targets; α is
/// treated as a constant, as in the reference.
pub fn ciou_tensor(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
    let eps = 1e-7;
    let col = |t: &Tensor<2>, i: usize| {
        let n = t.dims()[0];
        t.clone().slice([0..n, i..i + 1]).reshape([n])
    };
    let (ax1, ay1, ax2, ay2) = (col(&pred, 0), col(&pred, 1), col(&pred, 2), col(&pred, 3));
    let (bx1, by1, bx2, by2) = (
        col(&target, 0),
        col(&target, 1),
        col(&target, 2),
        col(&target, 3),
    );
    let w1 = ax2.clone() - ax1.clone();
    let h1 = ay2.clone() - ay1.clone() + eps;
    let w2 = bx2.clone() - bx1.clone();
    let h2 = by2.clone() - by1.clone() + eps;
    let iw = (ax2.clone().min_pair(bx2.clone()) - ax1.clone().max_pair(bx1.clone())).clamp_min(0.0);
    let ih = (ay2.clone().min_pair(by2.clone()) - ay1.clone().max_pair(by1.clone())).clamp_min(0.0);
    let inter = iw * ih;
    let union = w1.clone() * h1.clone() + w2.clone() * h2.clone() - inter.clone() + eps;
    let iou = inter / union;
    let cw = ax2.clone().max_pair(bx2.clone()) - ax1.clone().min_pair(bx1.clone());
    let ch = ay2.clone().max_pair(by2.clone()) - ay1.clone().min_pair(by1.clone());
    let c2 = cw.clone() * cw + ch.clone() * ch + eps;
    let dx = bx1 + bx2 - ax1 - ax2;
    let dy = by1 + by2 - ay1 - ay2;
    let rho2 = (dx.clone() * dx + dy.clone() * dy) / 4.0;
    let dv = (w2 / h2).atan() - (w1 / h1).atan();
    let v = dv.clone() * dv * (4.0 / std::f64::consts::PI.powi(2));
    let alpha = (v.clone() / (v.clone() - iou.clone() + (1.0 + eps))).detach();
    iou - (rho2 / c2 + v * alpha)
}

/// BCE with logits, elementwise, stable for large |x|: max(x, 0) − x·y + log(1 + e^(−|x|)).
pub fn bce_with_logits<const D: usize>(x: Tensor<D>, y: Tensor<D>) -> Tensor<D> {
    x.clone().clamp_min(0.0) - x.clone() * y + x.abs().neg().exp().log1p()
}

/// The loss of one branch for a batch: raw head output `[B, 4 + nc, A]` (distances in stride
/// units, class logits), ground truth per image (class, xyxy pixels), input size (h, w).
/// Returns the weighted sum (box·7.5 + cls·0.5 + l1·1.5, not yet times the batch size), its
/// items, and the assignments.
pub fn branch_loss(
    raw: Tensor<3>,
    targets: &[Vec<(usize, Xyxy)>],
    anchors: &Anchors,
    imgsz: (usize, usize),
    cfg: &AssignConfig,
    gains: &LossGains,
) -> (Tensor<1>, LossItems, Vec<Assignment>) {
    let [b, c, a_n] = raw.dims();
    let nc = c - 4;
    let device: Device = raw.device();
    let assigned = assign_batch(&raw, targets, anchors, cfg);
    let Foreground {
        scores: target_scores,
        index: fg_index,
        anchor: fg_anchor,
        target: fg_target,
        weight: fg_weight,
        norm,
    } = Foreground::of(&assigned, targets, anchors, [b, nc, a_n]);
    let (cls, dist) = read_branch(&raw, target_scores, &fg_index, [b, nc, a_n]);
    let cls = cls / norm;
    let f = fg_weight.len();
    let (box_, l1) = if let Some(dist) = dist {
        let anc = Tensor::<2>::from_data(TensorData::new(fg_anchor, [f, 3]), &device);
        let target = Tensor::<2>::from_data(TensorData::new(fg_target, [f, 4]), &device);
        let w = Tensor::<1>::from_data(TensorData::new(fg_weight, [f]), &device);
        let ax = anc.clone().slice([0..f, 0..1]);
        let ay = anc.clone().slice([0..f, 1..2]);
        let stride = anc.slice([0..f, 2..3]);
        let col = |t: &Tensor<2>, i: usize| t.clone().slice([0..f, i..i + 1]);
        let pred = Tensor::cat(
            vec![
                ax.clone() - col(&dist, 0),
                ay.clone() - col(&dist, 1),
                ax.clone() + col(&dist, 2),
                ay.clone() + col(&dist, 3),
            ],
            1,
        );
        let iou = ciou_tensor(pred, target.clone());
        let box_ = ((iou.neg() + 1.0) * w.clone()).sum() / norm;
        // l, t, r, b in pixels over the image size
        let (h, wi) = (imgsz.0 as f64, imgsz.1 as f64);
        let scale = Tensor::<2>::from_data(
            TensorData::new(
                vec![
                    1.0 / wi as f32,
                    1.0 / h as f32,
                    1.0 / wi as f32,
                    1.0 / h as f32,
                ],
                [1, 4],
            ),
            &device,
        );
        let t_ltrb = Tensor::cat(
            vec![
                ax.clone() - col(&target, 0),
                ay.clone() - col(&target, 1),
                col(&target, 2) - ax,
                col(&target, 3) - ay,
            ],
            1,
        );
        let diff = ((dist - t_ltrb) * stride * scale)
            .abs()
            .mean_dim(1)
            .reshape([f]);
        let l1 = (diff * w).sum() / norm;
        (box_, l1)
    } else {
        let zero = cls.clone() * 0.0;
        (zero.clone(), zero)
    };
    // the three items in one read (one round trip on a GPU)
    let read: Vec<f64> = Tensor::cat(vec![box_.clone(), cls.clone(), l1.clone()], 0)
        .detach()
        .into_data()
        .convert::<f64>()
        .try_into_vec::<f64>()
        .unwrap_or_else(|_| vec![f64::NAN; 3]);
    let items = LossItems {
        box_: read[0] * gains.box_,
        cls: read[1] * gains.cls,
        l1: read[2] * gains.l1,
        assigned: [0.0; 3],
    };
    let total = box_ * gains.box_ + cls * gains.cls + l1 * gains.l1;
    (total, items, assigned)
}

/// Each image's assignment from the branch's own predictions (sigmoid scores, decoded boxes),
/// the images in parallel, read from the raw output in place where it lives on the CPU.
fn assign_batch(
    raw: &Tensor<3>,
    targets: &[Vec<(usize, Xyxy)>],
    anchors: &Anchors,
    cfg: &AssignConfig,
) -> Vec<Assignment> {
    let [b, c, a_n] = raw.dims();
    let nc = c - 4;
    let images = |host: &[f32]| -> Vec<Assignment> {
        use rayon::prelude::*;
        (0..b.min(targets.len()))
            .into_par_iter()
            .map(|i| {
                let img = &host[i * c * a_n..(i + 1) * c * a_n];
                let at = |ch: usize, a: usize| img[ch * a_n + a];
                let mut scores = vec![0f32; a_n * nc];
                let mut boxes = Vec::with_capacity(a_n);
                for a in 0..a_n {
                    let [px, py] = anchors.points[a];
                    let s = anchors.strides[a];
                    boxes.push([
                        px - at(0, a) * s,
                        py - at(1, a) * s,
                        px + at(2, a) * s,
                        py + at(3, a) * s,
                    ]);
                    for k in 0..nc {
                        scores[a * nc + k] = 1.0 / (1.0 + (-at(4 + k, a)).exp());
                    }
                }
                assign(&scores, &boxes, anchors, &targets[i], nc, cfg)
            })
            .collect()
    };
    let detached = raw.clone().detach();
    crate::kernels::tap::with_values(&detached, images).unwrap_or_else(|| {
        let host: Vec<f32> = detached
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .expect("f32 head output");
        images(&host)
    })
}

/// What the loss needs of the assigned anchors, image by image in anchor order.
struct Foreground {
    /// The class targets `[B, nc, A]`: the soft score at each assigned anchor's class, else 0.
    scores: Vec<f32>,
    /// `image · A + anchor` of each assigned anchor (ascending).
    index: Vec<usize>,
    /// Its anchor point in stride units and its stride: `[F, 3]`.
    anchor: Vec<f32>,
    /// Its box, xyxy in stride units: `[F, 4]`.
    target: Vec<f32>,
    /// Its target score.
    weight: Vec<f32>,
    /// S = Σ target scores, at least 1.
    norm: f64,
}

impl Foreground {
    fn of(
        assigned: &[Assignment],
        targets: &[Vec<(usize, Xyxy)>],
        anchors: &Anchors,
        [b, nc, a_n]: [usize; 3],
    ) -> Foreground {
        let mut fg = Foreground {
            // 2.7 M zeros at batch 4 (nc 80): filled on every thread, not in one memset
            scores: crate::kernels::host::zeroed_par(b * nc * a_n, 1 << 16, |_, _| {}),
            index: Vec::new(),
            anchor: Vec::new(),
            target: Vec::new(),
            weight: Vec::new(),
            norm: 0.0,
        };
        // the score entries set, to sum S in the order of the full tensor without reading it
        let mut set: Vec<usize> = Vec::new();
        for (i, asg) in assigned.iter().enumerate() {
            for (a, g) in asg.gt.iter().enumerate() {
                let Some(g) = *g else { continue };
                let (cls, bx) = targets[i][g];
                let at = (i * nc + cls) * a_n + a;
                fg.scores[at] = asg.score[a];
                set.push(at);
                let s = anchors.strides[a];
                let [px, py] = anchors.points[a];
                fg.index.push(i * a_n + a);
                fg.anchor.extend([px / s, py / s, s]);
                fg.target.extend(bx.iter().map(|v| v / s));
                fg.weight.push(asg.score[a]);
            }
        }
        // the zeros add nothing, so this is the sum over the whole tensor in its order
        set.sort_unstable();
        fg.norm = set
            .iter()
            .map(|&k| fg.scores[k] as f64)
            .sum::<f64>()
            .max(1.0);
        fg
    }
}

/// Σ BCE of the class logits against `scores`, and the box distances of the anchors `fg`
/// (`[F, 4]`, `None` when there are none): one fused read of `raw` on flex, burn's slices and
/// selection elsewhere.
fn read_branch(
    raw: &Tensor<3>,
    scores: Vec<f32>,
    fg: &[usize],
    [b, nc, a_n]: [usize; 3],
) -> (Tensor<1>, Option<Tensor<2>>) {
    let device = raw.device();
    let tscores = |s: Vec<f32>| Tensor::<3>::from_data(TensorData::new(s, [b, nc, a_n]), &device);
    let scores = match crate::kernels::branch::read_branch(raw, scores, fg.to_vec()) {
        Ok(r) => return (r.cls, r.dist),
        Err(scores) => scores,
    };
    let logits = raw.clone().slice([0..b, 4..4 + nc, 0..a_n]);
    let cls = bce_with_logits(logits, tscores(scores)).sum();
    if fg.is_empty() {
        return (cls, None);
    }
    let idx: Vec<i64> = fg.iter().map(|&k| k as i64).collect();
    let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [fg.len()]), &device);
    let dist = raw
        .clone()
        .slice([0..b, 0..4, 0..a_n])
        .swap_dims(1, 2)
        .reshape([b * a_n, 4])
        .select(0, idx);
    (cls, Some(dist))
}

/// Both branches, ProgLoss-weighted, times the batch size. Returns the loss and the displayed
/// items: the one-to-one branch's, after gains, as the reference trainer shows them.
pub fn yolo_loss(
    one2many: Tensor<3>,
    one2one: Tensor<3>,
    targets: &[Vec<(usize, Xyxy)>],
    anchors: &Anchors,
    imgsz: (usize, usize),
    w: f64,
    gains: &LossGains,
) -> (Tensor<1>, LossItems) {
    let b = one2many.dims()[0] as f64;
    let (l_m, i_m, a_m) = branch_loss(
        one2many,
        targets,
        anchors,
        imgsz,
        &AssignConfig::one2many(),
        gains,
    );
    let (l_o, mut i_o, a_o) = branch_loss(
        one2one,
        targets,
        anchors,
        imgsz,
        &AssignConfig::one2one(),
        gains,
    );
    let _ = i_m;
    i_o.assigned = assigned_per_level(a_m.iter().chain(&a_o), anchors);
    // displayed: the one-to-one branch's items (the deployed head), as the reference shows them
    ((l_m * w + l_o * (1.0 - w)) * b, i_o)
}

/// Anchors with a target, per head level (the first three levels: strides 8, 16, 32).
fn assigned_per_level<'a>(
    assignments: impl Iterator<Item = &'a Assignment>,
    anchors: &Anchors,
) -> [f64; 3] {
    let mut level_of = Vec::with_capacity(anchors.strides.len());
    for (l, (rows, cols, _)) in anchors.levels.iter().enumerate() {
        level_of.extend(std::iter::repeat_n(l, rows * cols));
    }
    let mut out = [0.0; 3];
    for asg in assignments {
        for (a, g) in asg.gt.iter().enumerate() {
            if let (Some(_), Some(&l)) = (g, level_of.get(a)) {
                if l < 3 {
                    out[l] += 1.0;
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progloss_weight_goes_from_08_to_01() {
        assert_eq!(one2many_weight(0, 10), 0.8);
        assert!((one2many_weight(9, 10) - 0.1).abs() < 1e-12);
        assert!((one2many_weight(3, 7) - 0.45).abs() < 1e-12);
    }

    #[test]
    fn ciou_tensor_matches_the_host_formula() {
        let device = crate::device();
        let boxes = [
            ([0.0f32, 0.0, 10.0, 10.0], [5.0f32, 0.0, 15.0, 10.0]),
            ([1.0, 2.0, 7.0, 9.0], [2.0, 1.0, 9.0, 12.0]),
            ([0.0, 0.0, 4.0, 1.0], [10.0, 10.0, 11.0, 14.0]),
        ];
        let p: Vec<f32> = boxes.iter().flat_map(|b| b.0).collect();
        let t: Vec<f32> = boxes.iter().flat_map(|b| b.1).collect();
        let got: Vec<f32> = ciou_tensor(
            Tensor::from_data(TensorData::new(p, [3, 4]), &device),
            Tensor::from_data(TensorData::new(t, [3, 4]), &device),
        )
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap();
        for (g, (a, b)) in got.iter().zip(&boxes) {
            let want = crate::detect::objective::assign::ciou(a, b);
            assert!((g - want).abs() < 1e-6, "{g} vs {want}");
        }
    }

    /// A batch without ground truth (background images, or a tiny box no anchor takes): the
    /// class loss alone, box and l1 exactly zero, and a gradient that reaches the head output.
    #[test]
    fn a_batch_without_assigned_anchors_has_only_a_class_loss() {
        let device = crate::device();
        let anchors = Anchors::new(64, 64, &[8, 16, 32]);
        let (nc, a_n) = (3, anchors.len());
        let raw = Tensor::<3>::random(
            [2, 4 + nc, a_n],
            burn::tensor::Distribution::Normal(0.0, 1.0),
            &device,
        )
        .require_grad();
        let targets = vec![Vec::new(), Vec::new()];
        let (total, items, asg) = branch_loss(
            raw.clone(),
            &targets,
            &anchors,
            (64, 64),
            &AssignConfig::one2many(),
            &LossGains::default(),
        );
        assert!(asg.iter().all(|a| a.foreground() == 0));
        assert_eq!((items.box_, items.l1), (0.0, 0.0));
        assert!(items.cls > 0.0 && items.cls.is_finite());
        let g = raw.grad(&total.backward()).expect("a gradient");
        assert_eq!(g.dims(), [2, 4 + nc, a_n]);
    }

    #[test]
    fn bce_is_stable_and_correct() {
        let device = crate::device();
        let x = Tensor::<1>::from_data(
            TensorData::new(vec![0.0f32, 2.0, -100.0, 100.0], [4]),
            &device,
        );
        let y = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [4]), &device);
        let got: Vec<f32> = bce_with_logits(x, y)
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap();
        let want = [std::f32::consts::LN_2, (1.0 + 2f32.exp()).ln(), 0.0, 0.0];
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-5, "{g} vs {w}");
        }
    }
}
