//! Where a data set's decoded images live between epochs, Ultralytics' `cache=`: in memory
//! (`ram`: decoded once and kept), decoded again from the image file at every use (`false`: the
//! memory stays flat whatever the data set's size), or decoded once into an uncompressed `.npy`
//! beside each image and read back from it at every use (`disk`: no decoding after the first
//! run, little memory). The pixels are the same in every mode, so a run's bytes do not depend on
//! it (tested).
//!
//! The `.npy` files are named `<image file name>.gradscope.npy` (an `(h, w, 3)` `uint8` RGB array,
//! NumPy's format 1.0): Ultralytics' own cache is `<stem>.npy`, resized and in BGR order, and
//! neither tool must read the other's.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};

use image::RgbImage;

use crate::detect::error::AugmentError;

/// `cache=`: where decoded images are kept between epochs (Ultralytics' values).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cache {
    /// `false`: decoded from the image file at every use (Ultralytics' default).
    Off,
    /// `ram` / `true`: decoded once, kept in memory.
    Ram,
    /// `disk`: decoded once into `.npy` files beside the images, read from them at every use.
    Disk,
}

/// Decoded images by index, however they are kept.
pub trait Images: Sync {
    /// Image `i`, decoded.
    fn image(&self, i: usize) -> Result<Cow<'_, RgbImage>, AugmentError>;
}

impl Images for [RgbImage] {
    fn image(&self, i: usize) -> Result<Cow<'_, RgbImage>, AugmentError> {
        self.get(i).map(Cow::Borrowed).ok_or(AugmentError::Index {
            index: i,
            len: self.len(),
        })
    }
}

impl Images for Vec<RgbImage> {
    fn image(&self, i: usize) -> Result<Cow<'_, RgbImage>, AugmentError> {
        self.as_slice().image(i)
    }
}

/// A data set's images as `cache=` keeps them.
#[derive(Clone, Debug)]
pub enum Pixels {
    /// Decoded, in memory (`cache=ram`).
    Ram(Vec<RgbImage>),
    /// The image files, decoded at every use (`cache=false`).
    Files(Vec<PathBuf>),
    /// The `.npy` beside each image, read at every use (`cache=disk`).
    Npy(Vec<PathBuf>),
}

impl Images for Pixels {
    fn image(&self, i: usize) -> Result<Cow<'_, RgbImage>, AugmentError> {
        let path = |v: &[PathBuf]| {
            v.get(i).cloned().ok_or(AugmentError::Index {
                index: i,
                len: v.len(),
            })
        };
        match self {
            Pixels::Ram(v) => v.image(i),
            Pixels::Files(v) => {
                let p = path(v)?;
                decode(&p)
                    .map(Cow::Owned)
                    .map_err(|source| AugmentError::Decode { path: p, source })
            }
            Pixels::Npy(v) => {
                let p = path(v)?;
                read_npy(&p)
                    .map(Cow::Owned)
                    .map_err(|source| AugmentError::Npy { path: p, source })
            }
        }
    }
}

/// An image file decoded to RGB, as every mode decodes it.
pub fn decode(path: &Path) -> Result<RgbImage, image::ImageError> {
    image::open(path).map(|i| i.to_rgb8())
}

/// The `.npy` that `cache=disk` keeps beside `image`.
pub fn npy_path(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".gradscope.npy");
    image.with_file_name(name)
}

/// NumPy's header for an `(h, w, 3)` `uint8` array, padded with spaces so that the data starts
/// at a multiple of 64 bytes (format 1.0).
fn npy_header(h: u32, w: u32) -> Vec<u8> {
    let dict = format!("{{'descr': '|u1', 'fortran_order': False, 'shape': ({h}, {w}, 3), }}");
    let unpadded = 10 + dict.len() + 1;
    let pad = unpadded.div_ceil(64) * 64 - unpadded;
    let len = (dict.len() + pad + 1) as u16;
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    out
}

/// Writes `img` as an `.npy` at `path`, atomically (a killed run leaves no partial file).
pub fn write_npy(img: &RgbImage, path: &Path) -> std::io::Result<()> {
    let mut bytes = npy_header(img.height(), img.width());
    bytes.extend_from_slice(img.as_raw());
    crate::atomic::write(path, &bytes)
}

/// The `(h, w)` of an `.npy` written by [`write_npy`] and where its pixels start, from its
/// header; any other header is an error. Leaves `f` at the pixels.
fn npy_shape(f: &mut std::fs::File) -> std::io::Result<(u32, u32, u64)> {
    let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut head = [0u8; 10];
    f.read_exact(&mut head)?;
    if &head[..8] != b"\x93NUMPY\x01\x00" {
        return Err(bad("not a NumPy 1.0 file".into()));
    }
    let len = u16::from_le_bytes([head[8], head[9]]) as usize;
    let mut dict = vec![0u8; len];
    f.read_exact(&mut dict)?;
    let dict = String::from_utf8_lossy(&dict);
    let shape = dict
        .split_once("'shape': (")
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(s, _)| s.to_string())
        .ok_or_else(|| bad(format!("no shape in the header {dict}")))?;
    let dims: Vec<u32> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>())
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("shape ({shape}): {e}")))?;
    if !dict.contains("'descr': '|u1'") || dict.contains("True") || dims.len() != 3 || dims[2] != 3
    {
        return Err(bad(format!(
            "expected an (h, w, 3) uint8 array, found {dict}"
        )));
    }
    Ok((dims[0], dims[1], (head.len() + len) as u64))
}

/// Whether `path` holds a whole `.npy` of a `w × h` image, from its header and its length alone:
/// the check `cache=disk` makes before it reuses a file, without reading the pixels.
pub fn npy_holds(path: &Path, (w, h): (u32, u32)) -> bool {
    let Ok(mut f) = std::fs::File::open(path) else {
        return false;
    };
    let Ok((fh, fw, start)) = npy_shape(&mut f) else {
        return false;
    };
    let pixels = 3 * w as u64 * h as u64;
    (fh, fw) == (h, w) && f.metadata().is_ok_and(|m| m.len() == start + pixels)
}

/// Reads an `.npy` written by [`write_npy`]; any other header or a short file is an error.
pub fn read_npy(path: &Path) -> std::io::Result<RgbImage> {
    let mut f = std::fs::File::open(path)?;
    let (h, w, _) = npy_shape(&mut f)?;
    let mut raw = vec![0u8; h as usize * w as usize * 3];
    f.read_exact(&mut raw)?;
    RgbImage::from_raw(w, h, raw).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "short data".to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The header NumPy 2 writes for `np.save(f, np.zeros((3, 5, 3), np.uint8))`.
    #[test]
    fn the_header_is_numpys() {
        let h = npy_header(3, 5);
        assert_eq!(h.len(), 128);
        let text = String::from_utf8_lossy(&h[10..]);
        assert!(text.starts_with("{'descr': '|u1', 'fortran_order': False, 'shape': (3, 5, 3), }"));
        assert!(text.ends_with(" \n"));
    }

    #[test]
    fn npy_round_trips_and_refuses_what_it_did_not_write() {
        let dir = std::env::temp_dir().join(format!("gradscope-npy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let img = RgbImage::from_fn(7, 4, |x, y| image::Rgb([x as u8, y as u8, (x * y) as u8]));
        let p = npy_path(&dir.join("a.jpg"));
        assert_eq!(p.file_name().unwrap(), "a.jpg.gradscope.npy");
        write_npy(&img, &p).unwrap();
        assert_eq!(read_npy(&p).unwrap(), img);
        assert!(npy_holds(&p, (7, 4)));
        assert!(!npy_holds(&p, (4, 7)), "another size");
        let bytes = std::fs::read(&p).unwrap();
        std::fs::write(&p, &bytes[..bytes.len() - 1]).unwrap();
        assert!(read_npy(&p).is_err(), "a short file");
        assert!(!npy_holds(&p, (7, 4)), "a short file");
        std::fs::write(&p, b"not numpy at all").unwrap();
        assert!(read_npy(&p).is_err());
        assert!(!npy_holds(&p, (7, 4)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
