//! IDX files (the MNIST / Fashion-MNIST format): big-endian magic `0x0000 TT NN`, NN dimension
//! sizes as u32, then the data. Plain or gzip-compressed (detected from the content).
//!
//! Fashion-MNIST (Xiao et al. 2017, MIT) installs with `apt-get install dataset-fashion-mnist`
//! into [`FASHION_DIR`]; any folder with the four standard file names works.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::{DataError, Dataset};

pub const FASHION_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// An unsigned-byte IDX array: its dimensions and values.
#[derive(Debug)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

pub fn parse(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    let err = |msg: String| DataError::Format {
        path: path.to_path_buf(),
        msg,
    };
    let raw;
    let bytes = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut v)
            .map_err(|e| err(format!("corrupt gzip stream: {e}")))?;
        raw = v;
        &raw[..]
    } else {
        bytes
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(err(
            "not an IDX file (the magic number must start with two zero bytes)".into(),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(err(format!(
            "IDX type 0x{:02x} is not supported (only unsigned bytes, 0x08)",
            bytes[2]
        )));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if nd == 0 || bytes.len() < header {
        return Err(err(format!(
            "truncated header: {nd} dimensions need {header} bytes, file has {}",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n: usize = dims.iter().product();
    if bytes.len() - header != n {
        return Err(err(format!(
            "dimensions {dims:?} need {n} data bytes, file has {} (truncated or corrupt)",
            bytes.len() - header
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

pub fn read(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

/// Images `[n, rows, cols]` and labels `[n]` as a dataset with pixels scaled to [0, 1].
pub fn dataset(
    images: &IdxArray,
    labels: &IdxArray,
    name: &str,
    label_path: &Path,
) -> Result<Dataset, DataError> {
    if images.dims.len() != 3 || labels.dims.len() != 1 || images.dims[0] != labels.dims[0] {
        return Err(DataError::Format {
            path: label_path.to_path_buf(),
            msg: format!(
                "images {:?} and labels {:?} do not match",
                images.dims, labels.dims
            ),
        });
    }
    let classes = labels
        .data
        .iter()
        .copied()
        .max()
        .map_or(0, |m| m as usize + 1);
    Ok(Dataset {
        name: name.into(),
        x: images.data.iter().map(|&p| p as f32 / 255.0).collect(),
        y: labels.data.iter().map(|&l| l as usize).collect(),
        features: images.dims[1] * images.dims[2],
        classes,
    })
}

fn find(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// The training part (`train-images-idx3-ubyte[.gz]`, `train-labels-idx1-ubyte[.gz]`) of an
/// MNIST-style folder.
pub fn load_dir(dir: &Path, name: &str) -> Result<Dataset, DataError> {
    let (Some(img), Some(lab)) = (
        find(dir, "train-images-idx3-ubyte"),
        find(dir, "train-labels-idx1-ubyte"),
    ) else {
        return Err(DataError::Missing(format!(
            "no train-images-idx3-ubyte[.gz] / train-labels-idx1-ubyte[.gz] in {}; install Fashion-MNIST with \
             `apt-get install dataset-fashion-mnist` (goes to {FASHION_DIR}) or pass data_dir=<folder>",
            dir.display()
        )));
    };
    dataset(&read(&img)?, &read(&lab)?, name, &lab)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut v = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn reads_plain_and_gzip() {
        use std::io::Write;
        let raw = idx(&[2, 2, 2], &[0, 255, 1, 2, 3, 4, 5, 6]);
        let a = parse(&raw, Path::new("a")).unwrap();
        assert_eq!(a.dims, vec![2, 2, 2]);
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&raw).unwrap();
        let b = parse(&enc.finish().unwrap(), Path::new("b.gz")).unwrap();
        assert_eq!(b.data, a.data);
        let labels = parse(&idx(&[2], &[3, 1]), Path::new("l")).unwrap();
        let d = dataset(&a, &labels, "t", Path::new("l")).unwrap();
        assert_eq!((d.features, d.classes, d.y.clone()), (4, 4, vec![3, 1]));
        assert_eq!(d.x[1], 1.0);
    }

    #[test]
    fn truncated_or_foreign_files_are_named() {
        let mut raw = idx(&[2, 2, 2], &[0; 8]);
        raw.pop();
        let e = parse(&raw, Path::new("t.idx")).unwrap_err().to_string();
        assert!(e.contains("t.idx") && e.contains("truncated"), "{e}");
        let e = parse(b"PK\x03\x04", Path::new("z.zip"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not an IDX"), "{e}");
        let e = load_dir(Path::new("/nonexistent"), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("apt-get install dataset-fashion-mnist"), "{e}");
    }
}
