//! Image resizing as OpenCV's `cv2.resize` does it on 8-bit images, so that an image file
//! becomes the same input tensor here as in Ultralytics, which resizes with OpenCV. Ultralytics
//! 8.4.190 resizes bilinearly (`INTER_LINEAR`) when predicting, validating and training (its
//! earlier versions shrank validation images with `INTER_AREA`, also provided here).
//!
//! Both are written from OpenCV's documented definitions, including the arithmetic that decides
//! the last bit: bilinear weights in 11-bit fixed point (`INTER_RESIZE_COEF_BITS`), pixel centres
//! at `(d + 0.5)·scale − 0.5`, edges repeated; area weights as the overlap of each destination
//! cell with each source pixel, summed in single precision and rounded half to even. An exact
//! 2× shrink under `INTER_LINEAR` is an area average, as in OpenCV. Against OpenCV 5.0
//! (`tools/reference/opencv_resize.py`, `tests/opencv_resize.rs`): every value equal, on 14
//! shrinks and enlargements of both kinds.

use image::RgbImage;

/// How to resize.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Interp {
    /// `cv2.INTER_LINEAR`.
    Linear,
    /// `cv2.INTER_AREA` (meant for shrinking; enlarging blends only across pixel edges).
    Area,
}

/// `src` resized to `w` × `h` (each at least 1).
pub fn resize(src: &RgbImage, w: u32, h: u32, interp: Interp) -> RgbImage {
    let (w0, h0) = src.dimensions();
    let (w, h) = (w.max(1), h.max(1));
    if (w, h) == (w0, h0) || w0 == 0 || h0 == 0 {
        return if w0 == 0 || h0 == 0 {
            RgbImage::new(w, h)
        } else {
            src.clone()
        };
    }
    let (sx, sy) = (scale(w0, w), scale(h0, h));
    let integer = |s: f64| (s - s.round()).abs() < f64::EPSILON;
    let fast_area = integer(sx) && integer(sy);
    let shrinking = sx >= 1.0 && sy >= 1.0;
    match interp {
        Interp::Linear | Interp::Area if fast_area && sx.round() == 2.0 && sy.round() == 2.0 => {
            block_mean(src, w, h, (2, 2))
        }
        Interp::Area if fast_area && shrinking => {
            block_mean(src, w, h, (sx.round() as usize, sy.round() as usize))
        }
        Interp::Area if shrinking => area(src, w, h),
        _ => linear(src, w, h, interp),
    }
}

/// Source pixels per destination pixel, as OpenCV computes it (`1 / (dst / src)`).
fn scale(src: u32, dst: u32) -> f64 {
    1.0 / (dst as f64 / src as f64)
}

/// OpenCV's `cvRound` of a float: to nearest, ties to even.
fn round_even(x: f32) -> i32 {
    x.round_ties_even() as i32
}

// ----- INTER_LINEAR -----

/// Bilinear weights in 11-bit fixed point: 2048 is 1.
const COEF_SCALE: f32 = 2048.0;

/// For each destination pixel: the source pixel it starts from and the weight of the next one.
/// Bilinear: the centre `(d + 0.5)·scale − 0.5`. Area when enlarging (OpenCV's `INTER_AREA`
/// above 1×): pixel `⌊d·scale⌋` alone, blended with the next only where a destination cell
/// straddles a source pixel's edge.
fn linear_taps(src: u32, dst: u32, interp: Interp) -> Vec<(i64, f32)> {
    let s = scale(src, dst);
    let inv = dst as f64 / src as f64;
    (0..dst)
        .map(|d| match interp {
            Interp::Linear => {
                let f = ((d as f64 + 0.5) * s - 0.5) as f32;
                let i = f.floor();
                (i as i64, f - i)
            }
            Interp::Area => {
                let i = (d as f64 * s).floor();
                let f = ((d + 1) as f64 - (i + 1.0) * inv) as f32;
                (i as i64, if f <= 0.0 { 0.0 } else { f - f.floor() })
            }
        })
        .collect()
}

fn weights(frac: f32) -> [i32; 2] {
    [
        round_even((1.0 - frac) * COEF_SCALE),
        round_even(frac * COEF_SCALE),
    ]
}

/// `cv2.resize` of an 8-bit RGB image with `INTER_LINEAR`, or with `INTER_AREA` where it does
/// not shrink both sides.
fn linear(src: &RgbImage, w: u32, h: u32, interp: Interp) -> RgbImage {
    let (w0, h0) = src.dimensions();
    // columns: a centre beyond either edge takes the edge pixel alone
    let xs: Vec<(usize, [i32; 2])> = linear_taps(w0, w, interp)
        .into_iter()
        .map(|(i, frac)| match i {
            i if i < 0 => (0, weights(0.0)),
            i if i >= w0 as i64 - 1 => (w0 as usize - 1, weights(0.0)),
            i => (i as usize, weights(frac)),
        })
        .collect();
    // rows: the weights stay, the rows are clamped (above the first row is the first row)
    let ys: Vec<(i64, [i32; 2])> = linear_taps(h0, h, interp)
        .into_iter()
        .map(|(i, frac)| (i, weights(frac)))
        .collect();
    let raw = src.as_raw();
    let row_len = w0 as usize * 3;
    // one source row resized horizontally: 11-bit fixed-point sums
    let horizontal = |r: usize| -> Vec<i32> {
        let row = &raw[r * row_len..(r + 1) * row_len];
        let mut out = Vec::with_capacity(w as usize * 3);
        for &(i, [a, b]) in &xs {
            let next = (i + 1).min(w0 as usize - 1);
            for c in 0..3 {
                out.push(row[i * 3 + c] as i32 * a + row[next * 3 + c] as i32 * b);
            }
        }
        out
    };
    let rows: Vec<Vec<i32>> = (0..h0 as usize).map(horizontal).collect();
    let width = w as usize * 3;
    let mut out = Vec::with_capacity(width * h as usize);
    for &(i, [b0, b1]) in &ys {
        let clamp = |r: i64| r.clamp(0, h0 as i64 - 1) as usize;
        let (s0, s1) = (&rows[clamp(i)], &rows[clamp(i + 1)]);
        for x in 0..width {
            // OpenCV's vector arithmetic: a 16-bit multiply-high of each sum shifted right by 4,
            // then a rounding shift by 2
            let hi = |s: i32, b: i32| ((s >> 4) * b) >> 16;
            let v = (hi(s0[x], b0) + hi(s1[x], b1) + 2) >> 2;
            out.push(v.clamp(0, 255) as u8);
        }
    }
    RgbImage::from_raw(w, h, out).expect("w × h × 3 values")
}

// ----- INTER_AREA -----

/// Shrinking by whole factors `(kx, ky)`: the mean of each `kx × ky` block, rounded as OpenCV
/// does: `(Σ + 2) >> 2` for 2 × 2, else `Σ · (1/(kx·ky))` half to even.
fn block_mean(src: &RgbImage, w: u32, h: u32, (kx, ky): (usize, usize)) -> RgbImage {
    let raw = src.as_raw();
    let row_len = src.width() as usize * 3;
    let inv = 1.0 / (kx * ky) as f32;
    let mut out = Vec::with_capacity(w as usize * h as usize * 3);
    for y in 0..h as usize {
        for x in 0..w as usize {
            for c in 0..3 {
                let mut sum = 0u32;
                for dy in 0..ky {
                    for dx in 0..kx {
                        sum += raw[(y * ky + dy) * row_len + (x * kx + dx) * 3 + c] as u32;
                    }
                }
                let v = if (kx, ky) == (2, 2) {
                    (sum + 2) >> 2
                } else {
                    round_even(sum as f32 * inv) as u32
                };
                out.push(v.min(255) as u8);
            }
        }
    }
    RgbImage::from_raw(w, h, out).expect("w × h × 3 values")
}

/// (destination index, source index, weight): how much of source pixel `si` falls in destination
/// cell `di`, as a fraction of the cell.
fn area_taps(src: u32, dst: u32) -> Vec<(usize, usize, f32)> {
    let s = scale(src, dst);
    let mut tab = Vec::new();
    for d in 0..dst as usize {
        let f1 = d as f64 * s;
        let f2 = f1 + s;
        let cell = s.min(src as f64 - f1);
        let mut s2 = (f2.floor() as i64).min(src as i64 - 1);
        let s1 = (f1.ceil() as i64).min(s2);
        s2 = s2.max(s1);
        if s1 as f64 - f1 > 1e-3 {
            tab.push((d, (s1 - 1) as usize, ((s1 as f64 - f1) / cell) as f32));
        }
        for i in s1..s2 {
            tab.push((d, i as usize, (1.0 / cell) as f32));
        }
        if f2 - s2 as f64 > 1e-3 {
            let part = (f2 - s2 as f64).min(1.0).min(cell);
            tab.push((d, s2 as usize, (part / cell) as f32));
        }
    }
    tab
}

/// `cv2.resize(..., interpolation=cv2.INTER_AREA)` for shrinking an 8-bit RGB image.
fn area(src: &RgbImage, w: u32, h: u32) -> RgbImage {
    let (w0, h0) = src.dimensions();
    let xs = area_taps(w0, w);
    let ys = area_taps(h0, h);
    let raw = src.as_raw();
    let (row_len, width) = (w0 as usize * 3, w as usize * 3);
    let mut out = vec![0u8; width * h as usize];
    let mut sum = vec![0f32; width];
    let mut buf = vec![0f32; width];
    let mut current = ys.first().map_or(0, |t| t.0);
    for &(dy, sy, beta) in &ys {
        let row = &raw[sy * row_len..(sy + 1) * row_len];
        buf.iter_mut().for_each(|b| *b = 0.0);
        for &(dx, sx, alpha) in &xs {
            for c in 0..3 {
                buf[dx * 3 + c] += row[sx * 3 + c] as f32 * alpha;
            }
        }
        if dy != current {
            let d = &mut out[current * width..(current + 1) * width];
            for ((o, s), b) in d.iter_mut().zip(sum.iter_mut()).zip(&buf) {
                *o = round_even(*s).clamp(0, 255) as u8;
                *s = beta * b;
            }
            current = dy;
        } else {
            for (s, b) in sum.iter_mut().zip(&buf) {
                *s += beta * b;
            }
        }
    }
    let d = &mut out[current * width..(current + 1) * width];
    for (o, s) in d.iter_mut().zip(&sum) {
        *o = round_even(*s).clamp(0, 255) as u8;
    }
    RgbImage::from_raw(w, h, out).expect("w × h × 3 values")
}
