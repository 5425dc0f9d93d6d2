//! Trained checkpoints back in use: `val` and `predict`.
//!
//! A checkpoint is `<run>/weights/{best,last}.safetensors` (Ultralytics tensor names); the run's
//! `args.yaml` says how the model was built (scale, ablation switches, image size) and its class
//! names.

use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use image::RgbImage;
use yaml_rust2::{Yaml, YamlLoader};

use super::args::DetectArgs;
use super::assign::Anchors;
use super::augment::val_image;
use super::plots::{draw_boxes, Drawn};
use super::train::{build_model, DetectError};
use super::validate::{detections, DetectSettings};
use crate::data::detect::image_files;
use crate::data::letterbox::unletterbox;
use crate::probe::Tap;
use crate::yolo::model::Yolo;

/// A loaded checkpoint: the model (plain device, eval mode), its training arguments, class names.
pub struct Checkpoint {
    pub model: Yolo,
    pub args: DetectArgs,
    pub names: Vec<String>,
}

/// The run folder of a checkpoint `<run>/weights/x.safetensors`.
pub fn run_of(weights: &Path) -> Result<&Path, DetectError> {
    weights
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| DetectError::Args(format!("{}: not inside a run folder", weights.display())))
}

/// Reads a run's `args.yaml`: its training arguments and class names.
pub fn run_args(run: &Path) -> Result<(DetectArgs, Vec<String>), DetectError> {
    let file = run.join("args.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        DetectError::Args(format!(
            "{}: {e} (a checkpoint is read with the args.yaml of its run, <run>/weights/../args.yaml)",
            file.display()
        ))
    })?;
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| DetectError::Args(format!("{}: not valid YAML: {e}", file.display())))?;
    let doc = docs.first().cloned().unwrap_or(Yaml::Null);
    let mut args = DetectArgs::default();
    let mut names = Vec::new();
    if let Yaml::Hash(h) = &doc {
        for (k, v) in h {
            let Some(k) = k.as_str() else { continue };
            match (k, v) {
                ("names", Yaml::Hash(m)) => {
                    let mut pairs: Vec<(i64, String)> = m
                        .iter()
                        .filter_map(|(i, n)| Some((i.as_i64()?, n.as_str()?.to_string())))
                        .collect();
                    pairs.sort();
                    names = pairs.into_iter().map(|(_, n)| n).collect();
                }
                ("task", _) | (_, Yaml::Null) => {}
                (k, v) => {
                    let s = match v {
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Real(r) => r.clone(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => continue,
                    };
                    args.set(k, &s)
                        .map_err(|e| DetectError::Args(format!("{}: {e}", file.display())))?;
                }
            }
        }
    }
    if names.is_empty() {
        return Err(DetectError::Args(format!(
            "{}: no class names",
            file.display()
        )));
    }
    Ok((args, names))
}

/// Loads a checkpoint with its run's settings.
pub fn load(weights: &Path, device: &Device) -> Result<Checkpoint, DetectError> {
    let (args, names) = run_args(run_of(weights)?)?;
    let (_, model) = build_model(&args, names.len(), device)?;
    let model = crate::yolo::weights::load_ultralytics(model, weights)
        .map_err(|e| DetectError::Args(e.to_string()))?;
    Ok(Checkpoint { model, args, names })
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
    let a = val_image(img, &[], imgsz as u32);
    let x = Tensor::<4>::from_data(TensorData::new(a.chw, [1, 3, imgsz, imgsz]), device);
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
    let anchors = Anchors::new(imgsz, imgsz, &[8, 16, 32]);
    let (w0, h0) = img.dimensions();
    detections(&raw, nc, &anchors, settings)
        .into_iter()
        .map(|d| {
            (
                d[5] as usize,
                unletterbox([d[0], d[1], d[2], d[3]], w0, h0, imgsz as u32),
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
        image_files(source).map_err(|e| DetectError::Data(e.to_string()))?
    } else if source.is_file() {
        vec![source.to_path_buf()]
    } else {
        return Err(DetectError::Data(format!(
            "source={}: no such image or folder",
            source.display()
        )));
    };
    std::fs::create_dir_all(out_dir)
        .map_err(|e| DetectError::Io(format!("{}: {e}", out_dir.display())))?;
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
        draw_boxes(&mut canvas, &drawn, &ck.names).map_err(DetectError::Io)?;
        let name = f
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "image.jpg".into());
        let out = out_dir.join(name).with_extension("jpg");
        canvas
            .save(&out)
            .map_err(|e| DetectError::Io(format!("{}: {e}", out.display())))?;
        let p = Prediction { image: f, boxes };
        on(Ok(&p));
        all.push(p);
    }
    Ok(all)
}
