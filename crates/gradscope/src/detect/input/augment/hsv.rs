//! Colour jitter in HSV: hue shifted, saturation and value multiplied by random gains.

use image::RgbImage;
use rand::rngs::StdRng;

use super::{uniform, AugmentConfig};
use crate::data::image::to_u8;

/// The HSV change for one image: a hue shift in degrees and saturation and value factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct HsvGains {
    pub(super) hue_deg: f32,
    pub(super) sat: f32,
    pub(super) val: f32,
}

/// Random HSV gains `1 + U(−1, 1) · (hsv_h, hsv_s, hsv_v)`, or `None` when all three are zero.
/// The hue gain becomes a shift of `(gain − 1) · 180` in OpenCV's 0–180 hue units.
pub(super) fn hsv_gains(cfg: &AugmentConfig, rng: &mut StdRng) -> Option<HsvGains> {
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
pub(super) const HSV_BLOCK: usize = 64;

/// RGB (0–255) to hue in sixths of the circle `[0, 6)`, saturation `[0, 1]` and value (0–255),
/// without branches.
pub(super) fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
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
pub(super) fn hsv_to_rgb(h: f32, s: f32, v: f32) -> [f32; 3] {
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
pub(super) fn apply_hsv(img: &mut RgbImage, gains: HsvGains) {
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
