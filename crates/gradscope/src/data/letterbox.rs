//! Letterboxing: scale an image to fit `imgsz` × `imgsz` keeping its aspect ratio (as OpenCV
//! resizes, see [`super::resize`]), pad the rest with grey 114 split evenly on both sides, and move
//! the boxes with it.

use image::{Rgb, RgbImage};

use super::resize::{resize, Interp};

use super::detect::Label;

pub const PAD_VALUE: u8 = 114;

/// A letterboxed image (the canvas' size) and boxes as (class, x1, y1, x2, y2) in its pixels.
pub struct Letterboxed {
    pub image: RgbImage,
    pub boxes: Vec<(usize, [f32; 4])>,
    /// scale applied to the original, and the (left, top) padding in pixels
    pub ratio: f32,
    pub pad: (u32, u32),
}

/// A letterboxed input's size in pixels: (width, height).
pub type Canvas = (u32, u32);

/// The `imgsz` × `imgsz` canvas of training (and of `rect=false` validation).
pub fn square(imgsz: u32) -> Canvas {
    (imgsz, imgsz)
}

/// Ultralytics' prediction canvas (`LetterBox(auto=True)`): the image scaled to fit `imgsz`,
/// padded only up to the next multiple of `stride` on each side.
pub fn min_canvas(w0: u32, h0: u32, imgsz: u32, stride: u32) -> Canvas {
    let (_, (w1, h1), _) = geometry(w0, h0, imgsz, square(imgsz));
    (w1.div_ceil(stride) * stride, h1.div_ceil(stride) * stride)
}

/// Ultralytics' rectangular validation batches (`rect=True`): the images (`sizes`, width ×
/// height) in order of aspect ratio h/w, `batch` at a time, each batch on one canvas of its
/// images' shape — `[max h/w, 1]` when all are wide, `[1, 1/min h/w]` when all are tall, else
/// square — times `imgsz / stride`, plus half a stride, rounded up to whole strides. (A square
/// image at `imgsz` 256 sits in a 288 × 288 canvas.) Returns each batch's image indices and
/// canvas.
pub fn rect_batches(
    sizes: &[(u32, u32)],
    batch: usize,
    imgsz: u32,
    stride: u32,
) -> Vec<(Vec<usize>, Canvas)> {
    let aspect = |i: usize| sizes[i].1 as f64 / sizes[i].0.max(1) as f64;
    let mut order: Vec<usize> = (0..sizes.len()).collect();
    order.sort_by(|&a, &b| aspect(a).total_cmp(&aspect(b)));
    order
        .chunks(batch.max(1))
        .map(|chunk| {
            let lo = chunk
                .iter()
                .map(|&i| aspect(i))
                .fold(f64::INFINITY, f64::min);
            let hi = chunk.iter().map(|&i| aspect(i)).fold(0.0, f64::max);
            let (h, w) = if hi < 1.0 {
                (hi, 1.0)
            } else if lo > 1.0 {
                (1.0, 1.0 / lo)
            } else {
                (1.0, 1.0)
            };
            let side = |r: f64| (r * imgsz as f64 / stride as f64 + 0.5).ceil() as u32 * stride;
            (chunk.to_vec(), (side(w), side(h)))
        })
        .collect()
}

/// How a `w0` × `h0` image sits in `canvas`: scaled to fit `imgsz`, centred. Returns the scale,
/// the scaled size (w1, h1) and the (left, top) padding.
pub fn geometry(w0: u32, h0: u32, imgsz: u32, canvas: Canvas) -> (f32, (u32, u32), (u32, u32)) {
    let ratio = (imgsz as f32 / w0 as f32).min(imgsz as f32 / h0 as f32);
    let (w1, h1) = (
        ((w0 as f32 * ratio).round() as u32).max(1),
        ((h0 as f32 * ratio).round() as u32).max(1),
    );
    (
        ratio,
        (w1, h1),
        (
            canvas.0.saturating_sub(w1) / 2,
            canvas.1.saturating_sub(h1) / 2,
        ),
    )
}

/// A box (x1, y1, x2, y2) in letterboxed pixels clipped to where the `w0` × `h0` image lies in
/// the letterboxed input (not the grey padding): the box [`unletterbox`] gives back, in letterboxed
/// pixels. COCO metrics are computed on it, as pycocotools scores the clipped boxes of a
/// predictions.json.
pub fn clip_to_image(b: [f32; 4], w0: u32, h0: u32, imgsz: u32, canvas: Canvas) -> [f32; 4] {
    let (r, _, (left, top)) = geometry(w0, h0, imgsz, canvas);
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
pub fn unletterbox(b: [f32; 4], w0: u32, h0: u32, imgsz: u32, canvas: Canvas) -> [f32; 4] {
    let (r, _, (left, top)) = geometry(w0, h0, imgsz, canvas);
    let un = |v: f32, pad: u32, lim: u32| ((v - pad as f32) / r).clamp(0.0, lim as f32);
    [
        un(b[0], left, w0),
        un(b[1], top, h0),
        un(b[2], left, w0),
        un(b[3], top, h0),
    ]
}

/// `img` scaled to fit `imgsz` × `imgsz` keeping its aspect ratio, centred on `canvas` padded
/// grey, with `labels` as pixel boxes on it. Resized bilinearly, as OpenCV does for Ultralytics
/// 8.4 when it trains, validates and predicts (its earlier validation loaders shrank with
/// pixel-area averaging, which [`resize`] also offers).
pub fn letterbox(img: &RgbImage, labels: &[Label], imgsz: u32, canvas: Canvas) -> Letterboxed {
    let (w0, h0) = img.dimensions();
    let (ratio, (w1, h1), (left, top)) = geometry(w0, h0, imgsz, canvas);
    let resized = resize(img, w1, h1, Interp::Linear);
    let mut out = RgbImage::from_pixel(canvas.0, canvas.1, Rgb([PAD_VALUE; 3]));
    image::imageops::replace(&mut out, &resized, left as i64, top as i64);
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
        image: out,
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
        let lb = letterbox(&img, &[l], 64, square(64));
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
        let b = clip_to_image([-5.0, 2.0, 70.0, 30.0], 32, 24, 64, square(64));
        assert_eq!(b, [0.0, 8.0, 64.0, 30.0]);
        let back = unletterbox(b, 32, 24, 64, square(64));
        assert_eq!(
            back,
            unletterbox([-5.0, 2.0, 70.0, 30.0], 32, 24, 64, square(64))
        );
        assert_eq!(back, [0.0, 0.0, 32.0, 11.0]);
    }

    /// Ultralytics' canvases, worked by hand from its rules: `ceil(shape·imgsz/32 + 0.5)·32`.
    #[test]
    fn canvases_follow_ultralytics_rules() {
        // squares at 256: 256/32 + 0.5 = 8.5 → 9 strides
        let b = rect_batches(&[(400, 400); 3], 2, 256, 32);
        assert_eq!(b, vec![(vec![0, 1], (288, 288)), (vec![2], (288, 288))]);
        // 640×480 and 640×427 at 640: wide, max h/w 0.75 → h ceil(15 + 0.5) = 16 strides = 512,
        // w ceil(20.5) = 21 strides = 672; a tall 480×640 alone: [1, 0.75] → 672 × 512
        let b = rect_batches(&[(640, 480), (480, 640), (640, 427)], 2, 640, 32);
        assert_eq!(b[0], (vec![2, 0], (672, 512)));
        assert_eq!(b[1], (vec![1], (512, 672)));
        // a batch holding both kinds is square
        let b = rect_batches(&[(640, 480), (480, 640)], 2, 640, 32);
        assert_eq!(b[0].1, (672, 672));
        // prediction: only up to the next multiple of 32 (427 → 448)
        assert_eq!(min_canvas(640, 427, 640, 32), (640, 448));
        assert_eq!(min_canvas(400, 400, 256, 32), (256, 256));
        // a box maps back from any canvas
        let (_, _, pad) = geometry(640, 427, 640, (672, 512));
        assert_eq!(pad, (16, 42));
        let b = unletterbox([16.0, 42.0, 656.0, 469.0], 640, 427, 640, (672, 512));
        assert_eq!(b, [0.0, 0.0, 640.0, 427.0]);
    }
}
