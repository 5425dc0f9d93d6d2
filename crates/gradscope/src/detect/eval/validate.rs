//! Validation: detections on the validation images, the losses there, COCO mAP and P/R.

use burn::tensor::{Device, Tensor, TensorData};

use crate::data::letterbox::clip_to_image;
use crate::detect::eval::metrics::{
    coco_map, per_class_precision_recall, precision_recall_at_best_f1, CocoResult, DetBox, GtBox,
};
use crate::detect::input::dataset::DetData;
use crate::detect::objective::assign::Anchors;
use crate::detect::objective::loss::{yolo_loss, LossGains, LossItems};
use crate::probe::Tap;
use crate::yolo::model::Yolo;
use crate::yolo::postprocess::{end2end, nms};

/// How detections are made.
#[derive(Clone, Copy, Debug)]
pub struct DetectSettings {
    pub conf: f32,
    pub max_det: usize,
    /// One-to-one head, top-k without NMS; else one-to-many head with NMS at `iou`.
    pub end2end: bool,
    pub iou: f32,
}

#[derive(Clone, Debug)]
pub struct ValResult {
    pub images: usize,
    pub instances: usize,
    pub precision: f64,
    pub recall: f64,
    /// The confidence at which mean F1 is largest (where P and R are read).
    pub best_f1_conf: f64,
    pub coco: CocoResult,
    pub losses: LossItems,
    /// Detections in letterboxed input pixels, with the image index in the dataset.
    pub dets: Vec<DetBox>,
    pub gts: Vec<GtBox>,
}

/// Detections of one image from raw head outputs `[4 + nc, A]` (host, channel-major).
pub fn detections(raw: &[f32], nc: usize, anchors: &Anchors, s: &DetectSettings) -> Vec<[f32; 6]> {
    if s.end2end {
        end2end(raw, nc, &anchors.levels, s.max_det)
            .into_iter()
            .filter(|d| d[4] >= s.conf)
            .collect()
    } else {
        nms(raw, nc, &anchors.levels, s.conf, s.iou, s.max_det)
    }
}

fn host(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// Validates `model` (plain device, eval mode) on every image of `data`, `batch` at a time.
/// `w`: the ProgLoss weight for the reported losses.
#[allow(clippy::too_many_arguments)]
pub fn validate(
    model: &Yolo,
    data: &DetData,
    imgsz: usize,
    batch: usize,
    nc: usize,
    settings: &DetectSettings,
    w: f64,
    device: &Device,
) -> ValResult {
    let anchors = Anchors::new(imgsz, imgsz, &[8, 16, 32]);
    let mut dets = Vec::new();
    let mut gts = Vec::new();
    let mut losses = LossItems::default();
    let mut batches = 0usize;
    let idx: Vec<usize> = (0..data.len()).collect();
    for chunk in idx.chunks(batch.max(1)) {
        let b = data.val_batch(chunk, imgsz as u32);
        let n = b.len();
        let x = Tensor::<4>::from_data(TensorData::new(b.x, [n, 3, imgsz, imgsz]), device);
        let out = model.forward(x, &mut Tap::off());
        let (_, items) = yolo_loss(
            out.heads.one2many.clone(),
            out.heads.one2one.clone(),
            &b.targets,
            &anchors,
            (imgsz, imgsz),
            w,
            &LossGains::default(),
        );
        losses.add(&items, 1.0);
        batches += 1;
        let head = if settings.end2end {
            out.heads.one2one
        } else {
            out.heads.one2many
        };
        let c = 4 + nc;
        let raw = host(head);
        for (k, &image) in b.indices.iter().enumerate() {
            let r = &raw[k * c * anchors.len()..(k + 1) * c * anchors.len()];
            let s = &data.samples[image];
            for d in detections(r, nc, &anchors, settings) {
                // clipped to the image, as the COCO-format predictions are written
                let bbox = clip_to_image([d[0], d[1], d[2], d[3]], s.width, s.height, imgsz as u32);
                dets.push(DetBox {
                    image,
                    class: d[5] as usize,
                    bbox,
                    score: d[4],
                });
            }
            for (class, bbox) in &b.targets[k] {
                gts.push(GtBox {
                    image,
                    class: *class,
                    bbox: *bbox,
                });
            }
        }
    }
    let losses = losses.scaled(1.0 / batches.max(1) as f64);
    let coco = coco_map(&gts, &dets, nc);
    let (precision, recall, best_f1_conf) = precision_recall_at_best_f1(&gts, &dets, nc);
    ValResult {
        images: data.len(),
        instances: gts.len(),
        precision,
        recall,
        best_f1_conf,
        coco,
        losses,
        dets,
        gts,
    }
}

impl ValResult {
    /// No validation this epoch (`val=false`): every metric NaN.
    pub fn skipped(images: usize, nc: usize) -> Self {
        let nan = f64::NAN;
        let mut coco = coco_map(&[], &[], nc);
        coco.map50 = nan;
        coco.map75 = nan;
        coco.map50_95 = nan;
        ValResult {
            images,
            instances: 0,
            precision: nan,
            recall: nan,
            best_f1_conf: nan,
            coco,
            losses: LossItems {
                box_: nan,
                cls: nan,
                l1: nan,
            },
            dets: Vec::new(),
            gts: Vec::new(),
        }
    }

    /// `Class Images Instances Box(P R mAP50 mAP50-95)`, the `all` row and, with `names`,
    /// one row per class that has instances.
    pub fn table(&self, names: &[String], per_class: bool) -> String {
        let mut s = format!(
            "{:>22}{:>11}{:>11}{:>11}{:>11}{:>11}{:>11}\n",
            "Class", "Images", "Instances", "Box(P", "R", "mAP50", "mAP50-95)"
        );
        s += &format!(
            "{:>22}{:>11}{:>11}{:>11.3}{:>11.3}{:>11.3}{:>11.3}\n",
            "all",
            self.images,
            self.instances,
            self.precision,
            self.recall,
            self.coco.map50,
            self.coco.map50_95
        );
        if per_class {
            let pr =
                per_class_precision_recall(&self.gts, &self.dets, names.len(), self.best_f1_conf);
            for (c, name) in names.iter().enumerate() {
                let inst = self.gts.iter().filter(|g| g.class == c).count();
                let imgs = {
                    let mut v: Vec<usize> = self
                        .gts
                        .iter()
                        .filter(|g| g.class == c)
                        .map(|g| g.image)
                        .collect();
                    v.sort();
                    v.dedup();
                    v.len()
                };
                if let (Some(a50), Some(a), Some(Some((p, r)))) =
                    (self.coco.ap50[c], self.coco.ap50_95[c], pr.get(c))
                {
                    s += &format!(
                        "{:>22}{:>11}{:>11}{:>11.3}{:>11.3}{:>11.3}{:>11.3}\n",
                        name, imgs, inst, p, r, a50, a
                    );
                }
            }
        }
        s
    }
}
