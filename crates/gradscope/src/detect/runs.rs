//! Where data comes from and where a run's files go: dataset resolution (a data.yaml path, a
//! built-in name such as `coco8.yaml`, or `trees`, the embedded NEON tree-crown tiles), the run
//! folder `runs/detect/train{,2,3,…}`, args.yaml, results.csv, weights and the per-epoch report.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::args::DetectArgs;
use super::dataset::DetData;
use super::loss::LossItems;
use super::train::DetectError;
use super::validate::ValResult;
use crate::data::detect::{image_files, load_split, DataYaml};
use crate::diagnose::Diagnosis;
use crate::probe::StepRecord;
use crate::train::History;
use crate::yolo::model::Yolo;

/// The embedded tree-crown tiles (NEON imagery CC0, DeepForest annotations MIT): 42 training and
/// 12 validation tiles of 400×400 px, 1216 boxes, one class.
static TREES_TAR: &[u8] = include_bytes!("../../embedded/trees.tar");

/// COCO's 80 class names, in order.
pub const COCO_NAMES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

/// Built-in dataset yamls: (name, folder under the datasets dir, download URL).
pub const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "coco8.yaml",
        "coco8",
        "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco8.zip",
    ),
    (
        "coco128.yaml",
        "coco128",
        "https://github.com/ultralytics/assets/releases/download/v0.0.0/coco128.zip",
    ),
];

/// `GRADSCOPE_DATASETS`, else `./datasets`.
pub fn datasets_dir() -> PathBuf {
    std::env::var_os("GRADSCOPE_DATASETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("datasets"))
}

fn io(path: &Path, e: impl std::fmt::Display) -> DetectError {
    DetectError::Io(format!("{}: {e}", path.display()))
}

/// Unpacks the embedded tree-crown set into `dir` (via a temporary folder renamed into place).
pub fn unpack_trees(dir: &Path) -> Result<(), DetectError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let tmp = parent.join(format!(".trees.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    tar::Archive::new(TREES_TAR)
        .unpack(&tmp)
        .map_err(|e| io(&tmp, e))?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.join("data.yaml").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(io(dir, e)),
    }
}

fn builtin_yaml(folder: &str, url: &str) -> String {
    let mut s = format!(
        "# built into gradscope\npath: {folder}\ntrain: images/train\nval: images/val\ndownload: {url}\nnames:\n"
    );
    for (i, n) in COCO_NAMES.iter().enumerate() {
        let _ = writeln!(s, "  {i}: {n}");
    }
    s
}

/// Resolves `data=`: an existing file is read as is; `trees` is the embedded set; a built-in
/// name is looked up in the datasets dir and downloaded when missing.
pub fn resolve_data(name: &str, info: &mut dyn FnMut(String)) -> Result<DataYaml, DetectError> {
    let ds = datasets_dir();
    let read = |p: &Path| DataYaml::read(p, &ds).map_err(|e| DetectError::Data(e.to_string()));
    if name == "trees" {
        let dir = ds.join("trees");
        if !dir.join("data.yaml").is_file() {
            info(format!(
                "unpacking the embedded NEON tree-crown set into {}",
                dir.display()
            ));
            unpack_trees(&dir)?;
        }
        return read(&dir.join("data.yaml"));
    }
    let path = Path::new(name);
    if path.is_file() {
        return read(path);
    }
    if let Some((file, folder, url)) = BUILTIN.iter().find(|(n, _, _)| *n == name) {
        std::fs::create_dir_all(&ds).map_err(|e| io(&ds, e))?;
        let yaml = ds.join(file);
        if !yaml.is_file() {
            std::fs::write(&yaml, builtin_yaml(folder, url)).map_err(|e| io(&yaml, e))?;
        }
        let target = ds.join(folder);
        if !target.is_dir() {
            info(format!(
                "{name}: {} not found, downloading {url}",
                target.display()
            ));
            super::download::fetch_zip(url, &ds).map_err(|e| {
                DetectError::Data(format!(
                    "{name}: the data is not in {} and the download failed ({e}). Put the dataset there (images/train, images/val, labels/train, labels/val) or pass data=path/to/{name}",
                    target.display()
                ))
            })?;
        }
        return read(&yaml);
    }
    Err(DetectError::Data(format!(
        "data={name}: no such file, and not a built-in dataset (trees, {})",
        BUILTIN
            .iter()
            .map(|(n, _, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

fn load_one(
    entries: &[PathBuf],
    nc: usize,
    split: &str,
    say: &mut dyn FnMut(bool, String),
) -> Result<DetData, DetectError> {
    let mut files = Vec::new();
    for e in entries {
        files.extend(image_files(e).map_err(|e| DetectError::Data(e.to_string()))?);
    }
    let (samples, report) = load_split(&files, nc);
    for w in &report.warnings {
        say(true, w.clone());
    }
    for (p, why) in &report.skipped {
        say(true, format!("{}: skipped: {why}", p.display()));
    }
    let (data, failed) = DetData::decode(samples);
    for (p, why) in failed {
        say(
            true,
            format!("{}: skipped: cannot decode: {why}", p.display()),
        );
    }
    say(false, report.summary(split));
    Ok(data)
}

/// The training and validation sets of `data`, checked and decoded. `say(warning, line)`.
pub fn load_sets(
    data: &DataYaml,
    say: &mut dyn FnMut(bool, String),
) -> Result<(DetData, DetData), DetectError> {
    let nc = data.names.len();
    let train = load_one(&data.train, nc, "train", say)?;
    let val = load_one(&data.val, nc, "val", say)?;
    Ok((train, val))
}

/// `project/name`, or `name2`, `name3`, … when it exists (unless `exist_ok`).
pub fn new_run_dir(project: &str, name: &str, exist_ok: bool) -> Result<PathBuf, DetectError> {
    let base = Path::new(project);
    let mut dir = base.join(name);
    let mut k = 2;
    while dir.exists() && !exist_ok {
        dir = base.join(format!("{name}{k}"));
        k += 1;
    }
    std::fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    Ok(dir)
}

/// args.yaml with the class names (read back by `predict` and `val` on a checkpoint).
pub fn write_args(dir: &Path, args: &DetectArgs, names: &[String]) -> Result<(), DetectError> {
    let mut s = args.to_yaml();
    s += "names:\n";
    for (i, n) in names.iter().enumerate() {
        let _ = writeln!(s, "  {i}: '{}'", n.replace('\'', "''"));
    }
    let p = dir.join("args.yaml");
    std::fs::write(&p, s).map_err(|e| io(&p, e))
}

/// Saves Ultralytics-named safetensors atomically (temporary file, then rename).
pub fn save_weights(model: &Yolo, path: &Path) -> Result<(), DetectError> {
    crate::yolo::weights::save_ultralytics(model, path).map_err(|e| DetectError::Io(e.to_string()))
}

pub const RESULTS_COLUMNS: &[&str] = &[
    "epoch",
    "time",
    "train/box_loss",
    "train/cls_loss",
    "train/l1_loss",
    "metrics/precision(B)",
    "metrics/recall(B)",
    "metrics/mAP50(B)",
    "metrics/mAP50-95(B)",
    "val/box_loss",
    "val/cls_loss",
    "val/l1_loss",
    "lr/pg0",
    "lr/pg1",
    "lr/pg2",
];

/// results.csv, one row per epoch, flushed as written.
pub struct ResultsCsv {
    path: PathBuf,
    file: File,
    pub rows: Vec<Vec<f64>>,
}

impl ResultsCsv {
    /// A new results.csv in `dir`, keeping the first `keep` rows of the one there (resume).
    pub fn open(dir: &Path, keep: usize) -> Result<Self, DetectError> {
        let path = dir.join("results.csv");
        let mut rows: Vec<Vec<f64>> = Vec::new();
        if keep > 0 {
            let text = std::fs::read_to_string(&path).map_err(|e| io(&path, e))?;
            for line in text.lines().skip(1).take(keep) {
                rows.push(
                    line.split(',')
                        .map(|x| x.trim().parse().unwrap_or(f64::NAN))
                        .collect(),
                );
            }
        }
        let mut file = File::create(&path).map_err(|e| io(&path, e))?;
        writeln!(file, "{}", RESULTS_COLUMNS.join(",")).map_err(|e| io(&path, e))?;
        let mut csv = ResultsCsv {
            path,
            file,
            rows: Vec::new(),
        };
        for r in rows {
            csv.write_row(r)?;
        }
        Ok(csv)
    }

    fn write_row(&mut self, row: Vec<f64>) -> Result<(), DetectError> {
        let text: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, x)| {
                if i == 0 {
                    format!("{x}")
                } else {
                    format!("{x:.6}")
                }
            })
            .collect();
        writeln!(self.file, "{}", text.join(",")).map_err(|e| io(&self.path, e))?;
        self.file.flush().map_err(|e| io(&self.path, e))?;
        self.rows.push(row);
        Ok(())
    }

    pub fn row(
        &mut self,
        epoch: usize,
        time: f64,
        train: &LossItems,
        v: &ValResult,
        lr: [f64; 3],
    ) -> Result<(), DetectError> {
        let row = vec![
            epoch as f64,
            time,
            train.box_,
            train.cls,
            train.l1,
            v.precision,
            v.recall,
            v.coco.map50,
            v.coco.map50_95,
            v.losses.box_,
            v.losses.cls,
            v.losses.l1,
            lr[0],
            lr[1],
            lr[2],
        ];
        self.write_row(row)
    }
}

/// After every epoch: results.png, the gradient-health report (report.html with heatmap and
/// per-layer bars), and validation images with labels and predictions.
#[allow(clippy::too_many_arguments)]
pub fn epoch_report(
    dir: &Path,
    args: &DetectArgs,
    csv: &ResultsCsv,
    hist: &History,
    records: &[StepRecord],
    diagnosis: Option<&Diagnosis>,
    val: &DetData,
    v: &ValResult,
    names: &[String],
) -> Result<(), DetectError> {
    super::plots::results_png(&csv.rows, &dir.join("results.png"))?;
    super::plots::val_batch(val, v, names, args.imgsz, &dir.join("val_batch0_pred.jpg"))?;
    super::plots::pr_curve(v, &dir.join("PR_curve.png"))?;
    super::plots::confusion(v, names, &dir.join("confusion_matrix.png"))?;
    super::plots::gradient_report(dir, args, hist, records, diagnosis)?;
    Ok(())
}
