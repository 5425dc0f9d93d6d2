//! The sklearn "digits" set, embedded: 1797 handwritten digits as 8×8 images with 17 grey levels.
//!
//! Source: UCI "Optical Recognition of Handwritten Digits" (E. Alpaydin, C. Kaynak, 1998),
//! CC BY 4.0, as shipped in scikit-learn (`sklearn/datasets/data/digits.csv.gz`, BSD-3-Clause).
//! See `embedded/digits.SOURCE.md` and `embedded/digits.COPYING`.

use std::io::Read;
use std::path::PathBuf;

use super::{DataError, Dataset};

static DIGITS_CSV_GZ: &[u8] = include_bytes!("../../embedded/digits.csv.gz");

pub fn load() -> Result<Dataset, DataError> {
    parse_csv_gz(DIGITS_CSV_GZ, "embedded digits.csv.gz")
}

/// Rows of 64 pixel values (0..16) followed by the label 0..9.
pub fn parse_csv_gz(bytes: &[u8], origin: &str) -> Result<Dataset, DataError> {
    let path = PathBuf::from(origin);
    let mut text = String::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| DataError::Format {
            path: path.clone(),
            msg: format!("not a gzip CSV: {e}"),
        })?;
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let err = |msg: String| DataError::Format {
            path: path.clone(),
            msg: format!("line {}: {msg}", i + 1),
        };
        let vals: Vec<&str> = line.split(',').collect();
        if vals.len() != 65 {
            return Err(err(format!(
                "expected 65 comma-separated values, found {}",
                vals.len()
            )));
        }
        for v in &vals[..64] {
            let p: f32 = v
                .trim()
                .parse()
                .map_err(|_| err(format!("pixel '{v}' is not a number")))?;
            x.push(p);
        }
        let label: usize = vals[64]
            .trim()
            .parse()
            .map_err(|_| err(format!("label '{}' is not 0..9", vals[64])))?;
        if label > 9 {
            return Err(err(format!("label {label} is not 0..9")));
        }
        y.push(label);
    }
    Ok(Dataset {
        name: "digits".into(),
        x,
        y,
        features: 64,
        classes: 10,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_digits_are_complete() {
        let d = load().unwrap();
        assert_eq!(d.len(), 1797);
        assert_eq!(d.x.len(), 1797 * 64);
        let mut counts = [0usize; 10];
        d.y.iter().for_each(|&c| counts[c] += 1);
        assert!(
            counts.iter().all(|&c| (174..=183).contains(&c)),
            "{counts:?}"
        );
        assert!(d.x.iter().all(|&p| (0.0..=16.0).contains(&p)));
    }

    #[test]
    fn corrupt_input_names_the_line() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(b"1,2,3\n").unwrap();
        let e = parse_csv_gz(&enc.finish().unwrap(), "x.csv.gz")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("x.csv.gz") && e.contains("line 1") && e.contains("65"),
            "{e}"
        );
        let e = parse_csv_gz(b"not gzip", "y.gz").unwrap_err().to_string();
        assert!(e.contains("y.gz") && e.contains("gzip"), "{e}");
    }
}
