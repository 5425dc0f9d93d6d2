//! A detection run's pictures: results.png (losses and metrics per epoch), labels.jpg, the
//! confusion matrix and the gradient-health report, and the epoch's report that also draws the
//! validation images ([`super::batches`]) and curves ([`super::curves`]). Drawn with plotters in
//! the embedded DejaVu font.

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use plotters::prelude::*;

use super::batches::Drawing;
use super::RESULTS_COLUMNS;
use crate::detect::args::DetectArgs;
use crate::detect::error::DetectError;
use crate::detect::eval::metrics::confusion_matrix;
use crate::detect::eval::validate::ValResult;
use crate::detect::input::dataset::DetData;
use crate::diagnose::Diagnosis;
use crate::probe::StepRecord;
use crate::report::chart::{chart, fonts, mesh, run_color, whole, Size};
use crate::report::html::Table;
use crate::report::{html, plots, RunView};
use crate::train::History;

fn e(path: &Path, m: impl std::fmt::Display) -> DetectError {
    DetectError::plot(path, m)
}

/// labels.jpg: what the training labels look like — instances per class, box centres (x, y) and
/// box sizes (w, h), both normalised to the image.
pub fn labels(train: &DetData, names: &[String], path: &Path) -> Result<(), DetectError> {
    fonts();
    let (w, h) = (1500u32, 500u32);
    let mut buf = vec![255u8; (w * h * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let panels = root.split_evenly((1, 3));
        let nc = names.len().max(1);
        let mut counts = vec![0usize; nc];
        let mut centres = Vec::new();
        let mut sizes = Vec::new();
        for s in &train.samples {
            for l in &s.labels {
                if l.class < nc {
                    counts[l.class] += 1;
                }
                centres.push((l.cx as f64, 1.0 - l.cy as f64));
                sizes.push((l.w as f64, l.h as f64));
            }
        }
        let top = counts.iter().copied().max().unwrap_or(1).max(1) as f64 * 1.1;
        let mut ch = chart(
            &panels[0],
            "instances per class",
            Size::Figure,
            0.0..nc as f64,
            0.0..top,
        )
        .map_err(|m| e(path, m))?;
        mesh(&mut ch, "", "instances")
            .disable_x_mesh()
            // counts are whole numbers: no "700.0"
            .y_label_formatter(&|y| whole(*y))
            .x_labels(nc.min(20))
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if nc <= 20 && i < nc {
                    names[i].clone()
                } else {
                    format!("{i}")
                }
            })
            .draw()
            .map_err(|m| e(path, m))?;
        ch.draw_series(counts.iter().enumerate().map(|(i, &n)| {
            Rectangle::new(
                [(i as f64 + 0.1, 0.0), (i as f64 + 0.9, n as f64)],
                run_color(2).filled(),
            )
        }))
        .map_err(|m| e(path, m))?;
        for (k, (title, pts, xd, yd)) in [
            ("box centres", &centres, "x", "y (top = 1)"),
            ("box sizes", &sizes, "width", "height"),
        ]
        .into_iter()
        .enumerate()
        {
            let mut ch = chart(&panels[k + 1], title, Size::Figure, 0.0..1.0, 0.0..1.0)
                .map_err(|m| e(path, m))?;
            mesh(&mut ch, xd, yd).draw().map_err(|m| e(path, m))?;
            ch.draw_series(
                pts.iter()
                    .map(|p| Circle::new(*p, 2, run_color(2).mix(0.35).filled())),
            )
            .map_err(|m| e(path, m))?;
        }
        root.present().map_err(|m| e(path, m))?;
    }
    let img = RgbImage::from_raw(w, h, buf).ok_or_else(|| e(path, "buffer size"))?;
    img.save(path).map_err(|m| e(path, m))
}

/// results.png: one panel per results.csv column after `time`.
pub fn results_png(rows: &[Vec<f64>], path: &Path) -> Result<(), DetectError> {
    fonts();
    let root = BitMapBackend::new(path, (1600, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(|m| e(path, m))?;
    let panels: Vec<usize> = (2..RESULTS_COLUMNS.len()).collect();
    let areas = root.split_evenly((3, 5));
    for (area, &col) in areas.iter().zip(&panels) {
        let pts: Vec<(f64, f64)> = rows
            .iter()
            .filter(|r| r[col].is_finite())
            .map(|r| (r[0], r[col]))
            .collect();
        let (lo, hi) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
            (a.0.min(p.1), a.1.max(p.1))
        });
        let (lo, hi) = if lo.is_finite() && hi > lo {
            (lo, hi + (hi - lo) * 0.05)
        } else if lo.is_finite() {
            (lo - 0.5, lo + 0.5)
        } else {
            (0.0, 1.0)
        };
        let xmax = rows.len().max(2) as f64;
        let mut ch = chart(area, RESULTS_COLUMNS[col], Size::Panel, 1.0..xmax, lo..hi)
            .map_err(|m| e(path, m))?;
        // whole epochs only, and as many decimals as the y range needs: no repeated tick labels
        let decimals = (-((hi - lo) / 8.0).log10()).ceil().clamp(0.0, 8.0) as usize;
        mesh(&mut ch, "epoch", "")
            .x_labels((xmax as usize).min(10))
            .x_label_formatter(&|x| whole(*x))
            .y_label_formatter(&|y| format!("{y:.decimals$}"))
            .draw()
            .map_err(|m| e(path, m))?;
        ch.draw_series(LineSeries::new(pts.clone(), run_color(2).stroke_width(2)))
            .map_err(|m| e(path, m))?;
        ch.draw_series(
            pts.iter()
                .map(|p| Circle::new(*p, 3, run_color(2).filled())),
        )
        .map_err(|m| e(path, m))?;
    }
    root.present().map_err(|m| e(path, m))
}

/// The confusion matrix at conf 0.25 and IoU 0.45 as Ultralytics draws it (rows: predicted,
/// columns: true, a background row and column), as counts in `confusion_matrix.png` and
/// normalised per true class (each column sums to 1) in `confusion_matrix_normalized.png`, each
/// with a colour bar.
pub fn confusion(v: &ValResult, names: &[String], dir: &Path) -> Result<(), DetectError> {
    let nc = names.len();
    if nc > 30 {
        return Ok(()); // unreadable as a picture; the per-class table says it better
    }
    let m = confusion_matrix(&v.gts, &v.dets, nc, CONF_PLOT, 0.45);
    confusion_png(&m, names, false, &dir.join("confusion_matrix.png"))?;
    confusion_png(
        &m,
        names,
        true,
        &dir.join("confusion_matrix_normalized.png"),
    )
}

/// The confidence the confusion matrix counts detections from (Ultralytics' 0.25).
const CONF_PLOT: f32 = 0.25;

fn confusion_png(
    m: &[Vec<usize>],
    names: &[String],
    normalized: bool,
    path: &Path,
) -> Result<(), DetectError> {
    fonts();
    let nc = names.len();
    let k = nc + 1;
    let label = |i: usize| names.get(i).cloned().unwrap_or_else(|| "background".into());
    let col_sum: Vec<usize> = (0..k).map(|c| (0..k).map(|r| m[r][c]).sum()).collect();
    let value = |r: usize, c: usize| {
        if normalized {
            m[r][c] as f64 / col_sum[c].max(1) as f64
        } else {
            m[r][c] as f64
        }
    };
    let top_value = (0..k)
        .flat_map(|r| (0..k).map(move |c| (r, c)))
        .map(|(r, c)| value(r, c))
        .fold(1.0, f64::max);
    let cell = (480 / k as i32).clamp(40, 160);
    let (left, top, bar) = (150i32, 80i32, 90i32);
    let size = (
        (left + cell * k as i32 + 40 + bar) as u32,
        (top + cell * k as i32 + 80) as u32,
    );
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(path, x))?;
    let style = |px: f64| ("sans-serif", px).into_font().color(&BLACK);
    let d =
        |r: Result<(), _>| r.map_err(|x: plotters::drawing::DrawingAreaErrorKind<_>| e(path, x));
    let shade = |f: f64| {
        let s = (255.0 * (1.0 - 0.85 * f.clamp(0.0, 1.0))) as u8;
        RGBColor(s, s, 255)
    };
    let title = if normalized {
        format!("Confusion matrix, normalised per true class (IoU 0.45, conf {CONF_PLOT})")
    } else {
        format!("Confusion matrix, counts (IoU 0.45, conf {CONF_PLOT})")
    };
    d(root.draw(&Text::new(title, (10, 12), style(20.0))))?;
    let font = (cell as f64 / 5.0).clamp(11.0, 20.0);
    for (r, row) in m.iter().enumerate() {
        for (c, count) in row.iter().enumerate() {
            let (x, y) = (left + c as i32 * cell, top + r as i32 * cell);
            let f = value(r, c) / top_value;
            d(root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                shade(f).filled(),
            )))?;
            d(root.draw(&Rectangle::new(
                [(x, y), (x + cell, y + cell)],
                BLACK.stroke_width(1),
            )))?;
            let text = if normalized {
                format!("{:.2}", value(r, c))
            } else {
                count.to_string()
            };
            d(root.draw(&Text::new(text, (x + 6, y + cell / 2 - 8), style(font))))?;
        }
        // row labels (predicted) on the left, column labels (true) below
        d(root.draw(&Text::new(
            label(r),
            (34, top + r as i32 * cell + cell / 2 - 8),
            style(14.0),
        )))?;
        d(root.draw(&Text::new(
            label(r),
            (left + r as i32 * cell + 4, top + k as i32 * cell + 8),
            style(14.0),
        )))?;
    }
    d(root.draw(&Text::new(
        "True",
        (left + cell * k as i32 / 2 - 16, top + k as i32 * cell + 36),
        style(16.0),
    )))?;
    d(root.draw(&Text::new(
        "Predicted",
        (8, top + cell * k as i32 / 2 + 36),
        style(16.0).transform(FontTransform::Rotate270),
    )))?;
    // colour bar: 0 at the bottom, the largest value at the top
    let (bx, h) = (left + cell * k as i32 + 30, cell * k as i32);
    for i in 0..h {
        let f = 1.0 - i as f64 / h as f64;
        d(root.draw(&Rectangle::new(
            [(bx, top + i), (bx + 20, top + i + 1)],
            shade(f).filled(),
        )))?;
    }
    d(root.draw(&Rectangle::new(
        [(bx, top), (bx + 20, top + h)],
        BLACK.stroke_width(1),
    )))?;
    let top_label = if normalized {
        "1.0".to_string()
    } else {
        format!("{top_value:.0}")
    };
    d(root.draw(&Text::new(top_label, (bx + 24, top - 6), style(13.0))))?;
    d(root.draw(&Text::new("0", (bx + 24, top + h - 8), style(13.0))))?;
    root.present().map_err(|x| e(path, x))
}

/// report.html: the gradient diagnosis with heatmap (layer × step), per-layer bars (init vs
/// now) and the gradient norm per optimizer step.
pub fn gradient_report(
    dir: &Path,
    args: &DetectArgs,
    hist: &History,
    records: &[StepRecord],
    diagnosis: Option<&Diagnosis>,
) -> Result<(), DetectError> {
    let view = RunView {
        name: "train",
        settings: format!(
            "model={} act={} bn={} shortcut={} imgsz={} batch={}",
            args.model, args.act, args.bn, args.shortcut, args.imgsz, args.batch
        ),
        records,
        history: hist,
        diagnosis,
    };
    let views = [view];
    let r = DetectError::from;
    let mut images = vec![(
        "grad_norm.png",
        "Global gradient norm per optimizer step (before clipping)",
    )];
    plots::grad_norm(&views, &dir.join("grad_norm.png")).map_err(r)?;
    if !records.is_empty() {
        plots::heatmap(&views, &dir.join("heatmap.png")).map_err(r)?;
        plots::layer_bars(&views, &dir.join("layers.png")).map_err(r)?;
        images.push((
            "heatmap.png",
            "Gradient reaching each layer's output over training",
        ));
        images.push((
            "layers.png",
            "Gradient per layer: first probed step and latest",
        ));
    }
    images.insert(0, ("results.png", "Losses and metrics per epoch"));
    let mut table = Table {
        columns: vec!["verdict".into(), "gradient flow".into()],
        rows: Vec::new(),
    };
    if let Some(d) = diagnosis {
        table.rows.push(vec![d.verdict.to_string(), d.flow_line()]);
    }
    html::write(
        &dir.join("report.html"),
        "gradscope train",
        "YOLO26 training watched by the gradient probe: ‖∂L/∂h‖ at every layer's output, per optimizer step.",
        &table,
        &views,
        &images,
    )
    .map_err(r)
}

/// After every epoch: results.png, the gradient-health report (report.html with heatmap and
/// per-layer bars), and validation images with labels and predictions with the curves and
/// confusion matrices — those started on `pictures` (the previous epoch's, which draw the same
/// files, finished first) and drawn beside the training.
#[allow(clippy::too_many_arguments)]
pub fn epoch_report(
    dir: &Path,
    args: &DetectArgs,
    csv: &super::ResultsCsv,
    hist: &History,
    records: &[StepRecord],
    diagnosis: Option<&Diagnosis>,
    val: &Arc<DetData>,
    v: &Arc<ValResult>,
    names: &[String],
    pictures: &mut Drawing,
) -> Result<(), DetectError> {
    results_png(&csv.rows, &dir.join("results.png"))?;
    pictures.finish()?;
    let (at, val, v, names, imgsz) = (
        dir.to_path_buf(),
        Arc::clone(val),
        Arc::clone(v),
        names.to_vec(),
        args.imgsz,
    );
    pictures.spawn(dir.join("val_batch0_pred.jpg"), move || {
        validation_plots(&at, &val, &v, &names, imgsz)
    });
    gradient_report(dir, args, hist, records, diagnosis)?;
    Ok(())
}

/// What a validation draws, in training and in `gradscope val`: the first validation images
/// with their labels and with the predictions, the precision-recall and F1/P/R-confidence
/// curves, and the confusion matrices.
pub fn validation_plots(
    dir: &Path,
    val: &DetData,
    v: &ValResult,
    names: &[String],
    imgsz: usize,
) -> Result<(), DetectError> {
    super::batches::val_batch(val, v, names, imgsz, dir)?;
    super::curves::write_all(v, names, dir)?;
    confusion(v, names, dir)
}
