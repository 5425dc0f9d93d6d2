//! `gradscope train|val|predict` arguments: Ultralytics' names and defaults (`key=value`), plus
//! gradscope's own (`probe`, `probe_every`, `act`, `bn`, `shortcut`, `nan_recovery`).

use std::fmt::Write as _;

use super::augment::AugmentConfig;
use super::optimizer::DetOptimizer;
use crate::lab::settings::{parse_bool, parse_pos, parse_usize};
use crate::nn::activation::Activation;

/// Every key with what it takes (for `gradscope help train` and for error messages).
pub const KEYS: &[(&str, &str)] = &[
    ("model", "yolo26{n,s,m,l,x}.yaml, a model yaml file, or a .safetensors checkpoint"),
    ("data", "a data.yaml path, a built-in name (coco8.yaml), or `trees` (embedded NEON tree crowns)"),
    ("epochs", "epochs ≥ 1"),
    ("imgsz", "input size, a multiple of 32"),
    ("batch", "images per iteration ≥ 1"),
    ("nbs", "nominal batch: gradients are accumulated over round(nbs/batch) iterations"),
    ("optimizer", "auto | SGD | AdamW | MuSGD"),
    ("lr0", "initial learning rate (default: 0.01 for SGD, 0.001 for AdamW; auto picks its own)"),
    ("lrf", "final learning rate as a fraction of lr0"),
    ("momentum", "SGD momentum / Adam β₁"),
    ("weight_decay", "decay of conv weights at nbs (scaled by batch·accumulate/nbs)"),
    ("warmup_epochs", "warmup length in epochs (at most epochs − 1)"),
    ("warmup_momentum", "momentum at the start of warmup"),
    ("warmup_bias_lr", "bias learning rate at the start of warmup"),
    ("cos_lr", "true: cosine schedule; false: linear"),
    ("close_mosaic", "turn mosaic off for the last N epochs"),
    ("hsv_h", "hue gain"),
    ("hsv_s", "saturation gain"),
    ("hsv_v", "value gain"),
    ("fliplr", "horizontal flip probability"),
    ("scale", "random scale ± fraction"),
    ("translate", "random translation ± fraction"),
    ("mosaic", "mosaic probability"),
    ("clip_norm", "global gradient-norm clipping threshold, or none"),
    ("nan_recovery", "non-finite steps in a row to recover from, 0 = off"),
    ("seed", "random seed"),
    ("probe", "true | false: the gradient probe"),
    ("probe_every", "probe every k-th optimizer step"),
    ("act", "activation ablation: silu (YOLO26) | relu | sigmoid | tanh | …"),
    ("bn", "true | false: BatchNorm after every conv"),
    ("shortcut", "true | false: residual connections in bottlenecks"),
    ("project", "folder for runs"),
    ("name", "run name (train, train2, … when it exists)"),
    ("exist_ok", "reuse an existing run folder"),
    ("conf", "confidence threshold (val: 0.001, predict: 0.25)"),
    ("max_det", "detections kept per image"),
    ("end2end", "true: one-to-one head, top-k without NMS; false: one-to-many head with NMS"),
    ("iou", "NMS IoU threshold (end2end=false)"),
    ("save_json", "write COCO-format predictions"),
    ("plots", "write plots"),
    ("source", "predict: an image or a folder of images"),
    ("val", "true: validate after every epoch; false: only after the last"),
    ("resume", "true (with model=<run>/weights/last.safetensors) or a run folder: continue that run exactly"),
];

#[derive(Clone, Debug, PartialEq)]
pub struct DetectArgs {
    pub model: String,
    pub data: String,
    pub epochs: usize,
    pub imgsz: usize,
    pub batch: usize,
    pub nbs: usize,
    pub optimizer: DetOptimizer,
    pub lr0: Option<f64>,
    pub lrf: f64,
    pub momentum: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    pub warmup_momentum: f64,
    pub warmup_bias_lr: f64,
    pub cos_lr: bool,
    pub close_mosaic: usize,
    pub augment: AugmentConfig,
    pub clip_norm: Option<f64>,
    pub nan_recovery: usize,
    pub seed: u64,
    pub probe: bool,
    pub probe_every: usize,
    pub act: Activation,
    pub bn: bool,
    pub shortcut: bool,
    pub project: String,
    pub name: String,
    pub exist_ok: bool,
    pub conf: Option<f64>,
    pub max_det: usize,
    pub end2end: bool,
    pub iou: f64,
    pub save_json: bool,
    pub plots: bool,
    pub source: Option<String>,
    pub resume: Option<String>,
    pub val: bool,
}

impl Default for DetectArgs {
    fn default() -> Self {
        DetectArgs {
            model: "yolo26n.yaml".into(),
            data: "trees".into(),
            epochs: 100,
            imgsz: 640,
            batch: 16,
            nbs: 64,
            optimizer: DetOptimizer::Auto,
            lr0: None,
            lrf: 0.01,
            momentum: 0.937,
            weight_decay: 5e-4,
            warmup_epochs: 3.0,
            warmup_momentum: 0.8,
            warmup_bias_lr: 0.1,
            cos_lr: false,
            close_mosaic: 10,
            augment: AugmentConfig::default(),
            clip_norm: Some(10.0),
            nan_recovery: 3,
            seed: 0,
            probe: true,
            probe_every: 1,
            act: Activation::Silu,
            bn: true,
            shortcut: true,
            project: "runs/detect".into(),
            name: "train".into(),
            exist_ok: false,
            conf: None,
            max_det: 300,
            end2end: true,
            iou: 0.7,
            save_json: false,
            plots: true,
            source: None,
            resume: None,
            val: true,
        }
    }
}

fn parse_frac(key: &str, v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(x) if x.is_finite() && x >= 0.0 => Ok(x),
        _ => Err(format!("{key}={v}: expected a finite number ≥ 0")),
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

    /// Applies one `key=value`.
    pub fn set(&mut self, key: &str, v: &str) -> Result<(), String> {
        let f = |v: &str| parse_frac(key, v);
        match key {
            "model" => self.model = v.into(),
            "data" => self.data = v.into(),
            "epochs" => self.epochs = parse_usize(key, v, 1)?,
            "imgsz" => {
                let n = parse_usize(key, v, 32)?;
                if n % 32 != 0 {
                    return Err(format!(
                        "imgsz={v}: must be a multiple of 32 (e.g. {})",
                        n.div_ceil(32) * 32
                    ));
                }
                self.imgsz = n;
            }
            "batch" => self.batch = parse_usize(key, v, 1)?,
            "nbs" => self.nbs = parse_usize(key, v, 1)?,
            "optimizer" => self.optimizer = v.parse()?,
            "lr0" => self.lr0 = Some(parse_pos(key, v)?),
            "lrf" => self.lrf = parse_pos(key, v)?,
            "momentum" => self.momentum = f(v)?,
            "weight_decay" => self.weight_decay = f(v)?,
            "warmup_epochs" => self.warmup_epochs = f(v)?,
            "warmup_momentum" => self.warmup_momentum = f(v)?,
            "warmup_bias_lr" => self.warmup_bias_lr = f(v)?,
            "cos_lr" => self.cos_lr = parse_bool(key, v)?,
            "close_mosaic" => self.close_mosaic = parse_usize(key, v, 0)?,
            "hsv_h" => self.augment.hsv_h = f(v)? as f32,
            "hsv_s" => self.augment.hsv_s = f(v)? as f32,
            "hsv_v" => self.augment.hsv_v = f(v)? as f32,
            "fliplr" => self.augment.fliplr = f(v)? as f32,
            "scale" => self.augment.scale = f(v)? as f32,
            "translate" => self.augment.translate = f(v)? as f32,
            "mosaic" => self.augment.mosaic = f(v)? as f32,
            "clip_norm" => {
                self.clip_norm = match v {
                    "none" | "None" | "0" => None,
                    _ => Some(parse_pos(key, v)?),
                }
            }
            "nan_recovery" => self.nan_recovery = parse_usize(key, v, 0)?,
            "seed" => self.seed = parse_usize(key, v, 0)? as u64,
            "probe" => self.probe = parse_bool(key, v)?,
            "probe_every" => self.probe_every = parse_usize(key, v, 1)?,
            "act" => self.act = v.parse()?,
            "bn" => self.bn = parse_bool(key, v)?,
            "shortcut" => self.shortcut = parse_bool(key, v)?,
            "project" => self.project = v.into(),
            "name" => self.name = v.into(),
            "exist_ok" => self.exist_ok = parse_bool(key, v)?,
            "conf" => self.conf = Some(f(v)?),
            "max_det" => self.max_det = parse_usize(key, v, 1)?,
            "end2end" => self.end2end = parse_bool(key, v)?,
            "iou" => self.iou = f(v)?,
            "save_json" => self.save_json = parse_bool(key, v)?,
            "plots" => self.plots = parse_bool(key, v)?,
            "source" => self.source = Some(v.into()),
            "val" => self.val = parse_bool(key, v)?,
            "resume" => {
                self.resume = match v {
                    "false" | "False" => None,
                    _ => Some(v.into()),
                }
            }
            _ => {
                let known: Vec<&str> = KEYS.iter().map(|(k, _)| *k).collect();
                return Err(format!(
                    "unknown argument '{key}'; accepted: {}",
                    known.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// From `key=value` words, on top of `base`.
    pub fn parse(base: Self, words: &[String]) -> Result<Self, String> {
        let mut a = base;
        for w in words {
            let (k, v) = w.split_once('=').ok_or_else(|| {
                format!("'{w}': expected key=value (e.g. epochs=10); see `gradscope help train`")
            })?;
            a.set(k.trim(), v.trim())?;
        }
        Ok(a)
    }

    /// args.yaml: every setting, one per line.
    pub fn to_yaml(&self) -> String {
        let a = &self.augment;
        let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_else(|| "null".into());
        let mut s = String::new();
        let rows: Vec<(&str, String)> = vec![
            ("task", "detect".into()),
            ("model", self.model.clone()),
            ("data", self.data.clone()),
            ("epochs", self.epochs.to_string()),
            ("imgsz", self.imgsz.to_string()),
            ("batch", self.batch.to_string()),
            ("nbs", self.nbs.to_string()),
            ("optimizer", self.optimizer.to_string()),
            ("lr0", opt(self.lr0)),
            ("lrf", self.lrf.to_string()),
            ("momentum", self.momentum.to_string()),
            ("weight_decay", self.weight_decay.to_string()),
            ("warmup_epochs", self.warmup_epochs.to_string()),
            ("warmup_momentum", self.warmup_momentum.to_string()),
            ("warmup_bias_lr", self.warmup_bias_lr.to_string()),
            ("cos_lr", self.cos_lr.to_string()),
            ("close_mosaic", self.close_mosaic.to_string()),
            ("hsv_h", a.hsv_h.to_string()),
            ("hsv_s", a.hsv_s.to_string()),
            ("hsv_v", a.hsv_v.to_string()),
            ("fliplr", a.fliplr.to_string()),
            ("scale", a.scale.to_string()),
            ("translate", a.translate.to_string()),
            ("mosaic", a.mosaic.to_string()),
            ("clip_norm", opt(self.clip_norm)),
            ("nan_recovery", self.nan_recovery.to_string()),
            ("seed", self.seed.to_string()),
            ("probe", self.probe.to_string()),
            ("probe_every", self.probe_every.to_string()),
            ("act", self.act.to_string()),
            ("bn", self.bn.to_string()),
            ("shortcut", self.shortcut.to_string()),
            ("conf", opt(self.conf)),
            ("max_det", self.max_det.to_string()),
            ("end2end", self.end2end.to_string()),
            ("iou", self.iou.to_string()),
            ("save_json", self.save_json.to_string()),
            ("val", self.val.to_string()),
        ];
        for (k, v) in rows {
            let v = if v.contains(':') || v.contains('#') || v.contains(' ') {
                format!("'{}'", v.replace('\'', "''"))
            } else {
                v
            };
            let _ = writeln!(s, "{k}: {v}");
        }
        s
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
        )
        .unwrap();
        assert_eq!(
            (a.epochs, a.imgsz, a.optimizer),
            (3, 320, DetOptimizer::Sgd)
        );
        let e = DetectArgs::parse(DetectArgs::default(), &["imgsz=300".into()]).unwrap_err();
        assert!(e.contains("imgsz=300") && e.contains("320"), "{e}");
        let e = DetectArgs::parse(DetectArgs::default(), &["epoch=3".into()]).unwrap_err();
        assert!(e.contains("unknown argument 'epoch'"), "{e}");
        let e = DetectArgs::parse(DetectArgs::default(), &["epochs".into()]).unwrap_err();
        assert!(e.contains("key=value"), "{e}");
    }
}
