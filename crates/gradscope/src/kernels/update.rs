//! The labs' optimizer update ([`crate::train::optim`]) as one pass over each parameter: the
//! weight, its gradient and the optimizer's moments are read once and the new ones written; the
//! gradient is clipped on the way (a scale and a bound, not a pass of their own), its ‖g‖² summed
//! (the step's gradient norm, no pass of its own either), and on a probed step ‖W‖² and ‖ΔW‖² —
//! what the probe otherwise read in three more passes (a snapshot's norm, then the difference of
//! the old and new weights).
//!
//! Each rule is burn 0.22.1's optimizer of the same name operation by operation in f32 (the same
//! products, quotients and roundings in the same order), so the new weights are the bits burn's
//! `Sgd`, `Adam` and `AdamW` give; `train::optim`'s tests hold them equal, and to PyTorch's
//! optimizers within rounding.

use std::mem::MaybeUninit;

use burn::backend::Flex;
use burn::tensor::Tensor;

use super::host::{contiguous, tensor, values};

/// One element's update, every coefficient already in f32 as burn rounds it.
#[derive(Clone, Copy, Debug)]
pub enum Rule {
    /// w − g·lr.
    Sgd { lr: f32 },
    /// v = g + v·μ (v = g at the first step: v starts at zero); w − v·lr.
    Momentum { lr: f32, mu: f32 },
    /// m = m·β₁ + g·(1−β₁), v = v·β₂ + g²·(1−β₂) (from zero); w − (m·cf)/(√v + eps)·lr with
    /// cf = √(1−β₂ᵗ)/(1−β₁ᵗ) and eps = ε·√(1−β₂ᵗ) (burn's `Adam`).
    Adam {
        lr: f32,
        b1: f32,
        f1: f32,
        b2: f32,
        f2: f32,
        cf: f32,
        eps: f32,
    },
    /// m, v as Adam; w·keep − ((m/c1)/(√(v/c2) + ε))·lr with c1 = 1−β₁ᵗ, c2 = 1−β₂ᵗ and
    /// keep = 1 − lr·λ (burn's `AdamW`: decoupled weight decay).
    AdamW {
        lr: f32,
        b1: f32,
        f1: f32,
        b2: f32,
        f2: f32,
        c1: f32,
        c2: f32,
        eps: f32,
        keep: f32,
    },
    /// The detection optimizer's SGD (PyTorch's `SGD(nesterov=True)` with weight decay):
    /// d = g + w·λ (g when λ = 0), b = b·μ + d (d at the first step), w − (d + b·μ)·lr.
    Nesterov {
        lr: f32,
        mu: f32,
        decay: f32,
        first: bool,
    },
    /// The detection optimizer's AdamW (PyTorch's): m = m·β₁ + g·(1−β₁), v = v·β₂ + g²·(1−β₂)
    /// (from zero), w·keep − (m / (√(v/c2) + ε))·step with c2 = 1−β₂ᵗ, step = lr/(1−β₁ᵗ) and
    /// keep = 1 − lr·λ.
    TorchAdamW {
        b1: f32,
        f1: f32,
        b2: f32,
        f2: f32,
        c2: f32,
        eps: f32,
        keep: f32,
        step: f32,
    },
}

impl Rule {
    /// How many moment tensors the rule keeps per parameter (0, 1 or 2).
    pub fn moments(self) -> usize {
        match self {
            Rule::Sgd { .. } => 0,
            Rule::Momentum { .. } | Rule::Nesterov { .. } => 1,
            Rule::Adam { .. } | Rule::AdamW { .. } | Rule::TorchAdamW { .. } => 2,
        }
    }
}

/// What is done to the gradient before the update: g ← clamp(g·scale, −limit, limit), burn's
/// `mul_scalar` then `clamp` (clipping by norm, then by value).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clip {
    pub scale: f32,
    pub limit: f32,
}

impl Clip {
    /// Leaves the gradient as it is (×1 and ±∞ change no finite value).
    pub const NONE: Clip = Clip {
        scale: 1.0,
        limit: f32::INFINITY,
    };

    /// The clipped gradient from burn's operations (`mul_scalar` then `clamp`: the bits the
    /// update pass gives), for the paths that do not go through it; `g` itself when nothing is
    /// clipped.
    pub fn composed(self, g: Tensor<1>) -> Tensor<1> {
        if self == Clip::NONE {
            g
        } else {
            g.mul_scalar(self.scale).clamp(-self.limit, self.limit)
        }
    }
}

/// A parameter after one update.
pub struct Updated {
    pub w: Tensor<1>,
    /// The new moments (as many as [`Rule::moments`]).
    pub moments: Vec<Tensor<1>>,
    /// ‖g‖² of the gradient as it came, before clipping (summed in f64: non-finite exactly when
    /// an element is).
    pub g_sq: f64,
    /// ‖W‖² before the step and ‖ΔW‖² = ‖W_new − W‖² (in f32 differences, as a probe reading
    /// both tensors computes it); NaN when not measured.
    pub w_sq: f64,
    pub delta_sq: f64,
}

/// Elements per task: big parameters are updated on every thread in blocks of this size, small
/// ones on the calling thread (a fork for a 256-element bias costs more than its update).
const BLOCK: usize = 1 << 15;

/// The update of `w` (flattened) with gradient `g` and the moments of the previous step (`None`
/// before the first: zeros), measuring ‖W‖² and ‖ΔW‖² when `measure`. The new weights go into
/// the gradient's own buffer when nothing else holds it (it is read once, just before; a fresh
/// buffer otherwise), the moments into new buffers (a copy of the optimizer kept for NaN
/// recovery still holds the old ones). `Err(g)` when a tensor is not an f32 flex tensor (the
/// caller then composes the update from burn's operations; boxed: a tensor is a large value).
pub fn update(
    rule: Rule,
    clip: Clip,
    w: &Tensor<1>,
    g: Tensor<1>,
    moments: Option<&[Tensor<1>]>,
    measure: bool,
) -> Result<Updated, Box<Tensor<1>>> {
    let flex = |t: &Tensor<1>| contiguous(&t.clone().try_into_primitive::<Flex>().ok()?);
    let k = rule.moments();
    let (Some(wf), Some(gcheck)) = (flex(w), flex(&g)) else {
        return Err(Box::new(g));
    };
    let Some(mf) = (match moments {
        Some(ms) if ms.len() == k => ms.iter().map(flex).collect::<Option<Vec<_>>>(),
        _ => Some(Vec::new()),
    }) else {
        return Err(Box::new(g));
    };
    let wv = values(&wf);
    let n = wv.len();
    let ms: Vec<&[f32]> = mf.iter().map(values).collect();
    if gcheck.layout().num_elements() != n || ms.iter().any(|m| m.len() != n) {
        return Err(Box::new(g));
    }
    // the gradient's own primitive: unique once `g` and the check's handle are dropped, unless
    // something else still holds it
    drop(g);
    let mut gp = gcheck;
    let in_place = gp.is_unique() && gp.layout().contiguous_offsets() == Some((0, n));
    let mut fresh: Vec<f32> = Vec::new();
    let (g_ptr, w_out): (*const f32, *mut f32) = if in_place {
        let buf = gp.storage_mut::<f32>().as_mut_ptr();
        (buf, buf)
    } else {
        fresh.reserve_exact(n);
        (values(&gp).as_ptr(), fresh.as_mut_ptr())
    };
    let m = ms.first().copied().unwrap_or(&[]);
    let v = ms.get(1).copied().unwrap_or(&[]);
    let mut moments_out: Vec<Vec<f32>> = (0..k).map(|_| Vec::with_capacity(n)).collect();
    let mut sums = {
        let mut slots: Vec<Slot> = moments_out
            .iter_mut()
            .map(|r| &mut r.spare_capacity_mut()[..n])
            .collect();
        let input = Inputs {
            w: wv,
            g: Out(g_ptr as *mut f32),
            m,
            v,
        };
        write_all(rule, clip, input, Out(w_out), &mut slots, measure)
    };
    for r in moments_out.iter_mut() {
        // SAFETY: write_all initialised all n elements of every moment's output.
        unsafe { r.set_len(n) };
    }
    let w_new = if in_place {
        gp
    } else {
        // SAFETY: write_all wrote all n new weights through `w_out`, into `fresh`'s capacity.
        unsafe { fresh.set_len(n) };
        tensor(fresh, [n])
    };
    if !measure {
        (sums[1], sums[2]) = (f64::NAN, f64::NAN);
    }
    let to_tensor = |v: Vec<f32>| Tensor::from_primitive::<Flex>(tensor(v, [n]));
    Ok(Updated {
        w: Tensor::from_primitive::<Flex>(w_new),
        moments: moments_out.into_iter().map(to_tensor).collect(),
        g_sq: sums[0],
        w_sq: sums[1],
        delta_sq: sums[2],
    })
}

/// A raw pointer into a buffer handed to the tasks; each task reads or writes its own block only.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the tasks that receive an `Out` use disjoint index ranges of a buffer that outlives
// them (the parallel iterator joins before `write_all` returns).
unsafe impl Send for Out {}
// SAFETY: as for Send: shared between tasks that write disjoint ranges.
unsafe impl Sync for Out {}

impl Out {
    /// The pointer `i` elements on (a method, so that closures capture the `Out`, not the raw
    /// pointer inside it).
    ///
    /// # Safety
    /// `i` must lie within the buffer.
    unsafe fn at(self, i: usize) -> Out {
        // SAFETY: the caller keeps i within the buffer.
        Out(unsafe { self.0.add(i) })
    }
}

/// An output buffer, or one block of it.
type Slot<'a> = &'a mut [MaybeUninit<f32>];

/// The inputs of an update: weight, gradient (a pointer: the new weights may be written over
/// it) and the two moments (empty when absent).
#[derive(Clone, Copy)]
struct Inputs<'a> {
    w: &'a [f32],
    g: Out,
    m: &'a [f32],
    v: &'a [f32],
}

impl<'a> Inputs<'a> {
    /// Elements `r` of each input (an empty one stays empty).
    fn part(self, r: std::ops::Range<usize>) -> Self {
        let cut = |s: &'a [f32]| if s.is_empty() { s } else { &s[r.clone()] };
        Inputs {
            w: cut(self.w),
            // SAFETY: r lies within the n elements the pointer addresses.
            g: unsafe { self.g.at(r.start) },
            m: cut(self.m),
            v: cut(self.v),
        }
    }

    /// The inputs with their outputs: the new weights through `w_out`, the moments into `outs`
    /// (empty where the rule has none).
    fn with<'o>(self, clip: Clip, w_out: Out, outs: &'o mut [Slot<'_>]) -> Io<'o>
    where
        'a: 'o,
    {
        let (m_out, v_out): (Slot, Slot) = match outs {
            [] => (&mut [], &mut []),
            [m] => (m, &mut []),
            [m, v, ..] => (m, v),
        };
        Io {
            clip,
            w: self.w,
            g: self.g.0,
            m: self.m,
            v: self.v,
            w_out: w_out.0,
            m_out,
            v_out,
        }
    }
}

/// Runs the update over all of `w`, in parallel blocks for big parameters, writing every new
/// weight through `w_out` and every element of every slice in `outs` (the moments). Returns
/// [‖g‖², ‖W‖², ‖ΔW‖²], summed block by block in order (the same bits whatever the number of
/// threads).
fn write_all(
    rule: Rule,
    clip: Clip,
    input: Inputs,
    w_out: Out,
    outs: &mut [Slot<'_>],
    measure: bool,
) -> [f64; 3] {
    use rayon::prelude::*;
    let n = input.w.len();
    if n <= BLOCK {
        return block(rule, input.with(clip, w_out, outs), measure);
    }
    let ptrs: Vec<Out> = outs
        .iter_mut()
        .map(|o| Out(o.as_mut_ptr().cast()))
        .collect();
    let sums: Vec<[f64; 3]> = (0..n.div_ceil(BLOCK))
        .into_par_iter()
        .map(|b| {
            let r = b * BLOCK..((b + 1) * BLOCK).min(n);
            let mut mine: Vec<Slot> = ptrs
                .iter()
                // SAFETY: every output holds n elements; the blocks' ranges are disjoint, so no
                // two tasks make a slice over the same elements.
                .map(|p| unsafe {
                    std::slice::from_raw_parts_mut(p.0.add(r.start).cast(), r.len())
                })
                .collect();
            // SAFETY: as above, for the new weights.
            let w_out = unsafe { w_out.at(r.start) };
            block(rule, input.part(r).with(clip, w_out, &mut mine), measure)
        })
        .collect();
    sums.iter()
        .fold([0.0; 3], |a, s| [a[0] + s[0], a[1] + s[1], a[2] + s[2]])
}

crate::kernels::simd::multiversion! {
    /// One block: the rule's loop, with or without the sums (`madd` is this build's: fused where
    /// the CPU has FMA).
    fn block(rule: Rule, io: Io<'_>, measure: bool) -> [f64; 3] {
        match (rule, measure) {
            (Rule::Sgd { lr }, false) => io.sweep::<false>(madd, |w, g, _, _| (w - g * lr, 0.0, 0.0)),
            (Rule::Sgd { lr }, true) => io.sweep::<true>(madd, |w, g, _, _| (w - g * lr, 0.0, 0.0)),
            (Rule::Momentum { lr, mu }, false) => io.sweep::<false>(madd, |w, g, m, _| momentum(w, g, m, lr, mu)),
            (Rule::Momentum { lr, mu }, true) => io.sweep::<true>(madd, |w, g, m, _| momentum(w, g, m, lr, mu)),
            (Rule::Adam { lr, b1, f1, b2, f2, cf, eps }, false) => {
                io.sweep::<false>(madd, |w, g, m, v| adam(w, g, m, v, [lr, b1, f1, b2, f2, cf, eps]))
            }
            (Rule::Adam { lr, b1, f1, b2, f2, cf, eps }, true) => {
                io.sweep::<true>(madd, |w, g, m, v| adam(w, g, m, v, [lr, b1, f1, b2, f2, cf, eps]))
            }
            (Rule::AdamW { lr, b1, f1, b2, f2, c1, c2, eps, keep }, false) => io.sweep::<false>(madd,
                |w, g, m, v| adamw(w, g, m, v, [lr, b1, f1, b2, f2, c1, c2, eps, keep]),
            ),
            (Rule::AdamW { lr, b1, f1, b2, f2, c1, c2, eps, keep }, true) => io.sweep::<true>(madd,
                |w, g, m, v| adamw(w, g, m, v, [lr, b1, f1, b2, f2, c1, c2, eps, keep]),
            ),
            (Rule::Nesterov { lr, mu, decay, first }, measure) => {
                let f = |w: f32, g: f32, b: f32, _| nesterov(w, g, b, [lr, mu, decay], first);
                if measure { io.sweep::<true>(madd, f) } else { io.sweep::<false>(madd, f) }
            }
            (Rule::TorchAdamW { b1, f1, b2, f2, c2, eps, keep, step }, measure) => {
                let f = |w, g, m, v| torch_adamw(w, g, m, v, [b1, f1, b2, f2, c2, eps, keep, step]);
                if measure { io.sweep::<true>(madd, f) } else { io.sweep::<false>(madd, f) }
            }
        }
    }
}

#[inline(always)]
fn momentum(w: f32, g: f32, m: f32, lr: f32, mu: f32) -> (f32, f32, f32) {
    let m = g + m * mu;
    (w - m * lr, m, 0.0)
}

/// burn's `Adam`: the coefficients are [lr, β₁, 1−β₁, β₂, 1−β₂, cf, eps] of [`Rule::Adam`].
#[inline(always)]
fn adam(w: f32, g: f32, m: f32, v: f32, c: [f32; 7]) -> (f32, f32, f32) {
    let [lr, b1, f1, b2, f2, cf, eps] = c;
    let (m, v) = (m * b1 + g * f1, v * b2 + (g * g) * f2);
    (w - (m * cf) / (v.sqrt() + eps) * lr, m, v)
}

/// burn's `AdamW`: the coefficients are [lr, β₁, 1−β₁, β₂, 1−β₂, c1, c2, ε, keep] of
/// [`Rule::AdamW`].
#[inline(always)]
fn adamw(w: f32, g: f32, m: f32, v: f32, c: [f32; 9]) -> (f32, f32, f32) {
    let [lr, b1, f1, b2, f2, c1, c2, eps, keep] = c;
    let (m, v) = (m * b1 + g * f1, v * b2 + (g * g) * f2);
    (w * keep - (m / c1) / ((v / c2).sqrt() + eps) * lr, m, v)
}

/// [`Rule::Nesterov`]: the coefficients are [lr, μ, λ]; the buffer is d itself at the first step.
#[inline(always)]
fn nesterov(w: f32, g: f32, b: f32, c: [f32; 3], first: bool) -> (f32, f32, f32) {
    let [lr, mu, decay] = c;
    let d = if decay > 0.0 { g + w * decay } else { g };
    let b = if first { d } else { b * mu + d };
    (w - (d + b * mu) * lr, b, 0.0)
}

/// [`Rule::TorchAdamW`]: the coefficients are [β₁, 1−β₁, β₂, 1−β₂, c2, ε, keep, step].
#[inline(always)]
fn torch_adamw(w: f32, g: f32, m: f32, v: f32, c: [f32; 8]) -> (f32, f32, f32) {
    let [b1, f1, b2, f2, c2, eps, keep, step] = c;
    let (m, v) = (m * b1 + g * f1, v * b2 + (g * g) * f2);
    (w * keep - m / ((v / c2).sqrt() + eps) * step, m, v)
}

/// One block's inputs (a moment slice is empty before the first step: zeros) and outputs (empty
/// where the rule keeps no such moment). `g` and `w_out` address `w.len()` elements each and may
/// be the same buffer (the new weights written over the gradient): each element of `g` is read
/// before the same element of `w_out` is written, and no reference is made to either.
struct Io<'a> {
    clip: Clip,
    w: &'a [f32],
    g: *const f32,
    m: &'a [f32],
    v: &'a [f32],
    w_out: *mut f32,
    m_out: &'a mut [MaybeUninit<f32>],
    v_out: &'a mut [MaybeUninit<f32>],
}

/// Lanes of the inner loop: 16 elements at a time, updated lane by lane in fixed-length loops
/// that the compiler vectorises; the squares of the weights and steps are summed in f32 lanes
/// (a fused multiply-add each where the CPU has FMA) over runs of 1024 elements and those runs
/// in f64, the gradient's in f64 lanes.
const LANES: usize = 16;

/// Zeros for a moment that has no value yet (the first step).
const ZEROS: [f32; LANES] = [0.0; LANES];

impl Io<'_> {
    #[inline(always)]
    fn sweep<const MEASURE: bool>(
        self,
        madd: impl Fn(f32, f32, f32) -> f32,
        f: impl Fn(f32, f32, f32, f32) -> (f32, f32, f32),
    ) -> [f64; 3] {
        let n = self.w.len();
        let (has_m, has_v) = (!self.m.is_empty(), !self.v.is_empty());
        let (out_m, out_v) = (!self.m_out.is_empty(), !self.v_out.is_empty());
        let Clip { scale, limit } = self.clip;
        let clip = |g: f32| (g * scale).max(-limit).min(limit);
        let mut sums = [0f64; 3];
        // ‖g‖² in f64 lanes: a finite gradient's squares never overflow there, so the step's
        // norm is non-finite exactly when an element is
        let mut gl = [0f64; LANES];
        let (mut wl, mut dl) = (ZEROS, ZEROS);
        let full = n / LANES * LANES;
        let mut i = 0;
        while i < full {
            let lanes = |s: &[f32]| -> [f32; LANES] { s[i..i + LANES].try_into().unwrap() };
            let w = lanes(self.w);
            // SAFETY: i + 16 ≤ n elements of the gradient (see `Io`).
            let g: [f32; LANES] = unsafe { self.g.add(i).cast::<[f32; LANES]>().read_unaligned() };
            let m = if has_m { lanes(self.m) } else { ZEROS };
            let v = if has_v { lanes(self.v) } else { ZEROS };
            let (mut wo, mut mo, mut vo) = (ZEROS, ZEROS, ZEROS);
            for j in 0..LANES {
                (wo[j], mo[j], vo[j]) = f(w[j], clip(g[j]), m[j], v[j]);
                gl[j] += (g[j] as f64) * (g[j] as f64);
                if MEASURE {
                    let d = wo[j] - w[j];
                    wl[j] = madd(w[j], w[j], wl[j]);
                    dl[j] = madd(d, d, dl[j]);
                }
            }
            // SAFETY: i + 16 ≤ n elements; this chunk of the gradient was read above.
            unsafe { self.w_out.add(i).cast::<[f32; LANES]>().write_unaligned(wo) };
            if out_m {
                store(&mut self.m_out[i..i + LANES], &mo);
            }
            if out_v {
                store(&mut self.v_out[i..i + LANES], &vo);
            }
            i += LANES;
            if i % 1024 == 0 || i == full {
                sums[0] += std::mem::take(&mut gl).iter().sum::<f64>();
                for (sum, lanes) in sums[1..].iter_mut().zip([&mut wl, &mut dl]) {
                    *sum += std::mem::take(lanes).iter().sum::<f32>() as f64;
                }
            }
        }
        // the last n % 16 elements, one by one
        for i in full..n {
            let m = if has_m { self.m[i] } else { 0.0 };
            let v = if has_v { self.v[i] } else { 0.0 };
            // SAFETY: i < n (see `Io`); the gradient's element is read before the weight's is
            // written over it.
            let g = unsafe { self.g.add(i).read() };
            let w = self.w[i];
            let (a, b, c) = f(w, clip(g), m, v);
            // SAFETY: as above.
            unsafe { self.w_out.add(i).write(a) };
            if out_m {
                self.m_out[i].write(b);
            }
            if out_v {
                self.v_out[i].write(c);
            }
            sums[0] += (g as f64) * (g as f64);
            if MEASURE {
                sums[1] += (w as f64) * (w as f64);
                sums[2] += ((a - w) as f64) * ((a - w) as f64);
            }
        }
        sums
    }
}

/// Writes 16 values into a slice of 16 slots.
#[inline(always)]
fn store(out: &mut [MaybeUninit<f32>], x: &[f32; LANES]) {
    let out: &mut [MaybeUninit<f32>; LANES] = out.try_into().unwrap();
    for j in 0..LANES {
        out[j].write(x[j]);
    }
}
