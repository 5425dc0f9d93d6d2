//! Moving between flex tensors and the plain `f32` slices the kernels work on.

use std::mem::MaybeUninit;

use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::ops::{Backward, NodeGuard, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::{DType, TensorData};

/// `t` as a contiguous f32 tensor: a reference-counted clone when it already is one (no copy),
/// one layout copy otherwise (a channel slice of a batch, a transposed view). `None` for
/// other dtypes, which the callers leave to burn.
pub fn contiguous(t: &FlexTensor) -> Option<FlexTensor> {
    if t.dtype() != DType::F32 {
        return None;
    }
    Some(if t.as_slice::<f32>().is_some() {
        t.clone()
    } else {
        t.to_contiguous()
    })
}

/// The values of a tensor returned by [`contiguous`].
pub fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>()
        .expect("a contiguous f32 tensor (from `contiguous`)")
}

/// A flex tensor owning `v` (no copy).
pub fn tensor(v: Vec<f32>, shape: impl Into<Vec<usize>>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(v, shape.into()))
}

/// A pointer into a result that parallel tasks fill, each writing its own disjoint elements
/// (a block of rows × channels of a convolution's output, columns of an attention product).
#[derive(Clone, Copy)]
pub struct OutPtr(pub *mut f32);
// SAFETY: every user hands an OutPtr only to tasks that write pairwise disjoint elements and
// read none of the others' while they run (each call site's SAFETY note says which elements).
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The element `i` places further (a method, so that closures capture the whole `OutPtr`).
    pub fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// A vector of `n` floats produced by `fill`, without zero-filling it first (a memset that showed
/// as 5–9% of a training step in `perf`).
///
/// # Safety
/// `fill` must write every one of the `n` elements.
pub unsafe fn filled(n: usize, fill: impl FnOnce(&mut [MaybeUninit<f32>])) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(n);
    fill(&mut v.spare_capacity_mut()[..n]);
    // SAFETY: the caller guarantees that `fill` initialised all n elements.
    unsafe { v.set_len(n) };
    v
}

/// A zeroed vector of `chunk`-sized pieces (the last may be shorter), each zeroed by the task
/// that then runs `work(i, piece)` on it, in parallel: the zero-fill of a whole gradient before
/// a parallel loop was a serial pass (2% of a YOLO26n step).
pub fn zeroed_par(n: usize, chunk: usize, work: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    use rayon::prelude::*;
    // SAFETY: every piece is zero-filled before it is viewed as &mut [f32]; the pieces cover all
    // n elements.
    unsafe {
        filled(n, |all| {
            all.par_chunks_mut(chunk.max(1))
                .short_runs()
                .enumerate()
                .for_each(|(i, piece)| {
                    piece.fill(MaybeUninit::new(0.0));
                    // SAFETY: just initialised; MaybeUninit<f32> has f32's layout.
                    let piece = &mut *(piece as *mut [MaybeUninit<f32>] as *mut [f32]);
                    work(i, piece);
                })
        })
    }
}

/// A parallel loop cut into at least 32 runs: `.short_runs()` on the loop's iterator.
/// rayon cuts a loop into about four runs on two threads and splits a run further only when
/// another thread steals it before it starts, so a run a thread has begun is finished by that
/// thread alone while the others wait for it: up to a quarter of a loop of few long tasks (the
/// attention's backward in a YOLO26n step kept the other thread waiting for up to 3 ms, a tenth
/// of the step's waiting). With at most `len / 32` tasks a run, the wait at a loop's end is
/// one short run.
pub trait ShortRuns: rayon::iter::IndexedParallelIterator {
    /// This loop with at most `len / 32` (at least one) tasks a run.
    fn short_runs(self) -> rayon::iter::MaxLen<Self> {
        let most = self.len().div_ceil(LEAVES).max(1);
        self.with_max_len(most)
    }
}

impl<I: rayon::iter::IndexedParallelIterator> ShortRuns for I {}

/// The number of runs [`ShortRuns::short_runs`] cuts a loop into at least.
const LEAVES: usize = 32;

/// dst (m×n, row-major) = [dst +] lhs · rhs, with explicit (row, column) strides.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    accumulate: bool,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
    parallel: bool,
) {
    assert!(dst.len() >= m * n);
    // SAFETY: dst holds the m×n elements written (assert above) and is borrowed exclusively.
    unsafe {
        product(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            n,
            accumulate,
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            parallel,
        )
    }
}

/// dst (m×n, row stride `dst_rs`) = lhs · rhs, single-threaded, for callers that split the
/// output among tasks themselves.
///
/// # Safety
/// `dst` must be valid for writes at `r·dst_rs + c` for every r < m, c < n, and no other thread
/// may access those elements during the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: &[f32],
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: &[f32],
    rhs_rs: usize,
    rhs_cs: usize,
) {
    // SAFETY: the caller vouches for dst.
    unsafe {
        product(
            m,
            n,
            k,
            dst,
            dst_rs,
            false,
            (lhs, lhs_rs, lhs_cs),
            (rhs, rhs_rs, rhs_cs),
            false,
        )
    }
}

/// The call behind [`gemm`] and [`gemm_raw`]: operands as (values, row stride, column stride),
/// checked to hold every element read.
///
/// # Safety
/// As for [`gemm_raw`]'s `dst`.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (lhs, lhs_rs, lhs_cs): (&[f32], usize, usize),
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    parallel: bool,
) {
    assert!(m == 0 || k == 0 || lhs.len() > (m - 1) * lhs_rs + (k - 1) * lhs_cs);
    assert!(n == 0 || k == 0 || rhs.len() > (k - 1) * rhs_rs + (n - 1) * rhs_cs);
    // SAFETY: the asserts keep the operand reads in their slices; the caller vouches for dst.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            if parallel {
                gemm::Parallelism::Rayon(0)
            } else {
                gemm::Parallelism::None
            },
        );
    }
}

/// Registers `op` with burn's autodiff as the producer of `out` from the tensors behind `nodes`;
/// `state` (what its backward needs) is only built when a gradient will flow through it.
pub fn record<O, const N: usize>(
    op: O,
    nodes: [NodeGuard; N],
    state: impl FnOnce() -> O::State,
    out: FlexTensor,
) -> FloatTensor<Autodiff<Flex>>
where
    O: Backward<Flex, N>,
{
    match op
        .prepare::<NoCheckpointing>(nodes)
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => prep.finish(state(), out),
        OpsKind::UnTracked(prep) => prep.finish(out),
    }
}
