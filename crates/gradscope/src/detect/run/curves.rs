//! The validation curves Ultralytics draws, from the very numbers its metrics are read from
//! ([`DetMetrics::curves`]): precision against recall at IoU 0.5 (`PR_curve.png`, the curve AP50
//! integrates) and F1, precision and recall against the confidence threshold (`F1_curve.png`,
//! `P_curve.png`, `R_curve.png`). One thin line per class when 2 to 20 classes have labels, the
//! mean over classes thick; the legend beside the chart.

use std::path::Path;

use plotters::prelude::*;

use crate::detect::error::DetectError;
use crate::detect::eval::det_metrics::{ClassCurve, DetMetrics};
use crate::detect::eval::validate::ValResult;
use crate::report::chart::{chart, fonts, legend_column, mesh, run_color, Key, Size};

fn e(path: &Path, m: impl std::fmt::Display) -> DetectError {
    DetectError::plot(path, m)
}

/// Most classes drawn one by one (Ultralytics' limit); beyond it only the mean.
const MAX_CLASS_LINES: usize = 20;

/// Writes the four curves into `dir`.
pub fn write_all(v: &ValResult, names: &[String], dir: &Path) -> Result<(), DetectError> {
    pr_curve(v, names, &dir.join("PR_curve.png"))?;
    for which in [Which::F1, Which::Precision, Which::Recall] {
        confidence_curve(v, names, which, &dir.join(which.file()))?;
    }
    Ok(())
}

/// What a confidence curve plots.
#[derive(Clone, Copy, Debug)]
enum Which {
    F1,
    Precision,
    Recall,
}

impl Which {
    fn file(self) -> &'static str {
        match self {
            Which::F1 => "F1_curve.png",
            Which::Precision => "P_curve.png",
            Which::Recall => "R_curve.png",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Which::F1 => "F1",
            Which::Precision => "precision",
            Which::Recall => "recall",
        }
    }

    fn of(self, c: &ClassCurve) -> Vec<f64> {
        match self {
            Which::F1 => c.f1(),
            Which::Precision => c.p.clone(),
            Which::Recall => c.r.clone(),
        }
    }
}

/// One line of a curve plot: its legend entry, values on [`DetMetrics::grid`], colour, width.
struct Line {
    name: String,
    values: Vec<f64>,
    color: RGBColor,
    width: u32,
}

/// The class lines worth drawing one by one: none for a single class (the mean is that class)
/// or for more than [`MAX_CLASS_LINES`].
fn class_lines(
    m: &DetMetrics,
    names: &[String],
    value: impl Fn(&ClassCurve) -> Vec<f64>,
    tag: impl Fn(&ClassCurve) -> String,
) -> Vec<Line> {
    if m.curves.len() < 2 || m.curves.len() > MAX_CLASS_LINES {
        return Vec::new();
    }
    m.curves
        .iter()
        .enumerate()
        .map(|(i, c)| Line {
            name: format!(
                "{} {}",
                names.get(c.class).map_or("?", String::as_str),
                tag(c)
            ),
            values: value(c),
            // blue is the mean's
            color: run_color(if i >= 2 { i + 1 } else { i }),
            width: 1,
        })
        .collect()
}

/// Why a curve is flat, when it is: nothing predicted, or nothing predicted matched.
fn note(v: &ValResult) -> Option<&'static str> {
    if v.dets.is_empty() {
        Some("nothing was predicted: no curve")
    } else if v
        .metrics
        .curves
        .iter()
        .all(|c| c.r.iter().all(|&r| r == 0.0))
    {
        Some("no prediction matches a true box at IoU 0.5")
    } else {
        None
    }
}

/// Precision against recall at IoU 0.5, per class and the mean, with AP50 in the legend.
fn pr_curve(v: &ValResult, names: &[String], path: &Path) -> Result<(), DetectError> {
    let m = &v.metrics;
    let mut lines = class_lines(m, names, |c| c.pr.clone(), |c| format!("{:.3}", c.ap50()));
    lines.push(Line {
        name: format!("all classes {:.3} mAP50", m.map50),
        values: m.mean_curve(|c| c.pr.clone(), false),
        color: run_color(2),
        width: 3,
    });
    let title = "Precision-recall (IoU 0.5)";
    draw(path, title, ("recall", "precision"), &lines, note(v))
}

/// F1, precision or recall against the confidence threshold; the mean smoothed as Ultralytics
/// smooths it, with its best value and where it is reached in the legend.
fn confidence_curve(
    v: &ValResult,
    names: &[String],
    which: Which,
    path: &Path,
) -> Result<(), DetectError> {
    let m = &v.metrics;
    let mut lines = class_lines(m, names, |c| which.of(c), |_| String::new());
    let mean = m.mean_curve(|c| which.of(c), true);
    let grid = DetMetrics::grid();
    let best = mean
        .iter()
        .enumerate()
        .fold(0, |b, (i, &y)| if y > mean[b] { i } else { b });
    lines.push(Line {
        name: format!(
            "all classes {:.2} at {:.3}",
            mean.get(best).copied().unwrap_or(0.0),
            grid[best]
        ),
        values: mean,
        color: run_color(2),
        width: 3,
    });
    let title = format!("{}-confidence (IoU 0.5)", capitalised(which.name()));
    let axes = ("confidence threshold", which.name());
    draw(path, &title, axes, &lines, note(v))
}

fn capitalised(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// A 900×600 figure: the chart on [0, 1]² on the left, the legend in a column on the right,
/// `note` written across the chart when set.
fn draw(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    lines: &[Line],
    note: Option<&'static str>,
) -> Result<(), DetectError> {
    fonts();
    let root = BitMapBackend::new(path, (900, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|m| e(path, m))?;
    let (left, right) = root.split_horizontally(660);
    let mut ch = chart(&left, title, Size::Figure, 0.0..1.0, 0.0..1.02).map_err(|m| e(path, m))?;
    mesh(&mut ch, x_desc, y_desc)
        .draw()
        .map_err(|m| e(path, m))?;
    let grid = DetMetrics::grid();
    for l in lines {
        let pts = grid.iter().copied().zip(l.values.iter().copied());
        ch.draw_series(LineSeries::new(pts, l.color.stroke_width(l.width)))
            .map_err(|m| e(path, m))?;
    }
    if let Some(note) = note {
        ch.draw_series(std::iter::once(Text::new(
            note,
            (0.05, 0.5),
            ("sans-serif", 18),
        )))
        .map_err(|m| e(path, m))?;
    }
    let keys: Vec<Key> = lines
        .iter()
        .map(|l| Key {
            name: &l.name,
            color: l.color,
            dashed: false,
        })
        .collect();
    legend_column(&right, &keys, 50).map_err(|m| e(path, m))?;
    root.present().map_err(|m| e(path, m))
}
