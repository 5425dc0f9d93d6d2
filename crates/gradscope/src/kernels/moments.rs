//! Σx and Σx² of f32 values, and counts outside an interval: the reductions the probe makes of
//! every tensor it measures.
//!
//! Values are summed in fixed blocks of [`BLOCK`] in f32 vector lanes, the blocks' sums added in
//! f64 in order within groups of [`PAR_BLOCK`] values and the groups' sums in order; big tensors
//! on every thread (a YOLO activation is up to 6.5 M values: one thread summing them was 5% of a
//! probed YOLO26n step). The result depends on the values alone (not on scheduling), and a kernel that measures
//! its own output block by block while writing it ([`crate::kernels::act::apply_measured`])
//! gets the bits a separate pass would: [`fold`] adds its per-block sums the way
//! [`sum_and_sq`] does.

use rayon::prelude::*;

/// Values per block: each block's Σx and Σx² are f32 lane sums.
pub const BLOCK: usize = 1024;

/// Values whose blocks' sums are added together before they are added to the total (the
/// grouping [`sum_and_sq`] once took from its tasks, kept so that its results keep their bits).
pub const PAR_BLOCK: usize = 1 << 16;

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
    fn block_plain(b: &[f32]) -> (f32, f32) {
        lanes(b)
    }
}

/// Σx and Σx² of one block of at most [`BLOCK`] values, in f32 lanes. With AVX-512 and with
/// AVX2 written with intrinsics: the compiler assembled the auto-vectorised lanes element by
/// element (`vinsertps`), slower than scalar code, and this sum also serves the clipping norm
/// of every step.
pub fn block(b: &[f32]) -> (f32, f32) {
    debug_assert!(b.len() <= BLOCK);
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { block_avx512(b) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        return unsafe { block_avx2(b) };
    }
    block_plain(b)
}

/// The sum of a vector's eight lanes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn reduce8(x: std::arch::x86_64::__m256) -> f32 {
    use std::arch::x86_64::*;
    let h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    _mm_cvtss_f32(_mm_add_ss(h, _mm_shuffle_ps(h, h, 1)))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn block_avx2(block: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
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
    (
        reduce8(_mm256_add_ps(s0, s1)) + rs,
        reduce8(_mm256_add_ps(q0, q1)) + rq,
    )
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn block_avx512(block: &[f32]) -> (f32, f32) {
    use std::arch::x86_64::*;
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
    (
        _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) + rs,
        _mm512_reduce_add_ps(_mm512_add_ps(q0, q1)) + rq,
    )
}

/// The sums of every block of `v` (the last may be partial), appended to `out` in order. Where
/// the CPU has vector units, several whole blocks at a time in interleaved lanes: each block's
/// lanes add its values in the same order as [`block`] alone (so the bits are the same), and
/// the blocks' chains of additions overlap in the pipeline instead of each waiting on its own
/// previous addition (alone, a block runs at the adder's latency, not its throughput).
pub fn blocks(v: &[f32], out: &mut Vec<(f32, f32)>) {
    #[allow(unused_mut)]
    let mut rest = v;
    #[cfg(target_arch = "x86_64")]
    {
        let group = |n: usize| v.len() / (n * BLOCK) * (n * BLOCK);
        if crate::kernels::simd::has_avx512() {
            let whole = group(4);
            for q in v[..whole].chunks_exact(4 * BLOCK) {
                // SAFETY: the CPU has AVX-512F (checked just above).
                out.extend(unsafe { four_avx512(q) });
            }
            rest = &v[whole..];
        } else if crate::kernels::simd::has_avx2() {
            let whole = group(2);
            for q in v[..whole].chunks_exact(2 * BLOCK) {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                out.extend(unsafe { two_avx2(q) });
            }
            rest = &v[whole..];
        }
    }
    out.extend(rest.chunks(BLOCK).map(block));
}

/// [`block_avx2`] of two whole blocks side by side.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn two_avx2(v: &[f32]) -> [(f32, f32); 2] {
    use std::arch::x86_64::*;
    assert_eq!(v.len(), 2 * BLOCK);
    let (p, r) = (v.as_ptr(), v[BLOCK..].as_ptr());
    let (mut s0, mut s1, mut q0, mut q1) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    let (mut t0, mut t1, mut u0, mut u1) = (
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
        _mm256_setzero_ps(),
    );
    for i in (0..BLOCK).step_by(16) {
        // SAFETY: i + 16 ≤ BLOCK, and each block holds BLOCK floats; the loads are unaligned.
        let (a, b, c, d) = unsafe {
            (
                _mm256_loadu_ps(p.add(i)),
                _mm256_loadu_ps(p.add(i + 8)),
                _mm256_loadu_ps(r.add(i)),
                _mm256_loadu_ps(r.add(i + 8)),
            )
        };
        s0 = _mm256_add_ps(s0, a);
        s1 = _mm256_add_ps(s1, b);
        q0 = _mm256_fmadd_ps(a, a, q0);
        q1 = _mm256_fmadd_ps(b, b, q1);
        t0 = _mm256_add_ps(t0, c);
        t1 = _mm256_add_ps(t1, d);
        u0 = _mm256_fmadd_ps(c, c, u0);
        u1 = _mm256_fmadd_ps(d, d, u1);
    }
    [
        (
            reduce8(_mm256_add_ps(s0, s1)),
            reduce8(_mm256_add_ps(q0, q1)),
        ),
        (
            reduce8(_mm256_add_ps(t0, t1)),
            reduce8(_mm256_add_ps(u0, u1)),
        ),
    ]
}

/// [`block_avx512`] of four whole blocks side by side.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn four_avx512(v: &[f32]) -> [(f32, f32); 4] {
    use std::arch::x86_64::*;
    debug_assert_eq!(v.len(), 4 * BLOCK);
    let mut acc = [[_mm512_setzero_ps(); 4]; 4];
    for i in (0..BLOCK).step_by(32) {
        for (k, a) in acc.iter_mut().enumerate() {
            let c = &v[k * BLOCK + i..k * BLOCK + i + 32];
            // SAFETY: c holds 32 floats; the loads are unaligned.
            let (x, y) = unsafe {
                (
                    _mm512_loadu_ps(c.as_ptr()),
                    _mm512_loadu_ps(c.as_ptr().add(16)),
                )
            };
            a[0] = _mm512_add_ps(a[0], x);
            a[1] = _mm512_add_ps(a[1], y);
            a[2] = _mm512_fmadd_ps(x, x, a[2]);
            a[3] = _mm512_fmadd_ps(y, y, a[3]);
        }
    }
    acc.map(|a| {
        (
            _mm512_reduce_add_ps(_mm512_add_ps(a[0], a[1])),
            _mm512_reduce_add_ps(_mm512_add_ps(a[2], a[3])),
        )
    })
}

/// One task's sums: its blocks' f32 sums added in f64, in order.
fn part(v: &[f32]) -> (f64, f64) {
    let mut sums = Vec::with_capacity(v.len().div_ceil(BLOCK));
    blocks(v, &mut sums);
    add_in_order(&sums)
}

/// Block sums added in f64, in order.
fn add_in_order(sums: &[(f32, f32)]) -> (f64, f64) {
    sums.iter()
        .fold((0f64, 0f64), |(s, q), &(a, b)| (s + a as f64, q + b as f64))
}

/// Values per task when a reduction is split over threads: 16 blocks, 64 KiB (the split does
/// not change the result: [`fold`] adds the blocks' sums in one fixed order).
pub const TASK: usize = 16 * BLOCK;

/// Σx and Σx² (non-finite when any value is, or when a square overflows f32), on every thread
/// past one task's worth of values.
pub fn sum_and_sq(v: &[f32]) -> (f64, f64) {
    if v.len() <= TASK {
        return part(v);
    }
    let sums: Vec<Vec<(f32, f32)>> = v
        .par_chunks(TASK)
        .map(|c| {
            let mut s = Vec::with_capacity(TASK / BLOCK);
            blocks(c, &mut s);
            s
        })
        .collect();
    fold(&sums.concat())
}

/// [`sum_and_sq`] of a tensor from its blocks' sums ([`block`] of every [`BLOCK`] values, in
/// order): the same additions in the same order, so the same bits.
pub fn fold(blocks: &[(f32, f32)]) -> (f64, f64) {
    blocks
        .chunks(PAR_BLOCK / BLOCK)
        .map(add_in_order)
        .fold((0f64, 0f64), |(a, b), (s, q)| (a + s, b + q))
}

/// Σx and Σx² over the finite values, their count, and the NaN and ±∞ counts.
pub type Finite = (f64, f64, usize, usize, usize);

/// [`Finite`] of `v`, from
/// Σx and Σx² already taken of it (`sums`, else [`sum_and_sq`]): when those are finite, so is
/// every value, and `v` is not read again.
pub fn finite_moments(v: &[f32], sums: Option<(f64, f64)>) -> Finite {
    let (sum, sq) = sums.unwrap_or_else(|| sum_and_sq(v));
    if sum.is_finite() && sq.is_finite() {
        return (sum, sq, v.len(), 0, 0);
    }
    value_by_value(v.iter().copied())
}

/// [`finite_moments`] of the values of `pieces` laid end to end (a tensor's rows that live in
/// several buffers), the same bits, without copying them when every piece but the last holds
/// whole blocks (then the blocks are the same ones); else of a copy.
pub fn finite_moments_split(pieces: &[&[f32]]) -> Finite {
    let n: usize = pieces.iter().map(|p| p.len()).sum();
    let whole_blocks = pieces.iter().rev().skip(1).all(|p| p.len() % BLOCK == 0);
    if !whole_blocks {
        return finite_moments(&pieces.concat(), None);
    }
    let mut sums = Vec::with_capacity(n.div_ceil(BLOCK) + pieces.len());
    for p in pieces {
        blocks(p, &mut sums);
    }
    // as sum_and_sq: one task's blocks added in order, more than one task's folded
    let (sum, sq) = if n <= TASK {
        add_in_order(&sums)
    } else {
        fold(&sums)
    };
    if sum.is_finite() && sq.is_finite() {
        return (sum, sq, n, 0, 0);
    }
    value_by_value(pieces.iter().flat_map(|p| p.iter().copied()))
}

/// [`Finite`] one value after another (where some value or square is not finite).
fn value_by_value(v: impl Iterator<Item = f32>) -> Finite {
    let (mut sum, mut sq, mut n, mut nan, mut inf) = (0f64, 0f64, 0usize, 0usize, 0usize);
    for x in v {
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

/// How many finite values are ≤ lo or ≥ hi (lo < hi): the finite ones less those strictly
/// between. With AVX-512 and AVX2 written with intrinsics (the compiler's lanes ran at under
/// 3 values per ns).
pub fn count_outside(h: &[f32], lo: f32, hi: f32) -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx512() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { outside_avx512(h, lo, hi) };
    }
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::has_avx2() {
        // SAFETY: the CPU has AVX2 (checked just above).
        return unsafe { outside_avx2(h, lo, hi) };
    }
    count_outside_plain(h, lo, hi)
}

/// [`count_outside`] of one value.
fn outside_one(x: f32, lo: f32, hi: f32) -> usize {
    (x.is_finite() && !(x > lo && x < hi)) as usize
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn outside_avx2(h: &[f32], lo: f32, hi: f32) -> usize {
    use std::arch::x86_64::*;
    let (lo_v, hi_v) = (_mm256_set1_ps(lo), _mm256_set1_ps(hi));
    let (inf, sign) = (_mm256_set1_ps(f32::INFINITY), _mm256_set1_ps(-0.0));
    let lanes = |v: __m256i| -> usize {
        let mut a = [0u32; 8];
        // SAFETY: `a` holds 8 u32s; the store is unaligned.
        unsafe { _mm256_storeu_si256(a.as_mut_ptr().cast(), v) };
        a.iter().map(|&n| n as usize).sum()
    };
    let mut total = 0usize;
    // each lane counts at most 2^20 / 8 per chunk: no overflow
    for c in h.chunks(1 << 20) {
        let (mut finite, mut inside) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut it = c.chunks_exact(8);
        for x in &mut it {
            // SAFETY: x holds 8 floats; the load is unaligned.
            let v = unsafe { _mm256_loadu_ps(x.as_ptr()) };
            let f = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_andnot_ps(sign, v), inf);
            let i = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(v, lo_v),
                _mm256_cmp_ps::<_CMP_LT_OQ>(v, hi_v),
            );
            // a true comparison is all ones: −1 per lane
            finite = _mm256_sub_epi32(finite, _mm256_castps_si256(f));
            inside = _mm256_sub_epi32(inside, _mm256_castps_si256(i));
        }
        total += lanes(finite) - lanes(inside);
        total += it
            .remainder()
            .iter()
            .map(|&x| outside_one(x, lo, hi))
            .sum::<usize>();
    }
    total
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn outside_avx512(h: &[f32], lo: f32, hi: f32) -> usize {
    use std::arch::x86_64::*;
    let (lo_v, hi_v) = (_mm512_set1_ps(lo), _mm512_set1_ps(hi));
    let inf = _mm512_set1_ps(f32::INFINITY);
    let ones = _mm512_set1_epi32(1);
    let mut total = 0usize;
    // counted in 16 u32 lanes, one masked add per 16 values (a popcount of the mask per 16
    // values compiled to twenty scalar operations here: this function has no POPCNT), each lane
    // at most 2^20 / 16 per chunk: no overflow
    for c in h.chunks(1 << 20) {
        let mut count = _mm512_setzero_si512();
        let mut it = c.chunks_exact(16);
        for x in &mut it {
            // SAFETY: x holds 16 floats; the load is unaligned.
            let v = unsafe { _mm512_loadu_ps(x.as_ptr()) };
            let finite = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(_mm512_abs_ps(v), inf);
            let inside = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, lo_v)
                & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(v, hi_v);
            count = _mm512_mask_add_epi32(count, finite & !inside, count, ones);
        }
        total += _mm512_reduce_add_epi32(count) as u32 as usize;
        total += it
            .remainder()
            .iter()
            .map(|&x| outside_one(x, lo, hi))
            .sum::<usize>();
    }
    total
}

crate::kernels::simd::multiversion! {
    /// [`count_outside`] in 16 u32 lanes the compiler vectorises.
    fn count_outside_plain(h: &[f32], lo: f32, hi: f32) -> usize {
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

/// [`count_outside`] on every thread past one task's worth of values.
pub fn count_outside_par(h: &[f32], lo: f32, hi: f32) -> usize {
    if h.len() > TASK {
        h.par_chunks(TASK).map(|c| count_outside(c, lo, hi)).sum()
    } else {
        count_outside(h, lo, hi)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 31 % 89) as f32 - 44.0) / 9.0)
            .collect()
    }

    #[test]
    fn split_moments_are_the_moments_of_the_whole() {
        // whole-block pieces (read in place) and ragged ones (copied), one task's worth and
        // several, finite and with a NaN and an ∞ in a later piece: the same bits
        let bits = |m: Finite| (m.0.to_bits(), m.1.to_bits(), m.2, m.3, m.4);
        for (cuts, n) in [
            (vec![2048, 4096], 7000),
            (vec![1024; 20], 20_480 + 77),
            (vec![100, 2000], 3000),
            (vec![], 500),
        ] {
            let mut v = values(n);
            for poisoned in [false, true] {
                if poisoned {
                    v[n - 3] = f32::NAN;
                    v[n - 1] = f32::INFINITY;
                }
                let mut pieces = Vec::new();
                let mut rest = &v[..];
                for c in &cuts {
                    let (a, b) = rest.split_at(*c);
                    pieces.push(a);
                    rest = b;
                }
                pieces.push(rest);
                assert_eq!(
                    bits(finite_moments_split(&pieces)),
                    bits(finite_moments(&v, None)),
                    "{cuts:?} of {n}, poisoned {poisoned}"
                );
            }
        }
    }

    #[test]
    fn sums_match_f64_on_every_path() {
        // lengths around the 16- and 32-float vectors, the 1024 blocks and the parallel blocks;
        // every build this CPU runs
        for n in [0usize, 5, 15, 16, 31, 32, 1000, 1057, 70_000] {
            let v = values(n);
            let s: f64 = v.iter().map(|&x| x as f64).sum();
            let q: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
            let each = |f: fn(&[f32]) -> (f32, f32)| {
                add_in_order(&v.chunks(BLOCK).map(f).collect::<Vec<_>>())
            };
            let mut paths = vec![sum_and_sq(&v), part(&v), each(block), each(block_plain)];
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::simd::has_avx2() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                paths.push(each(|b| unsafe { block_avx2(b) }));
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

    /// Block sums folded are the one-pass sums bit for bit, below, at and past a task's size.
    #[test]
    fn folded_block_sums_are_the_one_pass_sums() {
        for n in [
            0usize,
            700,
            1024,
            2048,
            3 * 1024 + 5,
            65_536,
            65_537,
            200_000,
        ] {
            let v = values(n);
            let one_by_one: Vec<(f32, f32)> = v.chunks(BLOCK).map(block).collect();
            let mut grouped = Vec::new();
            blocks(&v, &mut grouped);
            assert_eq!(grouped, one_by_one, "n {n}");
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::simd::has_avx2() {
                for pair in v.chunks_exact(2 * BLOCK) {
                    // SAFETY: the CPU has AVX2 and FMA (checked just above).
                    let (two, one) = unsafe {
                        (
                            two_avx2(pair),
                            [block_avx2(&pair[..BLOCK]), block_avx2(&pair[BLOCK..])],
                        )
                    };
                    assert_eq!(two, one, "n {n}");
                }
            }
            let (a, b) = (fold(&one_by_one), sum_and_sq(&v));
            assert_eq!(
                (a.0.to_bits(), a.1.to_bits()),
                (b.0.to_bits(), b.1.to_bits()),
                "n {n}"
            );
        }
    }

    /// Every build this CPU runs counts what the predicate counts, with non-finite values, the
    /// bounds themselves and a remainder.
    #[test]
    fn every_count_is_the_predicate() {
        let mut h = values(5_003);
        h.extend([
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            -1.0,
            1.0,
            0.5,
            -0.5,
        ]);
        let (lo, hi) = (-1.0f32, 1.0f32);
        let want: usize = h.iter().map(|&x| outside_one(x, lo, hi)).sum();
        assert!(want > 0 && want < h.len());
        let mut got = vec![
            count_outside(&h, lo, hi),
            count_outside_par(&h, lo, hi),
            count_outside_plain(&h, lo, hi),
        ];
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::simd::has_avx2() {
            // SAFETY: the CPU has AVX2 (checked just above).
            got.push(unsafe { outside_avx2(&h, lo, hi) });
        }
        for g in got {
            assert_eq!(g, want);
        }
        // more than one of the vector paths' chunks of 2^20 values
        let big: Vec<f32> = h.iter().cycle().take((1 << 20) + 37).copied().collect();
        let want: usize = big.iter().map(|&x| outside_one(x, lo, hi)).sum();
        assert_eq!(count_outside(&big, lo, hi), want);
        assert_eq!(count_outside_plain(&big, lo, hi), want);
    }
}
