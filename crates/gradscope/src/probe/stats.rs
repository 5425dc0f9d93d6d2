//! Statistics of one tensor, computed in a single pass over its values on the host.

use super::record::{ActStats, GradStats};
use crate::activation::Activation;

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
    let (sum, sq, n_fin, nan, inf) = finite_moments(h);
    let (mean, var) = moments(sum, sq, n_fin);
    let sat_frac = act_fn
        .filter(|a| a.saturates())
        .map(|a| saturated(h, a) as f64 / h.len().max(1) as f64);
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
    let (pre_mean, pre_var) = match pre {
        Some(z) => {
            let (s, q, n, _, _) = finite_moments(z);
            let (m, v) = moments(s, q, n);
            (Some(m), Some(v))
        }
        None => (None, None),
    };
    let stats = ActStats {
        numel: h.len(),
        mean,
        std: var.sqrt(),
        pre_mean,
        pre_var,
        dead_frac: None, // filled in by the probe from its window of batches
        sat_frac,
        nan,
        inf,
    };
    (stats, active)
}

/// Values per task of [`finite_moments`]' fast path: big tensors (a YOLO activation is up to
/// 6.5 M values) are summed on every thread, in fixed blocks added in order, so the result does
/// not depend on scheduling. One thread summing them was 5% of a probed YOLO26n step.
const PAR_BLOCK: usize = 1 << 16;

/// Σx and Σx² of up to 1024 values in 16 f32 lanes each.
#[inline(always)]
fn lanes(block: &[f32]) -> (f32, f32) {
    let (mut s, mut q) = ([0f32; 16], [0f32; 16]);
    let mut it = block.chunks_exact(16);
    for c in &mut it {
        for j in 0..16 {
            s[j] += c[j];
            q[j] += c[j] * c[j];
        }
    }
    let (mut rs, mut rq) = (0f32, 0f32);
    for &x in it.remainder() {
        rs += x;
        rq += x * x;
    }
    (s.iter().sum::<f32>() + rs, q.iter().sum::<f32>() + rq)
}

crate::kernels::simd::multiversion! {
    fn block_moments_plain(v: &[f32]) -> (f64, f64) {
        let (mut sum, mut sq) = (0f64, 0f64);
        for block in v.chunks(1024) {
            let (s, q) = lanes(block);
            sum += s as f64;
            sq += q as f64;
        }
        (sum, sq)
    }
}

/// Σx and Σx² of one block: f32 lanes over runs of 1024, accumulated in f64. With AVX-512 and
/// with AVX2 written with intrinsics: the compiler assembled the auto-vectorised lanes element
/// by element (`vinsertps`), slower than scalar code, and this sum also serves the clipping norm
/// of every step.
fn block_moments(v: &[f32]) -> (f64, f64) {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { moments_avx512(v) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { moments_avx2(v) };
    }
    block_moments_plain(v)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn moments_avx2(v: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    /// The sum of a vector's eight lanes.
    #[target_feature(enable = "avx2,fma")]
    fn reduce(x: __m256) -> f32 {
        let h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
        let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
        _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
    }
    let (mut sum, mut sq) = (0f64, 0f64);
    for block in v.chunks(1024) {
        let (mut s0, mut s1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let (mut q0, mut q1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        let mut it = block.chunks_exact(16);
        for c in &mut it {
            // SAFETY: c holds 16 floats; the loads are unaligned.
            let (a, b) = unsafe {
                (
                    _mm256_loadu_ps(c.as_ptr()),
                    _mm256_loadu_ps(c.as_ptr().add(8)),
                )
            };
            s0 = _mm256_add_ps(s0, a);
            s1 = _mm256_add_ps(s1, b);
            q0 = _mm256_fmadd_ps(a, a, q0);
            q1 = _mm256_fmadd_ps(b, b, q1);
        }
        let (mut rs, mut rq) = (0f32, 0f32);
        for &x in it.remainder() {
            rs += x;
            rq += x * x;
        }
        sum += (reduce(_mm256_add_ps(s0, s1)) + rs) as f64;
        sq += (reduce(_mm256_add_ps(q0, q1)) + rq) as f64;
    }
    (sum, sq)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn moments_avx512(v: &[f32]) -> (f64, f64) {
    use std::arch::x86_64::*;
    let (mut sum, mut sq) = (0f64, 0f64);
    for block in v.chunks(1024) {
        let (mut s0, mut s1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let (mut q0, mut q1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
        let mut it = block.chunks_exact(32);
        for c in &mut it {
            // SAFETY: c holds 32 floats; the loads are unaligned.
            let (a, b) = unsafe {
                (
                    _mm512_loadu_ps(c.as_ptr()),
                    _mm512_loadu_ps(c.as_ptr().add(16)),
                )
            };
            s0 = _mm512_add_ps(s0, a);
            s1 = _mm512_add_ps(s1, b);
            q0 = _mm512_fmadd_ps(a, a, q0);
            q1 = _mm512_fmadd_ps(b, b, q1);
        }
        let (mut rs, mut rq) = (0f32, 0f32);
        for &x in it.remainder() {
            rs += x;
            rq += x * x;
        }
        sum += (_mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + rs) as f64;
        sq += (_mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) + rq) as f64;
    }
    (sum, sq)
}

/// Σx and Σx² (non-finite when any value is, or when a square overflows f32): f32 lanes in
/// blocks of 1024 accumulated in f64, on every thread for big tensors, blocks added in order.
pub fn sum_and_sq(v: &[f32]) -> (f64, f64) {
    use rayon::prelude::*;
    let parts: Vec<(f64, f64)> = if v.len() > PAR_BLOCK {
        v.par_chunks(PAR_BLOCK).map(block_moments).collect()
    } else {
        vec![block_moments(v)]
    };
    parts
        .iter()
        .fold((0f64, 0f64), |(a, b), &(s, q)| (a + s, b + q))
}

/// Σx and Σx² over the finite values, their count, and the NaN and ±∞ counts. The fast path
/// (all finite) is one branch-free pass (see [`block_moments`] and [`PAR_BLOCK`]).
fn finite_moments(v: &[f32]) -> (f64, f64, usize, usize, usize) {
    let (sum, sq) = sum_and_sq(v);
    if sum.is_finite() && sq.is_finite() {
        return (sum, sq, v.len(), 0, 0);
    }
    let (mut sum, mut sq, mut n, mut nan, mut inf) = (0f64, 0f64, 0usize, 0usize, 0usize);
    for &x in v {
        if x.is_nan() {
            nan += 1;
        } else if x.is_infinite() {
            inf += 1;
        } else {
            sum += x as f64;
            sq += (x as f64) * (x as f64);
            n += 1;
        }
    }
    (sum, sq, n, nan, inf)
}

/// How many values are finite and in `a`'s saturated region
/// ([`Activation::is_saturated_output`]): two f32 comparisons per value in vector lanes (the
/// region's bounds found once from that predicate), on every thread for big tensors. The
/// element-by-element count was three quarters of what the probe added to a 20-layer sigmoid
/// MLP's step.
fn saturated(h: &[f32], a: Activation) -> usize {
    use rayon::prelude::*;
    let Some((lo, hi)) = saturated_bounds(a) else {
        return 0;
    };
    if h.len() > PAR_BLOCK {
        h.par_chunks(PAR_BLOCK)
            .map(|c| count_outside(c, lo, hi))
            .sum()
    } else {
        count_outside(h, lo, hi)
    }
}

/// (lo, hi) such that a finite output h of `a` is saturated exactly when h ≤ lo or h ≥ hi:
/// the predicate is false at the activation's centre (½ for σ, 0 for tanh and softsign) and
/// monotone on each side of it, so each bound is found by bisection over the f32 values
/// themselves (`None` for an activation that does not saturate).
fn saturated_bounds(a: Activation) -> Option<(f32, f32)> {
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

crate::kernels::simd::multiversion! {
    /// How many finite values are ≤ lo or ≥ hi (lo < hi): the finite ones less those strictly
    /// between, counted in 16 u32 lanes.
    fn count_outside(h: &[f32], lo: f32, hi: f32) -> usize {
        let (mut finite, mut inside) = ([0u32; 16], [0u32; 16]);
        let mut total = 0usize;
        for c in h.chunks(1 << 20) {
            let mut it = c.chunks_exact(16);
            for x in &mut it {
                for j in 0..16 {
                    finite[j] += (x[j].abs() < f32::INFINITY) as u32;
                    inside[j] += ((x[j] > lo) & (x[j] < hi)) as u32;
                }
            }
            for &x in it.remainder() {
                finite[0] += (x.abs() < f32::INFINITY) as u32;
                inside[0] += ((x > lo) & (x < hi)) as u32;
            }
            let sum = |a: &mut [u32; 16]| std::mem::take(a).iter().map(|&n| n as usize).sum::<usize>();
            total += sum(&mut finite) - sum(&mut inside);
        }
        total
    }
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
    let (_, sq, _, nan, inf) = finite_moments(g);
    let norm = if nan > 0 {
        f64::NAN
    } else if inf > 0 {
        f64::INFINITY
    } else {
        sq.sqrt()
    };
    GradStats {
        norm,
        rms: norm / (g.len().max(1) as f64).sqrt(),
        nan,
        inf,
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn sums_match_f64_on_every_path() {
        // lengths around the 16- and 32-float vectors, the 1024 blocks and the parallel blocks;
        // every build this CPU runs
        for n in [0usize, 5, 15, 16, 31, 32, 1000, 1057, 70_000] {
            let v: Vec<f32> = (0..n)
                .map(|i| ((i * 31 % 89) as f32 - 44.0) / 9.0)
                .collect();
            let s: f64 = v.iter().map(|&x| x as f64).sum();
            let q: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let mut paths = vec![sum_and_sq(&v), block_moments(&v), block_moments_plain(&v)];
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::simd::has_avx2() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                paths.push(unsafe { moments_avx2(&v) });
            }
            for (got_s, got_q) in paths {
                assert!(
                    (got_s - s).abs() <= 1e-5 * (1.0 + q.sqrt() * (n as f64).sqrt()),
                    "n {n}: Σx {got_s} vs {s}"
                );
                assert!(
                    (got_q - q).abs() <= 1e-6 * (1.0 + q),
                    "n {n}: Σx² {got_q} vs {q}"
                );
            }
        }
    }

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
