//! YOLO training augmentation on host images: one dataset sample becomes a `[3, imgsz, imgsz]`
//! training image with its boxes, through the steps Ultralytics applies, in its order:
//!
//! 1. **mosaic** (probability `mosaic`, only when the caller allows it): the sample and three
//!    random others, each fitted so its long side is `imgsz`, tiled around a random centre of a
//!    `2·imgsz` square canvas filled with grey 114; boxes are moved and clipped to their tile;
//! 2. **random affine**: the input (the mosaic canvas, or the letterboxed sample) is centred,
//!    scaled by a factor in `[1 − scale, 1 + scale]` and translated by up to `±translate·imgsz`
//!    into an `imgsz × imgsz` output (bilinear, border 114); boxes follow, are clipped to the
//!    output and kept only if they stay big enough (Ultralytics' `box_candidates` rule);
//! 3. **HSV jitter**: hue shifted, saturation and value multiplied by random gains;
//! 4. **horizontal flip** with probability `fliplr`.
//!
//! Everything random comes from the caller's [`StdRng`], so one seed gives one result.
//! Validation images are only letterboxed ([`val_image`]).
//!
//! Boxes are `(class, [x1, y1, x2, y2])` in pixels, in continuous coordinates where pixel
//! `(i, j)` covers `[i, i + 1) × [j, j + 1)`; the warp samples at pixel centres accordingly.

mod affine;
mod hsv;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::path::PathBuf;

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::Rng;

use crate::data::detect::{Label, Sample};
use crate::data::image::to_chw;
use crate::data::letterbox::{letterbox, square, Canvas, PAD_VALUE};
use crate::data::resize::resize;
use crate::data::resize::Interp;
pub use crate::detect::error::AugmentError;
use crate::detect::input::pixels::Images;

use affine::{flip_lr, random_affine, transform_boxes, warp};
use hsv::{apply_hsv, hsv_gains};

/// A box in pixels: (class, [x1, y1, x2, y2]).
type PixelBox = (usize, [f32; 4]);

/// The largest training image side accepted (the mosaic canvas is twice that, squared).
const MAX_IMGSZ: u32 = 8192;

/// The smallest affine scale factor used, whatever the configuration asks.
const MIN_SCALE: f32 = 0.01;

/// How strongly each augmentation is applied; the names and meanings are Ultralytics'.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AugmentConfig {
    /// Hue gain: the hue moves by up to this fraction of the full circle.
    pub hsv_h: f32,
    /// Saturation gain: saturation is multiplied by a factor in `[1 − hsv_s, 1 + hsv_s]`.
    pub hsv_s: f32,
    /// Value gain: brightness is multiplied by a factor in `[1 − hsv_v, 1 + hsv_v]`.
    pub hsv_v: f32,
    /// Probability of a horizontal flip.
    pub fliplr: f32,
    /// Affine scale range: the factor is uniform in `[1 − scale, 1 + scale]`.
    pub scale: f32,
    /// Affine translation range, as a fraction of `imgsz`.
    pub translate: f32,
    /// Probability of a 4-image mosaic.
    pub mosaic: f32,
}

impl Default for AugmentConfig {
    /// Ultralytics' defaults.
    fn default() -> Self {
        AugmentConfig {
            hsv_h: 0.015,
            hsv_s: 0.7,
            hsv_v: 0.4,
            fliplr: 0.5,
            scale: 0.5,
            translate: 0.1,
            mosaic: 1.0,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all: the result is the plain letterboxed image.
    pub fn none() -> Self {
        AugmentConfig {
            hsv_h: 0.0,
            hsv_s: 0.0,
            hsv_v: 0.0,
            fliplr: 0.0,
            scale: 0.0,
            translate: 0.0,
            mosaic: 0.0,
        }
    }
}

/// One training (or validation) image ready for the network.
#[derive(Clone, Debug, PartialEq)]
pub struct Augmented {
    /// `[3, imgsz, imgsz]`, channel-major RGB, values in [0, 1].
    pub chw: Vec<f32>,
    /// (class, x1, y1, x2, y2) in pixels of the output image.
    pub boxes: Vec<(usize, [f32; 4])>,
}

/// A validation (or prediction) image: the plain letterbox of `img` and its labels on `canvas`.
/// An `imgsz` of 0 gives an empty result, an empty image a grey canvas without boxes.
pub fn val_image(img: &RgbImage, labels: &[Label], imgsz: u32, canvas: Canvas) -> Augmented {
    if imgsz == 0 {
        return Augmented {
            chw: Vec::new(),
            boxes: Vec::new(),
        };
    }
    if img.width() == 0 || img.height() == 0 {
        return Augmented {
            chw: to_chw(&RgbImage::from_pixel(
                canvas.0,
                canvas.1,
                Rgb([PAD_VALUE; 3]),
            )),
            boxes: Vec::new(),
        };
    }
    let lb = letterbox(img, labels, imgsz, canvas);
    Augmented {
        chw: to_chw(&lb.image),
        boxes: lb.boxes,
    }
}

/// One augmented training image for `samples[index]`: mosaic (if `use_mosaic`, with probability
/// `cfg.mosaic`), random affine, HSV jitter, horizontal flip, all drawn from `rng`.
/// `images` holds the decoded image of `samples[i]` at `i`.
pub fn train_image<I: Images + ?Sized>(
    samples: &[Sample],
    images: &I,
    index: usize,
    imgsz: u32,
    cfg: &AugmentConfig,
    use_mosaic: bool,
    rng: &mut StdRng,
) -> Result<Augmented, AugmentError> {
    if imgsz == 0 || imgsz > MAX_IMGSZ {
        return Err(AugmentError::Imgsz {
            imgsz,
            max: MAX_IMGSZ,
        });
    }
    let sample = samples.get(index).ok_or(AugmentError::Index {
        index,
        len: samples.len(),
    })?;
    let (input, boxes) = if use_mosaic && chance(rng, cfg.mosaic) {
        mosaic(samples, images, index, imgsz, rng)?
    } else {
        let lb = letterbox(
            &*load(samples, images, index)?,
            &sample.labels,
            imgsz,
            square(imgsz),
        );
        (lb.image, lb.boxes)
    };
    let affine = random_affine(input.width(), imgsz, cfg, rng);
    let mut img = warp(&input, &affine, imgsz);
    let mut boxes = transform_boxes(&boxes, &affine, imgsz as f32);
    if let Some(gains) = hsv_gains(cfg, rng) {
        apply_hsv(&mut img, gains);
    }
    if chance(rng, cfg.fliplr) {
        flip_lr(&mut img, &mut boxes);
    }
    Ok(Augmented {
        chw: to_chw(&img),
        boxes,
    })
}

// ----- random draws -----

/// A uniform draw in `[lo, hi]`; never panics, even for an empty or reversed range.
pub(super) fn uniform(rng: &mut StdRng, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.random::<f32>()
}

/// True with probability `p` (never for `p <= 0`, always for `p >= 1`).
fn chance(rng: &mut StdRng, p: f32) -> bool {
    p > 0.0 && rng.random::<f32>() < p
}

/// A random dataset index other than `index` (or `index` itself when it is the only one).
fn other_index(n: usize, index: usize, rng: &mut StdRng) -> usize {
    if n <= 1 {
        return index;
    }
    let j = rng.random_range(0..n - 1);
    if j >= index {
        j + 1
    } else {
        j
    }
}

// ----- image plumbing -----

/// `samples[i]`'s image, refusing a missing or empty one.
fn load<'a, I: Images + ?Sized>(
    samples: &[Sample],
    images: &'a I,
    i: usize,
) -> Result<Cow<'a, RgbImage>, AugmentError> {
    let img = images.image(i)?;
    if img.width() == 0 || img.height() == 0 {
        let path = samples
            .get(i)
            .map_or_else(|| PathBuf::from(format!("image {i}")), |s| s.image.clone());
        return Err(AugmentError::Empty { path });
    }
    Ok(img)
}

// ----- mosaic -----

/// `img` resized bilinearly (as Ultralytics' training loader does) so its long side is `size`,
/// and `labels` as pixel boxes on it.
fn fit_long_side(img: &RgbImage, labels: &[Label], size: u32) -> (RgbImage, Vec<PixelBox>) {
    let (w0, h0) = img.dimensions();
    let r = size as f32 / w0.max(h0) as f32;
    let fit = |d: u32| ((d as f32 * r).round() as u32).clamp(1, size);
    let (w, h) = (fit(w0), fit(h0));
    let img = if (w, h) == (w0, h0) {
        img.clone()
    } else {
        resize(img, w, h, Interp::Linear)
    };
    let (wf, hf) = (w as f32, h as f32);
    let boxes = labels
        .iter()
        .map(|l| {
            let (cx, cy, bw, bh) = (l.cx * wf, l.cy * hf, l.w * wf, l.h * hf);
            (
                l.class,
                [cx - bw / 2.0, cy - bh / 2.0, cx + bw / 2.0, cy + bh / 2.0],
            )
        })
        .collect();
    (img, boxes)
}

/// Where one tile goes on the mosaic canvas: the canvas rectangle `[x1, x2) × [y1, y2)` shows
/// the tile from its pixel `(src_x, src_y)` on.
#[derive(Clone, Copy, Debug)]
struct Placement {
    x1: i64,
    y1: i64,
    x2: i64,
    y2: i64,
    src_x: i64,
    src_y: i64,
}

/// One axis of a placement: a tile of length `len` ending at the centre `c` (`before`) or
/// starting at it, cut to the canvas `[0, total)`. Returns (canvas start, canvas end, tile start).
fn span(before: bool, c: i64, len: i64, total: i64) -> (i64, i64, i64) {
    if before {
        let a1 = (c - len).max(0);
        (a1, c, len - (c - a1))
    } else {
        (c, (c + len).min(total), 0)
    }
}

/// The placement of a `w × h` tile in `quadrant` (0 top-left, 1 top-right, 2 bottom-left,
/// 3 bottom-right) around the centre `(xc, yc)` of a `total`-sized square canvas.
fn placement(quadrant: usize, xc: i64, yc: i64, w: i64, h: i64, total: i64) -> Placement {
    let (x1, x2, src_x) = span(matches!(quadrant, 0 | 2), xc, w, total);
    let (y1, y2, src_y) = span(quadrant < 2, yc, h, total);
    Placement {
        x1,
        y1,
        x2,
        y2,
        src_x,
        src_y,
    }
}

/// Copies the part of `tile` that `p` shows onto `canvas`.
fn paste(canvas: &mut RgbImage, tile: &RgbImage, p: &Placement) {
    let (cw, tw) = (canvas.width() as usize, tile.width() as usize);
    let width = (p.x2 - p.x1).max(0) as usize * 3;
    let src = tile.as_raw();
    let dst: &mut [u8] = canvas.as_mut();
    for row in 0..(p.y2 - p.y1).max(0) as usize {
        let s0 = ((p.src_y as usize + row) * tw + p.src_x as usize) * 3;
        let d0 = ((p.y1 as usize + row) * cw + p.x1 as usize) * 3;
        if let (Some(s), Some(d)) = (src.get(s0..s0 + width), dst.get_mut(d0..d0 + width)) {
            d.copy_from_slice(s);
        }
    }
}

/// A tile box moved onto the canvas and clipped to the tile's visible rectangle; `None` when
/// nothing of it is left.
fn place_box((class, b): PixelBox, p: &Placement) -> Option<PixelBox> {
    let (dx, dy) = ((p.x1 - p.src_x) as f32, (p.y1 - p.src_y) as f32);
    let clip_x = |v: f32| v.max(p.x1 as f32).min(p.x2 as f32);
    let clip_y = |v: f32| v.max(p.y1 as f32).min(p.y2 as f32);
    let out = [
        clip_x(b[0] + dx),
        clip_y(b[1] + dy),
        clip_x(b[2] + dx),
        clip_y(b[3] + dy),
    ];
    (out[2] > out[0] && out[3] > out[1]).then_some((class, out))
}

/// A 4-image mosaic on a `2·size` square canvas: `samples[index]` top-left and three random
/// others, around a centre uniform in `[size/2, 3·size/2]` on both axes.
fn mosaic<I: Images + ?Sized>(
    samples: &[Sample],
    images: &I,
    index: usize,
    size: u32,
    rng: &mut StdRng,
) -> Result<(RgbImage, Vec<PixelBox>), AugmentError> {
    let total = 2 * size;
    let mut canvas = RgbImage::from_pixel(total, total, Rgb([PAD_VALUE; 3]));
    let centre_range = size / 2..=size + size / 2;
    let xc = rng.random_range(centre_range.clone()) as i64;
    let yc = rng.random_range(centre_range) as i64;
    let mut picks = [index; 4];
    for p in picks.iter_mut().skip(1) {
        *p = other_index(samples.len(), index, rng);
    }
    let mut boxes = Vec::new();
    for (quadrant, &j) in picks.iter().enumerate() {
        let labels = samples.get(j).map_or(&[][..], |s| &s.labels[..]);
        let (tile, tile_boxes) = fit_long_side(&*load(samples, images, j)?, labels, size);
        let (w, h) = (tile.width() as i64, tile.height() as i64);
        let p = placement(quadrant, xc, yc, w, h, total as i64);
        paste(&mut canvas, &tile, &p);
        boxes.extend(tile_boxes.into_iter().filter_map(|b| place_box(b, &p)));
    }
    Ok((canvas, boxes))
}
