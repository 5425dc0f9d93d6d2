//! Letterboxing: scale an image to fit `imgsz` × `imgsz` keeping its aspect ratio (bilinear), pad
//! the rest with grey 114 split evenly on both sides, and move the boxes with it.

use image::imageops::{resize, FilterType};
use image::{Rgb, RgbImage};

use super::detect::Label;

pub const PAD_VALUE: u8 = 114;

/// A letterboxed image (`imgsz` × `imgsz`) and boxes as (class, x1, y1, x2, y2) in its pixels.
pub struct Letterboxed {
    pub image: RgbImage,
    pub boxes: Vec<(usize, [f32; 4])>,
    /// scale applied to the original, and the (left, top) padding in pixels
    pub ratio: f32,
    pub pad: (u32, u32),
}

/// How a `w0` × `h0` image sits in the `imgsz` square: scale, scaled size (w1, h1) and the
/// (left, top) padding.
pub fn geometry(w0: u32, h0: u32, imgsz: u32) -> (f32, (u32, u32), (u32, u32)) {
    let ratio = (imgsz as f32 / w0 as f32).min(imgsz as f32 / h0 as f32);
    let (w1, h1) = (
        ((w0 as f32 * ratio).round() as u32).max(1),
        ((h0 as f32 * ratio).round() as u32).max(1),
    );
    (ratio, (w1, h1), ((imgsz - w1) / 2, (imgsz - h1) / 2))
}

/// A box (x1, y1, x2, y2) in letterboxed pixels clipped to where the `w0` × `h0` image lies in
/// the letterboxed input (not the grey padding): the box [`unletterbox`] gives back, in letterboxed
/// pixels. Metrics are computed on it, as the reference validator computes them on boxes clipped to
/// the image.
pub fn clip_to_image(b: [f32; 4], w0: u32, h0: u32, imgsz: u32) -> [f32; 4] {
    let (r, _, (left, top)) = geometry(w0, h0, imgsz);
    let (x0, y0) = (left as f32, top as f32);
    let (x1, y1) = (x0 + w0 as f32 * r, y0 + h0 as f32 * r);
    [
        b[0].clamp(x0, x1),
        b[1].clamp(y0, y1),
        b[2].clamp(x0, x1),
        b[3].clamp(y0, y1),
    ]
}

/// A box (x1, y1, x2, y2) in letterboxed pixels back in the `w0` × `h0` image's own pixels,
/// clamped to the image.
pub fn unletterbox(b: [f32; 4], w0: u32, h0: u32, imgsz: u32) -> [f32; 4] {
    let (r, _, (left, top)) = geometry(w0, h0, imgsz);
    let un = |v: f32, pad: u32, lim: u32| ((v - pad as f32) / r).clamp(0.0, lim as f32);
    [
        un(b[0], left, w0),
        un(b[1], top, h0),
        un(b[2], left, w0),
        un(b[3], top, h0),
    ]
}

/// `img` scaled to fit `imgsz` × `imgsz` keeping its aspect ratio, padded grey, with `labels` as
/// pixel boxes on it.
pub fn letterbox(img: &RgbImage, labels: &[Label], imgsz: u32) -> Letterboxed {
    let (w0, h0) = img.dimensions();
    let (ratio, (w1, h1), (left, top)) = geometry(w0, h0, imgsz);
    let resized = resize(img, w1, h1, FilterType::Triangle);
    let mut canvas = RgbImage::from_pixel(imgsz, imgsz, Rgb([PAD_VALUE; 3]));
    image::imageops::replace(&mut canvas, &resized, left as i64, top as i64);
    let boxes = labels
        .iter()
        .map(|l| {
            let (cx, cy) = (
                l.cx * w1 as f32 + left as f32,
                l.cy * h1 as f32 + top as f32,
            );
            let (bw, bh) = (l.w * w1 as f32, l.h * h1 as f32);
            (
                l.class,
                [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
            )
        })
        .collect();
    Letterboxed {
        image: canvas,
        boxes,
        ratio,
        pad: (left, top),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wide_image_is_scaled_to_fit_and_padded_top_and_bottom() {
        let img = RgbImage::from_pixel(32, 24, Rgb([255, 0, 0]));
        let l = Label {
            class: 3,
            cx: 0.5,
            cy: 0.5,
            w: 0.2,
            h: 0.2,
        };
        let lb = letterbox(&img, &[l], 64);
        assert_eq!((lb.ratio, lb.pad), (2.0, (0, 8)));
        assert_eq!(lb.image.dimensions(), (64, 64));
        assert_eq!(
            lb.image.get_pixel(0, 0).0,
            [PAD_VALUE; 3],
            "top row is padding"
        );
        assert_eq!(
            lb.image.get_pixel(0, 7).0,
            [PAD_VALUE; 3],
            "padding ends at row 8"
        );
        assert_eq!(lb.image.get_pixel(32, 32).0, [255, 0, 0], "red inside");
        let (c, b) = lb.boxes[0];
        assert_eq!(c, 3);
        let expect = [32.0 - 6.4, 32.0 - 4.8, 32.0 + 6.4, 32.0 + 4.8];
        for k in 0..4 {
            assert!((b[k] - expect[k]).abs() < 1e-4, "{b:?} vs {expect:?}");
        }
    }

    /// A box reaching into the padding is cut where the image ends, and brought back to the
    /// image it is the box `unletterbox` gives (so metrics on either agree).
    #[test]
    fn boxes_are_clipped_to_the_image_not_the_padding() {
        // 32×24 at 64: ratio 2, the image spans y 8..56
        let b = clip_to_image([-5.0, 2.0, 70.0, 30.0], 32, 24, 64);
        assert_eq!(b, [0.0, 8.0, 64.0, 30.0]);
        let back = unletterbox(b, 32, 24, 64);
        assert_eq!(back, unletterbox([-5.0, 2.0, 70.0, 30.0], 32, 24, 64));
        assert_eq!(back, [0.0, 0.0, 32.0, 11.0]);
    }
}
