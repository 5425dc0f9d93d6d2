//! The one chart style every PNG shares: the embedded font, the run colours, and a chart with
//! its caption, margins and label areas set one way, with a mesh whose labels are one size.
//! Both the lab reports ([`super::plots`]) and the detection run's plots draw through it.

use std::sync::Once;

use plotters::chart::MeshStyle;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

/// Registers the embedded DejaVu Sans as `sans-serif` (once per process).
pub fn fonts() {
    REGISTER.call_once(|| {
        // The font is compiled in and known to parse; a failure would only lose the text.
        let _ = plotters::style::register_font("sans-serif", FontStyle::Normal, FONT);
    });
}

/// A colour per run, distinguishable on white.
pub fn run_color(i: usize) -> RGBColor {
    const C: [RGBColor; 8] = [
        RGBColor(214, 39, 40),
        RGBColor(255, 127, 14),
        RGBColor(31, 119, 180),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(23, 190, 207),
    ];
    C[i % C.len()]
}

/// How much room a chart has: a whole figure, or one panel of a grid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    Figure,
    Panel,
}

/// Size of axis labels and tick labels.
pub const LABEL_FONT: u32 = 12;

/// A drawing area of a PNG.
pub type Area<'b> = DrawingArea<BitMapBackend<'b>, Shift>;

/// A chart on `area` with `caption` over the ranges `x` × `y`.
#[allow(clippy::type_complexity)]
pub fn chart<'a, 'b, X: AsRangedCoord, Y: AsRangedCoord>(
    area: &'a Area<'b>,
    caption: &str,
    size: Size,
    x: X,
    y: Y,
) -> Result<
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X::CoordDescType, Y::CoordDescType>>,
    DrawingAreaErrorKind<<BitMapBackend<'b> as DrawingBackend>::ErrorType>,
> {
    let (font, margin, x_area, y_area) = match size {
        Size::Figure => (18, 10, 32, 52),
        Size::Panel => (16, 8, 28, 48),
    };
    let mut b = ChartBuilder::on(area);
    if !caption.is_empty() {
        b.caption(caption, ("sans-serif", font));
    }
    b.margin(margin)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area)
        .build_cartesian_2d(x, y)
}

/// The chart's mesh with the axis descriptions (empty: none) and the shared label size; callers
/// add formatters or turn parts off, then `draw()`.
pub fn mesh<'a, 'c, 'b, X, Y>(
    chart: &'c mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>,
    x_desc: &str,
    y_desc: &str,
) -> MeshStyle<'a, 'c, X, Y, BitMapBackend<'b>>
where
    X: Ranged + ValueFormatter<X::ValueType>,
    Y: Ranged + ValueFormatter<Y::ValueType>,
{
    let mut m = chart.configure_mesh();
    m.label_style(("sans-serif", LABEL_FONT));
    if !x_desc.is_empty() {
        m.x_desc(x_desc);
    }
    if !y_desc.is_empty() {
        m.y_desc(y_desc);
    }
    m
}

/// Draws the legend of the series that have a `.label(…)`, in the shared style.
pub fn legend<'a, 'b, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, BitMapBackend<'b>, Cartesian2d<X, Y>>,
) -> Result<(), String>
where
    'b: 'a,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font(("sans-serif", LABEL_FONT + 1))
        .draw()
        .map_err(|e| e.to_string())
}

/// A tick label for whole numbers only ("-0" as "0"), empty between them: no repeated labels
/// where the axis puts ticks at fractions.
pub fn whole(v: f64) -> String {
    if (v - v.round()).abs() > 1e-6 {
        String::new()
    } else if v.round() == 0.0 {
        "0".into()
    } else {
        format!("{v:.0}")
    }
}

/// One entry of a [`legend_row`]: a name, its colour, drawn dashed or solid.
pub struct Key<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub dashed: bool,
}

/// The legend's text style: left-aligned, centred on the swatch.
fn key_text() -> TextStyle<'static> {
    ("sans-serif", LABEL_FONT + 1)
        .into_font()
        .color(&BLACK)
        .pos(plotters::style::text_anchor::Pos::new(
            plotters::style::text_anchor::HPos::Left,
            plotters::style::text_anchor::VPos::Center,
        ))
}

/// Draws one key with its swatch starting at (x, y): 20 pixels of line, then the name.
fn draw_key(area: &Area, k: &Key, (x, y): (i32, i32)) -> Result<(), String> {
    let style = k.color.stroke_width(3);
    if k.dashed {
        for s in [0, 8, 16] {
            area.draw(&PathElement::new(vec![(x + s, y), (x + s + 5, y)], style))
                .map_err(|e| e.to_string())?;
        }
    } else {
        area.draw(&PathElement::new(vec![(x, y), (x + 20, y)], style))
            .map_err(|e| e.to_string())?;
    }
    area.draw(&Text::new(k.name, (x + 26, y), key_text()))
        .map_err(|e| e.to_string())
}

/// A legend as one row of swatches and names across the top of `area` (a strip of its own):
/// unlike a legend box inside a chart it never covers a curve.
pub fn legend_row(area: &Area, keys: &[Key]) -> Result<(), String> {
    let (w, h) = area.dim_in_pixel();
    let widths: Vec<i32> = keys
        .iter()
        .map(|k| {
            let (tw, _) = area
                .estimate_text_size(k.name, &key_text())
                .unwrap_or((60, 0));
            26 + tw as i32 + 18
        })
        .collect();
    let mut x = ((w as i32 - widths.iter().sum::<i32>()) / 2).max(4);
    for (k, kw) in keys.iter().zip(widths) {
        draw_key(area, k, (x, h as i32 / 2))?;
        x += kw;
    }
    Ok(())
}

/// A legend as a column of keys down the left of `area` (a strip of its own beside a chart),
/// from `top` pixels down, 20 pixels apart.
pub fn legend_column(area: &Area, keys: &[Key], top: i32) -> Result<(), String> {
    for (i, k) in keys.iter().enumerate() {
        draw_key(area, k, (6, top + 20 * i as i32))?;
    }
    Ok(())
}
