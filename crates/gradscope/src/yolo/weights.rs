//! Ultralytics weights in safetensors: `model.{layer}.{path}` names, PyTorch layouts (which burn's
//! Conv2d shares), BatchNorm `weight`/`bias` for γ/β, fp16 or fp32.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor, TensorData};

use super::model::Yolo;

#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    #[error("cannot read {path}: {msg}")]
    Read { path: PathBuf, msg: String },
    #[error("{path}: tensor '{key}' has shape {found:?}, the model expects {expected:?} (a different scale or nc?)")]
    Shape {
        path: PathBuf,
        key: String,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error("{path}: tensor '{key}' has dtype {dtype}; expected F32 or F16")]
    Dtype {
        path: PathBuf,
        key: String,
        dtype: String,
    },
    #[error("{path}: missing {} tensors the model needs, e.g. {}", missing.len(), missing.iter().take(3).cloned().collect::<Vec<_>>().join(", "))]
    Missing { path: PathBuf, missing: Vec<String> },
    #[error("cannot write {path}: {msg}")]
    Write { path: PathBuf, msg: String },
}

/// Ultralytics' name for one of our module paths: enum variants are dropped, `s<i>` sequence
/// fields become `<i>`, BatchNorm's γ/β are `weight`/`bias`.
pub fn ultralytics_name(path: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    for seg in path {
        if seg.chars().next().is_some_and(|c| c.is_ascii_uppercase()) {
            continue; // enum variant
        }
        if let Some(d) = seg
            .strip_prefix('s')
            .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_ascii_digit()))
        {
            out.push(d.to_string());
            continue;
        }
        out.push(seg.clone());
    }
    if out.len() >= 2 && out[out.len() - 2] == "bn" {
        let last = out.len() - 1;
        out[last] = match out[last].as_str() {
            "gamma" => "weight".into(),
            "beta" => "bias".into(),
            other => other.into(),
        };
    }
    out.join(".")
}

/// Tensors by name: shape and f32 values.
pub type NamedTensors = HashMap<String, (Vec<usize>, Vec<f32>)>;

struct Loader<'a> {
    tensors: &'a NamedTensors,
    path: Vec<String>,
    used: BTreeSet<String>,
    missing: Vec<String>,
    /// Tensors whose shape differs from the model's (kept as initialised when not strict).
    mismatched: Vec<String>,
    /// Strict: every tensor present with the right shape; else load what matches.
    strict: bool,
    error: Option<WeightsError>,
    file: PathBuf,
}

impl<'a> Loader<'a> {
    fn new(tensors: &'a NamedTensors, file: &Path, strict: bool) -> Self {
        Loader {
            tensors,
            path: Vec::new(),
            used: BTreeSet::new(),
            missing: Vec::new(),
            mismatched: Vec::new(),
            strict,
            error: None,
            file: file.to_path_buf(),
        }
    }
}

impl ModuleMapper for Loader<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let key = ultralytics_name(&self.path);
        let Some((shape, values)) = self.tensors.get(&key) else {
            self.missing.push(key);
            return param;
        };
        let expected = param.val().dims().to_vec();
        if *shape != expected && !self.strict {
            self.mismatched.push(key);
            return param;
        }
        if *shape != expected {
            self.error.get_or_insert(WeightsError::Shape {
                path: self.file.clone(),
                key,
                found: shape.clone(),
                expected,
            });
            return param;
        }
        self.used.insert(key);
        let values = values.clone();
        param.map(|t| {
            let grad = t.is_require_grad();
            let dims: [usize; D] = t.dims();
            let n = Tensor::from_data(TensorData::new(values, dims), &t.device());
            if grad {
                n.require_grad()
            } else {
                n
            }
        })
    }
}

/// Reads every F32/F16 tensor of a safetensors file as f32 (other dtypes, such as BatchNorm's
/// `num_batches_tracked` counters, are skipped).
pub fn read_safetensors(path: &Path) -> Result<NamedTensors, WeightsError> {
    let read = |msg: String| WeightsError::Read {
        path: path.to_path_buf(),
        msg,
    };
    let bytes = std::fs::read(path).map_err(|e| read(e.to_string()))?;
    let st = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| read(format!("not a safetensors file: {e}")))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let shape = view.shape().to_vec();
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => DType::F32,
            safetensors::Dtype::F16 => DType::F16,
            safetensors::Dtype::F64 => DType::F64,
            safetensors::Dtype::I64 | safetensors::Dtype::I32 => continue,
            other => {
                return Err(WeightsError::Dtype {
                    path: path.to_path_buf(),
                    key: name,
                    dtype: format!("{other:?}"),
                })
            }
        };
        let data =
            TensorData::from_bytes_vec(view.data().to_vec(), shape.clone(), dtype).convert::<f32>();
        let values = data
            .try_into_vec::<f32>()
            .map_err(|e| read(format!("{name}: {e:?}")))?;
        out.insert(name, (shape, values));
    }
    Ok(out)
}

/// Loads Ultralytics weights into `model`. Every parameter and BatchNorm statistic must be
/// present with the right shape; tensors the model does not have are ignored.
pub fn load_ultralytics(model: Yolo, path: &Path) -> Result<Yolo, WeightsError> {
    let tensors = read_safetensors(path)?;
    load_named(model, &tensors, path)
}

struct Collect<F> {
    path: Vec<String>,
    keep: F,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl<F: Fn(&str) -> bool> ModuleVisitor for Collect<F> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = ultralytics_name(&self.path);
        if !(self.keep)(&name) {
            return;
        }
        let t = param.val();
        let data = t.to_data().convert::<f32>();
        self.out.push((
            name,
            t.dims().to_vec(),
            data.try_into_vec::<f32>().unwrap_or_default(),
        ));
    }
}

/// Every parameter and BatchNorm statistic of `model`: (Ultralytics name, shape, f32 values).
pub fn named_tensors<M: Module>(model: &M) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    named_tensors_where(model, |_| true)
}

/// The tensors of `model` whose Ultralytics name `keep` accepts; the others are not copied to
/// the host.
pub fn named_tensors_where<M: Module>(
    model: &M,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let mut c = Collect {
        path: Vec::new(),
        keep,
        out: Vec::new(),
    };
    model.visit(&mut c);
    c.out
}

/// Writes named f32 tensors (and string metadata) as safetensors, atomically (see
/// [`crate::atomic`]): a crash never leaves a half-written file under `path`.
pub fn write_safetensors(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<(), WeightsError> {
    write_safetensors_with(tensors, &[], metadata, path)
}

/// [`write_safetensors`] with f64 tensors besides the f32 ones (values kept bit for bit, such as
/// a resume state's loss history).
pub fn write_safetensors_with(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    exact: &[(String, Vec<usize>, Vec<f64>)],
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<(), WeightsError> {
    let file = safetensors_bytes(tensors, exact, metadata, path)?;
    write_file(&file, path)
}

/// The safetensors file [`write_safetensors_with`] writes, as bytes (`path` names it in errors).
pub fn safetensors_bytes(
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    exact: &[(String, Vec<usize>, Vec<f64>)],
    metadata: Option<HashMap<String, String>>,
    path: &Path,
) -> Result<Vec<u8>, WeightsError> {
    let write = |msg: String| WeightsError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let mut bytes: Vec<(&String, &Vec<usize>, safetensors::Dtype, Vec<u8>)> = Vec::new();
    for (name, shape, values) in tensors {
        let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((name, shape, safetensors::Dtype::F32, b));
    }
    for (name, shape, values) in exact {
        let b = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        bytes.push((name, shape, safetensors::Dtype::F64, b));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(name, shape, dtype, data)| {
            safetensors::tensor::TensorView::new(*dtype, (*shape).clone(), data)
                .map(|v| ((*name).clone(), v))
                .map_err(|e| write(format!("{name}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    safetensors::serialize(views, metadata).map_err(|e| write(e.to_string()))
}

/// Replaces `path` by `bytes` atomically ([`crate::atomic::write`]).
pub fn write_file(bytes: &[u8], path: &Path) -> Result<(), WeightsError> {
    crate::atomic::write(path, bytes).map_err(|e| WeightsError::Write {
        path: path.to_path_buf(),
        msg: e.to_string(),
    })
}

/// Writes every parameter and BatchNorm statistic as f32 safetensors with Ultralytics' names,
/// atomically (a temporary file, then a rename).
pub fn save_ultralytics(model: &Yolo, path: &Path) -> Result<(), WeightsError> {
    write_safetensors(&named_tensors(model), None, path)
}

/// Loads named tensors into `model` (names as [`named_tensors`] gives them). Every tensor the
/// model has must be present with the right shape.
pub fn load_named<M: Module>(
    model: M,
    tensors: &NamedTensors,
    file: &Path,
) -> Result<M, WeightsError> {
    let mut loader = Loader::new(tensors, file, true);
    let model = model.map(&mut loader);
    if let Some(e) = loader.error {
        return Err(e);
    }
    if !loader.missing.is_empty() {
        return Err(WeightsError::Missing {
            path: file.to_path_buf(),
            missing: loader.missing,
        });
    }
    Ok(model)
}

/// What [`load_matching`] took from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Tensors loaded (name and shape matched).
    pub loaded: usize,
    /// Tensors the model has.
    pub total: usize,
    /// The model's tensors left as initialised: absent from the checkpoint or of another shape
    /// (the class branches when the number of classes differs).
    pub kept: Vec<String>,
}

/// Loads every tensor whose name and shape match the model's and leaves the others as
/// initialised, as Ultralytics does when fine-tuning on another number of classes ("Transferred
/// 708/714 items").
pub fn load_matching<M: Module>(model: M, tensors: &NamedTensors, file: &Path) -> (M, Transfer) {
    let mut loader = Loader::new(tensors, file, false);
    let model = model.map(&mut loader);
    let mut kept = loader.missing;
    kept.extend(loader.mismatched);
    kept.sort();
    let loaded = loader.used.len();
    (
        model,
        Transfer {
            loaded,
            total: loaded + kept.len(),
            kept,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::ultralytics_name;

    fn p(s: &str) -> Vec<String> {
        s.split('.').map(str::to_string).collect()
    }

    #[test]
    fn names_map_to_ultralytics() {
        assert_eq!(
            ultralytics_name(&p("model.0.Conv.conv.weight")),
            "model.0.conv.weight"
        );
        assert_eq!(
            ultralytics_name(&p("model.0.Conv.bn.gamma")),
            "model.0.bn.weight"
        );
        assert_eq!(
            ultralytics_name(&p("model.0.Conv.bn.running_var")),
            "model.0.bn.running_var"
        );
        assert_eq!(
            ultralytics_name(&p("model.22.C3k2.m.0.Attn.s1.attn.qkv.conv.weight")),
            "model.22.m.0.1.attn.qkv.conv.weight"
        );
        assert_eq!(
            ultralytics_name(&p("model.23.Detect.one2one_cv3.2.s2.bias")),
            "model.23.one2one_cv3.2.2.bias"
        );
    }
}
