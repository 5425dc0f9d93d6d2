//! Figures drawn from plain numbers rather than from runs: a grid of panels, each with lines and
//! shaded bands (a percentile range around a median, say), and a legend row above them all. The
//! paper labs draw their figures with it.

use std::path::Path;

use plotters::prelude::*;

use super::chart::{chart, fonts, legend_row, mesh, run_color, Key, Size};
use super::plots::err;
use super::ReportError;

/// One line of a panel, with an optional band around it.
#[derive(Clone, Debug, Default)]
pub struct Series {
    /// Its name in the legend; series of one name share a colour across panels.
    pub name: String,
    /// (x, y) in order of x; non-finite values are left out.
    pub points: Vec<(f64, f64)>,
    /// (x, low, high): shaded between low and high.
    pub band: Vec<(f64, f64, f64)>,
    /// A reference (theory, a paper's value): drawn dashed.
    pub dashed: bool,
}

/// One chart of the grid.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    pub caption: String,
    pub x_desc: String,
    pub y_desc: String,
    pub series: Vec<Series>,
    /// y drawn as log10 (values ≤ 0 left out).
    pub log_y: bool,
    /// x drawn as log10 (values ≤ 0 left out).
    pub log_x: bool,
}

/// The legend's names in first-seen order: one colour per name in every panel.
fn names(panels: &[Panel]) -> Vec<(String, bool)> {
    let mut out: Vec<(String, bool)> = Vec::new();
    for s in panels.iter().flat_map(|p| &p.series) {
        if !out.iter().any(|(n, _)| n == &s.name) {
            out.push((s.name.clone(), s.dashed));
        }
    }
    out
}

fn range(v: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for x in v.filter(|x| x.is_finite()) {
        lo = lo.min(x);
        hi = hi.max(x);
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-9 {
        return (lo - 0.5, hi + 0.5);
    }
    let pad = 0.04 * (hi - lo);
    (lo - pad, hi + pad)
}

/// A tick label without trailing zeros: 2 rather than 2.0, 0.25 rather than 0.250.
fn tick(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// Draws `panels` in a grid of `columns` under `title`, `panel_size` pixels each.
pub fn grid(
    path: &Path,
    title: &str,
    panels: &[Panel],
    columns: usize,
    panel_size: (u32, u32),
) -> Result<(), ReportError> {
    fonts();
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (
        panel_size.0 * columns as u32,
        70 + panel_size.1 * rows as u32,
    );
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (head, body) = root.split_vertically(70);
    let (top, keys_area) = head.split_vertically(38);
    top.titled(title, ("sans-serif", 22))
        .map_err(|e| err(path, e))?;
    let legend = names(panels);
    let color = |name: &str| {
        let i = legend.iter().position(|(n, _)| n == name).unwrap_or(0);
        run_color(i)
    };
    let keys: Vec<Key> = legend
        .iter()
        .map(|(n, dashed)| Key {
            name: n,
            color: color(n),
            dashed: *dashed,
        })
        .collect();
    legend_row(&keys_area, &keys).map_err(|e| err(path, e))?;
    let areas = body.split_evenly((rows, columns));
    for (area, panel) in areas.iter().zip(panels) {
        let log = |on: bool, v: f64| match (on, v > 0.0) {
            (false, _) => v,
            (true, true) => v.log10(),
            (true, false) => f64::NAN,
        };
        let y = |v: f64| log(panel.log_y, v);
        let x = |v: f64| log(panel.log_x, v);
        let xs = panel.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| x(p.0))
                .chain(s.band.iter().map(|b| x(b.0)))
        });
        let ys = panel.series.iter().flat_map(|s| {
            s.points
                .iter()
                .map(|p| y(p.1))
                .chain(s.band.iter().flat_map(|b| [y(b.1), y(b.2)]))
        });
        let (x0, x1) = range(xs);
        let (y0, y1) = range(ys);
        let mut c =
            chart(area, &panel.caption, Size::Panel, x0..x1, y0..y1).map_err(|e| err(path, e))?;
        let desc = |on: bool, d: &str| {
            if on {
                format!("log10 {d}")
            } else {
                d.to_string()
            }
        };
        let (x_desc, y_desc) = (
            desc(panel.log_x, &panel.x_desc),
            desc(panel.log_y, &panel.y_desc),
        );
        mesh(&mut c, &x_desc, &y_desc)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| tick(*v))
            .draw()
            .map_err(|e| err(path, e))?;
        for s in &panel.series {
            let col = color(&s.name);
            let band: Vec<(f64, f64, f64)> = s
                .band
                .iter()
                .map(|&(u, lo, hi)| (x(u), y(lo), y(hi)))
                .filter(|(u, lo, hi)| u.is_finite() && lo.is_finite() && hi.is_finite())
                .collect();
            if band.len() >= 2 {
                let outline: Vec<(f64, f64)> = band
                    .iter()
                    .map(|b| (b.0, b.2))
                    .chain(band.iter().rev().map(|b| (b.0, b.1)))
                    .collect();
                c.draw_series(std::iter::once(Polygon::new(
                    outline,
                    col.mix(0.2).filled(),
                )))
                .map_err(|e| err(path, e))?;
            }
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|&(u, v)| (x(u), y(v)))
                .filter(|(u, v)| u.is_finite() && v.is_finite())
                .collect();
            if s.dashed {
                c.draw_series(DashedLineSeries::new(pts, 8, 5, col.stroke_width(2)))
                    .map_err(|e| err(path, e))?;
            } else if pts.len() == 1 {
                c.draw_series(std::iter::once(Circle::new(pts[0], 4, col.filled())))
                    .map_err(|e| err(path, e))?;
            } else {
                c.draw_series(LineSeries::new(pts, col.stroke_width(2)))
                    .map_err(|e| err(path, e))?;
            }
        }
    }
    root.present().map_err(|e| err(path, e))
}

/// One cell of a [`heat`] map: its extent, its value (coloured on [0, 1]) and its label.
#[derive(Clone, Debug)]
pub struct Cell {
    pub x: (f64, f64),
    pub y: (f64, f64),
    pub value: f64,
    pub label: String,
}

/// A heat map of `cells` (colour: value on [0, 1], viridis) with `lines` drawn over it, the
/// cells' labels written in them, and a legend row for the lines.
pub fn heat(
    path: &Path,
    title: &str,
    (x_desc, y_desc): (&str, &str),
    cells: &[Cell],
    lines: &[Series],
    size: (u32, u32),
) -> Result<(), ReportError> {
    use plotters::style::colors::colormaps::ViridisRGB;
    fonts();
    let root = BitMapBackend::new(path, size).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(path, e))?;
    let (head, body) = root.split_vertically(70);
    let (top, keys_area) = head.split_vertically(38);
    top.titled(title, ("sans-serif", 22))
        .map_err(|e| err(path, e))?;
    let keys: Vec<Key> = lines
        .iter()
        .enumerate()
        .map(|(i, s)| Key {
            name: &s.name,
            color: if i == 0 { RED } else { run_color(i + 1) },
            dashed: s.dashed,
        })
        .collect();
    legend_row(&keys_area, &keys).map_err(|e| err(path, e))?;
    let (x0, x1) = range(cells.iter().flat_map(|c| [c.x.0, c.x.1]));
    let (y0, y1) = range(cells.iter().flat_map(|c| [c.y.0, c.y.1]));
    let mut c = chart(&body, "", Size::Figure, x0..x1, y0..y1).map_err(|e| err(path, e))?;
    mesh(&mut c, x_desc, y_desc)
        .disable_mesh()
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .draw()
        .map_err(|e| err(path, e))?;
    c.draw_series(cells.iter().map(|cell| {
        let color = if cell.value.is_finite() {
            ViridisRGB::get_color_normalized(cell.value.clamp(0.0, 1.0), 0.0, 1.0)
        } else {
            RGBColor(255, 0, 255)
        };
        Rectangle::new([(cell.x.0, cell.y.0), (cell.x.1, cell.y.1)], color.filled())
    }))
    .map_err(|e| err(path, e))?;
    c.draw_series(cells.iter().map(|cell| {
        let text = if cell.value > 0.6 { BLACK } else { WHITE };
        let at = ((cell.x.0 + cell.x.1) / 2.0, (cell.y.0 + cell.y.1) / 2.0);
        Text::new(
            cell.label.clone(),
            at,
            ("sans-serif", 13).into_font().color(&text).pos(
                plotters::style::text_anchor::Pos::new(
                    plotters::style::text_anchor::HPos::Center,
                    plotters::style::text_anchor::VPos::Center,
                ),
            ),
        )
    }))
    .map_err(|e| err(path, e))?;
    for (i, s) in lines.iter().enumerate() {
        let col = if i == 0 { RED } else { run_color(i + 1) };
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|(u, v)| u.is_finite() && v.is_finite())
            .map(|(u, v)| (u, v.clamp(y0, y1)))
            .collect();
        if s.dashed {
            c.draw_series(DashedLineSeries::new(pts, 10, 6, col.stroke_width(3)))
                .map_err(|e| err(path, e))?;
        } else {
            c.draw_series(LineSeries::new(pts, col.stroke_width(3)))
                .map_err(|e| err(path, e))?;
        }
    }
    root.present().map_err(|e| err(path, e))
}
