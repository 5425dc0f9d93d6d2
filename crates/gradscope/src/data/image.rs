//! The one conversion between decoded images and the network's input: `RgbImage` (bytes, the
//! type every image step works on) ↔ channel-major `[3, h, w]` floats in [0, 1].

use image::RgbImage;

/// Channel-major `[3, h, w]` floats in [0, 1] from an RGB image.
pub fn to_chw(img: &RgbImage) -> Vec<f32> {
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

/// Rounds and saturates a float channel value in [0, 255] to a byte.
pub fn to_u8(v: f32) -> u8 {
    (v + 0.5) as u8
}

/// The RGB image of a `[3, h, w]` float image in [0, 1] (values outside are saturated; missing
/// values, when `chw` is short, are black).
pub fn from_chw(chw: &[f32], w: u32, h: u32) -> RgbImage {
    let n = w as usize * h as usize;
    RgbImage::from_fn(w, h, |x, y| {
        let i = y as usize * w as usize + x as usize;
        let px = |c: usize| chw.get(c * n + i).map_or(0, |v| to_u8(v * 255.0));
        image::Rgb([px(0), px(1), px(2)])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_survive_the_round_trip_and_floats_saturate() {
        let img = RgbImage::from_fn(7, 3, |x, y| image::Rgb([x as u8 * 36, y as u8 * 120, 255]));
        let chw = to_chw(&img);
        assert_eq!(chw.len(), 3 * 21);
        assert_eq!(chw[2 * 21 + 5], 1.0, "blue plane");
        assert_eq!(from_chw(&chw, 7, 3), img);
        let odd = from_chw(&[-0.5, 0.5, 1.5], 1, 1);
        assert_eq!(odd.get_pixel(0, 0).0, [0, 128, 255]);
    }
}
