//! The LSTM over a whole sequence as one operation with its own backward, for flex.
//!
//! With the gate pre-activations z = [i f g o] (`[B, 4H]`, PyTorch's order):
//!   c = σ(f)⊙c₋ + σ(i)⊙tanh(g),  h = σ(o)⊙tanh(c).
//! burn builds each step from about a dozen nodes (slices, σ, tanh, products, sums), each with
//! its own allocation and backward; here the forward runs all T steps and the backward is BPTT.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;
use rayon::prelude::*;

use super::host::{contiguous, gemm, record, tensor, values};
use super::moments::{finite_moments_split, Finite};
use super::simd::multiversion;
use super::tap::GradSlot;

type Ad = Autodiff<Flex>;

// ---------------------------------------------------------------------------------------------
// The whole sequence as one operation (forward over T steps, backpropagation through time in its
// backward), for h₀ = c₀ = 0. The per-step gradients ∂L/∂h_t and ∂L/∂c_t that BPTT forms anyway
// are handed to the probe through grad slots, so every step stays watched.

/// What the fused sequence hands the probe for one step: the finite moments of c_t and h_t
/// (`[B, H]`, `len` values each; taken in place, with the bits of
/// [`finite_moments`](super::moments::finite_moments) of the values in batch order) and the
/// slots that will hold the moments of ∂L/∂c_t and ∂L/∂h_t after `backward`.
pub struct StepProbe {
    pub c: Finite,
    pub h: Finite,
    pub len: usize,
    pub c_grad: GradSlot,
    pub h_grad: GradSlot,
}

multiversion! {
    /// From z (`[B, 4H]`, in place → the gate activations σ(i), σ(f), tanh(g), σ(o)) and c₋:
    /// writes c and h.
    fn gates_forward(z: &mut [f32], c_prev: &[f32], c: &mut [f32], hs: &mut [f32], h: usize) {
        for (((zr, cp), cr), hr) in z
            .chunks_mut(4 * h)
            .zip(c_prev.chunks(h))
            .zip(c.chunks_mut(h))
            .zip(hs.chunks_mut(h))
        {
            let (zi, rest) = zr.split_at_mut(h);
            let (zf, rest) = rest.split_at_mut(h);
            let (zg, zo) = rest.split_at_mut(h);
            for j in 0..h {
                let (i, f, g, o) = (sigmoid(zi[j]), sigmoid(zf[j]), tanh(zg[j]), sigmoid(zo[j]));
                zi[j] = i;
                zf[j] = f;
                zg[j] = g;
                zo[j] = o;
                let cj = f * cp[j] + i * g;
                cr[j] = cj;
                hr[j] = o * tanh(cj);
            }
        }
    }
}

multiversion! {
    /// One BPTT step. In: gate activations `a` (`[B, 4H]`), c₋, c, dh (total ∂L/∂h_t), dc_next
    /// (∂L/∂c_t through c_{t+1}). Out: dc (total ∂L/∂c_t, written over dc_next), dz (`[B, 4H]`).
    fn gates_backward(a: &[f32], c_prev: &[f32], c: &[f32], dh: &[f32], dc: &mut [f32], dz: &mut [f32], h: usize) {
        for (((((ar, cp), cr), dhr), dcr), dzr) in a
            .chunks(4 * h)
            .zip(c_prev.chunks(h))
            .zip(c.chunks(h))
            .zip(dh.chunks(h))
            .zip(dc.chunks_mut(h))
            .zip(dz.chunks_mut(4 * h))
        {
            let (ai, rest) = ar.split_at(h);
            let (af, rest) = rest.split_at(h);
            let (ag, ao) = rest.split_at(h);
            let (di, rest) = dzr.split_at_mut(h);
            let (df, rest) = rest.split_at_mut(h);
            let (dg, d_o) = rest.split_at_mut(h);
            for j in 0..h {
                let (i, f, g, o) = (ai[j], af[j], ag[j], ao[j]);
                let tc = tanh(cr[j]);
                let dcj = dcr[j] + dhr[j] * o * (1.0 - tc * tc);
                d_o[j] = dhr[j] * tc * o * (1.0 - o);
                di[j] = dcj * g * i * (1.0 - i);
                df[j] = dcj * cp[j] * f * (1.0 - f);
                dg[j] = dcj * i * (1.0 - g * g);
                dcr[j] = dcj;
            }
        }
    }
}

/// c (`[m, n]`) (+)= a (`[m, k]`) · b (`[k, n]`), all row-major, for the short recurrent
/// products of one time step (m = a worker's batch rows). A general GEMM packs b (the 128×512
/// recurrent weights) on every call, which took as long as the product itself, 100 times per
/// sequence; here b is read in place. With AVX-512: tiles of 8 rows × 32 columns held in 16
/// registers over the whole reduction, one FMA per row and vector; with AVX2 + FMA: tiles of 6
/// rows × 16 columns in 12 of its 16 registers; otherwise plain loops.
/// Rows of `a` are `lda` floats apart (≥ k).
#[allow(clippy::too_many_arguments)]
fn small_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    small_gemm_with(GemmKernel::best(), m, n, k, a, lda, b, c, accumulate);
}

/// Which of the three builds of [`small_gemm`] runs: the best the CPU has by default, any it
/// supports in the tests (so each is checked on a CPU that has it).
#[derive(Clone, Copy, Debug, PartialEq)]
enum GemmKernel {
    Avx512,
    Avx2,
    Plain,
}

impl GemmKernel {
    /// The fastest build this CPU runs.
    fn best() -> Self {
        if super::simd::has_avx512() {
            GemmKernel::Avx512
        } else if super::simd::has_avx2() {
            GemmKernel::Avx2
        } else {
            GemmKernel::Plain
        }
    }

    /// Every build this CPU runs, fastest first.
    #[cfg(test)]
    fn available() -> Vec<Self> {
        let all = [GemmKernel::Avx512, GemmKernel::Avx2, GemmKernel::Plain];
        let best = all.iter().position(|&g| g == Self::best()).unwrap_or(2);
        all[best..].to_vec()
    }
}

/// [`small_gemm`] with the build chosen by the caller; `kernel` must be one the CPU supports
/// ([`GemmKernel::best`] or slower).
#[allow(clippy::too_many_arguments)]
fn small_gemm_with(
    kernel: GemmKernel,
    m: usize,
    n: usize,
    k: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(lda >= k && (m == 0 || a.len() >= (m - 1) * lda + k));
    assert!(b.len() >= k * n && c.len() >= m * n);
    #[cfg(target_arch = "x86_64")]
    {
        let (ap, bp, cp) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        match kernel {
            GemmKernel::Avx512 if super::simd::has_avx512() => {
                // SAFETY: the CPU has AVX-512F (checked), and the asserts above bound every
                // access.
                unsafe { avx512::small_gemm(m, n, k, ap, lda, bp, cp, accumulate) };
                return;
            }
            GemmKernel::Avx2 | GemmKernel::Avx512 if super::simd::has_avx2() => {
                // SAFETY: the CPU has AVX2 and FMA (checked), and the asserts above bound every
                // access.
                unsafe { avx2::small_gemm(m, n, k, ap, lda, bp, cp, accumulate) };
                return;
            }
            _ => {}
        }
    }
    let _ = kernel;
    small_gemm_plain(m, n, k, a, lda, b, c, accumulate);
}

multiversion! {
    #[allow(clippy::too_many_arguments)]
    fn small_gemm_plain(m: usize, n: usize, k: usize, a: &[f32], lda: usize, b: &[f32], c: &mut [f32], accumulate: bool) {
        for (r, cr) in c.chunks_mut(n).take(m).enumerate() {
            let ar = &a[r * lda..][..k];
            if !accumulate {
                cr.fill(0.0);
            }
            for (&av, br) in ar.iter().zip(b.chunks(n)) {
                for (cv, &bv) in cr.iter_mut().zip(br) {
                    *cv += av * bv;
                }
            }
        }
    }
}

/// The loops around a register tile, shared by the SIMD builds of [`small_gemm`]: row blocks of
/// `rows(rows left)` rows, each as tiles of `width` columns (`tile(rows, r0, j0)`), and the columns
/// past the last whole tile by plain loops.
///
/// # Safety
/// a holds m rows of k floats `lda` apart, b and c k·n and m·n floats; `tile` must be sound for
/// every block of rows ≤ m and columns ≤ n it is given.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn tiled(
    m: usize,
    n: usize,
    k: usize,
    a: *const f32,
    lda: usize,
    b: *const f32,
    c: *mut f32,
    acc: bool,
    width: usize,
    rows: impl Fn(usize) -> usize,
    tile: impl Fn(usize, usize, usize),
) {
    let whole = n - n % width;
    let mut r0 = 0;
    while r0 < m {
        let block = rows(m - r0);
        for j0 in (0..whole).step_by(width) {
            tile(block, r0, j0);
        }
        for r in r0..r0 + block {
            for j in whole..n {
                // SAFETY: r < m, j < n, kk < k (the caller's bounds).
                unsafe {
                    let mut v = if acc { *c.add(r * n + j) } else { 0.0 };
                    for kk in 0..k {
                        v += *a.add(r * lda + kk) * *b.add(kk * n + j);
                    }
                    *c.add(r * n + j) = v;
                }
            }
        }
        r0 += block;
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// See [`super::small_gemm`]: tiles of up to 6 rows × 16 columns (12 accumulators, two
    /// vectors of b and a broadcast: 15 of AVX2's 16 registers).
    ///
    /// # Safety
    /// AVX2 and FMA are available; a holds m rows of k floats `lda` apart, b and c k·n and m·n
    /// floats.
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn small_gemm(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        acc: bool,
    ) {
        let tile_at = |rows: usize, r0: usize, j0: usize| {
            // SAFETY: the driver keeps rows r0 .. r0 + rows ≤ m and columns j0 .. j0 + 16 ≤ n;
            // the CPU has AVX2 and FMA (this build is only called then).
            unsafe {
                let (ap, bp, cp) = (a.add(r0 * lda), b.add(j0), c.add(r0 * n + j0));
                match rows {
                    6 => tile::<6>(ap, lda, bp, n, k, cp, n, acc),
                    5 => tile::<5>(ap, lda, bp, n, k, cp, n, acc),
                    4 => tile::<4>(ap, lda, bp, n, k, cp, n, acc),
                    3 => tile::<3>(ap, lda, bp, n, k, cp, n, acc),
                    2 => tile::<2>(ap, lda, bp, n, k, cp, n, acc),
                    _ => tile::<1>(ap, lda, bp, n, k, cp, n, acc),
                }
            }
        };
        // SAFETY: the caller's bounds are the driver's.
        unsafe { super::tiled(m, n, k, a, lda, b, c, acc, 16, |left| left.min(6), tile_at) }
    }

    /// R rows × 16 columns: c[r][0..16] (+)= Σ_kk a[r][kk] · b[kk][0..16].
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        acc_in: bool,
    ) {
        // SAFETY (whole body): the caller keeps R rows of a (k each), k rows of b and R rows of
        // c (16 columns each) in bounds.
        unsafe {
            let mut acc = [[_mm256_setzero_ps(); 2]; R];
            if acc_in {
                for (r, v) in acc.iter_mut().enumerate() {
                    v[0] = _mm256_loadu_ps(c.add(r * ldc));
                    v[1] = _mm256_loadu_ps(c.add(r * ldc + 8));
                }
            }
            for kk in 0..k {
                let b0 = _mm256_loadu_ps(b.add(kk * ldb));
                let b1 = _mm256_loadu_ps(b.add(kk * ldb + 8));
                for (r, v) in acc.iter_mut().enumerate() {
                    let av = _mm256_set1_ps(*a.add(r * lda + kk));
                    v[0] = _mm256_fmadd_ps(av, b0, v[0]);
                    v[1] = _mm256_fmadd_ps(av, b1, v[1]);
                }
            }
            for (r, v) in acc.iter().enumerate() {
                _mm256_storeu_ps(c.add(r * ldc), v[0]);
                _mm256_storeu_ps(c.add(r * ldc + 8), v[1]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// See [`super::small_gemm`].
    ///
    /// # Safety
    /// AVX-512F is available; a holds m rows of k floats `lda` apart, b and c k·n and m·n floats.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn small_gemm(
        m: usize,
        n: usize,
        k: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        acc: bool,
    ) {
        let tile_at = |rows: usize, r0: usize, j0: usize| {
            // SAFETY: the driver keeps rows r0 .. r0 + rows ≤ m and columns j0 .. j0 + 32 ≤ n;
            // the CPU has AVX-512F (this build is only called then).
            unsafe {
                let (ap, bp, cp) = (a.add(r0 * lda), b.add(j0), c.add(r0 * n + j0));
                if rows == 8 {
                    tile::<8>(ap, lda, bp, n, k, cp, n, acc);
                } else {
                    tile::<1>(ap, lda, bp, n, k, cp, n, acc);
                }
            }
        };
        let rows = |left: usize| if left >= 8 { 8 } else { 1 };
        // SAFETY: the caller's bounds are the driver's.
        unsafe { super::tiled(m, n, k, a, lda, b, c, acc, 32, rows, tile_at) }
    }

    /// R rows × 32 columns: c[r][0..32] (+)= Σ_kk a[r][kk] · b[kk][0..32].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile<const R: usize>(
        a: *const f32,
        lda: usize,
        b: *const f32,
        ldb: usize,
        k: usize,
        c: *mut f32,
        ldc: usize,
        acc_in: bool,
    ) {
        // SAFETY (whole body): the caller keeps R rows of a (k each), k rows of b and R rows of
        // c (32 columns each) in bounds.
        unsafe {
            let mut acc = [[_mm512_setzero_ps(); 2]; R];
            if acc_in {
                for (r, v) in acc.iter_mut().enumerate() {
                    v[0] = _mm512_loadu_ps(c.add(r * ldc));
                    v[1] = _mm512_loadu_ps(c.add(r * ldc + 16));
                }
            }
            for kk in 0..k {
                let b0 = _mm512_loadu_ps(b.add(kk * ldb));
                let b1 = _mm512_loadu_ps(b.add(kk * ldb + 16));
                for (r, v) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(r * lda + kk));
                    v[0] = _mm512_fmadd_ps(av, b0, v[0]);
                    v[1] = _mm512_fmadd_ps(av, b1, v[1]);
                }
            }
            for (r, v) in acc.iter().enumerate() {
                _mm512_storeu_ps(c.add(r * ldc), v[0]);
                _mm512_storeu_ps(c.add(r * ldc + 16), v[1]);
            }
        }
    }
}

/// The batch rows of one worker: the recurrence is independent per row, so each worker runs
/// its rows through all T steps (one fork–join per sequence instead of one per small GEMM).
#[derive(Clone, Debug)]
struct Chunk {
    /// First row and number of rows.
    b0: usize,
    bc: usize,
    /// Gate activations `[T, bc, 4H]`; c_0 … c_T and h_0 … h_T, `[T + 1, bc, H]` each.
    act: Vec<f32>,
    cs: Vec<f32>,
    hs: Vec<f32>,
}

fn chunks_of(b: usize) -> Vec<(usize, usize)> {
    let n = rayon::current_num_threads().clamp(1, b.max(1));
    let per = b.div_ceil(n);
    (0..b)
        .step_by(per.max(1))
        .map(|b0| (b0, per.min(b - b0)))
        .collect()
}

/// The inputs, weights and sizes every chunk's forward reads.
struct SeqInputs<'a> {
    /// x `[B, T, I]`, W `[I, 4H]`, b `[4H]`, U `[H, 4H]`.
    x: &'a [f32],
    w: &'a [f32],
    b: &'a [f32],
    u: &'a [f32],
    t_len: usize,
    i_len: usize,
    h: usize,
}

/// Forward of rows `b0 .. b0 + bc`: per step, z = b + x_t·W + h_{t−1}·U straight into the gate
/// buffer (x_t's rows read in place, T·I floats apart), then the gates.
fn forward_chunk(s: &SeqInputs, b0: usize, bc: usize) -> Chunk {
    let (t_len, i_len, h) = (s.t_len, s.i_len, s.h);
    let (bh, b4h) = (bc * h, bc * 4 * h);
    let mut act = Vec::with_capacity(t_len * b4h);
    let mut cs = vec![0.0f32; (t_len + 1) * bh];
    let mut hs = vec![0.0f32; (t_len + 1) * bh];
    for t in 0..t_len {
        for _ in 0..bc {
            act.extend_from_slice(s.b);
        }
        let z = &mut act[t * b4h..][..b4h];
        // z += x_t · W, then z += h_{t−1} · U
        let xt = &s.x[(b0 * t_len + t) * i_len..];
        small_gemm(bc, 4 * h, i_len, xt, t_len * i_len, s.w, z, true);
        let (h_done, h_rest) = hs.split_at_mut((t + 1) * bh);
        small_gemm(bc, 4 * h, h, &h_done[t * bh..], h, s.u, z, true);
        let (c_done, c_rest) = cs.split_at_mut((t + 1) * bh);
        gates_forward(
            z,
            &c_done[t * bh..],
            &mut c_rest[..bh],
            &mut h_rest[..bh],
            h,
        );
    }
    Chunk {
        b0,
        bc,
        act,
        cs,
        hs,
    }
}

/// What BPTT over one chunk returns: dZ `[bc, T, 4H]` (row-major like x), ∂L/∂U over its rows,
/// and the total ∂L/∂c_t, ∂L/∂h_t per step (`[T, bc, H]` each).
struct ChunkGrad {
    dz: Vec<f32>,
    du: Vec<f32>,
    dc_steps: Vec<f32>,
    dh_steps: Vec<f32>,
}

fn backward_chunk(ch: &Chunk, g_out: &[f32], u_t: &[f32], t_len: usize, h: usize) -> ChunkGrad {
    let bc = ch.bc;
    let (bh, b4h) = (bc * h, bc * 4 * h);
    let mut dz_rows = vec![0.0f32; bc * t_len * 4 * h];
    let mut dz_time = vec![0.0f32; t_len * b4h];
    let mut dc_steps = vec![0.0f32; t_len * bh];
    let mut dh_steps = vec![0.0f32; t_len * bh];
    let mut dh = vec![0.0f32; bh];
    let mut dh_next = vec![0.0f32; bh];
    let mut dc = vec![0.0f32; bh];
    for t in (0..t_len).rev() {
        for r in 0..bc {
            let src = &g_out[((ch.b0 + r) * t_len + t) * h..][..h];
            for ((d, &s), &n) in dh[r * h..][..h]
                .iter_mut()
                .zip(src)
                .zip(&dh_next[r * h..][..h])
            {
                *d = s + n;
            }
        }
        let dz = &mut dz_time[t * b4h..][..b4h];
        let act = &ch.act[t * b4h..][..b4h];
        let (c_prev, c) = (&ch.cs[t * bh..][..bh], &ch.cs[(t + 1) * bh..][..bh]);
        gates_backward(act, c_prev, c, &dh, &mut dc, dz, h);
        dc_steps[t * bh..][..bh].copy_from_slice(&dc);
        dh_steps[t * bh..][..bh].copy_from_slice(&dh);
        for r in 0..bc {
            dz_rows[(r * t_len + t) * 4 * h..][..4 * h].copy_from_slice(&dz[r * 4 * h..][..4 * h]);
        }
        // dh_{t−1} through this step = dZ_t · Uᵀ; dc reaches c_{t−1} through the forget gate
        small_gemm(bc, h, 4 * h, dz, 4 * h, u_t, &mut dh_next, false);
        for r in 0..bc {
            let f = &act[r * 4 * h + h..][..h];
            for (d, &fv) in dc[r * h..][..h].iter_mut().zip(f) {
                *d *= fv;
            }
        }
    }
    // ∂L/∂U over these rows = Σ_t h_{t−1}ᵀ · dZ_t  ([H, T·bc] · [T·bc, 4H])
    let mut du = vec![0.0f32; h * 4 * h];
    let h_prev = &ch.hs[..t_len * bh];
    gemm(
        h,
        4 * h,
        t_len * bc,
        &mut du,
        false,
        h_prev,
        1,
        h,
        &dz_time,
        4 * h,
        1,
        false,
    );
    ChunkGrad {
        dz: dz_rows,
        du,
        dc_steps,
        dh_steps,
    }
}

#[derive(Debug)]
struct SeqBackward;

#[derive(Clone, Debug)]
struct SeqState {
    x: FlexTensor,
    w: FlexTensor,
    u: FlexTensor,
    chunks: Vec<Chunk>,
    dims: [usize; 4],
    slots: Vec<(GradSlot, GradSlot)>,
}

impl Backward<Flex, 4> for SeqBackward {
    type State = SeqState;

    fn backward(self, ops: Ops<Self::State, 4>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b, node_u] = ops.parents;
        let g_out = grads.consume::<Flex>(&ops.node);
        let g_out = contiguous(&g_out).expect("f32 gradient");
        let g_out = values(&g_out); // [B, T, H]
        let st = ops.state;
        let [b, t_len, i_len, h] = st.dims;
        // Uᵀ (`[4H, H]`) once, so that each step's dh = dZ · Uᵀ reads it row by row
        let u = values(&st.u);
        let mut u_t = vec![0.0f32; u.len()];
        for (r, row) in u.chunks(4 * h).enumerate() {
            for (j, &v) in row.iter().enumerate() {
                u_t[j * h + r] = v;
            }
        }
        let parts: Vec<ChunkGrad> = st
            .chunks
            .par_iter()
            .map(|ch| backward_chunk(ch, g_out, &u_t, t_len, h))
            .collect();
        // the probe's per-step gradients (when watched): rows back in batch order, their moments
        // taken step by step side by side
        st.slots
            .par_iter()
            .enumerate()
            .for_each(|(t, (c_slot, h_slot))| {
                let of = |steps: fn(&ChunkGrad) -> &[f32]| {
                    let pieces: Vec<&[f32]> = st
                        .chunks
                        .iter()
                        .zip(&parts)
                        .map(|(ch, p)| &steps(p)[t * ch.bc * h..][..ch.bc * h])
                        .collect();
                    finite_moments_split(&pieces)
                };
                c_slot.set_moments(of(|p| &p.dc_steps), b * h);
                h_slot.set_moments(of(|p| &p.dh_steps), b * h);
            });
        if let Some(node) = node_u {
            let mut du = vec![0.0f32; h * 4 * h];
            for p in &parts {
                for (d, &v) in du.iter_mut().zip(&p.du) {
                    *d += v;
                }
            }
            grads.register::<Flex>(node.id, tensor(du, [h, 4 * h]));
        }
        // Each chunk's dZ holds the consecutive rows b0·T .. (b0 + bc)·T of [B·T, 4H], so the
        // products below run chunk by chunk (no concatenated copy).
        if let Some(node) = node_x {
            // dX = dZ · Wᵀ  ([B·T, 4H] · [4H, I])
            let mut dx = vec![0.0f32; b * t_len * i_len];
            let w = values(&st.w);
            for (ch, p) in st.chunks.iter().zip(&parts) {
                let rows = ch.bc * t_len;
                let dst = &mut dx[ch.b0 * t_len * i_len..][..rows * i_len];
                gemm(
                    rows,
                    i_len,
                    4 * h,
                    dst,
                    false,
                    &p.dz,
                    4 * h,
                    1,
                    w,
                    1,
                    4 * h,
                    true,
                );
            }
            grads.register::<Flex>(node.id, tensor(dx, [b, t_len, i_len]));
        }
        if let Some(node) = node_w {
            // dW = Xᵀ · dZ  ([I, B·T] · [B·T, 4H])
            let mut dw = vec![0.0f32; i_len * 4 * h];
            let x = values(&st.x);
            for (k, (ch, p)) in st.chunks.iter().zip(&parts).enumerate() {
                let rows = ch.bc * t_len;
                let xs = &x[ch.b0 * t_len * i_len..][..rows * i_len];
                gemm(
                    i_len,
                    4 * h,
                    rows,
                    &mut dw,
                    k > 0,
                    xs,
                    1,
                    i_len,
                    &p.dz,
                    4 * h,
                    1,
                    true,
                );
            }
            grads.register::<Flex>(node.id, tensor(dw, [i_len, 4 * h]));
        }
        if let Some(node) = node_b {
            let mut db = vec![0.0f32; 4 * h];
            for p in &parts {
                for r in p.dz.chunks(4 * h) {
                    for (d, &v) in db.iter_mut().zip(r) {
                        *d += v;
                    }
                }
            }
            grads.register::<Flex>(node.id, tensor(db, [4 * h]));
        }
    }
}

/// The LSTM over `x` `[B, T, I]` from zero state with input weights `w` `[I, 4H]`, bias `b`
/// `[4H]` and recurrent weights `u` `[H, 4H]` (gate order i, f, g, o): every hidden state
/// `[B, T, H]` and, per step, what the probe reads. `None` when the tensors are not
/// `Autodiff<Flex>` f32 (the caller then runs the cell step by step).
pub fn sequence(
    x: &Tensor<3>,
    w: &Tensor<2>,
    b: &Tensor<1>,
    u: &Tensor<2>,
    watched: bool,
) -> Option<(Tensor<3>, Vec<StepProbe>)> {
    let [bsz, t_len, i_len] = x.dims();
    let [h, h4] = u.dims();
    if w.dims() != [i_len, h4] || b.dims() != [h4] || h4 != 4 * h || t_len == 0 || bsz == 0 {
        return None;
    }
    let xp = x.clone().try_into_primitive::<Ad>().ok()?;
    let wp = w.clone().try_into_primitive::<Ad>().ok()?;
    let bp = b.clone().try_into_primitive::<Ad>().ok()?;
    let up = u.clone().try_into_primitive::<Ad>().ok()?;
    let (xc, wc, bc, uc) = (
        contiguous(xp.primitive())?,
        contiguous(wp.primitive())?,
        contiguous(bp.primitive())?,
        contiguous(up.primitive())?,
    );
    let inputs = SeqInputs {
        x: values(&xc),
        w: values(&wc),
        b: values(&bc),
        u: values(&uc),
        t_len,
        i_len,
        h,
    };
    let chunks: Vec<Chunk> = chunks_of(bsz)
        .into_par_iter()
        .map(|(b0, bc)| forward_chunk(&inputs, b0, bc))
        .collect();
    let rows = bsz * t_len;
    let mut out = vec![0.0f32; rows * h]; // [B, T, H]
    for ch in &chunks {
        for t in 0..t_len {
            for r in 0..ch.bc {
                out[((ch.b0 + r) * t_len + t) * h..][..h]
                    .copy_from_slice(&ch.hs[((t + 1) * ch.bc + r) * h..][..h]);
            }
        }
    }
    // the per-step values and gradient slots exist only when a probe watches this step
    let slots: Vec<(GradSlot, GradSlot)> = (0..if watched { t_len } else { 0 })
        .map(|_| (GradSlot::default(), GradSlot::default()))
        .collect();
    let probes = slots
        .par_iter()
        .enumerate()
        .map(|(t, (c_grad, h_grad))| {
            let of = |f: fn(&Chunk) -> &[f32]| {
                let pieces: Vec<&[f32]> = chunks
                    .iter()
                    .map(|ch| &f(ch)[(t + 1) * ch.bc * h..][..ch.bc * h])
                    .collect();
                finite_moments_split(&pieces)
            };
            StepProbe {
                c: of(|ch| &ch.cs),
                h: of(|ch| &ch.hs),
                len: bsz * h,
                c_grad: c_grad.clone(),
                h_grad: h_grad.clone(),
            }
        })
        .collect();
    let out = tensor(out, [bsz, t_len, h]);
    let result = record(
        SeqBackward,
        [xp.node(), wp.node(), bp.node(), up.node()],
        || SeqState {
            x: xc,
            w: wc,
            u: uc,
            chunks,
            dims: [bsz, t_len, i_len, h],
            slots,
        },
        out,
    );
    Some((Tensor::from_primitive::<Ad>(result), probes))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_abs, values};
    use super::*;
    use burn::tensor::activation::{sigmoid as t_sigmoid, tanh as t_tanh};
    use burn::tensor::Distribution;

    #[test]
    fn small_gemm_matches_a_plain_product() {
        // row counts around the 8- and 6-row tiles, column counts around the 32- and 16-wide
        // ones; every build this CPU runs
        for kernel in GemmKernel::available() {
            for (m, n, k) in [
                (1, 5, 3),
                (6, 16, 5),
                (7, 17, 9),
                (8, 32, 37),
                (9, 40, 3),
                (13, 48, 11),
                (17, 144, 37),
                (16, 512, 128),
            ] {
                // rows of `a` packed, and spaced apart as the rows of x_t are
                for lda in [k, k + 3] {
                    let a: Vec<f32> = (0..m * lda)
                        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                        .collect();
                    let b: Vec<f32> = (0..k * n)
                        .map(|i| ((i * 53 % 97) as f32 - 48.0) / 48.0)
                        .collect();
                    let c0: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
                    for accumulate in [false, true] {
                        let mut c = c0.clone();
                        small_gemm_with(kernel, m, n, k, &a, lda, &b, &mut c, accumulate);
                        for r in 0..m {
                            for j in 0..n {
                                let mut want = if accumulate {
                                    c0[r * n + j] as f64
                                } else {
                                    0.0
                                };
                                for kk in 0..k {
                                    want += a[r * lda + kk] as f64 * b[kk * n + j] as f64;
                                }
                                let got = c[r * n + j] as f64;
                                assert!(
                                    (got - want).abs() < 1e-4 * (1.0 + want.abs()),
                                    "{kernel:?} {m}×{n}×{k} lda {lda} [{r},{j}]: {got} vs {want}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn fused_sequence_matches_burn_step_by_step() {
        let dev = crate::device();
        // 18 rows: chunks of 9 (an 8-row tile and one row); 4H = 144 and H = 36: 32-wide tiles and
        // remainders in both the forward and the backward recurrent products
        let (b, t_len, i, h) = (18, 6, 4, 36);
        let x0 = Tensor::<3>::random([b, t_len, i], Distribution::Normal(0.0, 1.0), &dev);
        let w0 = Tensor::<2>::random([i, 4 * h], Distribution::Normal(0.0, 0.5), &dev);
        let b0 = Tensor::<1>::random([4 * h], Distribution::Normal(0.0, 0.5), &dev);
        let u0 = Tensor::<2>::random([h, 4 * h], Distribution::Normal(0.0, 0.5), &dev);
        let wy = Tensor::<3>::random([b, t_len, h], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let bb = b0.clone().detach().require_grad();
            let u = u0.clone().detach().require_grad();
            let h_all = if ours {
                sequence(&x, &w, &bb, &u, true).unwrap().0
            } else {
                let mut hs = Tensor::<2>::zeros([b, h], &dev);
                let mut c = Tensor::<2>::zeros([b, h], &dev);
                let mut out = Vec::new();
                // gate k of z: columns k·H..(k+1)·H (gate order i, f, g, o)
                let block =
                    |z: &Tensor<2>, k: usize, h: usize| z.clone().slice([0..b, k * h..(k + 1) * h]);
                for t in 0..t_len {
                    let xt = x.clone().slice([0..b, t..t + 1]).reshape([b, i]);
                    let z = xt.matmul(w.clone())
                        + bb.clone().reshape([1, 4 * h])
                        + hs.matmul(u.clone());
                    c = t_sigmoid(block(&z, 1, h)) * c
                        + t_sigmoid(block(&z, 0, h)) * t_tanh(block(&z, 2, h));
                    hs = t_sigmoid(block(&z, 3, h)) * t_tanh(c.clone());
                    out.push(hs.clone());
                }
                Tensor::stack(out, 1)
            };
            let grads = (h_all.clone() * wy.clone()).sum().backward();
            (
                values(h_all),
                values(x.grad(&grads).unwrap()),
                values(w.grad(&grads).unwrap()),
                values(bb.grad(&grads).unwrap()),
                values(u.grad(&grads).unwrap()),
            )
        };
        let a = run(true);
        let r = run(false);
        for (x, y, what) in [
            (&a.0, &r.0, "h"),
            (&a.1, &r.1, "dx"),
            (&a.2, &r.2, "dW"),
            (&a.3, &r.3, "db"),
            (&a.4, &r.4, "dU"),
        ] {
            let worst = max_abs(x, y);
            assert!(worst < 2e-5, "{what}: {worst}");
        }
    }
}
