//! Weight initialisation schemes, generated here from a seeded RNG so that runs are reproducible
//! and the variance of every scheme is exactly what its paper prescribes.
//!
//! All matrices are produced in burn's `Linear` layout `[fan_in, fan_out]`.

use rand::rngs::StdRng;
use rand::Rng;

use crate::activation::Activation;
use crate::choice::choice;

choice! {
    /// How a layer's weights are drawn.
    pub enum Init ("init") {
        /// PyTorch's and burn's default for `Linear`: U(±1/√fan_in), i.e. Var = 1/(3·fan_in);
        /// biases U(±1/√fan_in) as well.
        Default = "default",
        /// Glorot & Bengio 2010: U(±√(6/(fan_in+fan_out))), Var = 2/(fan_in+fan_out).
        Xavier = "xavier",
        /// He et al. 2015: N(0, gain²/fan_in), gain √2 for ReLU (see [`Activation::gain`]).
        He = "he",
        /// LeCun 1998: N(0, 1/fan_in).
        Lecun = "lecun",
        /// Saxe et al. 2014: a random orthogonal matrix scaled by the activation's gain.
        Orthogonal = "orthogonal",
    }
}

impl Init {
    /// A weight matrix `[fan_in, fan_out]` (row-major) for a layer followed by `act`.
    pub fn weights(
        self,
        fan_in: usize,
        fan_out: usize,
        act: Activation,
        rng: &mut StdRng,
    ) -> Vec<f32> {
        let n = fan_in * fan_out;
        match self {
            Init::Default => uniform(n, 1.0 / (fan_in as f64).sqrt(), rng),
            Init::Xavier => uniform(n, (6.0 / (fan_in + fan_out) as f64).sqrt(), rng),
            Init::He => normal(n, act.gain() / (fan_in as f64).sqrt(), rng),
            Init::Lecun => normal(n, 1.0 / (fan_in as f64).sqrt(), rng),
            Init::Orthogonal => orthogonal(fan_in, fan_out, act.gain(), rng),
        }
    }

    /// Bias vector: the framework default draws it like the weights, every other scheme starts at 0.
    pub fn bias(self, fan_in: usize, fan_out: usize, rng: &mut StdRng) -> Vec<f32> {
        match self {
            Init::Default => uniform(fan_out, 1.0 / (fan_in as f64).sqrt(), rng),
            _ => vec![0.0; fan_out],
        }
    }
}

pub fn uniform(n: usize, bound: f64, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|_| (bound * (2.0 * rng.random::<f64>() - 1.0)) as f32)
        .collect()
}

/// Standard normal samples by Box–Muller, scaled by `std`.
pub fn normal(n: usize, std: f64, rng: &mut StdRng) -> Vec<f32> {
    (0..n)
        .map(|_| (std * standard_normal(rng)) as f32)
        .collect()
}

pub fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>(); // (0, 1]
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// A `rows × cols` matrix with orthonormal rows (rows ≤ cols) or orthonormal columns
/// (rows > cols), times `gain`: modified Gram–Schmidt on a Gaussian matrix, with the sign of
/// each vector fixed so the distribution is uniform (Haar).
pub fn orthogonal(rows: usize, cols: usize, gain: f64, rng: &mut StdRng) -> Vec<f32> {
    // Orthonormalise the k = min(rows, cols) vectors of length m = max(rows, cols).
    let (k, m) = (rows.min(cols), rows.max(cols));
    let mut v: Vec<Vec<f64>> = (0..k)
        .map(|_| (0..m).map(|_| standard_normal(rng)).collect())
        .collect();
    for i in 0..k {
        for j in 0..i {
            let (a, b) = v.split_at_mut(i);
            let d: f64 = a[j].iter().zip(b[0].iter()).map(|(x, y)| x * y).sum();
            for (x, y) in b[0].iter_mut().zip(a[j].iter()) {
                *x -= d * y;
            }
        }
        let norm = v[i].iter().map(|x| x * x).sum::<f64>().sqrt();
        for x in v[i].iter_mut() {
            *x /= norm;
        }
    }
    let mut out = vec![0f32; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            // rows ≤ cols: vector r is row r; otherwise vector c is column c.
            let x = if rows <= cols { v[r][c] } else { v[c][r] };
            out[r * cols + c] = (gain * x) as f32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn var(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / n
    }

    #[test]
    fn variances_match_the_schemes() {
        let mut rng = StdRng::seed_from_u64(1);
        let (i, o) = (400, 300);
        let cases = [
            (Init::Default, 1.0 / (3.0 * i as f64)),
            (Init::Xavier, 2.0 / (i + o) as f64),
            (Init::He, 2.0 / i as f64),
            (Init::Lecun, 1.0 / i as f64),
        ];
        for (init, expect) in cases {
            let w = init.weights(i, o, Activation::Relu, &mut rng);
            let v = var(&w);
            assert!((v / expect - 1.0).abs() < 0.02, "{init}: {v} vs {expect}");
        }
    }

    #[test]
    fn orthogonal_is_orthogonal() {
        let mut rng = StdRng::seed_from_u64(2);
        for (r, c) in [(16, 16), (8, 20), (20, 8)] {
            let w = orthogonal(r, c, 1.0, &mut rng);
            // W Wᵀ = I when r ≤ c, Wᵀ W = I when r > c
            let k = r.min(c);
            for a in 0..k {
                for b in 0..k {
                    let d: f64 = if r <= c {
                        (0..c).map(|j| (w[a * c + j] * w[b * c + j]) as f64).sum()
                    } else {
                        (0..r).map(|j| (w[j * c + a] * w[j * c + b]) as f64).sum()
                    };
                    let e = if a == b { 1.0 } else { 0.0 };
                    assert!((d - e).abs() < 1e-5, "{r}x{c} [{a},{b}] = {d}");
                }
            }
        }
    }
}
