//! `gradscope export format=pt`: a trained checkpoint as an Ultralytics `.pt`, so a model trained
//! here can use Ultralytics' deployment chain (`YOLO("best.pt").val()`, `.export(format="onnx")`).

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::activation::Activation;
use crate::detect::error::DetectError;
use crate::detect::predict::load;
use crate::yolo::model::YoloConfig;
use crate::yolo::pt_write::{write_pt, PtExport};
use crate::yolo::weights::named_tensors;

/// Writes `weights` (a gradscope `.safetensors` with its run, or a `.pt`) as an Ultralytics
/// checkpoint beside it, with the `.pt` extension; returns the file written.
pub fn export_pt(weights: &Path, device: &Device) -> Result<PathBuf, DetectError> {
    let out = weights.with_extension("pt");
    if out == weights {
        return Err(DetectError::Args(format!(
            "model={}: already a .pt checkpoint",
            weights.display()
        )));
    }
    let ck = load(weights, device)?;
    let a = &ck.args;
    // Ultralytics' YOLO26 has SiLU, BatchNorm and its shortcuts: an ablated model has no
    // Ultralytics equivalent to load into
    let ablated: Vec<String> = [
        (a.act != Activation::Silu).then(|| format!("act={}", a.act)),
        (!a.bn).then(|| "bn=false".to_string()),
        (!a.shortcut).then(|| "shortcut=false".to_string()),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !ablated.is_empty() {
        return Err(DetectError::Args(format!(
            "{}: trained with {}, which Ultralytics' YOLO26 does not have; only a model with its default SiLU, BatchNorm and shortcuts can be exported",
            weights.display(),
            ablated.join(" ")
        )));
    }
    let cfg = YoloConfig::from_name(&a.model, ck.names.len()).map_err(DetectError::Args)?;
    let data = Path::new(&a.data).is_file().then(|| {
        std::fs::canonicalize(&a.data).map_or(a.data.clone(), |p| p.display().to_string())
    });
    let tensors = named_tensors(&ck.model);
    let export = PtExport {
        tensors: &tensors,
        def: &cfg.def,
        scale: cfg.scale,
        names: &ck.names,
        imgsz: a.imgsz,
        data,
    };
    write_pt(&export, &out)?;
    Ok(out)
}
