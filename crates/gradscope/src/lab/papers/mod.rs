//! The classic results on vanishing and exploding gradients, reproduced: `gradscope lab <paper>`
//! trains the paper's comparison (scaled to a laptop CPU) with the probe on, prints the paper's
//! claims beside our measurements with whether they agree, and draws the paper's figure from
//! our own numbers. Each paper's page in `docs/labs/` says what it claims, its setup, what we
//! changed, and where we differ.

pub mod glorot2010;
pub mod he2015;
pub mod he2016;
pub mod ioffe2015;
pub mod pascanu2013;
pub mod saxe2014;
pub mod schoenholz2017;

use std::path::PathBuf;

use serde::Serialize;

use super::create_dir;
use super::mlp::{Bench, DataSource, LabError, LabEvent, VariantOutcome};
use crate::activation::Activation;
use crate::data::{self, Dataset};
use crate::diagnose::Diagnosis;
use crate::nn::init::Init;
use crate::nn::mlp::MlpConfig;
use crate::probe::{ProbeConfig, StepRecord};
use crate::report::html::{self, Table};
use crate::report::RunView;
use crate::train::{History, OptimizerKind, TrainConfig};

/// One reproducible paper.
pub struct Paper {
    /// Its name on the command line: `gradscope lab <name>`.
    pub name: &'static str,
    /// Authors, year, title.
    pub cite: &'static str,
    /// What it shows, in a line.
    pub claim: &'static str,
    /// `Some(what)`: the lab makes its own data (`what`), and the data keys do not apply.
    pub own_data: Option<&'static str>,
    /// Runs it.
    pub run: RunPaper,
}

/// How a paper lab runs: its settings, and where it reports progress.
pub type RunPaper = fn(&PaperLab, &mut dyn FnMut(LabEvent)) -> Result<PaperOutcome, LabError>;

/// Every paper lab, in `gradscope lab list` order.
pub const PAPERS: &[Paper] = &[
    glorot2010::PAPER,
    he2015::PAPER,
    he2016::PAPER,
    ioffe2015::PAPER,
    pascanu2013::PAPER,
    saxe2014::PAPER,
    schoenholz2017::PAPER,
];

/// Other names a paper lab answers to: the second paper a lab reproduces.
const ALIASES: &[(&str, &str)] = &[("pennington2017", "saxe2014")];

/// The paper lab called `name` (or by an alias: `pennington2017` is `saxe2014`).
pub fn find(name: &str) -> Option<&'static Paper> {
    let name = ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map_or(name, |(_, lab)| lab);
    PAPERS.iter().find(|p| p.name == name)
}

/// Whether `key` chooses the data set (`data`, `data_dir`, `limit`).
pub fn is_data_key(key: &str) -> bool {
    DataSource::KEYS.iter().any(|(k, _)| *k == key)
}

/// The keys every paper lab takes.
pub const KEYS: &[(&str, &str)] = &[
    (
        "quick",
        "true | false: a smaller version in ≤ 2 minutes on 2 cores (default false: ≤ 20 minutes)",
    ),
    ("seed", "integer ≥ 0: weights and batch order (default 0)"),
    DataSource::KEYS[0],
    DataSource::KEYS[1],
    DataSource::KEYS[2],
    ("project", "folder for run outputs (default runs)"),
    super::DEVICE_KEY,
];

/// What a paper lab is told.
#[derive(Clone, Debug)]
pub struct PaperLab {
    pub quick: bool,
    pub seed: u64,
    pub data: DataSource,
    pub project: PathBuf,
    pub device: crate::devices::DeviceSpec,
}

impl Default for PaperLab {
    fn default() -> Self {
        PaperLab {
            quick: false,
            seed: 0,
            data: DataSource::Digits,
            project: PathBuf::from("runs"),
            device: crate::devices::DeviceSpec::Cpu,
        }
    }
}

impl PaperLab {
    /// Applies a `key=value` argument. `Ok(false)`: unknown key.
    pub fn set(&mut self, key: &str, v: &str) -> Result<bool, String> {
        match key {
            "quick" => self.quick = crate::settings::value(key, v, crate::settings::any)?,
            "seed" => {
                self.seed = v
                    .parse()
                    .map_err(|_| format!("seed={v}: expected a whole number ≥ 0"))?
            }
            "project" => self.project = PathBuf::from(v),
            "device" => self.device = super::lab_device(v)?,
            _ => return self.data.set(key, v),
        }
        Ok(true)
    }
}

/// One line of a paper lab's verdict: what the paper says, what we measured, and whether the
/// measurement supports it (decided by a rule stated in the lab's code and page).
#[derive(Clone, Debug, Serialize)]
pub struct Claim {
    pub claim: String,
    pub paper: String,
    pub ours: String,
    pub agree: bool,
}

/// One run of a paper lab, as its report shows it.
pub struct PaperRun {
    pub name: String,
    /// `key=value` settings that define the run.
    pub settings: String,
    pub history: History,
    pub records: Vec<StepRecord>,
    pub diagnosis: Option<Diagnosis>,
}

impl From<VariantOutcome> for PaperRun {
    fn from(v: VariantOutcome) -> Self {
        PaperRun {
            settings: v.settings.describe(),
            name: v.name,
            history: v.history,
            records: v.records,
            diagnosis: v.diagnosis,
        }
    }
}

/// What a paper lab produced.
pub struct PaperOutcome {
    pub dir: PathBuf,
    pub report: PathBuf,
    pub data: String,
    pub claims: Vec<Claim>,
    /// The runs its report shows.
    pub runs: Vec<PaperRun>,
}

impl PaperOutcome {
    /// How many claims our measurements support.
    pub fn agreed(&self) -> usize {
        self.claims.iter().filter(|c| c.agree).count()
    }
}

/// The claims as the console and the report show them.
pub fn claims_table(claims: &[Claim]) -> Table {
    Table {
        columns: ["claim", "paper", "ours", "agree?"]
            .iter()
            .map(|c| c.to_string())
            .collect(),
        rows: claims
            .iter()
            .map(|c| {
                let agree = if c.agree { "yes" } else { "no" };
                vec![
                    c.claim.clone(),
                    c.paper.clone(),
                    c.ours.clone(),
                    agree.into(),
                ]
            })
            .collect(),
    }
}

/// The claims as a console table: each cell wrapped to its column's width, so that a claim and
/// its evidence read side by side in 120 columns.
pub fn claims_text(claims: &[Claim]) -> String {
    const WIDTHS: [usize; 4] = [30, 38, 38, 6];
    let table = claims_table(claims);
    let mut out = String::new();
    let mut row = |cells: &[String]| {
        let wrapped: Vec<Vec<String>> = cells.iter().zip(WIDTHS).map(|(c, w)| wrap(c, w)).collect();
        let lines = wrapped.iter().map(Vec::len).max().unwrap_or(1);
        for i in 0..lines {
            let cols: Vec<String> = wrapped
                .iter()
                .zip(WIDTHS)
                .map(|(c, w)| {
                    let t = c.get(i).map_or("", String::as_str);
                    format!("{t}{}", " ".repeat(w.saturating_sub(t.chars().count())))
                })
                .collect();
            out.push_str(cols.join(" | ").trim_end());
            out.push('\n');
        }
    };
    row(&table.columns);
    row(&WIDTHS.map(|w| "-".repeat(w)));
    for r in &table.rows {
        row(r);
    }
    out
}

/// `text` broken at spaces into lines of at most `width` characters (a longer word on a line
/// of its own).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = vec![String::new()];
    for word in text.split_whitespace() {
        let line = lines.last_mut().expect("one line");
        let len = line.chars().count();
        if len > 0 && len + 1 + word.chars().count() > width {
            lines.push(word.to_string());
        } else {
            if len > 0 {
                line.push(' ');
            }
            line.push_str(word);
        }
    }
    lines
}

/// A paper lab's data and folder.
pub(crate) struct Setup {
    pub all: Dataset,
    pub train: Dataset,
    pub val: Dataset,
    pub dir: PathBuf,
}

impl Setup {
    /// Selects the device, loads and standardises the data (a fifth held out), and makes the
    /// run folder `<project>/<paper>/lab…`.
    pub fn new(lab: &PaperLab, paper: &str) -> Result<Setup, LabError> {
        let dir = Setup::start(lab, paper)?;
        let all = lab.data.load()?;
        let (train, val) = data::prepare(&all, 0.2, 0);
        Ok(Setup {
            all,
            train,
            val,
            dir,
        })
    }

    /// For a lab that makes its own data (`name` says what): selects the device and makes the
    /// run folder; no data set is loaded.
    pub fn own_data(lab: &PaperLab, paper: &str, name: &str) -> Result<Setup, LabError> {
        let dir = Setup::start(lab, paper)?;
        let empty = Dataset {
            name: name.to_string(),
            x: Vec::new(),
            y: Vec::new(),
            features: 0,
            classes: 0,
        };
        Ok(Setup {
            train: empty.clone(),
            val: empty.clone(),
            all: empty,
            dir,
        })
    }

    /// The data in words: "digits (1437 train / 360 val)".
    pub fn data_text(&self) -> String {
        format!(
            "{} ({} train / {} val)",
            self.all.name,
            self.train.len(),
            self.val.len()
        )
    }

    /// Selects the lab's device and makes its run folder `<project>/<paper>/lab…`.
    fn start(lab: &PaperLab, paper: &str) -> Result<PathBuf, LabError> {
        crate::devices::select(&lab.device)?;
        let dir = super::next_run_dir(&lab.project.join(paper), "lab");
        create_dir(&dir)?;
        Ok(dir)
    }

    /// Where the variants train, with the probe every `every` steps.
    pub fn bench<'a>(&'a self, probe: &'a ProbeConfig) -> Bench<'a> {
        Bench {
            all: &self.all,
            train: &self.train,
            val: &self.val,
            probe,
            dir: &self.dir,
        }
    }

    /// Writes the report (the claims, the figures, each run's diagnosis) and
    /// `claims.json`.
    pub fn finish(
        self,
        paper: &Paper,
        intro: &str,
        claims: Vec<Claim>,
        runs: Vec<PaperRun>,
        images: &[(&str, &str)],
    ) -> Result<PaperOutcome, LabError> {
        let report = self.dir.join("report.html");
        let title = format!("gradscope lab {} — {}", paper.name, paper.cite);
        let views: Vec<RunView> = runs
            .iter()
            .map(|r| RunView {
                name: &r.name,
                settings: r.settings.clone(),
                records: &r.records,
                history: &r.history,
                diagnosis: r.diagnosis.as_ref(),
            })
            .collect();
        html::write(
            &report,
            &title,
            intro,
            &claims_table(&claims),
            &views,
            images,
        )?;
        super::write_json(
            &self.dir.join("claims.json"),
            &serde_json::json!({
                "paper": paper.name, "cite": paper.cite, "data": self.all.name,
                "claims": claims,
            }),
        )?;
        Ok(PaperOutcome {
            dir: self.dir,
            report,
            data: self.all.name,
            claims,
            runs,
        })
    }
}

/// A plain MLP of `depth` linear layers × `width` with `act` and `init`, weights seeded by
/// `seed`; the other switches off.
pub(crate) fn net(depth: usize, width: usize, act: Activation, init: Init, seed: u64) -> MlpConfig {
    let mut model = MlpConfig::new(0, 0);
    model.depth = depth;
    model.width = width;
    model.act = act;
    model.init = init;
    model.seed = seed;
    model
}

/// Training by `optimizer` at `lr` with batches of `batch` for `epochs`, batch order seeded by
/// `seed`; no clipping, the default NaN recovery.
pub(crate) fn training(
    optimizer: OptimizerKind,
    lr: f64,
    batch: usize,
    epochs: usize,
    seed: u64,
) -> TrainConfig {
    TrainConfig {
        optimizer,
        lr,
        batch,
        epochs,
        seed,
        ..TrainConfig::default()
    }
}

/// The last epoch's mean training loss of a run.
pub(crate) fn final_loss(o: &VariantOutcome) -> f64 {
    o.history.epochs.last().map_or(f64::NAN, |e| e.train_loss)
}

/// The last epoch's validation metric.
pub(crate) fn final_metric(h: &History) -> f64 {
    h.epochs.last().map_or(f64::NAN, |e| e.val_metric)
}

/// The first step at which the mean loss of the 10 steps before it is below `level`.
pub(crate) fn steps_to(h: &History, level: f64) -> Option<usize> {
    let l = &h.step_loss;
    (10..=l.len()).find(|&i| l[i - 10..i].iter().sum::<f64>() / 10.0 < level)
}

/// A probe on every `every`-th step.
pub(crate) fn probe_every(every: usize) -> ProbeConfig {
    ProbeConfig {
        enabled: true,
        every,
        dead_window: 8,
    }
}

/// p-th percentile (0–100) of `v` by linear interpolation between order statistics; NaN when
/// `v` has no finite value.
pub fn percentile<T: Copy + Into<f64>>(v: &[T], p: f64) -> f64 {
    let mut s: Vec<f64> = v
        .iter()
        .map(|&x| x.into())
        .filter(|x: &f64| x.is_finite())
        .collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let r = (p / 100.0).clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (r.floor() as usize, r.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (r - lo as f64)
}

/// Population variance of `v`.
pub fn variance(v: &[f32]) -> f64 {
    let n = v.len().max(1) as f64;
    let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
    v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        // numpy.percentile([1, 2, 3, 4], [0, 15, 50, 85, 100]) = 1, 1.45, 2.5, 3.55, 4
        let v = [4.0, 1.0, 3.0, 2.0];
        for (p, want) in [
            (0.0, 1.0),
            (15.0, 1.45),
            (50.0, 2.5),
            (85.0, 3.55),
            (100.0, 4.0),
        ] {
            assert!((percentile(&v, p) - want).abs() < 1e-12, "p{p}");
        }
        assert!(percentile::<f32>(&[], 50.0).is_nan());
        assert!((variance(&[1.0, 3.0]) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn claims_wrap_into_their_columns() {
        assert_eq!(wrap("a bb ccc dddd", 6), vec!["a bb", "ccc", "dddd"]);
        let c = Claim {
            claim: "a claim long enough to need two lines of thirty".into(),
            paper: "p".into(),
            ours: "o".into(),
            agree: true,
        };
        let text = claims_text(&[c]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[2].starts_with("a claim long enough to need") && lines[2].ends_with("yes"));
        assert!(lines[3].starts_with("two lines of thirty"), "{text}");
        // the columns line up: every line's first separator at the same place
        for l in &lines {
            assert_eq!(l.find(" | "), Some(30), "{text}");
        }
    }

    #[test]
    fn every_paper_is_found_by_its_name_and_keys_are_checked() {
        for p in PAPERS {
            assert_eq!(find(p.name).map(|f| f.name), Some(p.name));
        }
        assert_eq!(find("pennington2017").map(|f| f.name), Some("saxe2014"));
        assert!(find("lecun1998").is_none());
        let mut lab = PaperLab::default();
        assert_eq!(lab.set("quick", "true"), Ok(true));
        assert!(lab.quick);
        assert!(lab.set("quick", "maybe").unwrap_err().contains("quick"));
        assert!(lab.set("seed", "-1").unwrap_err().contains("seed=-1"));
        assert_eq!(lab.set("data", "fashion"), Ok(true));
        assert_eq!(lab.set("depth", "3"), Ok(false));
    }
}
