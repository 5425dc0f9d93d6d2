//! Detection datasets in Ultralytics' format (issue 5, first part): a `data.yaml` naming the
//! image sets and classes, one `.txt` label file per image with rows `class cx cy w h`
//! (normalised), found by replacing the last `/images/` of the image path with `/labels/`.
//! Images and labels are checked as Ultralytics checks them; what is dropped is said, with file
//! and line.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::DataError;

const IMAGE_EXTS: &[&str] = &["jpg", "jpeg", "png", "bmp", "webp", "tif", "tiff"];

/// A parsed `data.yaml`.
#[derive(Clone, Debug, PartialEq)]
pub struct DataYaml {
    /// The dataset root (`path:`), resolved.
    pub root: PathBuf,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub test: Vec<PathBuf>,
    pub names: Vec<String>,
    pub download: Option<String>,
}

fn fmt_err(path: &Path, msg: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        msg,
    }
}

fn entries(y: &Yaml, root: &Path, field: &str, file: &Path) -> Result<Vec<PathBuf>, DataError> {
    let one = |v: &Yaml| -> Result<PathBuf, DataError> {
        let s = v
            .as_str()
            .ok_or_else(|| fmt_err(file, format!("{field}: expected a path or a list of paths")))?;
        Ok(root.join(s))
    };
    match y {
        Yaml::BadValue | Yaml::Null => Ok(Vec::new()),
        Yaml::Array(a) => a.iter().map(one).collect(),
        other => Ok(vec![one(other)?]),
    }
}

impl DataYaml {
    /// Reads `file`. `path:` is relative to the yaml's folder, else to `datasets_dir`.
    pub fn read(file: &Path, datasets_dir: &Path) -> Result<Self, DataError> {
        let text = std::fs::read_to_string(file).map_err(|source| DataError::Io {
            path: file.to_path_buf(),
            source,
        })?;
        let docs = YamlLoader::load_from_str(&text)
            .map_err(|e| fmt_err(file, format!("not valid YAML: {e}")))?;
        let doc = docs
            .first()
            .ok_or_else(|| fmt_err(file, "empty file".into()))?;
        let here = file.parent().unwrap_or(Path::new("."));
        let root = match doc["path"].as_str() {
            Some(p) if Path::new(p).is_absolute() => PathBuf::from(p),
            Some(p) if here.join(p).exists() => here.join(p),
            Some(p) => datasets_dir.join(p),
            None => here.to_path_buf(),
        };
        let names: Vec<String> = match &doc["names"] {
            Yaml::Array(a) => a
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{n:?}"))
                })
                .collect(),
            Yaml::Hash(h) => {
                let mut pairs: Vec<(i64, String)> = Vec::new();
                for (k, v) in h {
                    let i = k.as_i64().ok_or_else(|| {
                        fmt_err(file, format!("names: key {k:?} is not a class index"))
                    })?;
                    pairs.push((i, v.as_str().unwrap_or_default().to_string()));
                }
                pairs.sort();
                if pairs.iter().enumerate().any(|(j, (i, _))| *i != j as i64) {
                    return Err(fmt_err(
                        file,
                        "names: class indices must be 0, 1, 2, … without gaps".into(),
                    ));
                }
                pairs.into_iter().map(|(_, n)| n).collect()
            }
            _ => {
                return Err(fmt_err(
                    file,
                    "names: expected a list or a map of class names".into(),
                ))
            }
        };
        if names.is_empty() {
            return Err(fmt_err(file, "names: no classes".into()));
        }
        for key in ["train", "val"] {
            if matches!(doc[key], Yaml::BadValue | Yaml::Null) {
                return Err(fmt_err(
                    file,
                    format!("no `{key}:` key: give the {key} images as a folder, a .txt list or a list (e.g. {key}: images/{key})"),
                ));
            }
        }
        Ok(DataYaml {
            train: entries(&doc["train"], &root, "train", file)?,
            val: entries(&doc["val"], &root, "val", file)?,
            test: entries(&doc["test"], &root, "test", file)?,
            root,
            names,
            download: doc["download"].as_str().map(str::to_string),
        })
    }
}

/// Images under a folder (recursively) or listed in a `.txt` file (paths relative to its folder).
pub fn image_files(entry: &Path) -> Result<Vec<PathBuf>, DataError> {
    let io = |source| DataError::Io {
        path: entry.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    if entry.is_dir() {
        let mut stack = vec![entry.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).map_err(io)? {
                let p = e.map_err(io)?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p
                    .extension()
                    .and_then(|x| x.to_str())
                    .is_some_and(|x| IMAGE_EXTS.contains(&x.to_ascii_lowercase().as_str()))
                {
                    out.push(p);
                }
            }
        }
    } else if entry.extension().is_some_and(|x| x == "txt") && entry.is_file() {
        let base = entry.parent().unwrap_or(Path::new("."));
        let text = std::fs::read_to_string(entry).map_err(io)?;
        out.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| base.join(l.trim_start_matches("./"))),
        );
    } else {
        return Err(DataError::Missing(format!(
            "{} does not exist (expected an image folder or a .txt list of images)",
            entry.display()
        )));
    }
    out.sort();
    Ok(out)
}

/// The label file of an image: the last `/images/` becomes `/labels/`, the extension `.txt`.
pub fn label_path(image: &Path) -> PathBuf {
    let s = image.to_string_lossy();
    let swapped = match s.rfind("/images/") {
        Some(i) => format!("{}/labels/{}", &s[..i], &s[i + 8..]),
        None => s.to_string(),
    };
    Path::new(&swapped).with_extension("txt")
}

/// One box: class and normalised centre x, y, width, height.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Label {
    pub class: usize,
    pub cx: f32,
    pub cy: f32,
    pub w: f32,
    pub h: f32,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub image: PathBuf,
    pub width: u32,
    pub height: u32,
    pub labels: Vec<Label>,
}

/// What a check of one split found.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub images: usize,
    pub instances: usize,
    pub backgrounds: usize,
    /// (image, why) for images that could not be used.
    pub skipped: Vec<(PathBuf, String)>,
    /// One line per dropped label row: `file:line: why`.
    pub warnings: Vec<String>,
    /// Warnings about the split as a whole (no label file found at all).
    pub notices: Vec<String>,
}

impl Report {
    pub fn summary(&self, split: &str) -> String {
        format!(
            "{split}: {} images, {} labels, {} backgrounds, {} skipped, {} label rows dropped",
            self.images,
            self.instances,
            self.backgrounds,
            self.skipped.len(),
            self.warnings.len()
        )
    }
}

/// Reads and checks the labels of `images` for `nc` classes.
pub fn load_split(images: &[PathBuf], nc: usize) -> (Vec<Sample>, Report) {
    let mut samples = Vec::new();
    let mut rep = Report::default();
    let mut label_files = 0usize;
    for img in images {
        let (width, height) = match image::image_dimensions(img) {
            Ok((w, h)) if w >= 10 && h >= 10 => (w, h),
            Ok((w, h)) => {
                rep.skipped.push((
                    img.clone(),
                    format!("image size {w}×{h} is below 10 pixels"),
                ));
                continue;
            }
            Err(e) => {
                rep.skipped
                    .push((img.clone(), format!("unreadable image: {e}")));
                continue;
            }
        };
        let lp = label_path(img);
        let mut labels = Vec::new();
        let text = match std::fs::read_to_string(&lp) {
            Ok(t) => {
                label_files += 1;
                Some(t)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                // a label file that exists but cannot be read is not a background image
                label_files += 1;
                rep.skipped.push((
                    img.clone(),
                    format!("label file {} cannot be read: {e}", lp.display()),
                ));
                continue;
            }
        };
        if let Some(text) = text {
            // a UTF-8 byte-order mark would make the first row's class unreadable
            let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
            let mut seen = HashSet::new();
            for (i, line) in text.lines().enumerate() {
                let at = format!("{}:{}", lp.display(), i + 1);
                let cols: Vec<&str> = line.split_whitespace().collect();
                if cols.is_empty() {
                    continue;
                }
                if cols.len() != 5 {
                    rep.warnings.push(format!(
                        "{at}: expected 5 columns (class cx cy w h), found {}",
                        cols.len()
                    ));
                    continue;
                }
                let vals: Result<Vec<f32>, _> = cols.iter().map(|c| c.parse::<f32>()).collect();
                let Ok(v) = vals else {
                    rep.warnings.push(format!("{at}: not numbers: {line}"));
                    continue;
                };
                if v[0] < 0.0 || v[0].fract() != 0.0 || v[0] as usize >= nc {
                    rep.warnings.push(format!(
                        "{at}: class {} is not an index below nc = {nc}",
                        cols[0]
                    ));
                    continue;
                }
                if v[1..].iter().any(|x| !(0.0..=1.0).contains(x)) {
                    rep.warnings.push(format!(
                        "{at}: coordinates must be normalised to [0, 1]: {line}"
                    ));
                    continue;
                }
                if !seen.insert(cols.join(" ")) {
                    rep.warnings.push(format!("{at}: duplicate row dropped"));
                    continue;
                }
                labels.push(Label {
                    class: v[0] as usize,
                    cx: v[1],
                    cy: v[2],
                    w: v[3],
                    h: v[4],
                });
            }
        }
        rep.images += 1;
        rep.instances += labels.len();
        if labels.is_empty() {
            rep.backgrounds += 1;
        }
        samples.push(Sample {
            image: img.clone(),
            width,
            height,
            labels,
        });
    }
    if label_files == 0 {
        if let Some(first) = images.first() {
            let dir = label_path(first);
            let dir = dir.parent().unwrap_or(Path::new("."));
            rep.notices.push(format!(
                "no label file found for any of the {} images (looked in {} and the like: labels/ beside images/, same file name with .txt): every image is a background",
                images.len(),
                dir.display()
            ));
        }
    }
    (samples, rep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_paths_swap_the_last_images_folder() {
        assert_eq!(
            label_path(Path::new("/d/images/train/a.jpg")),
            PathBuf::from("/d/labels/train/a.txt")
        );
        assert_eq!(
            label_path(Path::new("/images/x/images/b.png")),
            PathBuf::from("/images/x/labels/b.txt")
        );
    }

    /// A byte-order mark does not cost the first row; a label file that cannot be read skips its
    /// image (it is not a background); a split without any label file is warned about; a yaml
    /// without `train:` names the key.
    #[test]
    fn bom_unreadable_and_missing_labels_are_told() {
        let d = tmp("bom");
        for n in ["a", "b"] {
            image::RgbImage::new(32, 24)
                .save(d.join(format!("images/train/{n}.png")))
                .unwrap();
        }
        std::fs::write(d.join("labels/train/a.txt"), "\u{feff}0 0.5 0.5 0.2 0.2\n").unwrap();
        std::fs::write(d.join("labels/train/b.txt"), [0xff, 0xfe, 0x00, 0x9f]).unwrap();
        let files = image_files(&d.join("images/train")).unwrap();
        let (samples, rep) = load_split(&files, 1);
        assert_eq!(
            (rep.images, rep.instances, rep.skipped.len()),
            (1, 1, 1),
            "{rep:?}"
        );
        assert_eq!(samples[0].labels.len(), 1, "the BOM row is kept");
        assert!(rep.skipped[0].1.contains("cannot be read"), "{rep:?}");
        std::fs::remove_dir_all(d.join("labels")).unwrap();
        let (_, rep) = load_split(&files, 1);
        assert!(
            rep.notices
                .iter()
                .any(|w| w.contains("no label file found"))
                && rep.warnings.is_empty(),
            "{rep:?}"
        );
        std::fs::write(d.join("data.yaml"), "val: images/train\nnames: [a]\n").unwrap();
        let e = DataYaml::read(&d.join("data.yaml"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no `train:` key"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("gradscope-det-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("images/train")).unwrap();
        std::fs::create_dir_all(d.join("labels/train")).unwrap();
        d
    }

    #[test]
    fn data_yaml_with_a_names_map_and_checked_labels() {
        let d = tmp("a");
        std::fs::write(
            d.join("data.yaml"),
            "path: .\ntrain: images/train\nval: [images/train]\nnames:\n  1: car\n  0: person\n",
        )
        .unwrap();
        image::RgbImage::new(32, 24)
            .save(d.join("images/train/ok.png"))
            .unwrap();
        image::RgbImage::new(32, 24)
            .save(d.join("images/train/bg.png"))
            .unwrap();
        std::fs::write(d.join("images/train/broken.jpg"), b"not a jpeg").unwrap();
        std::fs::write(
            d.join("labels/train/ok.txt"),
            "0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n2 0.1 0.1 0.1 0.1\n0 1.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n",
        )
        .unwrap();
        let y = DataYaml::read(&d.join("data.yaml"), Path::new("/nonexistent")).unwrap();
        assert_eq!(y.names, vec!["person", "car"]);
        assert_eq!(y.val.len(), 1);
        let files = image_files(&y.train[0]).unwrap();
        assert_eq!(files.len(), 3);
        let (samples, rep) = load_split(&files, y.names.len());
        assert_eq!(
            (
                rep.images,
                rep.instances,
                rep.backgrounds,
                rep.skipped.len()
            ),
            (2, 2, 1, 1),
            "{rep:?}"
        );
        assert!(rep.skipped[0].0.ends_with("broken.jpg"));
        let w = rep.warnings.join("\n");
        for needle in [
            "ok.txt:2: expected 5 columns",
            "ok.txt:3: class 2",
            "ok.txt:4: coordinates",
            "ok.txt:5: duplicate",
        ] {
            assert!(w.contains(needle), "{needle} missing from:\n{w}");
        }
        let ok = samples
            .iter()
            .find(|s| s.image.ends_with("ok.png"))
            .unwrap();
        assert_eq!((ok.width, ok.height), (32, 24));
        assert_eq!(
            ok.labels[1],
            Label {
                class: 1,
                cx: 0.3,
                cy: 0.3,
                w: 0.1,
                h: 0.1
            }
        );
        assert!(rep
            .summary("train")
            .contains("2 images, 2 labels, 1 backgrounds, 1 skipped, 4 label rows dropped"));
        std::fs::remove_dir_all(&d).ok();
    }

    #[test]
    fn missing_sets_and_bad_yaml_are_named() {
        let d = tmp("b");
        std::fs::write(
            d.join("data.yaml"),
            "train: nowhere\nval: nowhere\nnames: [a]\n",
        )
        .unwrap();
        let y = DataYaml::read(&d.join("data.yaml"), Path::new("/x")).unwrap();
        let e = image_files(&y.train[0]).unwrap_err().to_string();
        assert!(e.contains("nowhere") && e.contains("does not exist"), "{e}");
        std::fs::write(d.join("bad.yaml"), "names: {a: b}\n").unwrap();
        let e = DataYaml::read(&d.join("bad.yaml"), Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.yaml") && e.contains("names"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
