//! The run folder `runs/detect/train{,2,3,…}`: creating it, args.yaml (written and read back),
//! the checkpoints and results.csv. Plots in [`plots`], [`curves`] and [`batches`] (boxes
//! drawn by [`boxes`]), the resume state in [`resume`], the writer that puts an epoch's files on
//! disk behind the training in [`behind`].

pub mod batches;
pub mod behind;
pub mod boxes;
pub mod curves;
pub mod plots;
pub mod resume;

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::eval::validate::ValResult;
use crate::detect::objective::loss::LossItems;

/// Removes `*.tmp` files left in `dir` by a run killed while writing a checkpoint.
pub fn remove_stale_tmp(dir: &Path) -> Result<(), DetectError> {
    for e in std::fs::read_dir(dir).map_err(|e| DetectError::io(dir, e))? {
        let p = e.map_err(|e| DetectError::io(dir, e))?.path();
        if p.extension().is_some_and(|x| x == "tmp") && p.is_file() {
            std::fs::remove_file(&p).map_err(|e| DetectError::io(&p, e))?;
        }
    }
    Ok(())
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
    std::fs::create_dir_all(&dir).map_err(|e| DetectError::io(&dir, e))?;
    Ok(dir)
}

/// args.yaml with the class names (read back by `predict` and `val` on a checkpoint).
pub fn write_args(dir: &Path, args: &DetectArgs, names: &[String]) -> Result<(), DetectError> {
    let mut s = args.args_yaml();
    s += "names:\n";
    for (i, n) in names.iter().enumerate() {
        let _ = writeln!(s, "  {i}: '{}'", n.replace('\'', "''"));
    }
    let p = dir.join("args.yaml");
    std::fs::write(&p, s).map_err(|e| DetectError::io(&p, e))
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
    /// A new results.csv in `dir`, keeping the first `keep` rows of the one there (resume): the
    /// kept rows stay as they were written, and the file is replaced atomically, so a crash here
    /// loses nothing.
    pub fn open(dir: &Path, keep: usize) -> Result<Self, DetectError> {
        let path = dir.join("results.csv");
        let io = |e| DetectError::io(&path, e);
        let mut text = RESULTS_COLUMNS.join(",") + "\n";
        let mut rows: Vec<Vec<f64>> = Vec::new();
        if keep > 0 {
            let old = std::fs::read_to_string(&path).map_err(io)?;
            for line in old.lines().skip(1).take(keep) {
                let row: Vec<f64> = line
                    .split(',')
                    .map(|x| x.trim().parse().unwrap_or(f64::NAN))
                    .collect();
                if row.len() != RESULTS_COLUMNS.len() {
                    return Err(DetectError::invalid(
                        &path,
                        format!(
                            "row {} has {} columns, not {}",
                            rows.len() + 1,
                            row.len(),
                            RESULTS_COLUMNS.len()
                        ),
                    ));
                }
                text += line;
                text.push('\n');
                rows.push(row);
            }
            if rows.len() < keep {
                return Err(DetectError::invalid(
                    &path,
                    format!("{} rows, the resume state has {keep} epochs", rows.len()),
                ));
            }
        }
        crate::atomic::write(&path, text.as_bytes()).map_err(io)?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io)?;
        Ok(ResultsCsv { path, file, rows })
    }

    /// Adds an epoch's row; the line for the file comes back as a [`CsvLine`] to write (the
    /// trainer hands it to its writer, in order with the checkpoints).
    pub fn row(
        &mut self,
        epoch: usize,
        time: f64,
        train: &LossItems,
        v: &ValResult,
        lr: [f64; 3],
    ) -> Result<CsvLine, DetectError> {
        let row = vec![
            epoch as f64,
            time,
            train.box_,
            train.cls,
            train.l1,
            v.metrics.p,
            v.metrics.r,
            v.metrics.map50,
            v.metrics.map50_95,
            v.losses.box_,
            v.losses.cls,
            v.losses.l1,
            lr[0],
            lr[1],
            lr[2],
        ];
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
        let file = self
            .file
            .try_clone()
            .map_err(|e| DetectError::io(&self.path, e))?;
        self.rows.push(row);
        Ok(CsvLine {
            path: self.path.clone(),
            file,
            text: text.join(",") + "\n",
        })
    }
}

/// One results.csv row's line, to append ([`ResultsCsv::row`]).
pub struct CsvLine {
    path: PathBuf,
    file: File,
    text: String,
}

impl CsvLine {
    /// Appends the line and flushes it.
    pub fn write(mut self) -> Result<(), DetectError> {
        let io = |e| DetectError::io(&self.path, e);
        self.file.write_all(self.text.as_bytes()).map_err(io)?;
        self.file.flush().map_err(io)
    }
}

/// The run folder of a checkpoint `<run>/weights/x.safetensors`.
pub fn run_of(weights: &Path) -> Result<&Path, DetectError> {
    weights
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| DetectError::Args(format!("{}: not inside a run folder", weights.display())))
}

/// Reads a run's `args.yaml`: its training arguments and class names.
pub fn run_args(run: &Path) -> Result<(DetectArgs, Vec<String>), DetectError> {
    let file = run.join("args.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| {
        DetectError::Args(format!(
            "{}: {e} (a checkpoint is read with the args.yaml of its run, <run>/weights/../args.yaml)",
            file.display()
        ))
    })?;
    let docs = YamlLoader::load_from_str(&text)
        .map_err(|e| DetectError::Args(format!("{}: not valid YAML: {e}", file.display())))?;
    let doc = docs.first().cloned().unwrap_or(Yaml::Null);
    let mut args = DetectArgs::default();
    let mut names = Vec::new();
    if let Yaml::Hash(h) = &doc {
        for (k, v) in h {
            let Some(k) = k.as_str() else { continue };
            match (k, v) {
                ("names", Yaml::Hash(m)) => {
                    let mut pairs: Vec<(i64, String)> = m
                        .iter()
                        .filter_map(|(i, n)| Some((i.as_i64()?, n.as_str()?.to_string())))
                        .collect();
                    pairs.sort();
                    names = pairs.into_iter().map(|(_, n)| n).collect();
                }
                ("task", _) => {}
                (k, v) => {
                    let s = match v {
                        Yaml::Null => "null".to_string(),
                        Yaml::String(s) => s.clone(),
                        Yaml::Integer(i) => i.to_string(),
                        Yaml::Real(r) => r.clone(),
                        Yaml::Boolean(b) => b.to_string(),
                        _ => continue,
                    };
                    args.set(k, &s, crate::settings::Command::Train)
                        .map_err(|e| DetectError::invalid(&file, e))?;
                }
            }
        }
    }
    if names.is_empty() {
        return Err(DetectError::Args(format!(
            "{}: no class names",
            file.display()
        )));
    }
    Ok((args, names))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Command;

    /// A resumed run reads back exactly the settings it was started with: every key, including
    /// those that only shape the run folder (plots, project, name).
    #[test]
    fn args_yaml_gives_back_every_setting() {
        let dir = std::env::temp_dir().join(format!("gradscope-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let words: Vec<String> = [
            "plots=false",
            "project=my runs: 2",
            "name=it's",
            "exist_ok=true",
            "lr0=0.02",
            "clip_norm=none",
            "conf=0.3",
            "optimizer=SGD",
            "act=relu",
            "hsv_v=0.25",
            "source=img.jpg",
            "resume=runs/detect/train",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let args = DetectArgs::parse(DetectArgs::default(), &words, Command::Train).unwrap();
        let names = vec!["tree".to_string(), "a: b".to_string()];
        write_args(&dir, &args, &names).unwrap();
        let (back, back_names) = run_args(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(back, args);
        assert_eq!(back_names, names);
        assert!(!back.plots);
    }
}
