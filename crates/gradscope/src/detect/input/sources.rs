//! Where data comes from: `data=` resolved to a data.yaml (a path, a built-in name such as
//! `coco8.yaml` found in the datasets folder or downloaded, or `trees`, the embedded NEON tree-crown
//! tiles), and its training and validation splits read, checked and decoded.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::data::detect::{image_files, load_split, DataYaml};
use crate::detect::error::DetectError;
use crate::detect::input::dataset::{DetData, Note};
use crate::detect::input::pixels::Cache;

/// The embedded tree-crown tiles (NEON imagery CC0, DeepForest annotations MIT): 42 training and
/// 12 validation tiles of 400×400 px, 1216 boxes, one class.
static TREES_TAR: &[u8] = include_bytes!("../../../embedded/trees.tar");

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

/// Unpacks the embedded tree-crown set into `dir` (via a temporary folder renamed into place).
pub fn unpack_trees(dir: &Path) -> Result<(), DetectError> {
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| DetectError::io(parent, e))?;
    let tmp = parent.join(format!(".trees.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    tar::Archive::new(TREES_TAR)
        .unpack(&tmp)
        .map_err(|e| DetectError::io(&tmp, e))?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => Ok(()),
        Err(_) if dir.join("data.yaml").is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => Err(DetectError::io(dir, e)),
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

/// A user's data.yaml whose `train`/`val` images are not on disk but which names `download:` (an
/// http(s) URL of a .zip or .tar.gz, as Ultralytics' own yamls do): fetched into the datasets
/// folder `ds` with [`super::download::fetch_archive`]'s limits (streamed to disk, zip-slip and
/// archive-bomb refusals), then read again. Scripts (`download: bash …` or Python) are not run.
pub fn download_missing(
    d: DataYaml,
    file: &Path,
    ds: &Path,
    info: &mut dyn FnMut(String),
) -> Result<DataYaml, DetectError> {
    let Some(missing) = d.train.iter().chain(&d.val).find(|p| !p.exists()) else {
        return Ok(d);
    };
    let Some(url) = d.download.as_deref() else {
        return Ok(d); // the loader names what is missing
    };
    let lower = url.to_ascii_lowercase();
    let web = lower.starts_with("http://") || lower.starts_with("https://");
    if !web || super::download::archive_kind(url).is_none() {
        return Err(DetectError::Data(format!(
            "{}: {} not found, and its download: is not an http(s) URL of a .zip or .tar.gz (gradscope runs no download scripts); put the data at {}",
            file.display(),
            missing.display(),
            d.root.display()
        )));
    }
    info(format!(
        "{}: {} not found, downloading {url} into {}",
        file.display(),
        missing.display(),
        ds.display()
    ));
    super::download::fetch_archive(url, ds).map_err(|source| DetectError::Download {
        name: file.display().to_string(),
        target: d.root.clone(),
        source: Box::new(source),
    })?;
    Ok(DataYaml::read(file, ds)?)
}

/// Resolves `data=`: an existing file is read as is (its `download:` fetched when its images are
/// missing); `trees` is the embedded set; a built-in
/// name is looked up in the datasets dir and downloaded when missing.
/// The built-in dataset `name` names: `coco8.yaml`, or `coco8` as Ultralytics also accepts.
fn builtin(name: &str) -> Option<&'static (&'static str, &'static str, &'static str)> {
    BUILTIN
        .iter()
        .find(|(n, _, _)| *n == name || n.strip_suffix(".yaml") == Some(name))
}

pub fn resolve_data(name: &str, info: &mut dyn FnMut(String)) -> Result<DataYaml, DetectError> {
    let ds = datasets_dir();
    let read = |p: &Path| DataYaml::read(p, &ds).map_err(DetectError::from);
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
        return download_missing(read(path)?, path, &ds, info);
    }
    if path.is_dir() {
        let inside = path.join("data.yaml");
        return Err(DetectError::Data(format!(
            "data={name} is a folder; data= takes a data.yaml{}",
            if inside.is_file() {
                format!(" (this folder has one: data={})", inside.display())
            } else {
                String::new()
            }
        )));
    }
    if let Some((file, folder, url)) = builtin(name) {
        std::fs::create_dir_all(&ds).map_err(|e| DetectError::io(&ds, e))?;
        let yaml = ds.join(file);
        if !yaml.is_file() {
            std::fs::write(&yaml, builtin_yaml(folder, url))
                .map_err(|e| DetectError::io(&yaml, e))?;
        }
        let target = ds.join(folder);
        if !target.is_dir() {
            info(format!(
                "{name}: {} not found, downloading {url}",
                target.display()
            ));
            super::download::fetch_archive(url, &ds).map_err(|source| DetectError::Download {
                name: name.to_string(),
                target: target.clone(),
                source: Box::new(source),
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

/// The validation split only (`gradscope val`), as [`load_sets`] loads it.
pub fn load_val(
    data: &DataYaml,
    cache: Cache,
    say: &mut dyn FnMut(bool, String),
) -> Result<DetData, DetectError> {
    load_one(&data.val, data.names.len(), "val", cache, say)
}

fn load_one(
    entries: &[PathBuf],
    nc: usize,
    split: &str,
    cache: Cache,
    say: &mut dyn FnMut(bool, String),
) -> Result<DetData, DetectError> {
    let mut files = Vec::new();
    for e in entries {
        files.extend(image_files(e)?);
    }
    let (samples, mut report) = load_split(&files, nc);
    for w in report.notices.iter().chain(&report.warnings) {
        say(true, w.clone());
    }
    for (p, why) in &report.skipped {
        say(true, format!("{}: skipped: {why}", p.display()));
    }
    let labels: std::collections::HashMap<PathBuf, usize> = samples
        .iter()
        .map(|s| (s.image.clone(), s.labels.len()))
        .collect();
    let decoded = DetData::decode(samples, cache);
    for (p, why) in decoded.failed {
        say(
            true,
            format!("{}: skipped: cannot decode: {why}", p.display()),
        );
        let n = labels.get(&p).copied().unwrap_or(0);
        report.images -= 1;
        report.instances -= n;
        report.backgrounds -= usize::from(n == 0);
        report.skipped.push((p, format!("cannot decode: {why}")));
    }
    say(false, report.summary(split));
    for note in decoded.notes {
        let (warning, line) = match note {
            Note::Info(m) => (false, m),
            Note::Warning(m) => (true, m),
        };
        say(warning, format!("{split}: {line}"));
    }
    Ok(decoded.data)
}

/// The training and validation sets of `data`, checked and decoded. `say(warning, line)`.
pub fn load_sets(
    data: &DataYaml,
    cache: Cache,
    say: &mut dyn FnMut(bool, String),
) -> Result<(DetData, DetData), DetectError> {
    let nc = data.names.len();
    let train = load_one(&data.train, nc, "train", cache, say)?;
    let val = load_one(&data.val, nc, "val", cache, say)?;
    Ok((train, val))
}

#[cfg(test)]
mod tests {
    use super::builtin;

    #[test]
    fn built_in_sets_are_named_with_or_without_yaml() {
        assert_eq!(builtin("coco8").map(|b| b.1), Some("coco8"));
        assert_eq!(builtin("coco8.yaml").map(|b| b.1), Some("coco8"));
        assert_eq!(builtin("coco128").map(|b| b.1), Some("coco128"));
        assert!(builtin("coco").is_none() && builtin("coco8.yml").is_none());
    }
}
