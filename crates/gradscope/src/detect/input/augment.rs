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

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;
use rand::Rng;

use crate::data::detect::{Label, Sample};
use crate::data::letterbox::{letterbox, PAD_VALUE};

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

/// A validation image: the plain letterbox of `img` and its labels. An `imgsz` of 0 gives an
/// empty result, an empty image a grey canvas without boxes.
pub fn val_image(img: &RgbImage, labels: &[Label], imgsz: u32) -> Augmented {
    if imgsz == 0 {
        return Augmented {
            chw: Vec::new(),
            boxes: Vec::new(),
        };
    }
    if img.width() == 0 || img.height() == 0 {
        return Augmented {
            chw: to_chw(&RgbImage::from_pixel(imgsz, imgsz, Rgb([PAD_VALUE; 3]))),
            boxes: Vec::new(),
        };
    }
    let lb = letterbox(img, labels, imgsz);
    Augmented {
        chw: lb.chw,
        boxes: lb.boxes,
    }
}

/// One augmented training image for `samples[index]`: mosaic (if `use_mosaic`, with probability
/// `cfg.mosaic`), random affine, HSV jitter, horizontal flip, all drawn from `rng`.
/// `images(i)` loads the image of `samples[i]`; its errors are passed on.
pub fn train_image(
    samples: &[Sample],
    images: &dyn Fn(usize) -> Result<RgbImage, String>,
    index: usize,
    imgsz: u32,
    cfg: &AugmentConfig,
    use_mosaic: bool,
    rng: &mut StdRng,
) -> Result<Augmented, String> {
    if imgsz == 0 || imgsz > MAX_IMGSZ {
        return Err(format!("imgsz {imgsz} is out of range 1..={MAX_IMGSZ}"));
    }
    let sample = samples.get(index).ok_or_else(|| {
        format!(
            "image index {index} is out of range ({} images)",
            samples.len()
        )
    })?;
    let (input, boxes) = if use_mosaic && chance(rng, cfg.mosaic) {
        mosaic(samples, images, index, imgsz, rng)?
    } else {
        let img = load(samples, images, index)?;
        let lb = letterbox(&img, &sample.labels, imgsz);
        (from_chw(&lb.chw, imgsz), lb.boxes)
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
fn uniform(rng: &mut StdRng, lo: f32, hi: f32) -> f32 {
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

/// Loads `samples[i]`'s image, refusing an empty one.
fn load(
    samples: &[Sample],
    images: &dyn Fn(usize) -> Result<RgbImage, String>,
    i: usize,
) -> Result<RgbImage, String> {
    let img = images(i)?;
    if img.width() == 0 || img.height() == 0 {
        let name = samples
            .get(i)
            .map_or_else(|| format!("image {i}"), |s| s.image.display().to_string());
        return Err(format!("{name}: the image is empty"));
    }
    Ok(img)
}

/// Channel-major `[3, h, w]` floats in [0, 1] from an RGB image.
fn to_chw(img: &RgbImage) -> Vec<f32> {
    let n = img.width() as usize * img.height() as usize;
    let mut chw = vec![0f32; 3 * n];
    let (r, rest) = chw.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    for (i, p) in img.as_raw().chunks_exact(3).enumerate() {
        r[i] = p[0] as f32 / 255.0;
        g[i] = p[1] as f32 / 255.0;
        b[i] = p[2] as f32 / 255.0;
    }
    chw
}

/// The RGB image back from a square `[3, size, size]` float image in [0, 1].
fn from_chw(chw: &[f32], size: u32) -> RgbImage {
    let n = size as usize * size as usize;
    let mut raw = vec![PAD_VALUE; 3 * n];
    for (i, p) in raw.chunks_exact_mut(3).enumerate() {
        for (c, v) in p.iter_mut().enumerate() {
            if let Some(x) = chw.get(c * n + i) {
                *v = to_u8(x * 255.0);
            }
        }
    }
    RgbImage::from_raw(size, size, raw)
        .unwrap_or_else(|| RgbImage::from_pixel(size, size, Rgb([PAD_VALUE; 3])))
}

/// Rounds and saturates a float channel value to a byte.
fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

// ----- mosaic -----

/// `img` resized (see [`resize_bilinear`]) so its long side is `size`, and `labels` as pixel
/// boxes on it.
fn fit_long_side(img: RgbImage, labels: &[Label], size: u32) -> (RgbImage, Vec<PixelBox>) {
    let (w0, h0) = img.dimensions();
    let r = size as f32 / w0.max(h0) as f32;
    let fit = |d: u32| ((d as f32 * r).round() as u32).clamp(1, size);
    let (w, h) = (fit(w0), fit(h0));
    let img = if (w, h) == (w0, h0) {
        img
    } else {
        resize_bilinear(&img, w, h)
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
fn mosaic(
    samples: &[Sample],
    images: &dyn Fn(usize) -> Result<RgbImage, String>,
    index: usize,
    size: u32,
    rng: &mut StdRng,
) -> Result<(RgbImage, Vec<PixelBox>), String> {
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
        let (tile, tile_boxes) = fit_long_side(load(samples, images, j)?, labels, size);
        let (w, h) = (tile.width() as i64, tile.height() as i64);
        let p = placement(quadrant, xc, yc, w, h, total as i64);
        paste(&mut canvas, &tile, &p);
        boxes.extend(tile_boxes.into_iter().filter_map(|b| place_box(b, &p)));
    }
    Ok((canvas, boxes))
}

// ----- random affine -----

/// An axis-aligned affine map: `x' = scale · (x − centre) + tx` (likewise for y).
#[derive(Clone, Copy, Debug)]
struct Affine {
    scale: f32,
    centre: f32,
    tx: f32,
    ty: f32,
}

impl Affine {
    /// Maps an input coordinate to the output along one axis with translation `t` (written so
    /// that the identity map returns `v` exactly).
    fn forward(&self, v: f32, t: f32) -> f32 {
        self.scale * v + (t - self.scale * self.centre)
    }

    /// Maps an output coordinate back to the input along one axis with translation `t`.
    fn inverse(&self, v: f32, t: f32) -> f32 {
        (v - t) / self.scale + self.centre
    }

    /// Whether the map leaves a `size`-sided input of the same size as the output unchanged.
    fn is_identity(&self, size: f32) -> bool {
        self.scale == 1.0
            && self.tx == self.centre
            && self.ty == self.centre
            && 2.0 * self.centre == size
    }
}

/// A random affine from a `input`-sided square to an `output`-sided one: centre the input,
/// scale uniform in `[1 − scale, 1 + scale]`, then move its centre to a point uniform in
/// `output · (0.5 ± translate)` on each axis.
fn random_affine(input: u32, output: u32, cfg: &AugmentConfig, rng: &mut StdRng) -> Affine {
    let scale = uniform(rng, 1.0 - cfg.scale, 1.0 + cfg.scale).max(MIN_SCALE);
    let out = output as f32;
    let tx = uniform(rng, 0.5 - cfg.translate, 0.5 + cfg.translate) * out;
    let ty = uniform(rng, 0.5 - cfg.translate, 0.5 + cfg.translate) * out;
    Affine {
        scale,
        centre: input as f32 / 2.0,
        tx,
        ty,
    }
}

/// Warps `src` by `affine` into an `out × out` image: inverse mapping, bilinear, border 114.
fn warp(src: &RgbImage, affine: &Affine, out: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    if w == out && h == out && affine.is_identity(out as f32) {
        return src.clone();
    }
    // output pixel centres mapped back to input pixel-index positions
    let taps = |t: f32, len: u32| -> Vec<Tap> {
        (0..out)
            .map(|o| Tap::bordered(affine.inverse(o as f32 + 0.5, t) - 0.5, len))
            .collect()
    };
    sample_grid(src, &taps(affine.tx, w), &taps(affine.ty, h))
}

// ----- bilinear sampling -----

/// Fixed-point precision of the bilinear weights.
const FRAC_BITS: u32 = 11;
const ONE: u32 = 1 << FRAC_BITS;

/// One axis of a bilinear sample: the indices of the two neighbouring pixels (`None` outside
/// the image) and the fixed-point weight of the second.
#[derive(Clone, Copy, Debug)]
struct Tap {
    i0: Option<usize>,
    i1: Option<usize>,
    wt: u32,
}

impl Tap {
    /// The tap at pixel-index position `u` on an axis of `len` pixels; neighbours outside the
    /// image are border (114).
    fn bordered(u: f32, len: u32) -> Self {
        if !u.is_finite() {
            return Tap {
                i0: None,
                i1: None,
                wt: 0,
            };
        }
        let base = u.floor();
        let inside = |i: i64| (0..len as i64).contains(&i).then_some(i as usize);
        let i = base as i64;
        Tap {
            i0: inside(i),
            i1: inside(i.saturating_add(1)),
            wt: weight(u - base),
        }
    }

    /// The tap at `u` clamped to the image, so edge pixels repeat (for resizing).
    fn clamped(u: f32, len: u32) -> Self {
        let last = len.saturating_sub(1) as f32;
        let u = if u.is_finite() {
            u.max(0.0).min(last)
        } else {
            0.0
        };
        let base = u.floor();
        let i = base as usize;
        Tap {
            i0: Some(i),
            i1: Some((i + 1).min(len.saturating_sub(1) as usize)),
            wt: weight(u - base),
        }
    }

    /// Whether both neighbours are outside the image (the sample is pure border).
    fn outside(&self) -> bool {
        self.i0.is_none() && self.i1.is_none()
    }
}

/// A fraction in [0, 1] as a fixed-point weight.
fn weight(frac: f32) -> u32 {
    ((frac * ONE as f32).round() as u32).min(ONE)
}

/// Samples `src` bilinearly on the grid `cols × rows` (one tap per output pixel and axis);
/// samples off the image blend with grey 114. Each output row blends its two source rows
/// first (over the columns the taps use), then each output pixel its two blended columns; in
/// exact integer arithmetic the order does not change the result.
fn sample_grid(src: &RgbImage, cols: &[Tap], rows: &[Tap]) -> RgbImage {
    const SHIFT: u32 = 2 * FRAC_BITS;
    let (out_w, out_h) = (cols.len(), rows.len());
    let stride = src.width() as usize * 3;
    let raw = src.as_raw();
    let pad_row = vec![PAD_VALUE; stride];
    let row_of = |r: Option<usize>| {
        r.and_then(|r| raw.get(r * stride..(r + 1) * stride))
            .unwrap_or(&pad_row)
    };
    // column taps as offsets into the blended row, whose pixel at `stride` is the border
    let offsets: Vec<(usize, usize, u32)> = cols
        .iter()
        .map(|t| {
            let at = |i: Option<usize>| i.map_or(stride, |i| (i * 3).min(stride));
            (at(t.i0), at(t.i1), t.wt)
        })
        .collect();
    let used = || {
        offsets
            .iter()
            .flat_map(|&(a, b, _)| [a, b])
            .filter(|&o| o < stride)
    };
    let lo = used().min().unwrap_or(0);
    let hi = used().max().map_or(lo, |o| o + 3);
    let mut blended = vec![PAD_VALUE as u32 * ONE; stride + 3];
    let line = out_w * 3;
    let mut dst = vec![PAD_VALUE; line * out_h];
    for (ry, dst_row) in rows.iter().zip(dst.chunks_exact_mut(line.max(1))) {
        if ry.outside() {
            continue;
        }
        let (row0, row1) = (row_of(ry.i0), row_of(ry.i1));
        let (wy1, wy0) = (ry.wt, ONE - ry.wt);
        for ((t, &a), &b) in blended[lo..hi]
            .iter_mut()
            .zip(&row0[lo..hi])
            .zip(&row1[lo..hi])
        {
            *t = a as u32 * wy0 + b as u32 * wy1;
        }
        for (&(c0, c1, wt), d) in offsets.iter().zip(dst_row.chunks_exact_mut(3)) {
            let (wx1, wx0) = (wt, ONE - wt);
            for c in 0..3 {
                let v = blended[c0 + c] * wx0 + blended[c1 + c] * wx1;
                d[c] = ((v + (1 << (SHIFT - 1))) >> SHIFT) as u8;
            }
        }
    }
    RgbImage::from_raw(out_w as u32, out_h as u32, dst)
        .unwrap_or_else(|| RgbImage::from_pixel(out_w as u32, out_h as u32, Rgb([PAD_VALUE; 3])))
}

/// `src` shrunk by the integer factor `k` by averaging `k × k` blocks (partial blocks at the
/// right and bottom edges average the pixels they have).
fn shrink_by(src: &RgbImage, k: u32) -> RgbImage {
    let (w, h) = src.dimensions();
    if w == 0 || h == 0 || k <= 1 {
        return src.clone();
    }
    let (rw, rh) = (w.div_ceil(k), h.div_ceil(k));
    let (k, w, stride) = (k as usize, w as usize, w as usize * 3);
    let raw = src.as_raw();
    let mut out = Vec::with_capacity(rw as usize * rh as usize * 3);
    let mut sums = vec![0u32; rw as usize * 3];
    for band in raw.chunks(stride * k) {
        sums.fill(0);
        for row in band.chunks_exact(stride) {
            for (block, pixels) in row.chunks(3 * k).enumerate() {
                for p in pixels.chunks_exact(3) {
                    for c in 0..3 {
                        sums[block * 3 + c] += p[c] as u32;
                    }
                }
            }
        }
        let rows = (band.len() / stride) as u32;
        for (block, s) in sums.chunks_exact(3).enumerate() {
            let cols = (w - block * k).min(k) as u32;
            let n = rows * cols;
            out.extend(s.iter().map(|&v| ((v + n / 2) / n.max(1)) as u8));
        }
    }
    RgbImage::from_raw(rw, rh, out).unwrap_or_else(|| src.clone())
}

/// `src` resized to `w × h`: a box average first when shrinking by 2× or more (against
/// aliasing), then bilinear with the edges repeated.
fn resize_bilinear(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (w0, h0) = src.dimensions();
    if w0 == 0 || h0 == 0 {
        return RgbImage::from_pixel(w, h, Rgb([PAD_VALUE; 3]));
    }
    let k = (w0 / w.max(1)).min(h0 / h.max(1)).max(1);
    let shrunk;
    let base = if k >= 2 {
        shrunk = shrink_by(src, k);
        &shrunk
    } else {
        src
    };
    let (bw, bh) = base.dimensions();
    // output pixel centre → original coordinate → position in the (shrunk) base image
    let taps = |out: u32, orig: u32, len: u32| -> Vec<Tap> {
        let step = orig as f32 / out as f32 / k as f32;
        (0..out)
            .map(|o| Tap::clamped((o as f32 + 0.5) * step - 0.5, len))
            .collect()
    };
    sample_grid(base, &taps(w, w0, bw), &taps(h, h0, bh))
}

/// Ultralytics' `box_candidates` rule: a box `w × h` after clipping, from `w0 × h0` before,
/// is kept if both sides exceed 2 px, at least 10% of its area is left and its aspect ratio is
/// below 100.
fn box_candidate(w0: f32, h0: f32, w: f32, h: f32) -> bool {
    const EPS: f32 = 1e-16;
    let aspect = (w / (h + EPS)).max(h / (w + EPS));
    w > 2.0 && h > 2.0 && w * h / (w0 * h0 + EPS) > 0.1 && aspect < 100.0
}

/// Boxes through `affine`, clipped to `[0, out]` and filtered by [`box_candidate`].
fn transform_boxes(boxes: &[PixelBox], affine: &Affine, out: f32) -> Vec<PixelBox> {
    let clip = |v: f32| v.max(0.0).min(out);
    boxes
        .iter()
        .filter_map(|&(class, b)| {
            let x1 = affine.forward(b[0], affine.tx);
            let y1 = affine.forward(b[1], affine.ty);
            let x2 = affine.forward(b[2], affine.tx);
            let y2 = affine.forward(b[3], affine.ty);
            let clipped = [clip(x1), clip(y1), clip(x2), clip(y2)];
            box_candidate(
                x2 - x1,
                y2 - y1,
                clipped[2] - clipped[0],
                clipped[3] - clipped[1],
            )
            .then_some((class, clipped))
        })
        .collect()
}

// ----- HSV -----

/// The HSV change for one image: a hue shift in degrees and saturation and value factors.
#[derive(Clone, Copy, Debug, PartialEq)]
struct HsvGains {
    hue_deg: f32,
    sat: f32,
    val: f32,
}

/// Random HSV gains `1 + U(−1, 1) · (hsv_h, hsv_s, hsv_v)`, or `None` when all three are zero.
/// The hue gain becomes a shift of `(gain − 1) · 180` in OpenCV's 0–180 hue units.
fn hsv_gains(cfg: &AugmentConfig, rng: &mut StdRng) -> Option<HsvGains> {
    if cfg.hsv_h == 0.0 && cfg.hsv_s == 0.0 && cfg.hsv_v == 0.0 {
        return None;
    }
    let gh = 1.0 + uniform(rng, -1.0, 1.0) * cfg.hsv_h;
    let gs = 1.0 + uniform(rng, -1.0, 1.0) * cfg.hsv_s;
    let gv = 1.0 + uniform(rng, -1.0, 1.0) * cfg.hsv_v;
    Some(HsvGains {
        hue_deg: (gh - 1.0) * 180.0 * 2.0,
        sat: gs.max(0.0),
        val: gv.max(0.0),
    })
}

/// Pixels converted together, as separate channel arrays, so the compiler can vectorise.
const HSV_BLOCK: usize = 64;

/// RGB (0–255) to hue in sixths of the circle `[0, 6)`, saturation `[0, 1]` and value (0–255),
/// without branches.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let v = r.max(g).max(b);
    let d = v - r.min(g).min(b);
    let inv_d = if d > 0.0 { 1.0 / d } else { 0.0 };
    let h = if v == r {
        (g - b) * inv_d
    } else if v == g {
        2.0 + (b - r) * inv_d
    } else {
        4.0 + (r - g) * inv_d
    };
    let h = if h < 0.0 { h + 6.0 } else { h };
    let s = if v > 0.0 { d / v } else { 0.0 };
    (h, s, v)
}

/// Hue in sixths `[0, 6]`, saturation `[0, 1]` and value (0–255) back to RGB (0–255), with the
/// branch-free hexcone formula: channel `n` (5 red, 3 green, 1 blue) is
/// `v − v·s·clamp(min(k, 4 − k), 0, 1)` where `k = (n + h) mod 6`.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
    let c = v * s;
    let channel = |n: f32| {
        let k = n + h;
        let k = if k >= 6.0 { k - 6.0 } else { k };
        v - c * k.min(4.0 - k).clamp(0.0, 1.0)
    };
    [channel(5.0), channel(3.0), channel(1.0)]
}

/// Shifts every pixel's hue (modulo the circle) and multiplies its saturation and value,
/// clipping both to their maximum.
fn apply_hsv(img: &mut RgbImage, gains: HsvGains) {
    let shift = (gains.hue_deg / 60.0).rem_euclid(6.0);
    let shift = if shift.is_finite() { shift } else { 0.0 };
    let raw: &mut [u8] = img.as_mut();
    let mut planes = [[0f32; HSV_BLOCK]; 3];
    for block in raw.chunks_mut(3 * HSV_BLOCK) {
        let n = block.len() / 3;
        for (i, p) in block.chunks_exact(3).enumerate() {
            for c in 0..3 {
                planes[c][i] = p[c] as f32;
            }
        }
        let [rs, gs, bs] = &mut planes;
        for ((r, g), b) in rs.iter_mut().zip(gs.iter_mut()).zip(bs.iter_mut()) {
            let (h, s, v) = rgb_to_hsv(*r, *g, *b);
            let h = h + shift;
            let h = if h >= 6.0 { h - 6.0 } else { h };
            let s = (s * gains.sat).min(1.0);
            let v = (v * gains.val).min(255.0);
            [*r, *g, *b] = hsv_to_rgb(h, s, v);
        }
        for (i, p) in block.chunks_exact_mut(3).enumerate().take(n) {
            for c in 0..3 {
                p[c] = to_u8(planes[c][i]);
            }
        }
    }
}

// ----- flip -----

/// Mirrors the image left–right and its boxes with it.
fn flip_lr(img: &mut RgbImage, boxes: &mut [PixelBox]) {
    let w = img.width() as usize;
    let raw: &mut [u8] = img.as_mut();
    if w > 0 {
        for row in raw.chunks_exact_mut(w * 3) {
            for x in 0..w / 2 {
                let (a, b) = (x * 3, (w - 1 - x) * 3);
                for c in 0..3 {
                    row.swap(a + c, b + c);
                }
            }
        }
    }
    let wf = w as f32;
    for (_, b) in boxes.iter_mut() {
        *b = [wf - b[2], b[1], wf - b[0], b[3]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::path::PathBuf;

    /// Class colours of the synthetic scenes, and their background.
    const COLOURS: [[u8; 3]; 4] = [[230, 40, 40], [40, 200, 60], [40, 60, 220], [230, 220, 40]];
    const BACKGROUND: [u8; 3] = [80, 80, 80];

    /// A grey `w × h` scene with solid rectangles `(class, x1, y1, x2, y2)` (pixels, end
    /// exclusive) in their class colour, and the rectangles as normalised labels.
    fn scene(w: u32, h: u32, rects: &[(usize, u32, u32, u32, u32)]) -> (RgbImage, Vec<Label>) {
        let mut img = RgbImage::from_pixel(w, h, Rgb(BACKGROUND));
        let mut labels = Vec::new();
        for &(class, x1, y1, x2, y2) in rects {
            for y in y1..y2 {
                for x in x1..x2 {
                    img.put_pixel(x, y, Rgb(COLOURS[class]));
                }
            }
            let (wf, hf) = (w as f32, h as f32);
            labels.push(Label {
                class,
                cx: (x1 + x2) as f32 / 2.0 / wf,
                cy: (y1 + y2) as f32 / 2.0 / hf,
                w: (x2 - x1) as f32 / wf,
                h: (y2 - y1) as f32 / hf,
            });
        }
        (img, labels)
    }

    /// Five scenes of different shapes, with boxes touching edges and corners.
    fn dataset() -> (Vec<Sample>, Vec<RgbImage>) {
        let scenes = [
            scene(
                640,
                480,
                &[
                    (0, 50, 60, 250, 200),
                    (1, 300, 250, 500, 420),
                    (2, 520, 20, 620, 150),
                ],
            ),
            scene(300, 500, &[(3, 20, 30, 150, 200), (0, 160, 300, 280, 480)]),
            scene(
                800,
                600,
                &[
                    (1, 0, 0, 200, 150),
                    (2, 600, 450, 800, 600),
                    (3, 300, 200, 500, 400),
                ],
            ),
            scene(200, 120, &[(0, 20, 20, 120, 100)]),
            scene(
                1000,
                300,
                &[(2, 100, 50, 400, 250), (1, 700, 100, 950, 290)],
            ),
        ];
        let mut samples = Vec::new();
        let mut images = Vec::new();
        for (i, (img, labels)) in scenes.into_iter().enumerate() {
            samples.push(Sample {
                image: PathBuf::from(format!("images/{i}.png")),
                width: img.width(),
                height: img.height(),
                labels,
            });
            images.push(img);
        }
        (samples, images)
    }

    /// A loader over in-memory images.
    fn loader(images: &[RgbImage]) -> impl Fn(usize) -> Result<RgbImage, String> + '_ {
        move |i| {
            images
                .get(i)
                .cloned()
                .ok_or_else(|| format!("no image {i}"))
        }
    }

    fn run(
        data: &(Vec<Sample>, Vec<RgbImage>),
        index: usize,
        imgsz: u32,
        cfg: &AugmentConfig,
        use_mosaic: bool,
        seed: u64,
    ) -> Augmented {
        let load = loader(&data.1);
        let mut rng = StdRng::seed_from_u64(seed);
        train_image(&data.0, &load, index, imgsz, cfg, use_mosaic, &mut rng).expect("augments")
    }

    /// The RGB bytes of output pixel `(x, y)`.
    fn pixel_at(a: &Augmented, imgsz: u32, x: usize, y: usize) -> [u8; 3] {
        let n = (imgsz * imgsz) as usize;
        let i = y * imgsz as usize + x;
        [0, 1, 2].map(|c| to_u8(a.chw[c * n + i] * 255.0))
    }

    /// Every box is inside the image, non-degenerate and passes the size rule.
    fn assert_boxes_valid(a: &Augmented, imgsz: u32) {
        let s = imgsz as f32;
        for (class, b) in &a.boxes {
            assert!(*class < COLOURS.len());
            assert!(
                b.iter().all(|v| v.is_finite() && (0.0..=s).contains(v)),
                "{b:?}"
            );
            assert!(b[2] - b[0] > 2.0 && b[3] - b[1] > 2.0, "{b:?}");
        }
        assert_eq!(a.chw.len(), 3 * (imgsz * imgsz) as usize);
        assert!(a.chw.iter().all(|v| (0.0..=1.0).contains(v)));
    }

    /// Checks that the pixels well inside each box (3 px margin) are mostly the class colour;
    /// returns how many boxes were big enough to check.
    fn assert_boxes_follow_pixels(a: &Augmented, imgsz: u32) -> usize {
        let mut checked = 0;
        for (class, b) in &a.boxes {
            let (x0, y0) = ((b[0] + 3.0).ceil() as usize, (b[1] + 3.0).ceil() as usize);
            let (x1, y1) = ((b[2] - 3.0).floor() as usize, (b[3] - 3.0).floor() as usize);
            if x1 < x0 + 4 || y1 < y0 + 4 {
                continue;
            }
            let (mut good, mut all) = (0, 0);
            for y in y0..y1 {
                for x in x0..x1 {
                    let p = pixel_at(a, imgsz, x, y);
                    let close = (0..3).all(|c| p[c].abs_diff(COLOURS[*class][c]) <= 30);
                    good += close as usize;
                    all += 1;
                }
            }
            assert!(
                good as f32 > 0.9 * all as f32,
                "box {b:?} of class {class}: {good}/{all} pixels in colour"
            );
            checked += 1;
        }
        checked
    }

    #[test]
    fn the_same_seed_gives_the_same_image_and_another_seed_another() {
        let data = dataset();
        let cfg = AugmentConfig::default();
        for index in 0..data.0.len() {
            let a = run(&data, index, 160, &cfg, true, 7);
            let b = run(&data, index, 160, &cfg, true, 7);
            let c = run(&data, index, 160, &cfg, true, 8);
            assert_eq!(a, b);
            assert_ne!(a.chw, c.chw);
        }
    }

    #[test]
    fn no_augmentation_is_the_plain_letterbox() {
        let data = dataset();
        for (index, (s, img)) in data.0.iter().zip(&data.1).enumerate() {
            let a = run(&data, index, 320, &AugmentConfig::none(), false, 3);
            let lb = letterbox(img, &s.labels, 320);
            assert_eq!(a.chw, lb.chw);
            assert_eq!(a.boxes, lb.boxes);
            assert_eq!(a, val_image(img, &s.labels, 320));
        }
    }

    #[test]
    fn a_certain_flip_mirrors_pixels_and_boxes_exactly() {
        let data = dataset();
        let cfg = AugmentConfig {
            fliplr: 1.0,
            ..AugmentConfig::none()
        };
        let s = 128u32;
        for (index, (sample, img)) in data.0.iter().zip(&data.1).enumerate() {
            let a = run(&data, index, s, &cfg, false, 11);
            let lb = letterbox(img, &sample.labels, s);
            let plain = Augmented {
                chw: lb.chw,
                boxes: lb.boxes,
            };
            for y in 0..s as usize {
                for x in 0..s as usize {
                    let mirrored = pixel_at(&plain, s, s as usize - 1 - x, y);
                    assert_eq!(pixel_at(&a, s, x, y), mirrored, "({x}, {y})");
                }
            }
            let sf = s as f32;
            let expect: Vec<PixelBox> = plain
                .boxes
                .iter()
                .map(|&(c, b)| (c, [sf - b[2], b[1], sf - b[0], b[3]]))
                .collect();
            assert_eq!(a.boxes, expect);
        }
    }

    #[test]
    fn hsv_with_unit_gains_round_trips_every_colour_exactly() {
        let mut img = RgbImage::new(64, 64);
        for (i, p) in img.pixels_mut().enumerate() {
            // 4096 colours spread over the cube, including greys and pure hues
            let (r, g, b) = (i % 16, (i / 16) % 16, i / 256);
            *p = Rgb([r as u8 * 17, g as u8 * 17, b as u8 * 17]);
        }
        let before = img.clone();
        apply_hsv(
            &mut img,
            HsvGains {
                hue_deg: 0.0,
                sat: 1.0,
                val: 1.0,
            },
        );
        assert_eq!(img, before);
    }

    #[test]
    fn hsv_value_and_hue_gains_do_what_they_say() {
        let mut img = RgbImage::from_pixel(2, 1, Rgb([200, 200, 200]));
        img.put_pixel(1, 0, Rgb([255, 0, 0]));
        let gains = HsvGains {
            hue_deg: 120.0,
            sat: 1.0,
            val: 0.5,
        };
        apply_hsv(&mut img, gains);
        assert_eq!(img.get_pixel(0, 0).0, [100, 100, 100], "grey halved");
        assert_eq!(
            img.get_pixel(1, 0).0,
            [0, 128, 0],
            "red turned green, half value"
        );
        let mut img = RgbImage::from_pixel(1, 1, Rgb([10, 20, 200]));
        let gains = HsvGains {
            hue_deg: 0.0,
            sat: 0.0,
            val: 2.0,
        };
        apply_hsv(&mut img, gains);
        assert_eq!(
            img.get_pixel(0, 0).0,
            [255, 255, 255],
            "no saturation, value clipped"
        );
    }

    #[test]
    fn a_value_gain_changes_brightness_but_not_boxes() {
        let data = dataset();
        let cfg = AugmentConfig {
            hsv_v: 0.8,
            ..AugmentConfig::none()
        };
        let plain = run(&data, 0, 128, &AugmentConfig::none(), false, 0);
        let mean = |a: &Augmented| a.chw.iter().sum::<f32>() / a.chw.len() as f32;
        let mut changed = 0;
        for seed in 0..8 {
            let a = run(&data, 0, 128, &cfg, false, seed);
            assert_eq!(a.boxes, plain.boxes);
            changed += ((mean(&a) - mean(&plain)).abs() > 0.01) as usize;
        }
        assert!(
            changed >= 6,
            "brightness changed in only {changed} of 8 seeds"
        );
    }

    #[test]
    fn grey_stays_grey_under_value_gain_and_under_any_hue_gain() {
        let mut img = RgbImage::new(96, 64);
        for (x, _, p) in img.enumerate_pixels_mut() {
            let v = (x * 255 / 95) as u8;
            *p = Rgb([v, v, v]);
        }
        let samples = vec![Sample {
            image: PathBuf::from("grey.png"),
            width: 96,
            height: 64,
            labels: Vec::new(),
        }];
        let images = [img];
        let load = loader(&images);
        let configs = [
            AugmentConfig {
                hsv_v: 0.4,
                ..AugmentConfig::none()
            },
            AugmentConfig {
                hsv_h: 0.5,
                hsv_s: 0.9,
                hsv_v: 0.4,
                ..AugmentConfig::none()
            },
        ];
        for cfg in &configs {
            for seed in 0..4 {
                let mut rng = StdRng::seed_from_u64(seed);
                let a = train_image(&samples, &load, 0, 64, cfg, false, &mut rng).unwrap();
                for y in 0..64 {
                    for x in 0..64 {
                        let p = pixel_at(&a, 64, x, y);
                        assert!(p[0] == p[1] && p[1] == p[2], "{p:?} at ({x}, {y})");
                    }
                }
            }
        }
    }

    /// Boxes stay valid and sit on their coloured rectangles over `seeds` runs of every image;
    /// at least `min` boxes checked.
    fn boxes_follow(mosaic: bool, seeds: u64, min: usize) {
        let data = dataset();
        let cfg = AugmentConfig {
            hsv_h: 0.0,
            hsv_s: 0.0,
            hsv_v: 0.0,
            ..AugmentConfig::default()
        };
        let mut checked = 0;
        for seed in 0..seeds {
            for index in 0..data.0.len() {
                let a = run(&data, index, 192, &cfg, mosaic, seed);
                assert_boxes_valid(&a, 192);
                checked += assert_boxes_follow_pixels(&a, 192);
            }
        }
        assert!(checked > min, "only {checked} boxes were checked");
    }

    #[test]
    fn boxes_follow_the_pixels_through_the_affine() {
        boxes_follow(false, 6, 50);
    }

    #[test]
    fn boxes_follow_the_pixels_through_the_mosaic() {
        boxes_follow(true, 12, 100);
    }

    #[test]
    fn many_mosaics_never_panic_and_keep_boxes_valid() {
        let data = dataset();
        let strong = AugmentConfig {
            scale: 0.9,
            translate: 0.4,
            ..AugmentConfig::default()
        };
        for cfg in [AugmentConfig::default(), strong] {
            for imgsz in [33, 96] {
                for seed in 0..40 {
                    let a = run(&data, seed as usize % data.0.len(), imgsz, &cfg, true, seed);
                    assert_boxes_valid(&a, imgsz);
                }
            }
        }
        // a dataset of one image mosaics with itself
        let one = (data.0[..1].to_vec(), data.1[..1].to_vec());
        for seed in 0..10 {
            assert_boxes_valid(&run(&one, 0, 64, &AugmentConfig::default(), true, seed), 64);
        }
    }

    #[test]
    fn bad_inputs_are_errors_not_panics() {
        let data = dataset();
        let load = loader(&data.1);
        let cfg = AugmentConfig::default();
        let mut rng = StdRng::seed_from_u64(0);
        assert!(train_image(&data.0, &load, 99, 64, &cfg, true, &mut rng).is_err());
        assert!(train_image(&data.0, &load, 0, 0, &cfg, true, &mut rng).is_err());
        assert!(train_image(&[], &load, 0, 64, &cfg, true, &mut rng).is_err());
        let failing = |_: usize| -> Result<RgbImage, String> { Err("unreadable".into()) };
        let e = train_image(&data.0, &failing, 0, 64, &cfg, true, &mut rng).unwrap_err();
        assert!(e.contains("unreadable"));
        let empty = |_: usize| -> Result<RgbImage, String> { Ok(RgbImage::new(0, 5)) };
        let e = train_image(&data.0, &empty, 0, 64, &cfg, false, &mut rng).unwrap_err();
        assert!(e.contains("images/0.png"), "{e}");
        assert_eq!(val_image(&RgbImage::new(0, 0), &[], 8).chw.len(), 3 * 64);
        assert!(val_image(&data.1[0], &data.0[0].labels, 0).chw.is_empty());
    }

    #[test]
    fn shrinking_averages_blocks_including_partial_ones() {
        let img = RgbImage::from_fn(5, 3, |x, y| Rgb([(10 * x + 100 * y) as u8, 7, 0]));
        let small = shrink_by(&img, 2);
        assert_eq!(small.dimensions(), (3, 2));
        // block (0, 0): 0, 10, 100, 110; block (2, 0): 40, 140; block (2, 1): 240 alone
        assert_eq!(small.get_pixel(0, 0).0, [55, 7, 0]);
        assert_eq!(small.get_pixel(2, 0).0, [90, 7, 0]);
        assert_eq!(small.get_pixel(2, 1).0, [240, 7, 0]);
    }

    #[test]
    fn resizing_keeps_flat_colours_and_edges_in_place() {
        // left half red, right half blue, 1200 × 400 → 300 × 100 (box average by 4)
        let img = RgbImage::from_fn(1200, 400, |x, _| {
            Rgb(if x < 600 { [255, 0, 0] } else { [0, 0, 255] })
        });
        for (w, h) in [(300, 100), (500, 167), (1800, 600)] {
            let out = resize_bilinear(&img, w, h);
            assert_eq!(out.dimensions(), (w, h));
            let half = w / 2;
            for y in [0, h / 2, h - 1] {
                assert_eq!(out.get_pixel(0, y).0, [255, 0, 0]);
                assert_eq!(out.get_pixel(half - 2, y).0, [255, 0, 0]);
                assert_eq!(out.get_pixel(half + 1, y).0, [0, 0, 255]);
                assert_eq!(out.get_pixel(w - 1, y).0, [0, 0, 255]);
            }
        }
    }

    /// Times one 640 mosaic + affine + HSV + flip call:
    /// `cargo test --release -p gradscope --lib detect::augment -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn time_one_640_mosaic() {
        let data = dataset();
        let cfg = AugmentConfig::default();
        let load = loader(&data.1);
        let mut rng = StdRng::seed_from_u64(0);
        let runs = 20;
        let start = std::time::Instant::now();
        for i in 0..runs {
            train_image(&data.0, &load, i % 5, 640, &cfg, true, &mut rng).unwrap();
        }
        let per = start.elapsed() / runs as u32;
        let start = std::time::Instant::now();
        for i in 0..runs {
            std::hint::black_box(mosaic(&data.0, &load, i % 5, 640, &mut rng).unwrap());
        }
        let mosaic_time = start.elapsed() / runs as u32;
        let src = RgbImage::from_pixel(1280, 1280, Rgb([1, 2, 3]));
        let affine = random_affine(1280, 640, &cfg, &mut rng);
        let start = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(warp(&src, &affine, 640));
        }
        let warp_time = start.elapsed() / runs as u32;
        let mut img = RgbImage::from_pixel(640, 640, Rgb([10, 120, 200]));
        let gains = hsv_gains(&cfg, &mut rng).unwrap();
        let start = std::time::Instant::now();
        for _ in 0..runs {
            apply_hsv(&mut img, gains);
        }
        let hsv_time = start.elapsed() / runs as u32;
        println!(
            "640 mosaic+affine+hsv+flip: {per:?} per call; of which mosaic {mosaic_time:?}, \
             warp {warp_time:?}, hsv {hsv_time:?}"
        );
    }
}
