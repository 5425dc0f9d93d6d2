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
use crate::detect::run::boxes::{draw_boxes_with, BoxStyle, Drawn};
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

/// What `predict` writes: the images with their boxes drawn in `style`, and with `save_txt` a
/// `labels/<image stem>.txt` per image with detections (Ultralytics' format: `class x_center
/// y_center width height`, normalised to the image, `%g`, and the confidence last with
/// `save_conf`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Outputs {
    pub style: BoxStyle,
    pub save_txt: bool,
    pub save_conf: bool,
}

/// `x` as C's `%g` prints it (6 significant digits, no trailing zeros), as Ultralytics' label
/// files have it.
pub fn fmt_g(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return if x == 0.0 { "0".into() } else { x.to_string() };
    }
    let exp = format!("{x:.5e}");
    let (mantissa, e) = exp.split_once('e').unwrap_or((&exp, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    let trim = |m: &str| {
        if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            m.to_string()
        }
    };
    if (-4..6).contains(&e) {
        trim(&format!("{x:.*}", (5 - e).max(0) as usize))
    } else {
        format!(
            "{}e{}{:02}",
            trim(mantissa),
            if e < 0 { '-' } else { '+' },
            e.abs()
        )
    }
}

/// One detection as a line of an Ultralytics label file for a `w0`×`h0` image.
pub fn label_line(c: usize, b: [f32; 4], w0: u32, h0: u32, conf: Option<f32>) -> String {
    let (w, h) = (w0 as f64, h0 as f64);
    let xywh = [
        (b[0] as f64 + b[2] as f64) / 2.0 / w,
        (b[1] as f64 + b[3] as f64) / 2.0 / h,
        (b[2] as f64 - b[0] as f64) / w,
        (b[3] as f64 - b[1] as f64) / h,
    ];
    let mut parts = vec![c.to_string()];
    parts.extend(xywh.iter().map(|v| fmt_g(*v)));
    if let Some(s) = conf {
        parts.push(fmt_g(s as f64));
    }
    parts.join(" ")
}

/// Predicts on `source` (an image or a folder), draws the boxes and saves the images (and label
/// files) into `out_dir` as `outputs` says. Unreadable images are reported, not fatal.
#[allow(clippy::too_many_arguments)]
pub fn predict(
    ck: &Checkpoint,
    source: &Path,
    imgsz: usize,
    settings: &DetectSettings,
    outputs: &Outputs,
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
        let (w0, h0) = img.dimensions();
        let mut canvas = img;
        let drawn: Vec<Drawn> = boxes.iter().map(|(c, b, s)| (*c, *b, Some(*s))).collect();
        draw_boxes_with(&mut canvas, &drawn, &ck.names, &outputs.style)
            .map_err(|m| DetectError::plot(&f, m))?;
        let name = f
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| "image.jpg".into());
        let out = out_dir.join(&name).with_extension("jpg");
        canvas.save(&out).map_err(|e| DetectError::plot(&out, e))?;
        if outputs.save_txt && !boxes.is_empty() {
            let labels = out_dir.join("labels");
            std::fs::create_dir_all(&labels).map_err(|e| DetectError::io(&labels, e))?;
            let text: String = boxes
                .iter()
                .map(|(c, b, s)| label_line(*c, *b, w0, h0, outputs.save_conf.then_some(*s)) + "\n")
                .collect();
            let txt = labels.join(name).with_extension("txt");
            std::fs::write(&txt, text).map_err(|e| DetectError::io(&txt, e))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Python's `'%g' % x` for each (values printed by CPython 3.11).
    #[test]
    fn numbers_print_as_c_percent_g() {
        let cases = [
            (0.5, "0.5"),
            (0.123456789, "0.123457"),
            (1e-5, "1e-05"),
            (123456789.0, "1.23457e+08"),
            (0.0001, "0.0001"),
            (100000.0, "100000"),
            (1000000.0, "1e+06"),
            (999999.5, "1e+06"),
            (0.00012345678, "0.000123457"),
            (2.0, "2"),
            (-0.25, "-0.25"),
            (0.0, "0"),
        ];
        for (x, want) in cases {
            assert_eq!(fmt_g(x), want, "{x}");
        }
    }

    #[test]
    fn a_label_line_is_normalised_centre_and_size() {
        let l = label_line(3, [10.0, 20.0, 30.0, 60.0], 100, 200, None);
        assert_eq!(l, "3 0.2 0.2 0.2 0.2");
        let l = label_line(0, [0.0, 0.0, 50.0, 50.0], 100, 100, Some(0.875));
        assert_eq!(l, "0 0.25 0.25 0.5 0.5 0.875");
    }
}
