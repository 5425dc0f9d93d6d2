//! Statistics of one tensor, computed in a single pass over its values on the host.

use super::record::{ActStats, GradStats};
use crate::activation::Activation;
pub use crate::kernels::moments::sum_and_sq;
use crate::kernels::moments::{count_outside_par, finite_moments, Finite};

/// The axis whose index names a unit (neuron / channel): `[B, C]` → 1, `[B, C, H, W]` → 1,
/// `[B, T, C]` (sequences) → 2.
pub fn unit_axis(shape: &[usize]) -> usize {
    match shape.len() {
        3 => 2,
        0 | 1 => 0,
        _ => 1,
    }
}

/// Activation statistics, plus which units were active (output > 0) in this batch for the
/// ReLU family.
pub fn activation_stats(
    h: &[f32],
    shape: &[usize],
    act_fn: Option<Activation>,
    pre: Option<&[f32]>,
) -> (ActStats, Option<Vec<bool>>) {
    activation_stats_with(h, shape, act_fn, pre, None)
}

/// What a kernel measured of its output h and input z while writing h
/// ([`crate::kernels::act::apply_measured`]): Σ and Σ² of each (the bits of [`sum_and_sq`])
/// and how many values of h lie in the saturated region ([`saturated_bounds`]).
#[derive(Clone, Copy, Debug)]
pub struct Presummed {
    pub h: (f64, f64),
    pub pre: (f64, f64),
    pub saturated: usize,
}

/// [`activation_stats`] with the sums a kernel already took (`known`): the values are read
/// again only for what it did not measure, or where a sum is not finite.
pub fn activation_stats_with(
    h: &[f32],
    shape: &[usize],
    act_fn: Option<Activation>,
    pre: Option<&[f32]>,
    known: Option<&Presummed>,
) -> (ActStats, Option<Vec<bool>>) {
    let (mut stats, _) = act_stats_of(finite_moments(h, known.map(|k| k.h)), h.len());
    stats.sat_frac = act_fn.filter(|a| a.saturates()).map(|a| {
        let n = known.map_or_else(|| saturated(h, a), |k| k.saturated);
        n as f64 / h.len().max(1) as f64
    });
    let active = match act_fn {
        Some(a) if a.can_die() && !shape.is_empty() => {
            let axis = unit_axis(shape);
            let units = shape[axis];
            let inner: usize = shape[axis + 1..].iter().product();
            let mut active = vec![false; units];
            for (i, chunk) in h.chunks(inner.max(1)).enumerate() {
                if chunk.iter().any(|&v| v > 0.0) {
                    active[i % units] = true;
                }
            }
            Some(active)
        }
        _ => None,
    };
    if let Some(z) = pre {
        let (s, q, n, _, _) = finite_moments(z, known.map(|k| k.pre));
        let (m, v) = moments(s, q, n);
        (stats.pre_mean, stats.pre_var) = (Some(m), Some(v));
    }
    (stats, active)
}

/// [`activation_stats`] of `len` values with no activation function, from their
/// [`finite_moments`] (taken where the values were made): the same numbers, the values not read.
pub fn act_stats_of(m: Finite, len: usize) -> (ActStats, Option<Vec<bool>>) {
    let (sum, sq, n_fin, nan, inf) = m;
    let (mean, var) = moments(sum, sq, n_fin);
    let stats = ActStats {
        numel: len,
        mean,
        std: var.sqrt(),
        pre_mean: None,
        pre_var: None,
        dead_frac: None, // filled in by the probe from its window of batches
        sat_frac: None,
        nan,
        inf,
    };
    (stats, None)
}

/// How many values are finite and in `a`'s saturated region
/// ([`Activation::is_saturated_output`]): two f32 comparisons per value in vector lanes (the
/// region's bounds found once from that predicate), on every thread for big tensors. The
/// element-by-element count was three quarters of what the probe added to a 20-layer sigmoid
/// MLP's step.
fn saturated(h: &[f32], a: Activation) -> usize {
    match saturated_bounds(a) {
        Some((lo, hi)) => count_outside_par(h, lo, hi),
        None => 0,
    }
}

/// (lo, hi) such that a finite output h of `a` is saturated exactly when h ≤ lo or h ≥ hi:
/// the predicate is false at the activation's centre (½ for σ, 0 for tanh and softsign) and
/// monotone on each side of it, so each bound is found by bisection over the f32 values
/// themselves (`None` for an activation that does not saturate).
pub fn saturated_bounds(a: Activation) -> Option<(f32, f32)> {
    if !a.saturates() {
        return None;
    }
    let is = |x: f32| a.is_saturated_output(x);
    Some(match a {
        // σ: saturated below ≈ 0.0101 (and for every negative value) and above ≈ 0.9899
        Activation::Sigmoid => (edge(is, 0.0, 0.5).0, edge(is, 0.5, f32::MAX).1),
        // symmetric in h
        _ => {
            let hi = edge(is, 0.0, f32::MAX).1;
            (-hi, hi)
        }
    })
}

/// The two neighbouring floats (a, b) between `from` and `to` (0 ≤ from < to) where `is` changes
/// from its value at `from` to its value at `to`, by bisection (non-negative floats order as
/// their bits).
fn edge(is: impl Fn(f32) -> bool, from: f32, to: f32) -> (f32, f32) {
    let start = is(from);
    let (mut a, mut b) = (from.to_bits(), to.to_bits());
    while b - a > 1 {
        let mid = a + (b - a) / 2;
        if is(f32::from_bits(mid)) == start {
            a = mid;
        } else {
            b = mid;
        }
    }
    (f32::from_bits(a), f32::from_bits(b))
}

fn moments(sum: f64, sq: f64, n: usize) -> (f64, f64) {
    if n == 0 {
        return (f64::NAN, f64::NAN);
    }
    let m = sum / n as f64;
    (m, (sq / n as f64 - m * m).max(0.0))
}

/// Norm, RMS and non-finite counts of a gradient.
pub fn grad_stats(g: &[f32]) -> GradStats {
    grad_stats_of(finite_moments(g, None), g.len())
}

/// [`grad_stats`] from the gradient's [`finite_moments`] and its number of values.
pub fn grad_stats_of(moments: Finite, len: usize) -> GradStats {
    let (_, sq, _, nan, inf) = moments;
    let norm = if nan > 0 {
        f64::NAN
    } else if inf > 0 {
        f64::INFINITY
    } else {
        sq.sqrt()
    };
    GradStats {
        norm,
        rms: norm / (len.max(1) as f64).sqrt(),
        nan,
        inf,
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn stats_of_a_small_relu_batch() {
        // 2 samples × 3 units; unit 1 is never active
        let h = [0.0, 0.0, 2.0, 1.0, 0.0, 0.0];
        let (s, active) = activation_stats(&h, &[2, 3], Some(Activation::Relu), None);
        assert_eq!(active.unwrap(), vec![true, false, true]);
        assert!((s.mean - 0.5).abs() < 1e-12);
        assert!((s.std - (7.0f64 / 12.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.sat_frac, None);
    }

    #[test]
    fn channel_axis_for_images() {
        // [1, 2, 1, 2]: channel 0 = [-1, -2], channel 1 = [0, 3]
        let h = [-1.0, -2.0, 0.0, 3.0];
        let (_, active) = activation_stats(&h, &[1, 2, 1, 2], Some(Activation::LeakyRelu), None);
        assert_eq!(active.unwrap(), vec![false, true]);
    }

    /// The vectorised count is the element-by-element predicate, for every saturating
    /// activation, on values around each boundary, non-finite ones, past a parallel block, and at
    /// the bounds it found and their neighbouring floats.
    #[test]
    fn the_saturated_count_is_the_predicate_counted() {
        let mut h: Vec<f32> = (0..70_001)
            .map(|i| ((i * 7919 % 20_001) as f32 - 10_000.0) / 5_000.0)
            .collect();
        // the sigmoid's boundaries h(1 − h) = 0.01 and their neighbours
        for b in [0.010_102_051_f32, 0.989_897_95] {
            h.extend([
                b,
                f32::from_bits(b.to_bits() - 1),
                f32::from_bits(b.to_bits() + 1),
            ]);
        }
        h.extend([f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 1.0, -1.0, 0.0]);
        for a in [Activation::Sigmoid, Activation::Tanh, Activation::Softsign] {
            let want = h
                .iter()
                .filter(|&&v| v.is_finite() && a.is_saturated_output(v))
                .count();
            assert!(want > 0 && want < h.len(), "{a:?}: {want}");
            assert_eq!(saturated(&h, a), want, "{a:?}");
            // and at the bounds themselves and their neighbours
            let (lo, hi) = saturated_bounds(a).unwrap();
            for b in [lo, hi] {
                for x in [
                    b,
                    f32::from_bits(b.to_bits() - 1),
                    f32::from_bits(b.to_bits() + 1),
                ] {
                    assert_eq!(
                        saturated(&[x], a),
                        a.is_saturated_output(x) as usize,
                        "{a:?} {x}"
                    );
                }
            }
        }
    }

    #[test]
    fn counts_non_finite_and_saturation() {
        let h = [0.999_f32, 0.5, f32::NAN, f32::INFINITY];
        let (s, _) = activation_stats(&h, &[1, 4], Some(Activation::Sigmoid), None);
        assert_eq!((s.nan, s.inf), (1, 1));
        assert_eq!(s.sat_frac, Some(0.25));
        let g = grad_stats(&[3.0, 4.0]);
        assert!((g.norm - 5.0).abs() < 1e-12);
        assert!(grad_stats(&[1.0, f32::NEG_INFINITY]).norm.is_infinite());
    }
}
