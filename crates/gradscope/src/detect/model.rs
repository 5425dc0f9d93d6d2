//! The model a command starts from: built from a yaml (from scratch), or from weights — an
//! Ultralytics `.pt` (`model=yolo26n.pt`, looked up in the working folder, then in
//! `$GRADSCOPE_WEIGHTS`) or a `.safetensors` checkpoint — with `pretrained=` weights on top of a
//! yaml-built model. Weights are loaded where name and shape match; the rest (the class branches
//! when the number of classes differs) keeps its initialisation, and the count is reported as
//! Ultralytics reports it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::yolo::blocks::Switches;
use crate::yolo::model::{Yolo, YoloConfig};
use crate::yolo::pt::{identify, read_pt};
use crate::yolo::weights::{load_matching, read_safetensors, NamedTensors};

/// Where Ultralytics' release weights can be fetched by hand (downloading them is not built).
pub const RELEASES: &str = "https://github.com/ultralytics/assets/releases";

/// The model for `args` built from its yaml, with the ablation switches, for `nc` classes.
pub fn build_model(
    args: &DetectArgs,
    nc: usize,
    device: &Device,
) -> Result<(YoloConfig, Yolo), DetectError> {
    build(&args.model, args, nc, device)
}

fn build(
    yaml: &str,
    args: &DetectArgs,
    nc: usize,
    device: &Device,
) -> Result<(YoloConfig, Yolo), DetectError> {
    let mut cfg = YoloConfig::from_name(yaml, nc).map_err(DetectError::Args)?;
    // a seeded initialisation: the same seed builds the same network
    device.seed(args.seed);
    cfg.switches = Switches {
        act: args.act,
        bn: args.bn,
        shortcut: args.shortcut,
    };
    let model = cfg.init(device);
    Ok((cfg, model))
}

/// A weights file named by `key=` (`model` or `pretrained`).
#[derive(Clone, Debug, PartialEq)]
pub enum Weights {
    Pt(PathBuf),
    Safetensors(PathBuf),
}

impl Weights {
    /// `path` as the weights file its extension says it is (`.pt`/`.pth`, `.safetensors`);
    /// `None` for anything else (a yaml).
    pub fn of(path: PathBuf) -> Option<Weights> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("pt" | "pth") => Some(Weights::Pt(path)),
            Some("safetensors") => Some(Weights::Safetensors(path)),
            _ => None,
        }
    }
}

/// Where a training run's weights start, resolved from `model=` and `pretrained=` before any
/// data is read.
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// From scratch: the model yaml.
    Scratch,
    /// `model=` names a weights file: the model is built at the file's own scale.
    Weights(Weights),
    /// A yaml-built model with `pretrained=` weights loaded into it.
    Pretrained(Weights),
}

/// The run's [`Start`]: both keys checked (files found, `pretrained=` a weights file).
pub fn start(args: &DetectArgs) -> Result<Start, DetectError> {
    let from_model = weights_file("model", &args.model)?;
    let pretrained = match &args.pretrained {
        Some(p) => Some(weights_file("pretrained", p)?.ok_or_else(|| {
            DetectError::Args(format!(
                "pretrained={p}: expected a .pt or .safetensors weights file"
            ))
        })?),
        None => None,
    };
    Ok(match (from_model, pretrained) {
        (Some(w), _) => Start::Weights(w),
        (None, Some(p)) => Start::Pretrained(p),
        (None, None) => Start::Scratch,
    })
}

/// `name` as a weights file, when it names one (`.pt`, `.pth`, `.safetensors`): found in the
/// working folder or, for a bare file name, in `$GRADSCOPE_WEIGHTS`. `None` for a yaml.
pub fn weights_file(key: &str, name: &str) -> Result<Option<Weights>, DetectError> {
    let p = Path::new(name);
    if Weights::of(p.to_path_buf()).is_none() {
        return Ok(None);
    }
    let env = std::env::var_os("GRADSCOPE_WEIGHTS").map(PathBuf::from);
    let found = std::iter::once(p.to_path_buf())
        .chain(env.iter().filter_map(|d| Some(d.join(p.file_name()?))))
        .find(|c| c.is_file());
    match found {
        Some(f) => Ok(Weights::of(f)),
        None if p.is_dir() => Err(DetectError::Args(format!(
            "{key}={name}: a folder, not a weights file"
        ))),
        None => Err(DetectError::Args(format!(
            "{key}={name}: no such file in the working folder{}. Downloading Ultralytics' release weights is not built yet: download {} from {RELEASES} and put it here or in $GRADSCOPE_WEIGHTS, or train from scratch with model=yolo26n.yaml",
            env.map(|d| format!(" or in $GRADSCOPE_WEIGHTS ({})", d.display()))
                .unwrap_or_default(),
            p.file_name().and_then(|f| f.to_str()).unwrap_or(name),
        ))),
    }
}

/// The tensors of a weights file, with the scale they were built at.
pub fn read_weights(w: &Weights) -> Result<(NamedTensors, char, PathBuf), DetectError> {
    match w {
        Weights::Pt(p) => {
            let ck = read_pt(p)?;
            Ok((ck.tensors, ck.scale, p.clone()))
        }
        Weights::Safetensors(p) => {
            let t = read_safetensors(p)?;
            let (scale, _) = identify(p, &t)?;
            Ok((t, scale, p.clone()))
        }
    }
}

/// The model a training run starts from, and a line saying what was loaded into it ("transferred
/// 690/714 tensors from yolo26n.pt; 24 class-branch tensors initialised for nc=1").
pub fn initial_model(
    args: &DetectArgs,
    start: &Start,
    nc: usize,
    device: &Device,
) -> Result<(Yolo, Option<String>), DetectError> {
    let (w, model_is_yaml) = match start {
        Start::Scratch => return Ok((build_model(args, nc, device)?.1, None)),
        Start::Weights(w) => (w, false),
        Start::Pretrained(w) => (w, true),
    };
    let (tensors, scale, path) = read_weights(w)?;
    // a yaml given beside pretrained= decides the architecture; a weights file as model= is built
    // at its own scale
    let yaml = if model_is_yaml {
        args.model.clone()
    } else {
        format!("yolo26{scale}.yaml")
    };
    let (_, model) = build(&yaml, args, nc, device)?;
    let (model, t) = load_matching(model, &tensors, &path);
    if t.loaded == 0 {
        return Err(DetectError::Args(format!(
            "{}: none of its tensors fits {yaml} (another architecture or scale?)",
            path.display()
        )));
    }
    let mut line = format!(
        "transferred {}/{} tensors from {}",
        t.loaded,
        t.total,
        path.display()
    );
    if !t.kept.is_empty() {
        line += &format!(
            "; {} initialised afresh (e.g. {}) for nc={nc}",
            t.kept.len(),
            t.kept[0]
        );
    }
    Ok((model, Some(line)))
}
