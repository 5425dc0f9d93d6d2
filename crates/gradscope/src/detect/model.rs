//! The model a command starts from: built from a yaml (from scratch), or from weights — an
//! Ultralytics `.pt` (`model=yolo26n.pt`, looked up in the working folder, then in
//! `$GRADSCOPE_WEIGHTS`, then downloaded from Ultralytics' release assets) or a `.safetensors`
//! checkpoint — with `pretrained=` weights on top of a
//! yaml-built model. Weights are loaded where name and shape match; the rest (the class branches
//! when the number of classes differs) keeps its initialisation, and the count is reported as
//! Ultralytics reports it.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::input::download::{fetch_file, MIN_WEIGHTS_BYTES, RELEASE_ASSETS};
use crate::yolo::blocks::Switches;
use crate::yolo::model::{Yolo, YoloConfig};
use crate::yolo::pt::{identify, read_pt};
use crate::yolo::weights::{load_matching, read_safetensors, NamedTensors};

/// Where release weights come from: `$GRADSCOPE_RELEASES_URL` (tests serve files from a
/// loopback server) or Ultralytics' own release assets.
pub fn release_assets() -> String {
    std::env::var("GRADSCOPE_RELEASES_URL").unwrap_or_else(|_| RELEASE_ASSETS.to_string())
}

/// Whether `name` is a YOLO26 detection release (`yolo26n.pt` … `yolo26x.pt`), which
/// `model=` fetches when it is not on disk, as Ultralytics does.
pub fn is_release(name: &str) -> bool {
    name.strip_prefix("yolo26")
        .and_then(|r| r.strip_suffix(".pt"))
        .is_some_and(|s| s.len() == 1 && "nsmlx".contains(s))
}

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
pub fn start(args: &DetectArgs, say: &mut dyn FnMut(String)) -> Result<Start, DetectError> {
    let from_model = weights_file("model", &args.model, say)?;
    let pretrained = match &args.pretrained {
        Some(p) => Some(weights_file("pretrained", p, say)?.ok_or_else(|| {
            DetectError::Args(format!(
                "pretrained={p}: expected a .pt or .safetensors weights file"
            ))
        })?),
        None => None,
    };
    Ok(match (from_model, pretrained) {
        (Some(_), Some(_)) => {
            return Err(DetectError::Args(format!(
                "model={} already gives the starting weights, so pretrained={} would be ignored; pass one of them (pretrained= loads weights into a yaml-built model, e.g. model=yolo26n.yaml)",
                args.model,
                args.pretrained.as_deref().unwrap_or_default()
            )))
        }
        (Some(w), None) => Start::Weights(w),
        (None, Some(p)) => Start::Pretrained(p),
        (None, None) => Start::Scratch,
    })
}

/// `name` as a weights file, when it names one (`.pt`, `.pth`, `.safetensors`): found in the
/// working folder or, for a bare file name, in `$GRADSCOPE_WEIGHTS`; a YOLO26 release name found
/// in neither is downloaded into `$GRADSCOPE_WEIGHTS` (else the working folder). `None` for a
/// yaml. `say` hears about a download.
pub fn weights_file(
    key: &str,
    name: &str,
    say: &mut dyn FnMut(String),
) -> Result<Option<Weights>, DetectError> {
    let dir = std::env::var_os("GRADSCOPE_WEIGHTS").map(PathBuf::from);
    weights_file_in(key, name, dir.as_deref(), &release_assets(), say)
}

/// [`weights_file`] with the weights folder and the release URL given.
pub fn weights_file_in(
    key: &str,
    name: &str,
    weights_dir: Option<&Path>,
    releases: &str,
    say: &mut dyn FnMut(String),
) -> Result<Option<Weights>, DetectError> {
    let p = Path::new(name);
    if Weights::of(p.to_path_buf()).is_none() {
        return Ok(None);
    }
    let found = std::iter::once(p.to_path_buf())
        .chain(
            weights_dir
                .iter()
                .filter_map(|d| Some(d.join(p.file_name()?))),
        )
        .find(|c| c.is_file());
    if let Some(f) = found {
        return Ok(Weights::of(f));
    }
    if p.is_dir() {
        return Err(DetectError::Args(format!(
            "{key}={name}: a folder, not a weights file"
        )));
    }
    if !is_release(name) {
        return Err(DetectError::Args(format!(
            "{key}={name}: no such file in the working folder{}",
            weights_dir
                .map(|d| format!(" or in $GRADSCOPE_WEIGHTS ({})", d.display()))
                .unwrap_or_default(),
        )));
    }
    let dir = weights_dir.unwrap_or(Path::new("."));
    let dest = dir.join(name);
    let url = format!("{}/{name}", releases.trim_end_matches('/'));
    fetch_file(&url, &dest, MIN_WEIGHTS_BYTES, say).map_err(|source| {
        DetectError::WeightsDownload {
            key: key.into(),
            name: name.into(),
            url: url.clone(),
            dir: dir.to_path_buf(),
            source: Box::new(source),
        }
    })?;
    Ok(Weights::of(dest))
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
