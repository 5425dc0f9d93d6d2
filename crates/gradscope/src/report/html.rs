//! One self-contained page: the comparison table, the plots, and each run's diagnosis.

use std::fmt::Write as _;
use std::path::Path;

use super::{ReportError, RunView};
use crate::diagnose::Diagnosis;

pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number for a table cell: fixed-point when it reads well, scientific otherwise.
pub fn num(x: f64) -> String {
    if !x.is_finite() {
        format!("{x}")
    } else if x != 0.0 && (x.abs() >= 1e4 || x.abs() < 1e-3) {
        format!("{x:.3e}")
    } else {
        format!("{x:.4}")
    }
}

/// The comparison table: a header and rows of already formatted cells. A column named
/// `verdict` is coloured.
pub struct Table {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

impl Table {
    /// The table as aligned plain text, for the console.
    pub fn to_text(&self) -> String {
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                self.rows
                    .iter()
                    .map(|r| r.get(c).map_or(0, |x| x.chars().count()))
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (c, x) in cells.iter().enumerate() {
                let pad = widths[c].saturating_sub(x.chars().count());
                if c == 0 {
                    out.push_str(x);
                    out.push_str(&" ".repeat(pad));
                } else {
                    out.push_str("  ");
                    out.push_str(&" ".repeat(pad));
                    out.push_str(x);
                }
            }
            out.push('\n');
            out
        };
        let mut s = line(&self.columns);
        for r in &self.rows {
            s.push_str(&line(r));
        }
        s
    }
}

/// Clicking a header of a `sortable` table sorts its rows by that column (numbers as numbers,
/// again to reverse).
const SORT_SCRIPT: &str = "<script>\
document.querySelectorAll('table.sortable th').forEach(function(th,i){th.style.cursor='pointer';\
th.title='sort';th.onclick=function(){var t=th.closest('table'),rows=[].slice.call(t.rows,1),\
up=th.dataset.up!=='1';th.dataset.up=up?'1':'0';rows.sort(function(a,b){\
var x=a.cells[i].textContent,y=b.cells[i].textContent,p=parseFloat(x),q=parseFloat(y);\
var c=(isNaN(p)||isNaN(q))?x.localeCompare(y):p-q;return up?c:-c;});\
rows.forEach(function(r){t.tBodies[0].appendChild(r);});};});</script>\n";

/// The diagnosis' per-layer table (the one the console prints), sortable by any column.
fn layer_table(h: &mut String, d: &Diagnosis) {
    if d.layers.is_empty() {
        return;
    }
    let rel = if d.head_inputs().is_empty() {
        "÷ last layer"
    } else {
        "÷ strongest head input (RMS)"
    };
    let _ = writeln!(
        h,
        "<p>per layer, end of run (click a column to sort):</p><table class=\"sortable\"><tbody><tr>\
<th>layer</th><th>block</th><th>‖∂L/∂h‖</th><th>{rel}</th><th>update ratio</th><th>dead</th>\
<th>saturated</th><th>verdict</th></tr>"
    );
    let pct = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{:.0}%", v * 100.0));
    for l in &d.layers {
        let class = if l.verdict == crate::diagnose::Verdict::Healthy {
            "v-healthy"
        } else {
            "v-bad"
        };
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            escape(&l.name),
            escape(&l.block),
            num(l.grad_h_norm),
            num(l.grad_h_rel),
            // layers without parameters (upsampling, concatenation) have no update ratio
            if l.update_ratio.is_finite() {
                num(l.update_ratio)
            } else {
                "-".into()
            },
            pct(l.dead_frac),
            pct(l.sat_frac),
            escape(&l.verdict.to_string())
        );
    }
    h.push_str("</tbody></table>\n");
}

pub fn write(
    path: &Path,
    title: &str,
    intro: &str,
    table: &Table,
    runs: &[RunView],
    images: &[(&str, &str)],
) -> Result<(), ReportError> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\
body{{font-family:sans-serif;max-width:1240px;margin:2em auto;color:#222}}\
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}\
td:first-child,th:first-child{{text-align:left}}th{{background:#f2f2f2}}\
.v-healthy{{color:#1a7f37;font-weight:bold}}.v-bad{{color:#c62828;font-weight:bold}}\
img{{max-width:100%;border:1px solid #ddd;margin:0.5em 0}}code{{background:#f4f4f4;padding:1px 4px}}\
section{{border-top:1px solid #ddd;margin-top:1.5em}}</style></head><body>\n<h1>{t}</h1>\n<p>{i}</p>\n",
        t = escape(title),
        i = escape(intro)
    );
    h.push_str("<table><tr>");
    for c in &table.columns {
        let _ = write!(h, "<th>{}</th>", escape(c));
    }
    h.push_str("</tr>\n");
    let verdict_col = table.columns.iter().position(|c| c == "verdict");
    for r in &table.rows {
        h.push_str("<tr>");
        for (c, x) in r.iter().enumerate() {
            if Some(c) == verdict_col {
                let class = if x == "healthy" { "v-healthy" } else { "v-bad" };
                let _ = write!(h, "<td class=\"{class}\">{}</td>", escape(x));
            } else {
                let _ = write!(h, "<td>{}</td>", escape(x));
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
    for (file, caption) in images {
        let _ = writeln!(
            h,
            "<h2>{}</h2>\n<img src=\"{}\" alt=\"{}\">",
            escape(caption),
            escape(file),
            escape(caption)
        );
    }
    for run in runs {
        let _ = writeln!(
            h,
            "<section><h2>{}</h2><p><code>{}</code></p>",
            escape(run.name),
            escape(&run.settings)
        );
        if let Some(d) = run.diagnosis {
            let _ = writeln!(
                h,
                "<p>verdict: <b>{}</b></p><ul>",
                escape(&d.verdict.to_string())
            );
            for e in &d.evidence {
                let _ = writeln!(h, "<li>{}</li>", escape(e));
            }
            h.push_str("</ul>");
            if !d.remedies.is_empty() {
                h.push_str("<p>remedies, most relevant first:</p><ol>");
                for r in &d.remedies {
                    let _ = writeln!(
                        h,
                        "<li><code>{}</code> — {}</li>",
                        escape(&r.switch),
                        escape(&r.why)
                    );
                }
                h.push_str("</ol>");
            }
            layer_table(&mut h, d);
        }
        for ev in &run.history.recoveries {
            let at = ev
                .producer
                .as_ref()
                .map(|p| format!(": {p}"))
                .unwrap_or_default();
            let _ = writeln!(
                h,
                "<p>NaN recovery at step {}: non-finite {}{}; state restored, learning rate → {:.3e}</p>",
                ev.step,
                escape(&ev.what),
                escape(&at),
                ev.lr_after
            );
        }
        if let Some(s) = &run.history.stopped {
            let _ = writeln!(h, "<p class=\"v-bad\">stopped early: {}</p>", escape(s));
        }
        h.push_str("</section>\n");
    }
    h.push_str(SORT_SCRIPT);
    h.push_str("</body></html>\n");
    std::fs::write(path, h).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })
}
