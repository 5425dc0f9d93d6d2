//! The geometric steps: the random affine (scale and translate, bilinear, border grey), the
//! resampling it and the mosaic share, the boxes that follow, and the horizontal flip.

use image::{Rgb, RgbImage};
use rand::rngs::StdRng;

use super::{uniform, AugmentConfig, PixelBox, MIN_SCALE};
use crate::data::letterbox::PAD_VALUE;

/// An axis-aligned affine map: `x' = scale · (x − centre) + tx` (likewise for y).
#[derive(Clone, Copy, Debug)]
pub(super) struct Affine {
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
pub(super) fn random_affine(
    input: u32,
    output: u32,
    cfg: &AugmentConfig,
    rng: &mut StdRng,
) -> Affine {
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
pub(super) fn warp(src: &RgbImage, affine: &Affine, out: u32) -> RgbImage {
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
pub(super) const FRAC_BITS: u32 = 11;
pub(super) const ONE: u32 = 1 << FRAC_BITS;

/// One axis of a bilinear sample: the indices of the two neighbouring pixels (`None` outside
/// the image) and the fixed-point weight of the second.
#[derive(Clone, Copy, Debug)]
pub(super) struct Tap {
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

    /// Whether both neighbours are outside the image (the sample is pure border).
    fn outside(&self) -> bool {
        self.i0.is_none() && self.i1.is_none()
    }
}

/// A fraction in [0, 1] as a fixed-point weight.
pub(super) fn weight(frac: f32) -> u32 {
    ((frac * ONE as f32).round() as u32).min(ONE)
}

/// Samples `src` bilinearly on the grid `cols × rows` (one tap per output pixel and axis);
/// samples off the image blend with grey 114. Each output row blends its two source rows
/// first (over the columns the taps use), then each output pixel its two blended columns; in
/// exact integer arithmetic the order does not change the result.
pub(super) fn sample_grid(src: &RgbImage, cols: &[Tap], rows: &[Tap]) -> RgbImage {
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

/// Ultralytics' `box_candidates` rule: a box `w × h` after clipping, from `w0 × h0` before,
/// is kept if both sides exceed 2 px, at least 10% of its area is left and its aspect ratio is
/// below 100.
pub(super) fn box_candidate(w0: f32, h0: f32, w: f32, h: f32) -> bool {
    const EPS: f32 = 1e-16;
    let aspect = (w / (h + EPS)).max(h / (w + EPS));
    w > 2.0 && h > 2.0 && w * h / (w0 * h0 + EPS) > 0.1 && aspect < 100.0
}

/// Boxes through `affine`, clipped to `[0, out]` and filtered by [`box_candidate`].
pub(super) fn transform_boxes(boxes: &[PixelBox], affine: &Affine, out: f32) -> Vec<PixelBox> {
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

/// Mirrors the image left–right and its boxes with it.
pub(super) fn flip_lr(img: &mut RgbImage, boxes: &mut [PixelBox]) {
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
