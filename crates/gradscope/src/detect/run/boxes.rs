//! Boxes drawn onto an image with their tags ("name score"), as the batch pictures and
//! `gradscope predict` draw them, in the embedded DejaVu font.

use image::RgbImage;
use plotters::prelude::*;

use crate::report::chart::{fonts, run_color};

/// One box to draw: class, xyxy pixels, score (None for a label).
pub type Drawn = (usize, [f32; 4], Option<f32>);

/// How boxes are drawn: line width, and what the tag shows.
#[derive(Clone, Copy, Debug)]
pub struct BoxStyle {
    /// Pixels; `None`: from the image size as Ultralytics does, max(round((w + h) / 2 · 0.003), 2).
    pub line_width: Option<u32>,
    /// The class name on the tag.
    pub labels: bool,
    /// The score on the tag.
    pub conf: bool,
}

impl Default for BoxStyle {
    fn default() -> Self {
        BoxStyle {
            line_width: Some(2),
            labels: true,
            conf: true,
        }
    }
}

/// Draws boxes with "name score" tags onto `img`.
pub fn draw_boxes(img: &mut RgbImage, boxes: &[Drawn], names: &[String]) -> Result<(), String> {
    draw_boxes_with(img, boxes, names, &BoxStyle::default())
}

/// Draws boxes onto `img` as `style` says (no tag when it shows neither name nor score).
pub fn draw_boxes_with(
    img: &mut RgbImage,
    boxes: &[Drawn],
    names: &[String],
    style: &BoxStyle,
) -> Result<(), String> {
    fonts();
    let (w, h) = img.dimensions();
    let lw = style
        .line_width
        .unwrap_or_else(|| ((w + h) as f64 / 2.0 * 0.003).round().max(2.0) as u32);
    let buf: &mut [u8] = img;
    let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
    let font = (w.min(h) as f64 / 40.0).clamp(9.0, 22.0);
    for (c, b, s) in boxes {
        let col = run_color(*c);
        let (x1, y1, x2, y2) = (b[0] as i32, b[1] as i32, b[2] as i32, b[3] as i32);
        root.draw(&Rectangle::new([(x1, y1), (x2, y2)], col.stroke_width(lw)))
            .map_err(|e| e.to_string())?;
        let name = style
            .labels
            .then(|| names.get(*c).cloned().unwrap_or_else(|| c.to_string()));
        let score = match s {
            Some(s) if style.conf && *s >= 0.01 => Some(format!("{s:.2}")),
            Some(s) if style.conf => Some(format!("{s:.0e}")),
            _ => None,
        };
        let tag = match (name, score) {
            (Some(n), Some(s)) => format!("{n} {s}"),
            (Some(t), None) | (None, Some(t)) => t,
            (None, None) => continue,
        };
        let th = font as i32 + 4;
        let tw = (tag.chars().count() as f64 * font * 0.6) as i32 + 4;
        let ty = if y1 - th >= 0 { y1 - th } else { y1 };
        root.draw(&Rectangle::new(
            [(x1, ty), (x1 + tw, ty + th)],
            col.filled(),
        ))
        .map_err(|e| e.to_string())?;
        root.draw(&Text::new(
            tag,
            (x1 + 2, ty + 2),
            ("sans-serif", font).into_font().color(&WHITE),
        ))
        .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
