//! Trained checkpoints back in use: `val` and `predict`.
//!
//! A checkpoint is `<run>/weights/{best,last}.safetensors` (Ultralytics tensor names); the run's
//! `args.yaml` says how the model was built (scale, ablation switches, image size) and its class
//! names.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;

use crate::data::detect::image_files;
use crate::data::letterbox::{min_canvas, square, unletterbox};
use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::eval::validate::{detections, DetectSettings};
use crate::detect::input::augment::val_image;
use crate::detect::model::{build_model, Weights};
use crate::detect::objective::assign::Anchors;
use crate::detect::run::plots::{draw_boxes, Drawn};
use crate::probe::Tap;
use crate::yolo::model::Yolo;

/// A loaded checkpoint: the model (plain device, eval mode), its training arguments, class names.
pub struct Checkpoint {
    pub model: Yolo,
    pub args: DetectArgs,
    pub names: Vec<String>,
}

/// An Ultralytics `.pt`: its model at its scale and class count, the image size it was trained
/// at, class names from a gradscope-written file, else COCO's for 80 classes, else `class0`, …
/// (`val` takes them from `data=`).
fn load_pt(path: &Path, device: &Device) -> Result<Checkpoint, DetectError> {
    let ck = crate::yolo::pt::read_pt(path)?;
    let args = DetectArgs {
        model: format!("yolo26{}.yaml", ck.scale),
        imgsz: ck.imgsz.filter(|s| s % 32 == 0).unwrap_or(640),
        ..DetectArgs::default()
    };
    // Ultralytics keeps the names as an attribute of its pickled model, which the reader does
    // not see; a gradscope-written .pt keeps them where it does
    let names = ck.names.clone().unwrap_or_else(|| {
        if ck.nc == 80 {
            crate::detect::input::sources::COCO_NAMES
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            (0..ck.nc).map(|i| format!("class{i}")).collect()
        }
    });
    let (_, model) = build_model(&args, ck.nc, device)?;
    let model = crate::yolo::weights::load_named(model, &ck.tensors, path)?;
    refuse_non_finite(&model, path)?;
    Ok(Checkpoint { model, args, names })
}

/// Loads a checkpoint: an Ultralytics `.pt`, or a gradscope `.safetensors` with its run's
/// settings.
pub fn load(weights: &Path, device: &Device) -> Result<Checkpoint, DetectError> {
    if let Some(Weights::Pt(_)) = Weights::of(weights.to_path_buf()) {
        return load_pt(weights, device);
    }
    let (mut args, names) = crate::detect::run::run_args(crate::detect::run::run_of(weights)?)?;
    let tensors = crate::yolo::weights::read_safetensors(weights)?;
    if Weights::of(PathBuf::from(&args.model)).is_some() {
        // a run fine-tuned from a weights file: the checkpoint itself says its scale
        let (scale, _) = crate::yolo::pt::identify(weights, &tensors)?;
        args.model = format!("yolo26{scale}.yaml");
    }
    let (_, model) = build_model(&args, names.len(), device)?;
    let model = crate::yolo::weights::load_named(model, &tensors, weights)?;
    refuse_non_finite(&model, weights)?;
    Ok(Checkpoint { model, args, names })
}

/// A checkpoint with NaN or ∞ in any tensor predicts nothing meaningful: refused, naming the
/// first such tensor and how many there are.
fn refuse_non_finite(model: &Yolo, path: &Path) -> Result<(), DetectError> {
    let bad: Vec<(String, usize)> = crate::yolo::weights::named_tensors(model)
        .into_iter()
        .map(|(name, _, v)| (name, v.iter().filter(|x| !x.is_finite()).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    match bad.first() {
        None => Ok(()),
        Some((name, n)) => Err(DetectError::NothingUsable(format!(
            "{}: {} tensor(s) hold NaN or infinite values, first {name} ({n} values); this checkpoint cannot be used (a run that diverged? train again with a lower lr0)",
            path.display(),
            bad.len()
        ))),
    }
}

/// One image's detections in its own pixels: (class, xyxy, score).
pub struct Prediction {
    pub image: PathBuf,
    pub boxes: Vec<(usize, [f32; 4], f32)>,
}

/// Detections on one decoded image, mapped back from the letterboxed input to the image.
pub fn predict_image(
    model: &Yolo,
    img: &RgbImage,
    imgsz: usize,
    nc: usize,
    settings: &DetectSettings,
    device: &Device,
) -> Vec<(usize, [f32; 4], f32)> {
    let (w0, h0) = img.dimensions();
    let canvas = if settings.rect {
        min_canvas(w0, h0, imgsz as u32, 32)
    } else {
        square(imgsz as u32)
    };
    let (cw, ch) = (canvas.0 as usize, canvas.1 as usize);
    let a = val_image(img, &[], imgsz as u32, canvas);
    let x = Tensor::<4>::from_data(TensorData::new(a.chw, [1, 3, ch, cw]), device);
    let out = model.forward(x, &mut Tap::off());
    let head = if settings.end2end {
        out.heads.one2one
    } else {
        out.heads.one2many
    };
    let raw: Vec<f32> = head
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default();
    let anchors = Anchors::new(ch, cw, &[8, 16, 32]);
    detections(&raw, nc, &anchors, settings)
        .into_iter()
        .map(|d| {
            (
                d[5] as usize,
                unletterbox([d[0], d[1], d[2], d[3]], w0, h0, imgsz as u32, canvas),
                d[4],
            )
        })
        .collect()
}

/// Predicts on `source` (an image or a folder), draws the boxes and saves the images into
/// `out_dir`. Unreadable images are reported, not fatal.
pub fn predict(
    ck: &Checkpoint,
    source: &Path,
    imgsz: usize,
    settings: &DetectSettings,
    out_dir: &Path,
    device: &Device,
    on: &mut dyn FnMut(Result<&Prediction, String>),
) -> Result<Vec<Prediction>, DetectError> {
    let files = if source.is_dir() {
        image_files(source)?
    } else if source.is_file() {
        vec![source.to_path_buf()]
    } else {
        return Err(DetectError::Data(format!(
            "source={}: no such image or folder",
            source.display()
        )));
    };
    if files.is_empty() {
        return Err(DetectError::NothingUsable(format!(
            "source={}: no images in this folder (jpg, jpeg, png, bmp, tif, tiff, webp)",
            source.display()
        )));
    }
    let n_files = files.len();
    std::fs::create_dir_all(out_dir).map_err(|e| DetectError::io(out_dir, e))?;
    let mut all = Vec::new();
    for f in files {
        let img = match image::open(&f) {
            Ok(i) => i.to_rgb8(),
            Err(e) => {
                on(Err(format!("{}: cannot decode: {e}", f.display())));
                continue;
            }
        };
        let boxes = predict_image(&ck.model, &img, imgsz, ck.names.len(), settings, device);
        let mut canvas = img;
        let drawn: Vec<Drawn> = boxes.iter().map(|(c, b, s)| (*c, *b, Some(*s))).collect();
        draw_boxes(&mut canvas, &drawn, &ck.names).map_err(|m| DetectError::plot(&f, m))?;
        let name = f
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "image.jpg".into());
        let out = out_dir.join(name).with_extension("jpg");
        canvas.save(&out).map_err(|e| DetectError::plot(&out, e))?;
        let p = Prediction { image: f, boxes };
        on(Ok(&p));
        all.push(p);
    }
    if all.is_empty() {
        return Err(DetectError::NothingUsable(format!(
            "source={}: none of its {n_files} file(s) could be decoded as an image",
            source.display()
        )));
    }
    Ok(all)
}
