//! PNG plots with plotters: gradient heatmaps (layer × step), per-layer bars at init and at the
//! end, loss and accuracy curves. Text is drawn with the embedded DejaVu Sans font.

use std::path::Path;

use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::colors::colormaps::ViridisRGB;

use super::chart::{chart, fonts, legend, legend_row, mesh, run_color, whole, Area, Key, Size};
use super::{ReportError, RunView};

pub(crate) fn err(path: &Path, e: impl std::fmt::Display) -> ReportError {
    ReportError::Plot {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

/// log10 ‖∂L/∂h‖ along the diagnosed series (hidden layers; through time, the memory state) of
/// every record: `[record][layer]`.
fn log_grad_grid(run: &RunView) -> Vec<(usize, Vec<f64>)> {
    run.records
        .iter()
        .map(|r| {
            let v = crate::diagnose::series(r)
                .iter()
                .map(|l| l.grad_h.norm.log10())
                .collect();
            (r.step, v)
        })
        .collect()
}

/// log10 ‖∂L/∂h‖ along the series at the first probed step and at the last.
fn first_and_last(run: &RunView) -> [Vec<f64>; 2] {
    let g = log_grad_grid(run);
    [
        g.first().map(|x| x.1.clone()).unwrap_or_default(),
        g.last().map(|x| x.1.clone()).unwrap_or_default(),
    ]
}

/// A white canvas of `size` with `title` in a 40-pixel band on top: (whole canvas, body below).
fn titled_canvas<'a>(
    path: &'a Path,
    size: (u32, u32),
    title: &str,
) -> Result<(Area<'a>, Area<'a>), ReportError> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (top, body) = root.split_vertically(40);
    top.titled(title, ("sans-serif", 22))
        .map_err(|e| err(path, e))?;
    Ok((root, body))
}

fn finite_range<'a>(vals: impl Iterator<Item = &'a f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for &v in vals.filter(|v| v.is_finite()) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return (-1.0, 0.0);
    }
    if hi - lo < 1e-6 {
        return (lo - 0.5, hi + 0.5);
    }
    (lo, hi)
}

/// One panel per run: x = training step, y = layer (first layer at the bottom),
/// colour = log10 ‖∂L/∂h‖ on one shared scale, with a colour bar.
pub fn heatmap(runs: &[RunView], path: &Path) -> Result<(), ReportError> {
    fonts();
    let grids: Vec<_> = runs.iter().map(log_grad_grid).collect();
    let (lo, hi) = finite_range(grids.iter().flatten().flat_map(|(_, v)| v.iter()));
    let panel_h = 230;
    let (root, body) = titled_canvas(
        path,
        (1200, (panel_h * runs.len() as u32).max(1) + 60),
        "log10 ‖∂L/∂h‖ per layer and step (shared colour scale; magenta: NaN or ∞)",
    )?;
    let (panels, bar) = body.split_horizontally(1080);
    for ((run, grid), area) in runs
        .iter()
        .zip(&grids)
        .zip(panels.split_evenly((runs.len(), 1)))
    {
        let layers = grid.iter().map(|(_, v)| v.len()).max().unwrap_or(1);
        let steps: Vec<usize> = grid.iter().map(|(s, _)| *s).collect();
        let x_max = steps.last().copied().unwrap_or(0) + 1;
        let caption = match run.diagnosis {
            Some(d) => format!("{} — {}", run.name, d.verdict),
            None => run.name.to_string(),
        };
        let mut chart = chart(&area, &caption, Size::Panel, 0usize..x_max, 0usize..layers)
            .map_err(|e| err(path, e))?;
        mesh(&mut chart, "step", "layer")
            .disable_mesh()
            .draw()
            .map_err(|e| err(path, e))?;
        let cells = grid.iter().enumerate().flat_map(|(k, (s, v))| {
            let x1 = steps.get(k + 1).copied().unwrap_or(x_max);
            v.iter().enumerate().map(move |(l, &g)| {
                let color = if g.is_finite() {
                    ViridisRGB::get_color_normalized(g.clamp(lo, hi), lo, hi)
                } else {
                    RGBColor(255, 0, 255) // non-finite: magenta
                };
                Rectangle::new([(*s, l), (x1, l + 1)], color.filled())
            })
        });
        chart.draw_series(cells).map_err(|e| err(path, e))?;
    }
    // colour bar
    let mut cb = ChartBuilder::on(&bar)
        .margin_top(20)
        .margin_bottom(40)
        .margin_right(10)
        .y_label_area_size(50)
        .build_cartesian_2d(0.0..1.0, lo..hi)
        .map_err(|e| err(path, e))?;
    mesh(&mut cb, "", "log10 ‖∂L/∂h‖")
        .disable_mesh()
        .disable_x_axis()
        .draw()
        .map_err(|e| err(path, e))?;
    let n = 100;
    cb.draw_series((0..n).map(|i| {
        let a = lo + (hi - lo) * i as f64 / n as f64;
        let b = lo + (hi - lo) * (i + 1) as f64 / n as f64;
        Rectangle::new(
            [(0.0, a), (1.0, b)],
            ViridisRGB::get_color_normalized(a, lo, hi).filled(),
        )
    }))
    .map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}

/// One panel per run: log10 ‖∂L/∂h‖ per layer at the first probed step and at the last.
pub fn layer_bars(runs: &[RunView], path: &Path) -> Result<(), ReportError> {
    fonts();
    let ends: Vec<[Vec<f64>; 2]> = runs.iter().map(first_and_last).collect();
    let (lo, hi) = finite_range(ends.iter().flat_map(|e| e.iter().flatten()));
    let floor = lo - 0.5;
    // one run (YOLO) takes the whole width
    let cols = runs.len().clamp(1, 2);
    let rows = runs.len().div_ceil(cols);
    let (root, body) = titled_canvas(
        path,
        (1200, 260 * rows.max(1) as u32 + 50),
        "log10 ‖∂L/∂h‖ per layer: at init (light) and at the end (dark)",
    )?;
    for (i, ((run, [first, last]), area)) in runs
        .iter()
        .zip(&ends)
        .zip(body.split_evenly((rows, cols)))
        .enumerate()
    {
        let n = first.len().max(last.len()).max(1);
        let mut chart = chart(&area, run.name, Size::Panel, 0.0..n as f64, floor..hi + 0.5)
            .map_err(|e| err(path, e))?;
        mesh(&mut chart, "layer", "")
            .x_label_formatter(&|x| whole(*x))
            .y_label_formatter(&|y| whole(*y))
            .draw()
            .map_err(|e| err(path, e))?;
        let c = run_color(i);
        let light = RGBColor(c.0 / 3 + 170, c.1 / 3 + 170, c.2 / 3 + 170);
        for (vals, color, off) in [(first, light, 0.1), (last, c, 0.5)] {
            chart
                .draw_series(vals.iter().enumerate().filter(|(_, v)| v.is_finite()).map(
                    |(l, &v)| {
                        Rectangle::new(
                            [(l as f64 + off, floor), (l as f64 + off + 0.4, v)],
                            color.filled(),
                        )
                    },
                ))
                .map_err(|e| err(path, e))?;
        }
    }
    root.present().map_err(|e| err(path, e))
}

/// A chart over optimizer steps, `step + 1` on a log axis (runs that blow up in a few steps stay
/// visible next to ones that train for thousands), its mesh drawn.
fn over_steps<'a, 'b>(
    area: &'a Area<'b>,
    caption: &str,
    max_step: usize,
    y: std::ops::Range<f64>,
) -> Result<ChartContext<'a, BitMapBackend<'b>, Cartesian2d<LogCoord<f64>, RangedCoordf64>>, String>
{
    let x = (1.0..max_step as f64).log_scale();
    let mut c = chart(area, caption, Size::Figure, x, y).map_err(|e| e.to_string())?;
    // ticks at 1, 2, 5, 10, 20, 50, …: the others crowd together towards each power of ten
    let label = |v: &f64| {
        let m = v / 10f64.powf(v.log10().floor());
        let round = (m - m.round()).abs() < 1e-6 && [1.0, 2.0, 5.0].contains(&m.round());
        if round {
            format!("{v:.0}")
        } else {
            String::new()
        }
    };
    mesh(&mut c, "step + 1 (log scale)", "")
        .x_label_formatter(&label)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(c)
}

/// log10 of the training loss (a 10-step running mean) against step + 1 on a log axis, one line
/// per run: runs that blow up in a few steps stay visible next to ones that train for thousands.
fn loss_panel(area: &Area, runs: &[RunView], path: &Path) -> Result<(), ReportError> {
    let max_step = runs
        .iter()
        .map(|r| r.history.step_loss.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let smooth: Vec<Vec<(f64, f64)>> = runs
        .iter()
        .map(|r| {
            let l = &r.history.step_loss;
            (0..l.len())
                .map(|s| {
                    let w: Vec<f64> = l[s.saturating_sub(9)..=s]
                        .iter()
                        .copied()
                        .filter(|v| v.is_finite())
                        .collect();
                    (
                        (s + 1) as f64,
                        (w.iter().sum::<f64>() / w.len().max(1) as f64).log10(),
                    )
                })
                .filter(|(_, v)| v.is_finite())
                .collect()
        })
        .collect();
    let (lo, hi) = finite_range(smooth.iter().flatten().map(|(_, v)| v));
    let caption = "log10 training loss (running mean of 10 steps)";
    let y = (lo - 0.1)..(hi + 0.1);
    let mut chart = over_steps(area, caption, max_step, y).map_err(|e| err(path, e))?;
    for (i, pts) in smooth.into_iter().enumerate() {
        let c = run_color(i);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(path, e))?;
    }
    Ok(())
}

/// A level drawn dashed across the metric panel of [`curves`]: a trivial predictor's score, say.
pub struct Reference<'a> {
    /// The metric's value at that level.
    pub value: f64,
    /// Its name in the legend.
    pub name: &'a str,
}

/// Grey of a reference line.
const REFERENCE: RGBColor = RGBColor(90, 90, 90);

/// Training loss (left) and the validation metric per epoch (right), one line per run, the
/// legend in a row of its own above both. `metric` names the metric; accuracies are drawn on
/// [0, 1]; a `reference` level is drawn dashed across the metric panel.
pub fn curves(
    runs: &[RunView],
    path: &Path,
    metric: &str,
    reference: Option<Reference>,
) -> Result<(), ReportError> {
    fonts();
    let root = BitMapBackend::new(path, (1200, 490)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (top, body) = root.split_vertically(30);
    let mut keys: Vec<Key> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| Key {
            name: r.name,
            color: run_color(i),
            dashed: false,
        })
        .collect();
    if let Some(r) = &reference {
        keys.push(Key {
            name: r.name,
            color: REFERENCE,
            dashed: true,
        });
    }
    legend_row(&top, &keys).map_err(|e| err(path, e))?;
    let (left, right) = body.split_horizontally(600);
    loss_panel(&left, runs, path)?;
    let max_epoch = runs
        .iter()
        .map(|r| r.history.epochs.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let (lo, hi) = if metric.contains("acc") {
        (0.0, 1.0)
    } else {
        let values = runs
            .iter()
            .flat_map(|r| r.history.epochs.iter().map(|e| &e.val_metric));
        let (lo, hi) = finite_range(values.chain(reference.as_ref().map(|r| &r.value)));
        (lo.min(0.0), hi * 1.05)
    };
    // the axis ends at the last epoch (one epoch: 1 … 2, so the range is not empty)
    let epochs = 1..max_epoch.max(2);
    let mut acc =
        chart(&right, metric, Size::Figure, epochs.clone(), lo..hi).map_err(|e| err(path, e))?;
    mesh(&mut acc, "epoch", "")
        .draw()
        .map_err(|e| err(path, e))?;
    for (i, r) in runs.iter().enumerate() {
        let c = run_color(i);
        let pts = r
            .history
            .epochs
            .iter()
            .filter(|e| e.val_metric.is_finite())
            .map(|e| (e.epoch + 1, e.val_metric));
        acc.draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(|e| err(path, e))?;
    }
    if let Some(r) = reference.filter(|r| r.value.is_finite()) {
        let line = [(epochs.start, r.value), (epochs.end, r.value)];
        acc.draw_series(DashedLineSeries::new(line, 8, 5, REFERENCE.stroke_width(2)))
            .map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))
}

/// log10 ‖∂L/∂h‖ against the probe point's index (layer or time step): the first probed step
/// (left) and the last (right), one line per run.
pub fn profile(
    runs: &[RunView],
    path: &Path,
    x_desc: &str,
    title: &str,
) -> Result<(), ReportError> {
    fonts();
    let ends: Vec<[Vec<f64>; 2]> = runs.iter().map(first_and_last).collect();
    let (lo, hi) = finite_range(ends.iter().flat_map(|e| e.iter().flatten()));
    let n = ends
        .iter()
        .flat_map(|e| e.iter().map(|v| v.len()))
        .max()
        .unwrap_or(1)
        .max(2);
    let (root, body) = titled_canvas(path, (1200, 480), title)?;
    let panels = body.split_evenly((1, 2));
    for (k, (area, label)) in panels
        .iter()
        .zip(["at the first probed step", "at the last probed step"])
        .enumerate()
    {
        let mut chart = chart(area, label, Size::Panel, 0..n - 1, (lo - 0.5)..(hi + 0.5))
            .map_err(|e| err(path, e))?;
        mesh(&mut chart, x_desc, "log10 ‖∂L/∂h‖")
            .draw()
            .map_err(|e| err(path, e))?;
        for (i, (run, e)) in runs.iter().zip(&ends).enumerate() {
            let c = run_color(i);
            let pts: Vec<(usize, f64)> = e[k]
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_finite())
                .map(|(t, &v)| (t, v))
                .collect();
            chart
                .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                .map_err(|e| err(path, e))?
                .label(run.name)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3))
                });
        }
        legend(&mut chart).map_err(|e| err(path, e))?;
    }
    root.present().map_err(|e| err(path, e))
}

/// log10 of the global gradient norm before clipping, per step (log axis), with each run's
/// clipping threshold (thin) and its NaN recoveries (crosses).
pub fn grad_norm(runs: &[RunView], path: &Path) -> Result<(), ReportError> {
    fonts();
    let root = BitMapBackend::new(path, (1200, 460)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let max_step = runs
        .iter()
        .map(|r| r.history.step_loss.len())
        .max()
        .unwrap_or(1)
        .max(2);
    let logs = |v: &[f64]| -> Vec<f64> { v.iter().map(|x| x.log10()).collect() };
    // the norms and the thresholds they are clipped at, both in view
    let (g_lo, g_hi) = finite_range(
        runs.iter()
            .flat_map(|r| {
                logs(&r.history.step_grad_norm)
                    .into_iter()
                    .chain(logs(&r.history.step_clip))
            })
            .collect::<Vec<_>>()
            .iter(),
    );
    let caption = "log10 ‖g‖ before clipping (dashed: clip threshold; ×: NaN recovery)";
    let y = (g_lo - 0.5)..(g_hi + 0.5);
    let mut g = over_steps(&root, caption, max_step, y).map_err(|e| err(path, e))?;
    if runs.iter().all(|r| r.history.step_grad_norm.is_empty()) {
        g.draw_series(std::iter::once(Text::new(
            "no optimizer step was taken: nothing to plot",
            (1.2, g_lo),
            ("sans-serif", 22),
        )))
        .map_err(|e| err(path, e))?;
    }
    let mut threshold_named = false;
    for (i, r) in runs.iter().enumerate() {
        let c = run_color(i);
        let at_step = |v: Vec<f64>| -> Vec<(f64, f64)> {
            v.into_iter()
                .enumerate()
                .filter(|(_, y)| y.is_finite())
                .map(|(s, y)| ((s + 1) as f64, y))
                .collect()
        };
        let pts = at_step(logs(&r.history.step_grad_norm));
        g.draw_series(LineSeries::new(pts, c.stroke_width(1)))
            .map_err(|e| err(path, e))?
            .label(r.name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(3)));
        let clip = at_step(logs(&r.history.step_clip));
        if !clip.is_empty() {
            let line = g
                .draw_series(DashedLineSeries::new(
                    clip,
                    6,
                    4,
                    BLACK.mix(0.6).stroke_width(1),
                ))
                .map_err(|e| err(path, e))?;
            if !threshold_named {
                threshold_named = true;
                line.label("clip threshold").legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.6).stroke_width(1))
                });
            }
        }
        let top = g_hi + 0.3;
        g.draw_series(
            r.history
                .recoveries
                .iter()
                .map(|ev| Cross::new(((ev.step + 1) as f64, top), 6, c.stroke_width(2))),
        )
        .map_err(|e| err(path, e))?;
    }
    legend(&mut g).map_err(|e| err(path, e))?;
    root.present().map_err(|e| err(path, e))
}
