//! 2-D convolution with its own weight gradient (im2col + one GEMM per image), for flex.
//!
//! burn-flex has no weight-gradient kernel: burn's generic fallback runs it as a convolution of the
//! transposed input with the transposed output gradient as an H×W "kernel", which flex executes at
//! 2–12 GFLOP/s on YOLO's shapes (measured: `cargo run --release --example convparts`). Here
//! ∂L/∂W = Σₙ ∂L/∂Yₙ · im2col(Xₙ)ᵀ is one GEMM per image and group (no copy at all for 1×1
//! stride-1 convolutions), and depthwise convolutions get a direct loop. The forward and the input
//! gradient are ours too (blocked im2col + GEMM, a transposed convolution for stride-1 input
//! gradients, direct loops for depthwise ones); only grouped, non-depthwise convolutions keep
//! flex's forward.
//!
//! Each kernel splits its work into tasks by image and block of output rows, and where that
//! gives fewer than `TASKS` (the deep layers at a small batch) also along the GEMM's output
//! rows: output channels (forward), rows of ∂L/∂Wᵀ (weight gradient), input channels (input
//! gradient). The pieces follow from the shapes alone, so results do not depend on the pool.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops};
use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::{Autodiff, Flex};
use burn::nn::conv::Conv2d;
use burn::nn::PaddingConfig2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::Tensor;
use rayon::prelude::*;
use std::ops::Range;

use super::census;
use super::grads::hand_to;
use super::host::{contiguous, gemm, record, tensor, values, zeroed_par, OutPtr, ShortRuns};

type Ad = Autodiff<Flex>;

/// Shapes and options of one convolution (symmetric padding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    pub n: usize,
    pub cin: usize,
    pub h: usize,
    pub w: usize,
    pub cout: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: [usize; 2],
    pub pad: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl Geom {
    /// `n×cin×h×w → cout, kh×kw s<stride>`, and ` g<groups>` when grouped.
    pub fn describe(&self) -> String {
        let groups = if self.groups > 1 {
            format!(" g{}", self.groups)
        } else {
            String::new()
        };
        format!(
            "{}×{}×{}×{} → {}, {}×{} s{}{groups}",
            self.n, self.cin, self.h, self.w, self.cout, self.kh, self.kw, self.stride[0]
        )
    }

    pub fn oh(&self) -> usize {
        (self.h + 2 * self.pad[0] - self.dilation[0] * (self.kh - 1) - 1) / self.stride[0] + 1
    }
    pub fn ow(&self) -> usize {
        (self.w + 2 * self.pad[1] - self.dilation[1] * (self.kw - 1) - 1) / self.stride[1] + 1
    }
    fn cin_g(&self) -> usize {
        self.cin / self.groups
    }
    fn cout_g(&self) -> usize {
        self.cout / self.groups
    }
    /// Rows of the im2col matrix: input channels of a group × kernel positions.
    fn k(&self) -> usize {
        self.cin_g() * self.kh * self.kw
    }
    fn is_pointwise(&self) -> bool {
        self.kh == 1 && self.kw == 1 && self.stride == [1, 1] && self.pad == [0, 0]
    }
    fn is_depthwise(&self) -> bool {
        self.groups == self.cin && self.groups == self.cout && self.groups > 1
    }
    fn options(&self) -> ConvOptions<2> {
        ConvOptions::new(self.stride, self.pad, self.dilation, self.groups)
    }
}

thread_local! {
    /// Per-thread im2col buffer, kept between calls: the columns of a 3×3 convolution at 160² are
    /// ~15 MB, and allocating them afresh each time cost a zero-fill and page faults per call.
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` with this thread's scratch buffer of at least `len` floats (contents unspecified).
/// If the buffer is already in use on this thread (a nested call), a fresh one is used.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            if buf.len() < len {
                buf.resize(len, 0.0);
            }
            f(&mut buf[..len])
        }
        Err(_) => f(&mut vec![0.0f32; len]),
    })
}

/// The output positions `[first, last)` whose input position `o·stride + off` lies in `[0, len)`.
fn valid_range(len: usize, off: isize, stride: usize, out: usize) -> (usize, usize) {
    let s = stride as isize;
    let first = if off >= 0 { 0 } else { (-off + s - 1) / s };
    let last = if len as isize - off <= 0 {
        0
    } else {
        (len as isize - off + s - 1) / s
    };
    let first = (first as usize).min(out);
    (first, (last as usize).clamp(first, out))
}

/// A batch `[N, C, H, W]` whose images are each dense in memory: a contiguous tensor, or a
/// channel slice of one (what `chunk`/`split` along channels give), read in place.
#[derive(Clone, Copy)]
pub struct Images<'a> {
    data: &'a [f32],
    offset: usize,
    stride: usize,
    len: usize,
}

impl<'a> Images<'a> {
    /// A dense `[N, C, H, W]` buffer.
    pub fn dense(x: &'a [f32], g: &Geom) -> Self {
        let len = g.cin * g.h * g.w;
        Images {
            data: x,
            offset: 0,
            stride: len,
            len,
        }
    }

    /// The images of a flex tensor in place, when each image is dense.
    fn of(t: &'a FlexTensor) -> Option<Self> {
        if t.dtype() != burn::tensor::DType::F32 {
            return None;
        }
        let l = t.layout();
        let (shape, st) = (l.shape().to_vec(), l.strides());
        if shape.len() != 4 || st.len() != 4 {
            return None;
        }
        let [n, c, h, w] = [shape[0], shape[1], shape[2], shape[3]];
        let dense_image = (w == 1 || st[3] == 1)
            && (h == 1 || st[2] == w as isize)
            && (c == 1 || st[1] == (h * w) as isize);
        if !dense_image || (n > 1 && st[0] < (c * h * w) as isize) {
            return None;
        }
        let len = c * h * w;
        let stride = if n > 1 { st[0] as usize } else { len };
        let data = t.storage::<f32>();
        let offset = l.start_offset();
        if n > 0 && offset + (n - 1) * stride + len > data.len() {
            return None;
        }
        Some(Images {
            data,
            offset,
            stride,
            len,
        })
    }

    fn image(&self, n: usize) -> &'a [f32] {
        &self.data[self.offset + n * self.stride..][..self.len]
    }
}

/// Output rows per block of the blocked im2col: a block's columns (k × rows·ow floats) are kept
/// to about `COL_BLOCK` floats (256 KB), so that they are still in L2 when the GEMM packs them.
/// Writing a whole image's columns first (up to 15 MB for YOLO's second layer) sent them to
/// memory and back; blocked, the 3×3 forward ran 1.4–2.5× faster (`examples/convparts.rs`).
const COL_BLOCK: usize = 1 << 16;
/// …but at least this many output positions per block: narrower GEMMs ran slower than the
/// memory traffic they saved (a 256-channel 3×3 layer at 20² was 2× slower in blocks of one row).
const MIN_WIDTH: usize = 1024;

fn rows_per_block(g: &Geom) -> usize {
    let ow = g.ow().max(1);
    (COL_BLOCK / (g.k() * ow))
        .max(MIN_WIDTH.div_ceil(ow))
        .clamp(1, g.oh().max(1))
}

/// The blocks of output rows `[oy0, oy1)` of one image.
fn row_blocks(g: &Geom) -> impl Iterator<Item = (usize, usize)> {
    blocks_of(g.oh(), rows_per_block(g))
}

/// `0..oh` in blocks of `rb` rows (the last may be shorter).
fn blocks_of(oh: usize, rb: usize) -> impl Iterator<Item = (usize, usize)> {
    pieces(oh, rb).map(|r| (r.start, r.end))
}

/// Output rows per block of the forward: [`rows_per_block`], or fewer when the images and
/// groups in those blocks give fewer than [`TASKS`] tasks (one image at inference: a layer at
/// 20² was one block, one GEMM on one thread), down to blocks of [`SPLIT_WIDTH`] positions.
fn forward_rows_per_block(g: &Geom) -> usize {
    let (oh, rb) = (g.oh().max(1), rows_per_block(g));
    let images = (g.n * g.groups).max(1);
    if images * oh.div_ceil(rb) >= TASKS {
        return rb;
    }
    oh.div_ceil(TASKS.div_ceil(images))
        .max(SPLIT_WIDTH.div_ceil(g.ow().max(1)))
        .min(rb)
}

/// The narrowest block [`forward_rows_per_block`] makes to split a layer's work, in output
/// positions.
const SPLIT_WIDTH: usize = 256;

/// im2col of output rows `rows` of one image's group `x` (`[cin_g, h, w]`) into `col`: the
/// matrix's rows from `k0` on (of `cin_g·kh·kw`), as many as `col` holds, each `rows·ow` long.
fn im2col(x: &[f32], g: &Geom, col: &mut [f32], rows: (usize, usize), k0: usize) {
    let ow = g.ow();
    let (oy0, oy1) = rows;
    let width = (oy1 - oy0) * ow;
    // stride 1 with outputs as wide as the input: one tap's rows are a single shifted span of
    // the input plane (short rows copied one by one spent more on calls than on copying)
    let flat = g.stride == [1, 1] && g.dilation == [1, 1] && ow == g.w;
    for (i, out) in col.chunks_mut(width).enumerate() {
        let row = k0 + i;
        let c = row / (g.kh * g.kw);
        let ki = row / g.kw % g.kh;
        let kj = row % g.kw;
        let src = &x[c * g.h * g.w..(c + 1) * g.h * g.w];
        let off_x = (kj * g.dilation[1]) as isize - g.pad[1] as isize;
        if flat {
            shifted_rows(src, g, out, rows, ki as isize - g.pad[0] as isize, off_x);
            continue;
        }
        let (first, last) = valid_range(g.w, off_x, g.stride[1], ow);
        for oy in oy0..oy1 {
            let iy = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
            let dst = &mut out[(oy - oy0) * ow..(oy - oy0 + 1) * ow];
            if iy < 0 || iy >= g.h as isize {
                dst.fill(0.0);
                continue;
            }
            let srow = &src[iy as usize * g.w..(iy as usize + 1) * g.w];
            dst[..first].fill(0.0);
            dst[last..].fill(0.0);
            if g.stride[1] == 1 {
                let s0 = (first as isize + off_x) as usize;
                dst[first..last].copy_from_slice(&srow[s0..s0 + (last - first)]);
            } else if g.stride[1] == 2 && last > first {
                let s0 = (first as isize * 2 + off_x) as usize;
                every_other(&mut dst[first..last], &srow[s0..]);
            } else {
                for (ox, d) in dst.iter_mut().enumerate().take(last).skip(first) {
                    *d = srow[(ox as isize * g.stride[1] as isize + off_x) as usize];
                }
            }
        }
    }
}

/// One im2col row of a stride-1 convolution whose output rows are as wide as the input's:
/// out[(oy − oy0)·w + ox] = x[oy + off_y][ox + off_x] (0 outside the image), which is the plane
/// read from one offset on, with the rows above/below the image and the `|off_x|` columns that
/// wrapped around from the neighbouring row set to 0.
fn shifted_rows(
    x: &[f32],
    g: &Geom,
    out: &mut [f32],
    rows: (usize, usize),
    off_y: isize,
    off_x: isize,
) {
    let (w, (oy0, oy1)) = (g.w, rows);
    let (fy, ly) = valid_range(g.h, off_y, 1, oy1);
    let (fy, ly) = (fy.max(oy0), ly.max(oy0));
    out[..(fy - oy0) * w].fill(0.0);
    out[(ly - oy0) * w..].fill(0.0);
    if ly == fy {
        return;
    }
    let span = &mut out[(fy - oy0) * w..(ly - oy0) * w];
    // source index of span[0]; it may start one column before the plane or end one after it
    let s0 = (fy as isize + off_y) * w as isize + off_x;
    let lo = (-s0).max(0) as usize;
    let hi = (span.len() as isize)
        .min(x.len() as isize - s0)
        .max(lo as isize) as usize;
    span[..lo].fill(0.0);
    span[hi..].fill(0.0);
    span[lo..hi].copy_from_slice(&x[(s0 + lo as isize) as usize..(s0 + hi as isize) as usize]);
    let edge = off_x.unsigned_abs().min(w);
    if edge > 0 {
        for r in span.chunks_mut(w) {
            if off_x < 0 {
                r[..edge].fill(0.0);
            } else {
                r[w - edge..].fill(0.0);
            }
        }
    }
}

super::simd::multiversion! {
    /// dst[i] = src[2·i] (a stride-2 row of im2col), in blocks of 16 that vectorise as
    /// shuffles instead of one scalar load per element.
    fn every_other(dst: &mut [f32], src: &[f32]) {
        let n = dst.len();
        assert!(src.len() > 2 * (n - 1));
        let whole = if src.len() >= 2 * n { n } else { n - 1 };
        let mut dc = dst[..whole].chunks_exact_mut(16);
        let mut sc = src[..2 * whole].chunks_exact(32);
        for (d, s) in (&mut dc).zip(&mut sc) {
            let d: &mut [f32; 16] = d.try_into().unwrap();
            let s: &[f32; 32] = s.try_into().unwrap();
            for i in 0..16 {
                d[i] = s[2 * i];
            }
        }
        let done = whole - whole % 16;
        for (i, d) in dst.iter_mut().enumerate().skip(done) {
            *d = src[2 * i];
        }
    }
}

super::simd::multiversion! {
    /// dst[2·i] += src[i], the adjoint of [`every_other`], in blocks of 16.
    fn add_every_other(dst: &mut [f32], src: &[f32]) {
        let n = src.len();
        assert!(dst.len() > 2 * (n - 1));
        let whole = if dst.len() >= 2 * n { n } else { n - 1 };
        let mut dc = dst[..2 * whole].chunks_exact_mut(32);
        let mut sc = src[..whole].chunks_exact(16);
        for (d, s) in (&mut dc).zip(&mut sc) {
            let d: &mut [f32; 32] = d.try_into().unwrap();
            let s: &[f32; 16] = s.try_into().unwrap();
            for i in 0..16 {
                d[2 * i] += s[i];
            }
        }
        let done = whole - whole % 16;
        for (i, &v) in src.iter().enumerate().skip(done) {
            dst[2 * i] += v;
        }
    }
}

/// Rows `ks` of the columns of output rows `rows` of one image's group `xs`, as a GEMM operand
/// `(values, row stride)`: `xs` itself from the block's first pixel for 1×1 stride-1
/// convolutions (no copy), else [`im2col`] into `col`.
fn block_cols<'c>(
    xs: &'c [f32],
    g: &Geom,
    col: &'c mut [f32],
    rows: (usize, usize),
    ks: Range<usize>,
) -> (&'c [f32], usize) {
    let ow = g.ow();
    if g.is_pointwise() {
        let plane = g.oh() * ow;
        (&xs[ks.start * plane + rows.0 * ow..], plane)
    } else {
        let len = ks.len() * (rows.1 - rows.0) * ow;
        im2col(xs, g, &mut col[..len], rows, ks.start);
        (&col[..len], (rows.1 - rows.0) * ow)
    }
}

/// How many rows of a GEMM's output one task computes when a kernel splits that side because
/// it has fewer than [`TASKS`] tasks otherwise (`tasks`): enough pieces to reach that many, each
/// of at least `min_rows` rows (below that, packing the other operand again for every piece
/// cost more than the balance gained), equal up to a multiple of 16 (the GEMM micro-kernel's
/// height). It depends on the shapes only, not on the pool, so the sums (and so the results)
/// are the same on any number of threads. Without it a layer at YOLO's batch 4 had one task per
/// image on its 20² and 40² layers: four tasks, which capped a 16-thread pool at 4.
fn rows_per_task(m: usize, tasks: usize, min_rows: usize) -> usize {
    let want = TASKS.div_ceil(tasks.max(1));
    let pieces = want.min(m / min_rows.max(1)).max(1);
    m.div_ceil(pieces).next_multiple_of(16).min(m.max(1))
}

/// Output rows per block of the weight gradient: [`rows_per_block`], or fewer where that gives an
/// image fewer than `spans` blocks, down to blocks of [`SPAN_WIDTH`] positions.
fn span_rows(g: &Geom, spans: usize) -> usize {
    let (oh, rb) = (g.oh().max(1), rows_per_block(g));
    if oh.div_ceil(rb) >= spans {
        return rb;
    }
    oh.div_ceil(spans.max(1))
        .max(SPAN_WIDTH.div_ceil(g.ow().max(1)))
        .min(rb)
}

/// The narrowest block [`span_rows`] makes, in output positions: a block's positions are the
/// weight gradient's sums, so a narrower block changes no GEMM's output shape (the forward's
/// narrower blocks, [`SPLIT_WIDTH`], cost its one-image inference 6% at 128 on 2 threads; here
/// 128 left the training step within the noise and took the default run's shapes from a
/// ceiling of 7.0 to 10.1 on 16 threads, `bench conv_census`).
const SPAN_WIDTH: usize = 128;

/// The number of tasks a convolution kernel aims for: the largest pool we measure (16 threads).
const TASKS: usize = 16;

/// `0..m` in pieces of `step` (the last may be shorter).
fn pieces(m: usize, step: usize) -> impl Iterator<Item = Range<usize>> {
    (0..m)
        .step_by(step.max(1))
        .map(move |a| a..(a + step).min(m))
}

/// ∂L/∂W (`[cout, cin_g, kh, kw]`) from the input `x` and the output gradient `dy`.
pub fn weight_grad(x: Images, dy: &[f32], g: &Geom) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise_weight_grad(x, dy, g);
    }
    let (cin_g, cout_g, k) = (g.cin_g(), g.cout_g(), g.k());
    let plane = g.oh() * g.ow();
    // One partial ∂L/∂W per worker, each over whole images (the GEMMs here are short and wide:
    // cout_g × k outputs summed over oh·ow positions, which GEMM cannot split), then summed.
    // Each partial is kept transposed, ∂L/∂W_gᵀ (k × cout_g) = cols · dY_gᵀ: with the k rows
    // of cols as the GEMM's long side it ran 1.2–1.6× faster than cout_g × k on YOLO's layers of
    // 16–64 channels and about as fast on 128–256 (`examples/convparts.rs`).
    // Rows `ks` of one image's contribution over the output rows `blocks` (dW_gᵀ rows ks +=
    // cols[ks] · dY_gᵀ), written to `dwt` (those rows of the task's partial, k × cout_g per
    // group) or added to it.
    let per_image = |dwt: OutPtr,
                     col: &mut [f32],
                     img: usize,
                     first: bool,
                     ks: &Range<usize>,
                     blocks: &[(usize, usize)]| {
        for grp in 0..g.groups {
            let xs = &x.image(img)[grp * cin_g * g.h * g.w..][..cin_g * g.h * g.w];
            let dys = &dy[(img * g.cout + grp * cout_g) * plane..][..cout_g * plane];
            for (b, &rows) in blocks.iter().enumerate() {
                let p0 = rows.0 * g.ow();
                let width = (rows.1 - rows.0) * g.ow();
                let (cols, cols_rs) = block_cols(xs, g, col, rows, ks.clone());
                // SAFETY: rows ks of group grp's k × cout_g part of this partial are this
                // task's alone (the tasks split the partials and the rows); `dwt` points at the
                // partial, which holds groups · k · cout_g elements.
                let dst = unsafe {
                    std::slice::from_raw_parts_mut(
                        dwt.at((grp * k + ks.start) * cout_g),
                        ks.len() * cout_g,
                    )
                };
                // dW_gᵀ[ks] (|ks| × cout_g) += cols[ks] (|ks| × width) · dY_g[:, block]ᵀ
                gemm(
                    ks.len(),
                    cout_g,
                    width,
                    dst,
                    !(first && b == 0),
                    cols,
                    cols_rs,
                    1,
                    &dys[p0..],
                    1,
                    plane,
                    false,
                );
            }
        }
    };
    // Images are split into at most 8 fixed runs and each image's output rows into spans, each
    // (run, span) summed in order into its own partial, and the partials are added in order: the
    // result does not depend on rayon's scheduling or the number of threads, so training stays
    // bit-for-bit reproducible. Each partial's rows of dWᵀ are split among tasks too (each
    // computes only its rows of the columns). All three in pieces set by the work alone: the
    // spans only where runs × row pieces give fewer than `TASKS` tasks (YOLO's 1×1 layers of
    // 32–96 channels and its first layers gave 4 tasks at batch 4: with the input gradients of
    // as few tasks, 4 of 16 threads busy in 60% of the backward's convolution time,
    // `bench conv_census`).
    let run = g.n.div_ceil(8).max(1);
    let runs = g.n.div_ceil(run);
    let ks: Vec<Range<usize>> = pieces(k, rows_per_task(k, runs, 128)).collect();
    // spans of whole blocks, or of narrower blocks (down to `SPAN_WIDTH` positions) where an
    // image has fewer blocks than spans wanted (YOLO's layers at 20²–40²)
    let want = TASKS.div_ceil(runs * ks.len().max(1));
    let blocks: Vec<(usize, usize)> = blocks_of(g.oh(), span_rows(g, want)).collect();
    let spans: Vec<&[(usize, usize)]> = blocks
        .chunks(blocks.len().div_ceil(want.max(1)).max(1))
        .collect();
    let col_len = if g.is_pointwise() {
        0
    } else {
        ks.first().map_or(0, |r| r.len()) * rows_per_block(g) * g.ow()
    };
    // the partials' zero-fill done by the tasks, each its own rows (one memset of up to 16 × the
    // weight's size on one thread before)
    let parts = runs * spans.len();
    let mut partials: Vec<Vec<f32>> = (0..parts).map(|_| Vec::with_capacity(g.cout * k)).collect();
    let ptrs: Vec<OutPtr> = partials
        .iter_mut()
        .map(|p| OutPtr(p.as_mut_ptr()))
        .collect();
    let timed = census::time("conv_weight_grad", parts * ks.len(), || g.describe());
    (0..parts * ks.len())
        .into_par_iter()
        .short_runs()
        .for_each(|task| {
            let (part, kr) = (task / ks.len(), &ks[task % ks.len()]);
            let (r, span) = (part / spans.len(), spans[part % spans.len()]);
            for grp in 0..g.groups {
                // SAFETY: rows kr of group grp's k × cout_g part of this partial are this task's
                // alone, inside the partial's g.cout · k = groups · k · cout_g elements of capacity.
                unsafe {
                    std::ptr::write_bytes(
                        ptrs[part].at((grp * k + kr.start) * cout_g),
                        0,
                        kr.len() * cout_g,
                    )
                };
            }
            with_scratch(col_len, |col| {
                for img in r * run..((r + 1) * run).min(g.n) {
                    per_image(ptrs[part], col, img, img == r * run, kr, span);
                }
            });
        });
    drop(timed);
    for p in partials.iter_mut() {
        // SAFETY: the tasks zero-filled every element (the pieces ks cover 0..k in every group)
        // before adding into it.
        unsafe { p.set_len(g.cout * k) };
    }
    // the partials summed in order (as a running sum would), and back to
    // [cout, cin_g, kh, kw]: group by group, (k × cout_g) → (cout_g × k); one task per output row
    zeroed_par(g.cout * k, k, |r, row| {
        let Some((first, rest)) = partials.split_first() else {
            return;
        };
        let (grp, co) = (r / cout_g, r % cout_g);
        for (kk, d) in row.iter_mut().enumerate() {
            let at = (grp * k + kk) * cout_g + co;
            *d = rest.iter().fold(first[at], |v, p| v + p[at]);
        }
    })
}

/// Depthwise (one input and one output channel per group): a direct dot product per channel and
/// kernel position over the valid output positions.
fn depthwise_weight_grad(x: Images, dy: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let kk = g.kh * g.kw;
    let mut dw = vec![0.0f32; g.cout * kk];
    dw.par_chunks_mut(kk).enumerate().for_each(|(c, out)| {
        for (p, o) in out.iter_mut().enumerate() {
            let (ki, kj) = (p / g.kw, p % g.kw);
            let off_y = (ki * g.dilation[0]) as isize - g.pad[0] as isize;
            let off_x = (kj * g.dilation[1]) as isize - g.pad[1] as isize;
            let mut acc = 0.0f64;
            for img in 0..g.n {
                let xs = &x.image(img)[c * g.h * g.w..][..g.h * g.w];
                let dys = &dy[(img * g.cout + c) * oh * ow..][..oh * ow];
                let mut s = 0.0f32;
                for oy in 0..oh {
                    let iy = (oy * g.stride[0]) as isize + off_y;
                    if iy < 0 || iy >= g.h as isize {
                        continue;
                    }
                    let xrow = &xs[iy as usize * g.w..][..g.w];
                    let drow = &dys[oy * ow..][..ow];
                    let (first, last) = valid_range(g.w, off_x, g.stride[1], ow);
                    if g.stride[1] == 1 {
                        let xr = &xrow[(first as isize + off_x) as usize..][..last - first];
                        s += dot(&drow[first..last], xr);
                    } else {
                        for (ox, &d) in drow.iter().enumerate().take(last).skip(first) {
                            let ix = (ox * g.stride[1]) as isize + off_x;
                            s += d * xrow[ix as usize];
                        }
                    }
                }
                acc += s as f64;
            }
            *o = acc as f32;
        }
    });
    dw
}

super::simd::multiversion! {
    fn dot(a: &[f32], b: &[f32]) -> f32 {
        let mut acc = [0.0f32; 16];
        let mut ia = a.chunks_exact(16);
        let mut ib = b.chunks_exact(16);
        for (ca, cb) in (&mut ia).zip(&mut ib) {
            for i in 0..16 {
                acc[i] += ca[i] * cb[i];
            }
        }
        let rest: f32 = ia.remainder().iter().zip(ib.remainder()).map(|(x, y)| x * y).sum();
        acc.iter().sum::<f32>() + rest
    }
}

/// col2im: adds `col` (`[cin_g·kh·kw, rows·ow]`, output rows `rows`) back onto one image's
/// group `dx` (`[cin_g, h, w]`), the adjoint of [`im2col`].
fn col2im(col: &[f32], g: &Geom, dx: &mut [f32], rows: (usize, usize)) {
    let ow = g.ow();
    let (oy0, oy1) = rows;
    let width = (oy1 - oy0) * ow;
    for (row, src) in col.chunks(width).enumerate() {
        let c = row / (g.kh * g.kw);
        let ki = row / g.kw % g.kh;
        let kj = row % g.kw;
        let dst = &mut dx[c * g.h * g.w..(c + 1) * g.h * g.w];
        let off_x = (kj * g.dilation[1]) as isize - g.pad[1] as isize;
        let (first, last) = valid_range(g.w, off_x, g.stride[1], ow);
        for oy in oy0..oy1 {
            let iy = (oy * g.stride[0] + ki * g.dilation[0]) as isize - g.pad[0] as isize;
            if iy < 0 || iy >= g.h as isize {
                continue;
            }
            let drow = &mut dst[iy as usize * g.w..(iy as usize + 1) * g.w];
            let srow = &src[(oy - oy0) * ow..(oy - oy0 + 1) * ow];
            if g.stride[1] == 1 {
                let d0 = (first as isize + off_x) as usize;
                add_into(&mut drow[d0..d0 + (last - first)], &srow[first..last]);
            } else if g.stride[1] == 2 && last > first {
                let d0 = (first as isize * 2 + off_x) as usize;
                add_every_other(&mut drow[d0..], &srow[first..last]);
            } else {
                for (ox, &v) in srow.iter().enumerate().take(last).skip(first) {
                    drow[(ox as isize * g.stride[1] as isize + off_x) as usize] += v;
                }
            }
        }
    }
}

super::simd::multiversion! {
    fn add_into(dst: &mut [f32], src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += s;
        }
    }
}

super::simd::multiversion! {
    fn axpy(dst: &mut [f32], a: f32, src: &[f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d += a * s;
        }
    }
}

/// ∂L/∂X (`[n, cin, h, w]`) from the weights and the output gradient: per image and group,
/// col = W_gᵀ · ∂L/∂Y_g (one GEMM), then col2im; 1×1 stride-1 convolutions write the GEMM's
/// result directly, depthwise ones take a direct loop.
pub fn input_grad(w: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    if g.is_depthwise() {
        return depthwise_input_grad(w, dy, g);
    }
    if let Some((gt, wt)) = transposed(w, g) {
        return gemm_conv(Images::dense(dy, &gt), &wt, &gt, "conv_input_grad");
    }
    let (cin_g, cout_g, k) = (g.cin_g(), g.cout_g(), g.k());
    let (plane, kk, hw) = (g.oh() * g.ow(), g.kh * g.kw, g.h * g.w);
    let cc = input_channels_per_task(g);
    let per_image = g.cin / cc;
    let col_len = if g.is_pointwise() {
        0
    } else {
        cc.min(cin_g) * kk * rows_per_block(g) * g.ow()
    };
    let _timed = census::time("conv_input_grad", g.n * per_image, || g.describe());
    zeroed_par(g.n * g.cin * hw, cc * hw, |piece, dx| {
        let (img, c0) = (piece / per_image, piece % per_image * cc);
        with_scratch(col_len, |col| {
            for grp in 0..g.groups {
                let dys = &dy[(img * g.cout + grp * cout_g) * plane..][..cout_g * plane];
                let wg = &w[grp * cout_g * k..][..cout_g * k];
                // this piece's channels of the group: [gc0, gc0 + gcn), at dxg
                let (gc0, gcn) = if g.groups == 1 { (c0, cc) } else { (0, cin_g) };
                let dxg = &mut dx[grp * cin_g * hw..][..gcn * hw];
                if g.is_pointwise() {
                    // dX_g[gc] (gcn × plane) = W_gᵀ[gc] (gcn × cout_g) · dY_g (cout_g × plane)
                    gemm(
                        gcn,
                        plane,
                        cout_g,
                        dxg,
                        false,
                        &wg[gc0..],
                        1,
                        k,
                        dys,
                        plane,
                        1,
                        g.n == 1 && per_image == 1,
                    );
                    continue;
                }
                // per block of output rows: the piece's rows of cols = W_gᵀ · dY_g[:, block],
                // added back by col2im
                let ks = gc0 * kk..(gc0 + gcn) * kk;
                for rows in row_blocks(g) {
                    let width = (rows.1 - rows.0) * g.ow();
                    let cols = &mut col[..ks.len() * width];
                    let p0 = rows.0 * g.ow();
                    gemm(
                        ks.len(),
                        width,
                        cout_g,
                        cols,
                        false,
                        &wg[ks.start..],
                        1,
                        k,
                        &dys[p0..],
                        plane,
                        1,
                        false,
                    );
                    col2im(cols, g, dxg, rows);
                }
            }
        })
    })
}

/// The input gradient's tasks: one per image and piece of this many input channels (a divisor
/// of cin), enough pieces for [`TASKS`] tasks where each keeps at least 32 rows of the columns
/// (with 128, YOLO26n's second layer, 16 channels 3×3 at stride 2, was one task per image: 4
/// tasks, a tenth of the step's input-gradient time); grouped convolutions keep whole images.
fn input_channels_per_task(g: &Geom) -> usize {
    if g.groups != 1 {
        return g.cin;
    }
    let least = 32usize.div_ceil(g.kh * g.kw);
    let pieces = TASKS.div_ceil(g.n.max(1)).min(g.cin / least.max(1)).max(1);
    let most = g.cin.div_ceil(pieces);
    (1..=most.min(g.cin))
        .rev()
        .find(|d| g.cin.is_multiple_of(*d))
        .unwrap_or(g.cin)
}

/// For a dense k×k stride-1 convolution, ∂L/∂X is itself one: ∂L/∂Y convolved with the kernel
/// flipped in space and transposed in channels (`[cin, cout, kh, kw]`), padded by k − 1 − p.
/// Run as a forward, it writes ∂L/∂X once, where col2im wrote columns k² times larger and added
/// them back (`examples/convparts.rs`, 4×16×160² and 4×256×20² 3×3 layers: 3.1 → 2.75 ms and
/// 7.2 → 6.5 ms).
/// Returns that convolution's geometry and kernel, or `None` when it does not apply.
fn transposed(w: &[f32], g: &Geom) -> Option<(Geom, Vec<f32>)> {
    if g.groups != 1
        || g.stride != [1, 1]
        || g.dilation != [1, 1]
        || g.pad[0] + 1 > g.kh
        || g.pad[1] + 1 > g.kw
    {
        return None;
    }
    let gt = Geom {
        n: g.n,
        cin: g.cout,
        h: g.oh(),
        w: g.ow(),
        cout: g.cin,
        kh: g.kh,
        kw: g.kw,
        stride: [1, 1],
        pad: [g.kh - 1 - g.pad[0], g.kw - 1 - g.pad[1]],
        dilation: [1, 1],
        groups: 1,
    };
    debug_assert_eq!((gt.oh(), gt.ow()), (g.h, g.w));
    let kk = g.kh * g.kw;
    let mut wt = vec![0.0f32; w.len()];
    for co in 0..g.cout {
        for ci in 0..g.cin {
            let src = &w[(co * g.cin + ci) * kk..][..kk];
            let dst = &mut wt[(ci * g.cout + co) * kk..][..kk];
            for (d, s) in dst.iter_mut().zip(src.iter().rev()) {
                *d = *s;
            }
        }
    }
    Some((gt, wt))
}

/// Depthwise input gradient: every output gradient value spread back over its kernel window.
fn depthwise_input_grad(w: &[f32], dy: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let kk = g.kh * g.kw;
    zeroed_par(g.n * g.cin * g.h * g.w, g.h * g.w, |i, dxc| {
        let c = i % g.cin;
        let dys = &dy[i * oh * ow..][..oh * ow];
        tap_rows(g, &w[c * kk..][..kk], |t| {
            let drow = &mut dxc[t.iy * g.w..][..g.w];
            let srow = &dys[t.oy * ow..][..ow];
            if g.stride[1] == 1 {
                let d0 = (t.first as isize + t.off_x) as usize;
                let n = t.last - t.first;
                axpy(&mut drow[d0..d0 + n], t.w, &srow[t.first..t.last]);
            } else {
                for (ox, &v) in srow.iter().enumerate().take(t.last).skip(t.first) {
                    drow[(ox as isize * g.stride[1] as isize + t.off_x) as usize] += t.w * v;
                }
            }
        });
    })
}

/// One kernel tap applied to one output row of a depthwise plane: the tap's weight, the output
/// row and the input row it reads, the output columns whose input column is inside the image
/// (`first..last`), and the column offset of the tap.
struct TapRow {
    w: f32,
    oy: usize,
    iy: usize,
    first: usize,
    last: usize,
    off_x: isize,
}

/// Every tap × output row of a depthwise plane whose input row is inside the image, tap by tap:
/// the loop the forward and the input gradient share.
fn tap_rows(g: &Geom, wc: &[f32], mut f: impl FnMut(TapRow)) {
    let (oh, ow) = (g.oh(), g.ow());
    for ki in 0..g.kh {
        let off_y = (ki * g.dilation[0]) as isize - g.pad[0] as isize;
        for kj in 0..g.kw {
            let off_x = (kj * g.dilation[1]) as isize - g.pad[1] as isize;
            let (first, last) = valid_range(g.w, off_x, g.stride[1], ow);
            for oy in 0..oh {
                let iy = (oy * g.stride[0]) as isize + off_y;
                if iy >= 0 && iy < g.h as isize {
                    f(TapRow {
                        w: wc[ki * g.kw + kj],
                        oy,
                        iy: iy as usize,
                        first,
                        last,
                        off_x,
                    });
                }
            }
        }
    }
}

/// The forward by blocked im2col + GEMM: Yₙ[g][:, block] = W_g · cols(Xₙ, g, block), one task
/// per image, group and block of output rows (so a single image is split too), and per piece of
/// output channels where those are fewer than `TASKS`.
pub fn forward_gemm(x: Images, w: &[f32], g: &Geom) -> Vec<f32> {
    gemm_conv(x, w, g, "conv_forward")
}

/// [`forward_gemm`], its loop entered in the [`census`] as `kind`.
fn gemm_conv(x: Images, w: &[f32], g: &Geom, kind: &'static str) -> Vec<f32> {
    let (cin_g, cout_g, k) = (g.cin_g(), g.cout_g(), g.k());
    let plane = g.oh() * g.ow();
    let total = g.n * g.cout * plane;
    let rb = forward_rows_per_block(g);
    let blocks: Vec<(usize, usize)> = blocks_of(g.oh(), rb).collect();
    let col_len = if g.is_pointwise() { 0 } else { k * rb * g.ow() };
    let mut y: Vec<f32> = Vec::with_capacity(total);
    let out = OutPtr(y.as_mut_ptr());
    let tasks = g.n * g.groups * blocks.len();
    // each block's output channels in tasks of their own (the block's columns shared)
    let min_rows = if g.is_pointwise() { 128 } else { 64 };
    let chunks: Vec<Range<usize>> =
        pieces(cout_g, rows_per_task(cout_g, tasks, min_rows)).collect();
    let _timed = census::time(kind, tasks * chunks.len(), || g.describe());
    (0..tasks).into_par_iter().short_runs().for_each(|task| {
        let rows = blocks[task % blocks.len()];
        let (img, grp) = (
            task / blocks.len() / g.groups,
            task / blocks.len() % g.groups,
        );
        let xs = &x.image(img)[grp * cin_g * g.h * g.w..][..cin_g * g.h * g.w];
        let p0 = rows.0 * g.ow();
        let width = (rows.1 - rows.0) * g.ow();
        with_scratch(col_len, |col| {
            let (cols, cols_rs) = block_cols(xs, g, col, rows, 0..k);
            chunks.par_iter().short_runs().for_each(|ch| {
                let c0 = grp * cout_g + ch.start;
                // SAFETY: this task writes rows p0 .. p0 + width of output channels `ch` of
                // group grp of image img, inside the `total` elements reserved above; the
                // tasks cover every (image, channel, position) exactly once, so the writes
                // are disjoint and the whole buffer is initialised when the loop ends.
                unsafe {
                    super::host::gemm_raw(
                        ch.len(),
                        width,
                        k,
                        out.at((img * g.cout + c0) * plane + p0),
                        plane,
                        &w[c0 * k..][..ch.len() * k],
                        k,
                        1,
                        cols,
                        cols_rs,
                        1,
                    )
                };
            })
        })
    });
    // SAFETY: every element was written by exactly one task above.
    unsafe { y.set_len(total) };
    y
}

/// Depthwise forward: each output plane is the sum over the kernel taps of its input plane
/// shifted and weighted, one task per image and channel.
fn depthwise_forward(x: Images, w: &[f32], g: &Geom) -> Vec<f32> {
    let (oh, ow) = (g.oh(), g.ow());
    let kk = g.kh * g.kw;
    zeroed_par(g.n * g.cout * oh * ow, oh * ow, |i, yc| {
        let (img, c) = (i / g.cout, i % g.cout);
        let xs = &x.image(img)[c * g.h * g.w..][..g.h * g.w];
        tap_rows(g, &w[c * kk..][..kk], |t| {
            let srow = &xs[t.iy * g.w..][..g.w];
            let drow = &mut yc[t.oy * ow..][..ow];
            if g.stride[1] == 1 {
                let s0 = (t.first as isize + t.off_x) as usize;
                let n = t.last - t.first;
                axpy(&mut drow[t.first..t.last], t.w, &srow[s0..s0 + n]);
            } else {
                for (ox, d) in drow.iter_mut().enumerate().take(t.last).skip(t.first) {
                    *d += t.w * srow[(ox as isize * g.stride[1] as isize + t.off_x) as usize];
                }
            }
        });
    })
}

/// Whether our (im2col +) GEMM forward is used: measured by `examples/convparts.rs` on YOLO's
/// shapes, 1.2–5× flex's for k×k convolutions and about equal for 1×1 ones (which then read a
/// channel slice in place instead of copying it). Depthwise convolutions take the direct loop:
/// flex's kernel was as fast per value but zero-filled its output on one thread first.
fn own_forward(g: &Geom) -> bool {
    g.groups == 1 || g.is_depthwise()
}

/// The input as the kernels read it: in place when each image is dense, else a dense copy.
fn kept_input(x: &FlexTensor) -> Option<FlexTensor> {
    if Images::of(x).is_some() {
        Some(x.clone())
    } else {
        contiguous(x)
    }
}

/// The forward; `x` from [`kept_input`], `w` contiguous.
fn forward_flex(x: &FlexTensor, w: &FlexTensor, g: &Geom) -> Option<FlexTensor> {
    Some(if own_forward(g) {
        let y = if g.is_depthwise() {
            depthwise_forward(Images::of(x)?, values(w), g)
        } else {
            forward_gemm(Images::of(x)?, values(w), g)
        };
        tensor(y, vec![g.n, g.cout, g.oh(), g.ow()])
    } else {
        <Flex as ModuleOps<Flex>>::conv2d(contiguous(x)?, w.clone(), None, g.options())
    })
}

#[derive(Debug)]
struct ConvBackward;

#[derive(Clone, Debug)]
struct ConvState {
    x: FlexTensor,
    w: FlexTensor,
    geom: Geom,
}

impl ConvState {
    /// ∂L/∂X and ∂L/∂W from ∂L/∂Y, each when `want` asks for it.
    fn grads(&self, dy: &FlexTensor, want: [bool; 2]) -> [Option<FlexTensor>; 2] {
        let d = contiguous(dy).expect("f32 gradient");
        let dx = want[0].then(|| {
            let dx = input_grad(values(&self.w), values(&d), &self.geom);
            tensor(dx, self.x.layout().shape().to_vec())
        });
        let dw = want[1].then(|| {
            let x = Images::of(&self.x).expect("the convolution keeps a readable input");
            let dw = weight_grad(x, values(&d), &self.geom);
            tensor(dw, self.w.layout().shape().to_vec())
        });
        [dx, dw]
    }
}

/// Hands ∂L/∂X and ∂L/∂W from ∂L/∂Y to the convolution's input and weights, those that want
/// one (a macro: burn does not name the parents' type).
macro_rules! hand_x_w {
    ($state:expr, $dy:expr, $grads:expr, $node_x:expr, $node_w:expr) => {
        let [dx, dw] = $state.grads(&$dy, [$node_x.is_some(), $node_w.is_some()]);
        if let (Some(node), Some(dx)) = ($node_x, dx) {
            hand_to!($grads, node, dx);
        }
        if let (Some(node), Some(dw)) = ($node_w, dw) {
            hand_to!($grads, node, dw);
        }
    };
}

impl Backward<Flex, 2> for ConvBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        hand_x_w!(ops.state, dy, grads, node_x, node_w);
    }
}

/// The convolution with a bias added to each output channel.
#[derive(Debug)]
struct ConvBiasBackward;

impl Backward<Flex, 3> for ConvBiasBackward {
    type State = ConvState;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_x, node_w, node_b] = ops.parents;
        let dy = grads.consume::<Flex>(&ops.node);
        hand_x_w!(ops.state, dy, grads, node_x, node_w);
        if let Some(node) = node_b {
            let d = contiguous(&dy).expect("f32 gradient");
            let db = bias_grad(values(&d), &ops.state.geom);
            hand_to!(grads, node, tensor(db, [ops.state.geom.cout]));
        }
    }
}

/// ∂L/∂b: each channel's output gradient summed over images and positions (in f64), one task
/// per channel.
fn bias_grad(dy: &[f32], g: &Geom) -> Vec<f32> {
    let plane = g.oh() * g.ow();
    (0..g.cout)
        .into_par_iter()
        .map(|c| {
            (0..g.n)
                .map(|img| {
                    let p = &dy[(img * g.cout + c) * plane..][..plane];
                    p.iter().map(|&v| v as f64).sum::<f64>()
                })
                .sum::<f64>() as f32
        })
        .collect()
}

/// Adds `b[c]` to every value of output channel c, one task per output plane.
fn add_bias(y: &mut FlexTensor, b: &[f32], g: &Geom) -> Option<()> {
    let plane = g.oh() * g.ow();
    let ys = y.try_storage_mut::<f32>()?;
    ys.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(i, p)| {
            let v = b[i % g.cout];
            p.iter_mut().for_each(|x| *x += v);
        });
    Some(())
}

/// Geometry of `conv` applied to `x`, when its padding is symmetric (else `None`).
fn geom_of(conv: &Conv2d, x: &Tensor<4>) -> Option<Geom> {
    let [n, cin, h, w] = x.dims();
    // YOLO's convolutions are built with explicit symmetric padding; others take burn's path.
    let (top, left) = match conv.padding {
        PaddingConfig2d::Explicit(t, l, b, r) if t == b && l == r => (t, l),
        PaddingConfig2d::Valid => (0, 0),
        _ => return None,
    };
    let [cout, _, kh, kw] = conv.weight.dims();
    Some(Geom {
        n,
        cin,
        h,
        w,
        cout,
        kh,
        kw,
        stride: conv.stride,
        pad: [top, left],
        dilation: conv.dilation,
        groups: conv.groups,
    })
}

/// `conv.forward(x)` with the fused kernels when `x` lives on flex (autodiff or not), burn's
/// convolution otherwise. The bias, when there is one, is added to the fresh output in place and
/// its gradient summed per channel, one task each.
pub fn conv2d(conv: &Conv2d, x: Tensor<4>) -> Tensor<4> {
    let bias = conv.bias.as_ref().map(|b| b.val());
    match geom_of(conv, &x).and_then(|g| conv_flex(&x, &conv.weight.val(), bias.as_ref(), &g)) {
        Some(y) => y,
        None => conv.forward(x),
    }
}

/// The forward on flex, recorded with its backward when `x` is an autodiff tensor.
fn conv_flex(x: &Tensor<4>, w: &Tensor<4>, b: Option<&Tensor<1>>, g: &Geom) -> Option<Tensor<4>> {
    if let Ok(xp) = x.clone().try_into_primitive::<Ad>() {
        let wp = w.clone().try_into_primitive::<Ad>().ok()?;
        let bp = match b {
            Some(b) => Some(b.clone().try_into_primitive::<Ad>().ok()?),
            None => None,
        };
        let (xc, wc) = (kept_input(xp.primitive())?, contiguous(wp.primitive())?);
        let mut y = forward_flex(&xc, &wc, g)?;
        let state = || ConvState {
            x: xc,
            w: wc,
            geom: *g,
        };
        let out = match bp {
            Some(bp) => {
                add_bias(&mut y, values(&contiguous(bp.primitive())?), g)?;
                let nodes = [xp.node(), wp.node(), bp.node()];
                record(ConvBiasBackward, nodes, state, y)
            }
            None => record(ConvBackward, [xp.node(), wp.node()], state, y),
        };
        return Some(Tensor::from_primitive::<Ad>(out));
    }
    let xp = x.clone().try_into_primitive::<Flex>().ok()?;
    let wp = w.clone().try_into_primitive::<Flex>().ok()?;
    let mut y = forward_flex(&kept_input(&xp)?, &contiguous(&wp)?, g)?;
    if let Some(b) = b {
        let bp = b.clone().try_into_primitive::<Flex>().ok()?;
        add_bias(&mut y, values(&contiguous(&bp)?), g)?;
    }
    Some(Tensor::from_primitive::<Flex>(y))
}

#[cfg(test)]
mod tests {
    use super::super::testing::{max_rel, values};
    use super::*;
    use burn::tensor::Distribution;

    /// Output, input gradient and weight gradient against burn's own convolution (flex forward,
    /// burn's generic backward), for one geometry.
    fn check(g: Geom) {
        let dev = crate::device();
        let x0 = Tensor::<4>::random([g.n, g.cin, g.h, g.w], Distribution::Normal(0.0, 1.0), &dev);
        let w0 = Tensor::<4>::random(
            [g.cout, g.cin / g.groups, g.kh, g.kw],
            Distribution::Normal(0.0, 0.5),
            &dev,
        );
        let wy = Tensor::<4>::random(
            [g.n, g.cout, g.oh(), g.ow()],
            Distribution::Normal(0.0, 1.0),
            &dev,
        );
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            let w = w0.clone().detach().require_grad();
            let y = if ours {
                conv_flex(&x, &w, None, &g).expect("flex autodiff")
            } else {
                burn::tensor::module::conv2d(x.clone(), w.clone(), None, g.options())
            };
            let grads = (y.clone() * wy.clone()).sum().backward();
            let dx = x.grad(&grads).unwrap();
            let dw = w.grad(&grads).unwrap();
            (values(y), values(dx), values(dw))
        };
        let (y1, dx1, dw1) = run(true);
        let (y2, dx2, dw2) = run(false);
        assert!(
            max_rel(&y1, &y2) < 1e-5,
            "{g:?} output {}",
            max_rel(&y1, &y2)
        );
        assert!(
            max_rel(&dx1, &dx2) < 1e-5,
            "{g:?} dx {}",
            max_rel(&dx1, &dx2)
        );
        assert!(
            max_rel(&dw1, &dw2) < 1e-4,
            "{g:?} dw {}",
            max_rel(&dw1, &dw2)
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn geom(
        n: usize,
        cin: usize,
        hw: [usize; 2],
        cout: usize,
        k: usize,
        s: usize,
        p: usize,
        groups: usize,
    ) -> Geom {
        Geom {
            n,
            cin,
            h: hw[0],
            w: hw[1],
            cout,
            kh: k,
            kw: k,
            stride: [s, s],
            pad: [p, p],
            dilation: [1, 1],
            groups,
        }
    }

    #[test]
    fn convolutions_match_burn_values_and_gradients() {
        check(geom(2, 3, [17, 13], 8, 3, 2, 1, 1)); // stem-like: own forward
        check(geom(2, 8, [9, 11], 6, 1, 1, 0, 1)); // pointwise: no im2col
        check(geom(3, 6, [10, 10], 4, 3, 1, 1, 1));
        check(geom(2, 6, [11, 9], 8, 3, 2, 1, 2)); // grouped
        check(geom(2, 5, [12, 12], 5, 3, 1, 1, 5)); // depthwise
        check(geom(2, 4, [13, 11], 4, 5, 2, 2, 4)); // depthwise, stride 2
        check(geom(1, 4, [7, 8], 3, 3, 1, 0, 1)); // no padding
        check(geom(2, 16, [20, 20], 24, 3, 2, 1, 1)); // own weight gradient, bigger
                                                      // several row blocks per image; stride-2 rows long enough for the 16-wide copies, odd
                                                      // width (the last tap's source row ends before 2·ow)
        let blocked = [
            geom(1, 3, [80, 80], 4, 3, 1, 1, 1),
            geom(2, 16, [72, 71], 8, 3, 2, 1, 1),
        ];
        for g in blocked {
            assert!(row_blocks(&g).count() > 1, "{g:?} is one block");
            check(g);
        }
        check(geom(1, 6, [66, 67], 5, 3, 2, 1, 1));
        // 5×5 "same": a tap's rows shifted by up to two columns and two rows
        check(geom(2, 3, [9, 7], 4, 5, 1, 2, 1));
        // layers big enough that the work is split inside an image: the forward's output
        // channels, the weight gradient's rows, the input gradient's channels (strided: its own
        // kernel)
        // one image at 20²: the forward splits its rows, which the default blocking keeps whole
        for one in [
            geom(1, 32, [20, 20], 64, 3, 1, 1, 1),
            geom(1, 64, [20, 20], 48, 1, 1, 0, 1),
        ] {
            assert_eq!(row_blocks(&one).count(), 1);
            assert!(forward_rows_per_block(&one) < 20, "{one:?}");
            check(one);
        }
        let wide = geom(2, 80, [20, 20], 128, 3, 1, 1, 1);
        assert!(rows_per_task(128, 2, 64) < 128);
        assert!(rows_per_task(720, 2, 128) < 720);
        check(wide);
        let strided = geom(2, 80, [40, 40], 48, 3, 2, 1, 1);
        assert!(input_channels_per_task(&strided) < 80);
        check(strided);
        // a 1×1 layer's input gradient: a 1×1 convolution of ∂L/∂Y, split as a forward
        let pointwise = geom(1, 256, [40, 40], 48, 1, 1, 0, 1);
        assert!(transposed(&vec![0.0; 48 * 256], &pointwise).is_some());
        check(pointwise);
        // few images and one block an image: the weight gradient's spans of narrower blocks
        let few = geom(2, 64, [20, 20], 32, 1, 1, 0, 1);
        assert_eq!(row_blocks(&few).count(), 1);
        assert!(blocks_of(few.oh(), span_rows(&few, 8)).count() > 1);
        check(few);
        let mut dil = geom(1, 3, [12, 12], 4, 3, 1, 2, 1);
        dil.dilation = [2, 2];
        check(dil);
        let mut rect = geom(2, 4, [9, 14], 4, 3, 1, 1, 1);
        rect.kh = 1;
        rect.pad = [0, 1];
        check(rect);
    }

    #[test]
    fn inference_forward_matches_flex() {
        let dev = burn::tensor::Device::flex();
        let g = geom(2, 3, [15, 15], 4, 3, 2, 1, 1);
        let x = Tensor::<4>::random([2, 3, 15, 15], Distribution::Normal(0.0, 1.0), &dev);
        let w = Tensor::<4>::random([4, 3, 3, 3], Distribution::Normal(0.0, 1.0), &dev);
        let ours = values(conv_flex(&x, &w, None, &g).unwrap());
        let want = values(burn::tensor::module::conv2d(x, w, None, g.options()));
        assert!(max_rel(&ours, &want) < 1e-5);
    }

    #[test]
    fn module_with_bias_matches_burn_conv2d_module() {
        use burn::nn::conv::Conv2dConfig;
        let dev = crate::device();
        let conv = Conv2dConfig::new([3, 4], [3, 3])
            .with_stride([2, 2])
            .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
            .with_bias(true)
            .init(&dev);
        let x0 = Tensor::<4>::random([2, 3, 9, 8], Distribution::Normal(0.0, 1.0), &dev);
        let run = |ours: bool| {
            let x = x0.clone().detach().require_grad();
            let y = if ours {
                conv2d(&conv, x.clone())
            } else {
                conv.forward(x.clone())
            };
            let grads = (y.clone() * y.clone()).sum().backward();
            let db = conv.bias.as_ref().unwrap().val().grad(&grads).unwrap();
            let dw = conv.weight.val().grad(&grads).unwrap();
            let dx = x.grad(&grads).unwrap();
            (values(y), values(dx), values(db), values(dw))
        };
        let (a, r) = (run(true), run(false));
        assert!(max_rel(&a.0, &r.0) < 1e-5, "output");
        assert!(max_rel(&a.1, &r.1) < 1e-5, "∂L/∂x");
        assert!(max_rel(&a.2, &r.2) < 1e-5, "∂L/∂b");
        assert!(max_rel(&a.3, &r.3) < 1e-5, "∂L/∂W");
    }

    #[test]
    fn channel_slices_are_read_in_place_and_match_burn() {
        let dev = crate::device();
        for (k, groups, cout) in [(1, 1, 4), (3, 1, 4), (3, 3, 3)] {
            let g = geom(2, 3, [7, 6], cout, k, 1, k / 2, groups);
            let full0 = Tensor::<4>::random([2, 7, 7, 6], Distribution::Normal(0.0, 1.0), &dev);
            let w0 = Tensor::<4>::random(
                [cout, 3 / groups, k, k],
                Distribution::Normal(0.0, 0.5),
                &dev,
            );
            let run = |ours: bool| {
                let full = full0.clone().detach().require_grad();
                let w = w0.clone().detach().require_grad();
                let x = full.clone().slice([0..2, 2..5]);
                if ours {
                    let xp = x.clone().try_into_primitive::<Ad>().unwrap();
                    assert!(
                        Images::of(xp.primitive()).is_some(),
                        "a channel slice is read in place"
                    );
                }
                let y = if ours {
                    conv_flex(&x, &w, None, &g).unwrap()
                } else {
                    burn::tensor::module::conv2d(x, w.clone(), None, g.options())
                };
                let grads = (y.clone() * y.clone()).sum().backward();
                (
                    values(y),
                    values(full.grad(&grads).unwrap()),
                    values(w.grad(&grads).unwrap()),
                )
            };
            let (a, r) = (run(true), run(false));
            assert!(max_rel(&a.0, &r.0) < 1e-5, "k {k}: y");
            assert!(max_rel(&a.1, &r.1) < 1e-5, "k {k}: dx");
            assert!(max_rel(&a.2, &r.2) < 1e-4, "k {k}: dw");
        }
    }

    #[test]
    fn valid_ranges() {
        // len 5, stride 1, offset −1 (pad 1): outputs 1..6 read inside
        assert_eq!(valid_range(5, -1, 1, 5), (1, 5));
        assert_eq!(valid_range(5, 1, 1, 5), (0, 4));
        assert_eq!(valid_range(5, -1, 2, 3), (1, 3));
        assert_eq!(valid_range(2, 3, 1, 4), (0, 0));
        assert_eq!(valid_range(4, -9, 1, 3), (3, 3));
    }
}
