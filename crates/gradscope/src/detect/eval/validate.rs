//! Validation: detections on the validation images, the losses there, the metrics Ultralytics'
//! `val` prints and COCO's.

use burn::tensor::{Device, Tensor, TensorData};

use crate::data::letterbox::{clip_to_image, rect_batches, square, Canvas};
use crate::detect::error::AugmentError;
use crate::detect::eval::det_metrics::{det_metrics, DetMetrics};
use crate::detect::eval::metrics::{coco_map, CocoResult, DetBox, GtBox};
use crate::detect::input::dataset::DetData;
use crate::detect::objective::assign::Anchors;
use crate::detect::objective::loss::{yolo_loss, LossGains, LossItems};
use crate::probe::Tap;
use crate::yolo::model::Yolo;
use crate::yolo::postprocess::{end2end, nms};

/// How detections are made.
#[derive(Clone, Debug)]
pub struct DetectSettings {
    pub conf: f32,
    pub max_det: usize,
    /// One-to-one head, top-k without NMS; else one-to-many head with NMS at `iou`.
    pub end2end: bool,
    pub iou: f32,
    /// Ultralytics' rectangular inputs (its `rect=True`, the default of its `val` and
    /// `predict`): validation batches of similar aspect on per-batch canvases half a stride
    /// larger than the scaled images, prediction on the smallest stride-multiple canvas. Else
    /// `imgsz` squares.
    pub rect: bool,
    /// Keep detections of these classes only (Ultralytics' `classes`; `None`: all).
    pub classes: Option<Vec<usize>>,
}

#[derive(Clone, Debug)]
pub struct ValResult {
    pub images: usize,
    pub instances: usize,
    /// P, R, mAP50, mAP50-95 as Ultralytics' `val` computes them: the numbers printed, written
    /// to results.csv and used to pick the best checkpoint.
    pub metrics: DetMetrics,
    /// COCO's mAP (pycocotools' definition: at most 100 detections per image), printed by
    /// `gradscope val`; equal to pycocotools' scoring of the predictions.json it writes.
    pub coco: CocoResult,
    pub losses: LossItems,
    /// Each image's canvas (the letterboxed input it was validated on), by dataset index.
    pub canvases: Vec<Canvas>,
    /// Detections in letterboxed input pixels, with the image index in the dataset (not clipped
    /// to the image: Ultralytics' metrics take them so; COCO's are computed on clipped copies).
    pub dets: Vec<DetBox>,
    pub gts: Vec<GtBox>,
}

/// Detections of one image from raw head outputs `[4 + nc, A]` (host, channel-major).
pub fn detections(raw: &[f32], nc: usize, anchors: &Anchors, s: &DetectSettings) -> Vec<[f32; 6]> {
    let kept = if s.end2end {
        end2end(raw, nc, &anchors.levels, s.max_det)
            .into_iter()
            .filter(|d| d[4] >= s.conf)
            .collect()
    } else {
        nms(raw, nc, &anchors.levels, s.conf, s.iou, s.max_det)
    };
    match &s.classes {
        // after the top-k / NMS, as Ultralytics' end-to-end post-processing filters
        Some(c) => kept
            .into_iter()
            .filter(|d| c.contains(&(d[5] as usize)))
            .collect(),
        None => kept,
    }
}

fn host(t: Tensor<3>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// The validation batches and their canvases: Ultralytics' rectangular batches, or `imgsz`
/// squares in dataset order.
fn plan(data: &DetData, imgsz: u32, batch: usize, rect: bool) -> Vec<(Vec<usize>, Canvas)> {
    if rect {
        let sizes: Vec<(u32, u32)> = (0..data.len()).map(|i| data.dimensions(i)).collect();
        return rect_batches(&sizes, batch, imgsz, 32);
    }
    let idx: Vec<usize> = (0..data.len()).collect();
    idx.chunks(batch.max(1))
        .map(|c| (c.to_vec(), square(imgsz)))
        .collect()
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
) -> Result<ValResult, AugmentError> {
    let mut dets = Vec::new();
    let mut clipped = Vec::new();
    let mut gts = Vec::new();
    let mut losses = LossItems::default();
    let mut canvases = vec![square(imgsz as u32); data.len()];
    let batches = plan(data, imgsz as u32, batch, settings.rect);
    for (chunk, canvas) in &batches {
        let (cw, ch) = (canvas.0 as usize, canvas.1 as usize);
        let anchors = Anchors::new(ch, cw, &[8, 16, 32]);
        let b = data.val_batch(chunk, imgsz as u32, *canvas)?;
        let n = b.len();
        let x = Tensor::<4>::from_data(TensorData::new(b.x, [n, 3, ch, cw]), device);
        let out = model.forward(x, &mut Tap::off());
        let (_, items) = yolo_loss(
            out.heads.one2many.clone(),
            out.heads.one2one.clone(),
            &b.targets,
            &anchors,
            (ch, cw),
            w,
            &LossGains::default(),
        );
        losses.add(&items, 1.0);
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
            canvases[image] = *canvas;
            for d in detections(r, nc, &anchors, settings) {
                let det = DetBox {
                    image,
                    class: d[5] as usize,
                    bbox: [d[0], d[1], d[2], d[3]],
                    score: d[4],
                };
                dets.push(det);
                // COCO's numbers on boxes clipped to the image, as predictions.json has them
                clipped.push(DetBox {
                    bbox: clip_to_image(det.bbox, s.width, s.height, imgsz as u32, *canvas),
                    ..det
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
    let losses = losses.scaled(1.0 / batches.len().max(1) as f64);
    Ok(ValResult {
        images: data.len(),
        instances: gts.len(),
        metrics: det_metrics(&gts, &dets, nc),
        coco: coco_map(&gts, &clipped, nc),
        canvases,
        losses,
        dets,
        gts,
    })
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
            metrics: DetMetrics {
                p: nan,
                r: nan,
                map50: nan,
                map50_95: nan,
                classes: vec![None; nc],
                conf: nan,
                curves: Vec::new(),
            },
            coco,
            canvases: Vec::new(),
            losses: LossItems {
                box_: nan,
                cls: nan,
                l1: nan,
                assigned: [0.0; 3],
            },
            dets: Vec::new(),
            gts: Vec::new(),
        }
    }

    /// `Class Images Instances Box(P R mAP50 mAP50-95)`, the `all` row and, with `names`,
    /// one row per class that has instances: Ultralytics' definition of each.
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
            self.metrics.p,
            self.metrics.r,
            self.metrics.map50,
            self.metrics.map50_95
        );
        if per_class {
            for (c, name) in names.iter().enumerate() {
                let Some(m) = self.metrics.classes.get(c).copied().flatten() else {
                    continue;
                };
                let mut imgs: Vec<usize> = self
                    .gts
                    .iter()
                    .filter(|g| g.class == c)
                    .map(|g| g.image)
                    .collect();
                imgs.sort();
                imgs.dedup();
                s += &format!(
                    "{:>22}{:>11}{:>11}{:>11.3}{:>11.3}{:>11.3}{:>11.3}\n",
                    name,
                    imgs.len(),
                    m.labels,
                    m.p,
                    m.r,
                    m.ap50,
                    m.ap50_95
                );
            }
        }
        s
    }

    /// The COCO numbers in one line (pycocotools' definition).
    pub fn coco_line(&self) -> String {
        format!(
            "COCO mAP (pycocotools' definition, ≤ 100 detections per image): mAP50 {:.4}  mAP75 {:.4}  mAP50-95 {:.4}",
            self.coco.map50, self.coco.map75, self.coco.map50_95
        )
    }
}
