//! Datasets: the embedded sklearn digits, IDX files (MNIST, Fashion-MNIST), and the small
//! machinery every classifier needs: a seeded split, standardisation, shuffled batches.

pub mod detect;
pub mod digits;
pub mod idx;
pub mod image;
pub mod letterbox;
pub mod resize;
pub mod sequences;

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{0}")]
    Missing(String),
}

/// A classification dataset held in memory: `x` is `[n, features]` row-major.
#[derive(Clone, Debug)]
pub struct Dataset {
    pub name: String,
    pub x: Vec<f32>,
    pub y: Vec<usize>,
    pub features: usize,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.y.len()
    }

    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    fn subset(&self, idx: &[usize], name: &str) -> Dataset {
        let mut x = Vec::with_capacity(idx.len() * self.features);
        for &i in idx {
            x.extend_from_slice(&self.x[i * self.features..(i + 1) * self.features]);
        }
        Dataset {
            name: format!("{}/{name}", self.name),
            x,
            y: idx.iter().map(|&i| self.y[i]).collect(),
            features: self.features,
            classes: self.classes,
        }
    }

    /// First `n` samples (all when `n` ≥ len).
    pub fn take(&self, n: usize) -> Dataset {
        let idx: Vec<usize> = (0..n.min(self.len())).collect();
        let mut d = self.subset(&idx, "");
        d.name = self.name.clone();
        d
    }

    /// A seeded random split into (train, val) with `val_frac` of the samples in val.
    pub fn split(&self, val_frac: f64, seed: u64) -> (Dataset, Dataset) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut StdRng::seed_from_u64(seed));
        let n_val = ((self.len() as f64) * val_frac).round() as usize;
        let (val, train) = idx.split_at(n_val);
        (self.subset(train, "train"), self.subset(val, "val"))
    }

    /// Per-feature mean and standard deviation (features with std 0 get std 1).
    pub fn feature_stats(&self) -> (Vec<f32>, Vec<f32>) {
        let n = self.len().max(1) as f64;
        let f = self.features;
        let mut mean = vec![0f64; f];
        let mut sq = vec![0f64; f];
        for row in self.x.chunks(f) {
            for (j, &v) in row.iter().enumerate() {
                mean[j] += v as f64;
                sq[j] += (v as f64) * (v as f64);
            }
        }
        let mut std = vec![1f32; f];
        for j in 0..f {
            mean[j] /= n;
            let var = sq[j] / n - mean[j] * mean[j];
            if var > 1e-12 {
                std[j] = var.sqrt() as f32;
            }
        }
        (mean.into_iter().map(|m| m as f32).collect(), std)
    }

    /// x ← (x − mean)/std with statistics from another split (the training set).
    pub fn standardise_with(&mut self, mean: &[f32], std: &[f32]) {
        let f = self.features;
        for row in self.x.chunks_mut(f) {
            for j in 0..f {
                row[j] = (row[j] - mean[j]) / std[j];
            }
        }
    }

    /// Index batches over a seeded permutation (the last batch may be smaller).
    pub fn batches(&self, batch: usize, rng: &mut StdRng) -> Vec<Vec<usize>> {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(rng);
        idx.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
    }

    /// The rows `idx` as a `[len, features]` tensor and their labels.
    pub fn tensors(&self, idx: &[usize], device: &Device) -> (Tensor<2>, Tensor<1, Int>) {
        let f = self.features;
        let mut x = Vec::with_capacity(idx.len() * f);
        for &i in idx {
            x.extend_from_slice(&self.x[i * f..(i + 1) * f]);
        }
        let y: Vec<i64> = idx.iter().map(|&i| self.y[i] as i64).collect();
        (
            Tensor::from_data(TensorData::new(x, [idx.len(), f]), device),
            Tensor::from_data(TensorData::new(y, [idx.len()]), device),
        )
    }
}

/// A train/val pair standardised with the training statistics.
pub fn prepare(data: &Dataset, val_frac: f64, seed: u64) -> (Dataset, Dataset) {
    let (mut train, mut val) = data.split(val_frac, seed);
    let (mean, std) = train.feature_stats();
    train.standardise_with(&mean, &std);
    val.standardise_with(&mean, &std);
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_disjoint_and_complete() {
        let d = digits::load().unwrap();
        let (a, b) = d.split(0.2, 7);
        let (a2, _) = d.split(0.2, 7);
        assert_eq!(a.y, a2.y);
        assert_eq!(a.len() + b.len(), d.len());
        assert_eq!(b.len(), 359);
        let (c, _) = d.split(0.2, 8);
        assert_ne!(a.y, c.y);
    }

    #[test]
    fn standardisation_uses_training_statistics() {
        let (train, val) = prepare(&digits::load().unwrap(), 0.2, 0);
        let (m, s) = train.feature_stats();
        for j in 0..train.features {
            assert!(m[j].abs() < 1e-4, "feature {j} mean {}", m[j]);
            assert!(
                s[j] == 1.0 || (s[j] - 1.0).abs() < 1e-3,
                "feature {j} std {}",
                s[j]
            );
        }
        let (mv, _) = val.feature_stats();
        assert!(
            mv.iter().any(|v| v.abs() > 1e-3),
            "val must not be re-centred on itself"
        );
    }
}
