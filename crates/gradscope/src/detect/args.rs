//! `gradscope train|val|predict` arguments: Ultralytics' names and defaults (`key=value`), plus
//! gradscope's own (`probe`, `probe_every`, `act`, `bn`, `shortcut`, `nan_recovery`).

use crate::activation::Activation;
use crate::detect::input::augment::AugmentConfig;
use crate::detect::optimize::freeze::Freeze;
use crate::detect::optimize::optimizer::DetOptimizer;
use crate::devices::DeviceSpec;
use crate::settings::{
    any, at_least, fraction, positive, split_words, Command, SettingError, ALL, EVERY, EXPORT,
    PREDICT, TRAIN, TRAIN_VAL, VAL_PREDICT,
};

/// `imgsz`: at least 32, a multiple of the largest stride (32).
fn image_size(n: &usize) -> Result<(), String> {
    if *n < 32 || *n > MAX_IMGSZ {
        return Err(format!("expected a size from 32 to {MAX_IMGSZ}"));
    }
    if !n.is_multiple_of(32) {
        return Err(format!(
            "must be a multiple of 32 (e.g. {})",
            n.div_ceil(32) * 32
        ));
    }
    Ok(())
}

/// The largest accepted `imgsz` (a 4096² image is 200 MB per image in f32 before the network).
pub const MAX_IMGSZ: usize = 4096;

/// `format=`: what `gradscope export` writes.
fn export_format(f: &str) -> Result<(), String> {
    if f == "pt" {
        Ok(())
    } else {
        Err(format!("gradscope exports format=pt only; for {f}, export the .pt with Ultralytics: yolo export model=best.pt format={f}"))
    }
}

pub use crate::detect::input::pixels::Cache;

impl crate::settings::Value for Cache {
    fn parse(v: &str) -> Result<Self, String> {
        match v {
            "false" | "False" => Ok(Cache::Off),
            "ram" | "true" | "True" => Ok(Cache::Ram),
            "disk" => Ok(Cache::Disk),
            _ => Err("expected ram, disk or false".into()),
        }
    }
    fn show(&self) -> String {
        match self {
            Cache::Off => "false",
            Cache::Ram => "ram",
            Cache::Disk => "disk",
        }
        .into()
    }
}

/// `classes=`: the class indices detections are kept for (`classes=0`, `classes=[0,2]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Classes(pub Vec<usize>);

impl crate::settings::Value for Classes {
    fn parse(v: &str) -> Result<Self, String> {
        let inner = v.trim().trim_start_matches('[').trim_end_matches(']');
        let mut l: Vec<usize> = inner
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(|x| x.parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| "expected class indices: classes=0 or classes=[0,2]".to_string())?;
        if l.is_empty() {
            return Err("expected at least one class index: classes=0 or classes=[0,2]".into());
        }
        l.sort_unstable();
        l.dedup();
        Ok(Classes(l))
    }
    fn show(&self) -> String {
        let l: Vec<String> = self.0.iter().map(|c| c.to_string()).collect();
        format!("[{}]", l.join(", "))
    }
}

fn opt_fraction(x: &Option<f64>) -> Result<(), String> {
    x.map_or(Ok(()), fraction)
}

crate::settings! {
    /// `gradscope train|val|predict` settings: Ultralytics' names and defaults, plus gradscope's
    /// own (`probe`, `probe_every`, `act`, `bn`, `shortcut`, `nan_recovery`, `clip_norm`).
    pub struct DetectArgs {
        /// yolo26{n,s,m,l,x}.yaml or a model yaml (from scratch), an Ultralytics .pt, or a .safetensors checkpoint
        model: String = "yolo26n.yaml".into(), any, EVERY;
        /// export: pt (an Ultralytics checkpoint; for ONNX, TensorRT, … export that with Ultralytics)
        format: String = "pt".into(), |f| export_format(f), EXPORT;
        /// weights to start a yaml-built model from (.pt or .safetensors), loaded where names and shapes match
        pretrained: Option<String> = None, any, TRAIN;
        /// a data.yaml path, a built-in name (coco8.yaml), or `trees` (embedded NEON tree crowns)
        data: String = "trees".into(), any, TRAIN_VAL;
        /// epochs ≥ 1
        epochs: usize = 100, |x| at_least(*x, 1), TRAIN;
        /// stop when mAP50-95 has not improved for this many epochs (0 = never)
        patience: usize = 100, any, TRAIN;
        /// also save weights/epoch{N}.safetensors every N epochs (-1 = off)
        save_period: i64 = -1, |x| if *x == 0 || *x < -1 { Err("expected a number ≥ 1, or -1 (off)".into()) } else { Ok(()) }, TRAIN;
        /// freeze the first N layers (model.0 … model.N-1), or those listed (`freeze=[0,1,2]`): their weights are not trained (0 = none)
        freeze: Freeze = Freeze::First(0), |f| if f.last().is_some_and(|l| l > 23) { Err("expected layers 0 … 23 (YOLO26 has 24 layers; 23 is the head)".into()) } else { Ok(()) }, TRAIN;
        /// cpu, a GPU (0, vulkan:0; cuda:0) in a binary built with --features gpu (or cuda), or a list such as 0,1 (data-parallel training, one process per device; cpu,cpu on the CPU)
        device: DeviceSpec = DeviceSpec::Cpu, |d| d.check().map_err(|e| e.to_string()), ALL;
        /// input size in pixels, a multiple of 32
        imgsz: usize = 640, image_size, ALL;
        /// images per iteration ≥ 1
        batch: usize = 16, |x| at_least(*x, 1), TRAIN_VAL;
        /// ram | disk | false: where decoded images are kept between epochs: in memory (ram), decoded from the image file at every use (false: least memory), or in IMAGE.gradscope.npy files beside the images (disk); the run's bytes are the same
        cache: Cache = Cache::Ram, any, TRAIN_VAL;
        /// threads that augment training images, at most one per core (0 = one per core; results do not depend on it)
        workers: usize = 8, any, TRAIN;
        /// nominal batch: gradients are accumulated over round(nbs/batch) iterations
        nbs: usize = 64, |x| at_least(*x, 1), TRAIN;
        /// auto | SGD | AdamW | MuSGD
        optimizer: DetOptimizer = DetOptimizer::Auto, any, TRAIN;
        /// initial learning rate in (0, 1] (null: 0.01 for SGD/MuSGD, 0.001 for AdamW; auto picks its own)
        lr0: Option<f64> = None, |x| x.map_or(Ok(()), |v| positive(v).and(fraction(v))), TRAIN;
        /// final learning rate as a fraction of lr0
        lrf: f64 = 0.01, |x| positive(*x).and(fraction(*x)), TRAIN;
        /// SGD momentum / Adam β₁
        momentum: f64 = 0.937, |x| fraction(*x), TRAIN;
        /// decay of conv weights at nbs (scaled by batch·accumulate/nbs)
        weight_decay: f64 = 5e-4, |x| fraction(*x), TRAIN;
        /// warmup length in epochs (at most epochs − 1)
        warmup_epochs: f64 = 3.0, |x| at_least(*x, 0.0), TRAIN;
        /// momentum at the start of warmup
        warmup_momentum: f64 = 0.8, |x| fraction(*x), TRAIN;
        /// bias learning rate at the start of warmup
        warmup_bias_lr: f64 = 0.1, |x| fraction(*x), TRAIN;
        /// true: cosine schedule; false: linear
        cos_lr: bool = false, any, TRAIN;
        /// turn mosaic off for the last N epochs
        close_mosaic: usize = 10, any, TRAIN;
        /// hue gain (fraction of the hue circle)
        hsv_h: f32 = 0.015, |x| fraction(*x as f64), TRAIN;
        /// saturation gain
        hsv_s: f32 = 0.7, |x| fraction(*x as f64), TRAIN;
        /// value (brightness) gain
        hsv_v: f32 = 0.4, |x| fraction(*x as f64), TRAIN;
        /// horizontal flip probability
        fliplr: f32 = 0.5, |x| fraction(*x as f64), TRAIN;
        /// random scale ± fraction
        scale: f32 = 0.5, |x| fraction(*x as f64), TRAIN;
        /// random translation ± fraction of the image size
        translate: f32 = 0.1, |x| fraction(*x as f64), TRAIN;
        /// mosaic probability
        mosaic: f32 = 1.0, |x| fraction(*x as f64), TRAIN;
        /// global gradient-norm clipping threshold > 0, or none
        clip_norm: Option<f64> = Some(10.0), |x| x.map_or(Ok(()), positive), TRAIN;
        /// non-finite steps in a row to recover from, 0 = off
        nan_recovery: usize = 3, any, TRAIN;
        /// random seed
        seed: u64 = 0, any, TRAIN;
        /// true | false: the gradient probe
        probe: bool = true, any, TRAIN;
        /// probe every k-th optimizer step
        probe_every: usize = 1, |x| at_least(*x, 1), TRAIN;
        /// activation ablation: silu (YOLO26) | relu | sigmoid | tanh | …
        act: Activation = Activation::Silu, any, TRAIN;
        /// true | false: BatchNorm after every conv
        bn: bool = true, any, TRAIN;
        /// true | false: residual connections in bottlenecks
        shortcut: bool = true, any, TRAIN;
        /// folder for runs
        project: String = "runs/detect".into(), any, ALL;
        /// run name (train, train2, … when it exists)
        name: String = "train".into(), any, TRAIN;
        /// reuse an existing run folder
        exist_ok: bool = false, any, TRAIN;
        /// confidence threshold (null: val 0.001, predict 0.25)
        conf: Option<f64> = None, opt_fraction, ALL;
        /// detections kept per image
        max_det: usize = 300, |x| at_least(*x, 1), ALL;
        /// keep detections of these classes only: 0, or a list such as `[0,2]` (null: all)
        classes: Option<Classes> = None, any, VAL_PREDICT;
        /// true: one-to-one head, top-k without NMS; false: one-to-many head with NMS
        end2end: bool = true, any, ALL;
        /// rectangular inputs as Ultralytics' val/predict: validation batches of like aspect on canvases half a stride larger than the images, prediction padded only to a multiple of 32 (false: imgsz squares)
        rect: bool = true, any, VAL_PREDICT;
        /// NMS IoU threshold (end2end=false)
        iou: f64 = 0.7, |x| fraction(*x), ALL;
        /// write COCO-format predictions (val) or a predictions.json (predict)
        save_json: bool = false, any, VAL_PREDICT;
        /// write plots (train: every epoch; val: the validation's curves, confusion matrices and images in runs/detect/val)
        plots: bool = true, any, TRAIN_VAL;
        /// an image or a folder of images
        source: Option<String> = None, any, PREDICT;
        /// also write labels/IMAGE.txt: one line per box, class x_center y_center width height (normalised to the image)
        save_txt: bool = false, any, PREDICT;
        /// with save_txt: the confidence at the end of each line
        save_conf: bool = false, any, PREDICT;
        /// draw each box's class name
        show_labels: bool = true, any, PREDICT;
        /// draw each box's confidence
        show_conf: bool = true, any, PREDICT;
        /// box line width in pixels (null: from the image size, as Ultralytics)
        line_width: Option<usize> = None, |x| x.map_or(Ok(()), |w| at_least(w, 1)), PREDICT;
        /// true: validate after every epoch; false: only after the last
        val: bool = true, any, TRAIN;
        /// true (with model=RUN/weights/last.safetensors) or a run folder RUN: continue that run exactly
        resume: Option<String> = None, any, TRAIN;
    }
}

impl DetectArgs {
    /// `gradscope train` with no arguments: YOLO26n on the embedded tree-crown tiles, sized to
    /// finish in minutes on two cores and to learn visibly in that time: small batches stepped
    /// every iteration (210 steps, so BatchNorm's running statistics — momentum 0.03 — have
    /// converged when validation uses them) and a one-epoch warmup.
    pub fn quick_default() -> Self {
        DetectArgs {
            data: "trees".into(),
            epochs: 10,
            imgsz: 256,
            batch: 2,
            nbs: 2,
            warmup_epochs: 1.0,
            close_mosaic: 3,
            ..Self::default()
        }
    }

    /// The augmentation settings.
    pub fn augment(&self) -> AugmentConfig {
        AugmentConfig {
            hsv_h: self.hsv_h,
            hsv_s: self.hsv_s,
            hsv_v: self.hsv_v,
            fliplr: self.fliplr,
            scale: self.scale,
            translate: self.translate,
            mosaic: self.mosaic,
        }
    }

    /// From `key=value` words for `command`, on top of `base`. `resume=false` is read as no
    /// resume.
    pub fn parse(base: Self, words: &[String], command: Command) -> Result<Self, SettingError> {
        let mut a = base;
        for (k, v) in split_words(words, command)? {
            match (k, v) {
                ("resume", "false" | "False") => a.resume = None,
                _ => a.set(k, v, command)?,
            }
        }
        Ok(a)
    }

    /// Ultralytics' forms of `imgsz` in gradscope's: a square list (`imgsz=[320,320]` or
    /// `320,320`) is its side, and a size that is not a multiple of the stride 32 is rounded up to
    /// one with a warning, as Ultralytics does. Returns the words and the warnings.
    pub fn normalise_imgsz(words: &[String]) -> (Vec<String>, Vec<String>) {
        let mut warnings = Vec::new();
        let out = words
            .iter()
            .map(|w| {
                let Some(v) = w.strip_prefix("imgsz=") else {
                    return w.clone();
                };
                let inner = v.trim_start_matches(['[', '(']).trim_end_matches([']', ')']);
                let sides: Vec<&str> = inner.split(',').map(str::trim).collect();
                let side = match sides.as_slice() {
                    [s] => *s,
                    [a, b] if a == b => *a,
                    _ => return w.clone(), // refused by the parser, naming the value
                };
                match side.parse::<usize>() {
                    Ok(n) if n > 0 && !n.is_multiple_of(32) => {
                        let up = n.div_ceil(32) * 32;
                        warnings.push(format!(
                            "imgsz={v} is not a multiple of the largest stride 32: updating to imgsz={up}"
                        ));
                        format!("imgsz={up}")
                    }
                    _ => format!("imgsz={side}"),
                }
            })
            .collect();
        (out, warnings)
    }

    /// args.yaml: every setting, one per line, after `task: detect`.
    pub fn args_yaml(&self) -> String {
        format!("task: detect\n{}", self.to_yaml())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_with_the_key_named() {
        let a = DetectArgs::parse(
            DetectArgs::default(),
            &[
                "epochs=3".into(),
                "imgsz=320".into(),
                "optimizer=SGD".into(),
            ],
            Command::Train,
        )
        .unwrap();
        assert_eq!(
            (a.epochs, a.imgsz, a.optimizer),
            (3, 320, DetOptimizer::Sgd)
        );
        let e = DetectArgs::parse(DetectArgs::default(), &["imgsz=300".into()], Command::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("imgsz=300") && e.contains("320"), "{e}");
        let e = DetectArgs::parse(DetectArgs::default(), &["epoch=3".into()], Command::Train)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown argument 'epoch' (did you mean 'epochs'?)"),
            "{e}"
        );
        let e = DetectArgs::parse(DetectArgs::default(), &["epochs".into()], Command::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("key=value"), "{e}");
    }

    #[test]
    fn ultralytics_image_sizes_are_brought_to_a_multiple_of_32() {
        let words: Vec<String> = ["imgsz=300", "imgsz=[320,320]", "imgsz=(64, 64)", "epochs=3"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (out, warnings) = DetectArgs::normalise_imgsz(&words);
        assert_eq!(out, ["imgsz=320", "imgsz=320", "imgsz=64", "epochs=3"]);
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("updating to imgsz=320"),
            "{warnings:?}"
        );
        let (out, _) = DetectArgs::normalise_imgsz(&["imgsz=[320,256]".to_string()]);
        let e = DetectArgs::parse(DetectArgs::default(), &out, Command::Train).unwrap_err();
        assert!(e.to_string().contains("imgsz=[320,256]"), "{e}");
    }
}
