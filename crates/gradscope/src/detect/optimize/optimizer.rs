//! The detection optimizer with three parameter groups, as YOLO trainers use them:
//! pg0 = conv/linear weights (with weight decay), pg1 = normalisation weights (γ, no decay),
//! pg2 = biases and β (no decay). Each group has its own learning rate (warmup ramps the bias group
//! down from 0.1 while the others ramp up from 0) and the momentum is set per step.
//!
//! SGD follows PyTorch's `SGD(nesterov=True)`: d = g + λw; b = μb + d (b = d at the first step);
//! w −= lr·(d + μb). AdamW follows PyTorch's `AdamW`: w −= lr·λ·w; m, v with β₁ = momentum,
//! β₂ = 0.999, bias-corrected, ε = 1e-8.
//!
//! MuSGD (as Ultralytics describes its hybrid): every 2-D and 4-D weight first takes a Muon step —
//! m = μm + (1−μ)g, u = μm + (1−μ)g (Nesterov), u reshaped to rows × (rest), orthogonalised by five
//! quintic Newton–Schulz iterations (a, b, c = 3.4445, −4.7750, 2.0315; Jordan et al. 2024) and
//! scaled by √max(1, rows/cols); w −= 0.2·lr·O — then the SGD step above with its own buffer and
//! the decay; other parameters take the SGD step only. The class heads' parameters (`cv3`,
//! `one2one_cv3`) use 3× the learning rate. Newton–Schulz runs in f32 here (bf16 in the
//! reference).

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{DispatchTensor, Tensor};

use super::ema::{blend, Ema};
use crate::choice::choice;
use crate::kernels::update::{Clip, Rule};
use crate::probe::params::{diff_norm, norm_sq, Measured};
use crate::train::optim::apply;

choice! {
    /// The detection optimizer.
    pub enum DetOptimizer ("optimizer") {
        /// AdamW when the run has at most 10 000 iterations (lr 0.002·5/(4+nc)), else MuSGD
        /// (lr 0.01); momentum 0.9 either way; `lr0` and `momentum` are ignored.
        Auto = "auto",
        /// SGD with Nesterov momentum.
        Sgd = "SGD",
        /// AdamW (decoupled weight decay).
        Adamw = "AdamW",
        /// Muon (orthogonalised momentum, 0.2·lr) plus SGD on conv/linear weights, SGD elsewhere.
        Musgd = "MuSGD",
    }
}

/// Per-group settings for one step.
#[derive(Clone, Copy, Debug)]
pub struct GroupLr {
    /// Learning rates of pg0, pg1, pg2.
    pub lr: [f64; 3],
    pub momentum: f64,
    /// Weight decay of pg0 (the others have none).
    pub weight_decay: f64,
}

#[derive(Clone)]
struct State {
    m: Tensor<1>,
    v: Option<Tensor<1>>,
    t: i32,
}

/// Optimizer state; cheap to clone (tensors are reference-counted), so a copy serves NaN recovery.
#[derive(Clone)]
pub struct GroupOptimizer {
    pub adamw: bool,
    /// MuSGD instead of SGD (ignored with `adamw`).
    pub muon: bool,
    states: HashMap<ParamId, State>,
}

/// Quintic Newton–Schulz orthogonalisation of a rows × cols matrix (normalised first).
pub fn newton_schulz(g: Tensor<2>) -> Tensor<2> {
    let [r, c] = g.dims();
    let norm = g.clone().powf_scalar(2.0).sum().sqrt().into_scalar::<f64>();
    let mut x = g / (norm + 1e-7);
    let tall = r > c;
    if tall {
        x = x.transpose();
    }
    let (a, b, cc) = (3.4445, -4.7750, 2.0315);
    for _ in 0..5 {
        let am = x.clone().matmul(x.clone().transpose());
        let bm = am.clone() * b + am.clone().matmul(am) * cc;
        x = x.clone() * a + bm.matmul(x);
    }
    if tall {
        x.transpose()
    } else {
        x
    }
}

/// The group of a parameter from its module path: `bias`/`beta` → 2, a 1-D `gamma`/`weight` → 1,
/// anything else → 0.
pub fn group_of(path: &[String], rank: usize) -> usize {
    match path.last().map(String::as_str) {
        Some("bias") | Some("beta") => 2,
        Some("gamma") => 1,
        Some("weight") if rank == 1 => 1,
        _ => 0,
    }
}

/// What one parameter's update needs besides its weight and state: its group, whether it is in
/// a class head, its shape's first dimension and rank (Muon's matrix) and its flattened gradient.
struct Job {
    group: usize,
    head: bool,
    rank: usize,
    rows: usize,
    g: Tensor<1>,
}

/// One float tensor of the model as the update meets it: its current value, flattened, and, when
/// it has a gradient, its update.
struct Item {
    id: ParamId,
    w: Tensor<1>,
    /// The tensor's shape, and whether it requires a gradient: how its new value goes back.
    shape: Shape,
    tracked: bool,
    job: Option<Job>,
    /// The module path, as the probe names parameters, and the shape (only when gathered for a
    /// measured step).
    path: Option<(String, Vec<usize>)>,
}

/// The model's float tensors in visiting order, with the gradients of those that have one: what
/// [`GroupOptimizer::apply`] updates, gathered in one walk over the model.
pub struct Gathered {
    items: Vec<Item>,
}

impl Gathered {
    /// ‖g‖ over the gathered gradients (NaN/∞ when a gradient is): the bits of
    /// [`crate::train::clip::global_norm`] of the same gradients.
    pub fn global_norm(&self) -> f64 {
        let grads: Vec<&Tensor<1>> = self
            .items
            .iter()
            .filter_map(|i| i.job.as_ref().map(|j| &j.g))
            .collect();
        crate::train::clip::sum_sq_of(&grads, true).sqrt()
    }
}

/// A parameter's shape, up to the rank 4 every parameter of these models has (`rank` 0: a
/// higher rank, whose new value the walk that puts it back shapes itself).
#[derive(Clone, Copy)]
struct Shape {
    dims: [usize; 4],
    rank: usize,
}

impl Shape {
    fn of(dims: &[usize]) -> Self {
        let mut s = Shape {
            dims: [0; 4],
            rank: 0,
        };
        if dims.len() <= 4 {
            s.dims[..dims.len()].copy_from_slice(dims);
            s.rank = dims.len();
        }
        s
    }
}

/// A parameter's new value on its way back into the model.
enum NewWeight {
    /// In the parameter's shape, on the autodiff side and requiring a gradient when the old value
    /// did: made in the update's parallel task (burn's per-tensor work of a reshape and of
    /// registering a leaf), so that the walk that puts it back only places it. Rank-erased.
    Ready(DispatchTensor),
    /// Flat: a rank the task does not shape, shaped in that walk.
    Flat(Tensor<1>),
}

impl NewWeight {
    fn new(w: Tensor<1>, shape: Shape, tracked: bool) -> Self {
        fn ready<const D: usize>(w: Tensor<1>, dims: &[usize], tracked: bool) -> NewWeight {
            let mut shape = [0; D];
            shape.copy_from_slice(&dims[..D]);
            let t = Tensor::<D>::from_inner(w.reshape(shape));
            let t = if tracked { t.require_grad() } else { t };
            NewWeight::Ready(t.into_dispatch())
        }
        match shape.rank {
            1 => ready::<1>(w, &shape.dims, tracked),
            2 => ready::<2>(w, &shape.dims, tracked),
            3 => ready::<3>(w, &shape.dims, tracked),
            4 => ready::<4>(w, &shape.dims, tracked),
            _ => NewWeight::Flat(w),
        }
    }
}

/// Walks the model once: every float tensor, and the gradient of each that has one.
struct Gather<'a> {
    grads: &'a mut GradientsParams,
    path: Vec<String>,
    items: Vec<Item>,
    named: bool,
}

impl ModuleVisitor for Gather<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = param.val();
        let dims: [usize; D] = tensor.dims();
        let n: usize = dims.iter().product();
        let job = self.grads.remove::<D>(param.id).map(|grad| Job {
            group: group_of(&self.path, D),
            head: self.path.iter().any(|p| p == "cv3" || p == "one2one_cv3"),
            rank: D,
            rows: dims.first().copied().unwrap_or(1),
            g: grad.reshape([n]),
        });
        let tracked = tensor.is_require_grad();
        // the probe names every trainable parameter, one without a gradient (frozen) too
        let named = self.named && (job.is_some() || tracked);
        self.items.push(Item {
            id: param.id,
            shape: Shape::of(&dims),
            tracked,
            w: tensor.inner().reshape([n]),
            path: named.then(|| (self.path.join("."), dims.to_vec())),
            job,
        });
    }
}

/// Puts the new weights back, by parameter id, with the gradient requirement they had.
struct Put(HashMap<ParamId, NewWeight>);

impl ModuleMapper for Put {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        let Some(w) = self.0.remove(&id) else {
            return Param::from_mapped_value(id, tensor, mapper);
        };
        put(id, tensor, w, mapper)
    }
}

/// Puts the new weights back in visiting order, the order they were gathered in: each new weight
/// goes to the next parameter when the ids match. What is left unplaced (a model walked in
/// another order than it was visited) then goes back by id with [`Put`].
struct PutInOrder(std::iter::Peekable<std::vec::IntoIter<(ParamId, NewWeight)>>);

impl ModuleMapper for PutInOrder {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (id, tensor, mapper) = param.consume();
        match self.0.next_if(|(next, _)| *next == id) {
            Some((_, w)) => put(id, tensor, w, mapper),
            None => Param::from_mapped_value(id, tensor, mapper),
        }
    }
}

/// One task's result in [`GroupOptimizer::apply`]: the parameter's new weight and state when it
/// was updated, and its blended average when the EMA was.
struct Done {
    up: Option<(ParamId, NewWeight, State)>,
    avg: Option<Tensor<1>>,
    measured: Option<Measured>,
}

/// `model` with the new weights `new` (in visiting order) in place of the old.
fn put_back<M: Module>(model: M, new: Vec<(ParamId, NewWeight)>) -> M {
    let mut put = PutInOrder(new.into_iter().peekable());
    let model = model.map(&mut put);
    let left: HashMap<ParamId, NewWeight> = put.0.collect();
    if left.is_empty() {
        model
    } else {
        model.map(&mut Put(left))
    }
}

/// `w` in place of `tensor`: as it is when the update's task made it ready, else in `tensor`'s
/// shape and requiring a gradient when `tensor` did.
fn put<const D: usize>(
    id: ParamId,
    tensor: Tensor<D>,
    w: NewWeight,
    mapper: burn::module::ParamMapper<Tensor<D>>,
) -> Param<Tensor<D>> {
    let out = match w {
        NewWeight::Ready(t) => {
            let out = Tensor::from_dispatch(t);
            debug_assert_eq!(out.shape(), tensor.shape(), "a new weight of another shape");
            out
        }
        NewWeight::Flat(w) => {
            let out = Tensor::from_inner(w.reshape(tensor.dims()));
            if tensor.is_require_grad() {
                out.require_grad()
            } else {
                out
            }
        }
    };
    Param::from_mapped_value(id, out, mapper)
}

impl GroupOptimizer {
    /// The new weight and state of one parameter: AdamW or the SGD step in one pass over the
    /// parameter ([`crate::train::optim::apply`]: weight, gradient and buffers read once, in
    /// parallel blocks for big parameters; burn's operations off flex), Muon's orthogonalised
    /// step from burn's operations before it.
    /// `clip` scales the gradient on the way in (clipping by the global norm, folded into this
    /// pass instead of a pass of its own).
    fn update(
        &self,
        job: Job,
        w: Tensor<1>,
        st: Option<State>,
        lrs: &GroupLr,
        clip: Clip,
        measure: bool,
    ) -> (Tensor<1>, State, [f64; 3]) {
        let Job {
            group,
            head,
            rank,
            rows,
            g,
        } = job;
        let n = w.dims()[0];
        let musgd = self.muon && !self.adamw;
        let lr = lrs.lr[group] * if musgd && head { 3.0 } else { 1.0 };
        let wd = if group == 0 { lrs.weight_decay } else { 0.0 };
        let mu = lrs.momentum;
        if self.adamw {
            let (moments, t) = match st {
                Some(State { m, v: Some(v), t }) => (Some([m, v]), t + 1),
                _ => (None, 1),
            };
            // the coefficients in f64, rounded to f32 once (as burn's scalar operations do)
            let rule = Rule::TorchAdamW {
                b1: mu as f32,
                f1: (1.0 - mu) as f32,
                b2: 0.999,
                f2: (1.0 - 0.999f64) as f32,
                c2: (1.0 - 0.999f64.powi(t)) as f32,
                eps: 1e-8,
                keep: (1.0 - lr * wd) as f32,
                step: (lr / (1.0 - mu.powi(t))) as f32,
            };
            let up = apply(rule, clip, w, g, moments.as_ref().map(|m| &m[..]), measure);
            let sums = [up.g_sq, up.w_sq, up.delta_sq];
            let mut ms = up.moments.into_iter();
            let (Some(m), v) = (ms.next(), ms.next()) else {
                unreachable!("AdamW keeps two moments")
            };
            return (up.w, State { m, v, t }, sums);
        }
        let muon_param = musgd && (rank == 2 || rank == 4);
        // ‖g‖² of the gradient as it came, for the probe, when Muon's gradient is clipped here
        let raw_g_sq = (measure && muon_param && clip != Clip::NONE).then(|| norm_sq(g.clone()));
        // Muon reads the clipped gradient too: scaled here (burn's `mul_scalar`, the bits the
        // update pass's scaling gives), then the SGD step takes it as it is
        let (g, clip) = if muon_param {
            (clip.composed(g), Clip::NONE)
        } else {
            (g, clip)
        };
        // Muon's two steps are measured around both: ‖W‖ before the first, ‖ΔW‖ after the second
        let before = (measure && muon_param).then(|| w.clone());
        // Muon first (its momentum in `v`), then SGD on the moved weights
        let (w, muon_m) = if muon_param {
            let prev = st
                .as_ref()
                .and_then(|s| s.v.clone())
                .unwrap_or_else(|| g.zeros_like());
            let m = prev * mu + g.clone() * (1.0 - mu);
            let u = m.clone() * mu + g.clone() * (1.0 - mu);
            let cols = n / rows.max(1);
            let o = newton_schulz(u.reshape([rows, cols])).reshape([n]);
            let scale = (rows as f64 / cols as f64).max(1.0).sqrt();
            (w - o * (0.2 * lr * scale), Some(m))
        } else {
            (w, None)
        };
        let rule = Rule::Nesterov {
            lr: lr as f32,
            mu: mu as f32,
            decay: wd as f32,
            first: st.is_none(),
        };
        let prev = st.map(|s| [s.m]);
        let measure_here = measure && before.is_none();
        let up = apply(
            rule,
            clip,
            w,
            g,
            prev.as_ref().map(|m| &m[..]),
            measure_here,
        );
        let mut sums = [raw_g_sq.unwrap_or(up.g_sq), up.w_sq, up.delta_sq];
        if let Some(w0) = before {
            let delta = diff_norm(&w0, &up.w);
            sums[1..].copy_from_slice(&[norm_sq(w0), delta * delta]);
        }
        let Some(b) = up.moments.into_iter().next() else {
            unreachable!("SGD keeps one buffer")
        };
        let state = State {
            m: b,
            v: muon_m,
            t: 0,
        };
        (up.w, state, sums)
    }
}

impl GroupOptimizer {
    pub fn new(adamw: bool) -> Self {
        GroupOptimizer {
            adamw,
            muon: false,
            states: HashMap::new(),
        }
    }

    /// MuSGD: Muon + SGD on 2-D/4-D weights, SGD elsewhere.
    pub fn musgd() -> Self {
        GroupOptimizer {
            muon: true,
            ..Self::new(false)
        }
    }

    /// One update of every parameter that has a gradient in `grads`: the parameters in parallel,
    /// one task each (each parameter's update is independent, so the result does not depend on
    /// the number of threads).
    pub fn step<M: Module>(&mut self, model: M, grads: GradientsParams, g: GroupLr) -> M {
        self.step_clipped(model, grads, g, Clip::NONE)
    }

    /// [`GroupOptimizer::step`] on gradients clipped on the way in: each gradient element scaled
    /// by `clip.scale` and bounded by `clip.limit` inside the update's pass
    /// ([`crate::train::clip::on_update`] makes the clipping by global norm), the same bits as
    /// clipping the gradients first in a pass of their own.
    pub fn step_clipped<M: Module>(
        &mut self,
        model: M,
        grads: GradientsParams,
        g: GroupLr,
        clip: Clip,
    ) -> M {
        let gathered = Self::gather(&model, grads);
        self.apply(model, gathered, g, clip, None)
    }

    /// Every float tensor of `model` and the gradients `grads` holds for them, in one walk over
    /// the model: what [`GroupOptimizer::apply`] takes, and [`Gathered::global_norm`] reads
    /// first for clipping by norm.
    pub fn gather<M: Module>(model: &M, grads: GradientsParams) -> Gathered {
        Self::gather_with(model, grads, false)
    }

    /// [`GroupOptimizer::gather`] for a step whose update is measured
    /// ([`GroupOptimizer::apply_measured`]): each trainable parameter (one without a gradient
    /// too) also gets its path, as the probe names it.
    pub fn gather_named<M: Module>(model: &M, grads: GradientsParams) -> Gathered {
        Self::gather_with(model, grads, true)
    }

    fn gather_with<M: Module>(model: &M, mut grads: GradientsParams, named: bool) -> Gathered {
        let mut gather = Gather {
            grads: &mut grads,
            path: Vec::new(),
            items: Vec::new(),
            named,
        };
        model.visit(&mut gather);
        Gathered {
            items: gather.items,
        }
    }

    /// The update of every gathered parameter that has a gradient, clipped on the way in by
    /// `clip` (as [`GroupOptimizer::step_clipped`]), and with `ema` the average's update
    /// towards the new weights, in one parallel pass over all of the model's tensors: each task
    /// updates one parameter and blends its average from the weights it has just written
    /// (buffers such as BatchNorm's running statistics are blended as they are). Each tensor's
    /// work is independent, so the result does not depend on the number of threads; the bits
    /// are those of the step followed by [`Ema::update`].
    ///
    /// `gathered` must come from `model` ([`GroupOptimizer::gather`]); an `ema` of another
    /// number of tensors is updated after the step instead, with [`Ema::update`].
    pub fn apply<M: Module>(
        &mut self,
        model: M,
        gathered: Gathered,
        g: GroupLr,
        clip: Clip,
        ema: Option<&mut Ema>,
    ) -> M {
        self.apply_measured(model, gathered, g, clip, ema).0
    }

    /// [`GroupOptimizer::apply`] that also reports, for every parameter that was gathered with
    /// its path ([`GroupOptimizer::gather_named`]), what the probe reads of it: for an updated
    /// one ‖W‖² before the step and ‖ΔW‖², summed inside the update's own pass (Muon's
    /// parameters, updated in two steps, by a read of the weights before and after), and ‖g‖²
    /// of the gradient as it came, before clipping; for a trainable one without a gradient its
    /// ‖W‖² and no update. For [`crate::probe::Probe::after_update`].
    pub fn apply_measured<M: Module>(
        &mut self,
        model: M,
        gathered: Gathered,
        g: GroupLr,
        clip: Clip,
        mut ema: Option<&mut Ema>,
    ) -> (M, Vec<Measured>) {
        use rayon::prelude::*;
        let items = gathered.items;
        let n = items.len();
        let states: Vec<Option<State>> = items
            .iter()
            .map(|it| it.job.as_ref().and_then(|_| self.states.remove(&it.id)))
            .collect();
        let (avg, (df, ff), fused) = match ema.as_deref_mut().filter(|e| e.len() == n) {
            Some(e) => (
                e.take().into_iter().map(Some).collect(),
                e.next_decay(),
                true,
            ),
            None => ((0..n).map(|_| None).collect::<Vec<_>>(), (1.0, 0.0), false),
        };
        let this = &*self;
        let done: Vec<Done> = items
            .into_par_iter()
            .zip(states)
            .zip(avg)
            .map(|((item, st), avg)| {
                let Item {
                    id,
                    w,
                    shape,
                    tracked,
                    job,
                    path,
                } = item;
                let (w, up, measured) = match job {
                    Some(job) => {
                        let (w, st, [g_sq, w_sq, delta_sq]) =
                            this.update(job, w, st, &g, clip, path.is_some());
                        let measured = path.map(|(path, shape)| Measured {
                            path,
                            shape,
                            g_sq: Some(g_sq),
                            w_sq,
                            delta_sq,
                        });
                        let avg_of = w.clone();
                        (
                            avg_of,
                            Some((id, NewWeight::new(w, shape, tracked), st)),
                            measured,
                        )
                    }
                    // a trainable parameter without a gradient: its norm, no update
                    None => {
                        let measured = path.map(|(path, shape)| Measured {
                            path,
                            shape,
                            g_sq: None,
                            w_sq: norm_sq(w.clone()),
                            delta_sq: f64::NAN,
                        });
                        (w, None, measured)
                    }
                };
                let avg = avg.map(|a| blend(a, &w, df, ff));
                Done { up, avg, measured }
            })
            .collect();
        let mut new = Vec::with_capacity(n);
        let mut blended = Vec::with_capacity(n);
        let mut measured = Vec::new();
        for Done {
            up,
            avg,
            measured: m,
        } in done
        {
            if let Some((id, w, st)) = up {
                new.push((id, w));
                self.states.insert(id, st);
            }
            blended.extend(avg);
            measured.extend(m);
        }
        let model = put_back(model, new);
        match ema {
            Some(e) if fused => e.put(blended),
            Some(e) => e.update(&model),
            None => {}
        }
        (model, measured)
    }
}

struct Ids {
    path: Vec<String>,
    out: Vec<(ParamId, String)>,
}

impl ModuleVisitor for Ids {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.out
            .push((param.id, crate::yolo::weights::ultralytics_name(&self.path)));
    }
}

/// (parameter id, Ultralytics-style name) of every tensor of `model`.
pub fn param_names<M: Module>(model: &M) -> Vec<(ParamId, String)> {
    let mut v = Ids {
        path: Vec::new(),
        out: Vec::new(),
    };
    model.visit(&mut v);
    v.out
}

fn host(t: &Tensor<1>) -> Vec<f32> {
    t.to_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

/// The optimizer state by parameter name, for checkpoints: tensors `m.<name>` (and `v.<name>`)
/// and the step count of each parameter.
pub type ExportedState = (Vec<(String, Vec<usize>, Vec<f32>)>, Vec<(String, i32)>);

impl GroupOptimizer {
    pub fn export<M: Module>(&self, model: &M) -> ExportedState {
        let mut tensors = Vec::new();
        let mut steps = Vec::new();
        for (id, name) in param_names(model) {
            if let Some(st) = self.states.get(&id) {
                let n = st.m.dims()[0];
                tensors.push((format!("m.{name}"), vec![n], host(&st.m)));
                if let Some(v) = &st.v {
                    tensors.push((format!("v.{name}"), vec![n], host(v)));
                }
                steps.push((name, st.t));
            }
        }
        (tensors, steps)
    }

    /// Rebuilds the state for `model` from [`export`](Self::export)'s output.
    pub fn import<M: Module>(
        kind: (bool, bool),
        model: &M,
        tensors: &HashMap<String, (Vec<usize>, Vec<f32>)>,
        steps: &HashMap<String, i32>,
        device: &burn::tensor::Device,
    ) -> Self {
        let mut opt = GroupOptimizer::new(kind.0);
        opt.muon = kind.1;
        let load = |k: &str| {
            tensors.get(k).map(|(s, v)| {
                Tensor::<1>::from_data(burn::tensor::TensorData::new(v.clone(), [s[0]]), device)
            })
        };
        for (id, name) in param_names(model) {
            if let Some(m) = load(&format!("m.{name}")) {
                opt.states.insert(
                    id,
                    State {
                        m,
                        v: load(&format!("v.{name}")),
                        t: steps.get(&name).copied().unwrap_or(0),
                    },
                );
            }
        }
        opt
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::nn::{Linear, LinearConfig};
    use burn::tensor::TensorData;

    #[derive(Module, Debug)]
    struct Net {
        fc: Linear,
    }

    fn values(t: Tensor<2>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    /// Two SGD-Nesterov steps on L = Σ w (gradient 1 everywhere): by hand,
    /// step 1: d = 1 + λw₀, b = d, w₁ = w₀ − lr(d + μd); step 2 likewise with b = μb + d.
    #[test]
    fn sgd_nesterov_matches_hand_computation() {
        let device = crate::device();
        let mut net = Net {
            fc: LinearConfig::new(2, 1).init(&device),
        };
        net.fc.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(vec![1.0f32, -2.0], [2, 1]),
            &device,
        ));
        let mut opt = GroupOptimizer::new(false);
        let g = GroupLr {
            lr: [0.1, 0.1, 0.1],
            momentum: 0.9,
            weight_decay: 0.5,
        };
        let mut w = [1.0f64, -2.0];
        let mut b = [0.0f64; 2];
        for step in 0..2 {
            let x = Tensor::<2>::ones([1, 2], &device);
            let loss = net.fc.forward(x).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &net);
            net = opt.step(net, grads, g);
            for i in 0..2 {
                let d = 1.0 + 0.5 * w[i];
                b[i] = if step == 0 { d } else { 0.9 * b[i] + d };
                w[i] -= 0.1 * (d + 0.9 * b[i]);
            }
            let got = values(net.fc.weight.val());
            for i in 0..2 {
                assert!((got[i] as f64 - w[i]).abs() < 1e-5, "{got:?} vs {w:?}");
            }
        }
    }

    #[test]
    fn adamw_first_step_moves_each_weight_by_lr() {
        let device = crate::device();
        let mut net = Net {
            fc: LinearConfig::new(3, 1).init(&device),
        };
        let before = values(net.fc.weight.val());
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, -3.0, 0.5], [1, 3]), &device);
        let grads = GradientsParams::from_grads(net.fc.forward(x).sum().backward(), &net);
        let mut opt = GroupOptimizer::new(true);
        let g = GroupLr {
            lr: [0.01, 0.01, 0.01],
            momentum: 0.9,
            weight_decay: 0.0,
        };
        net = opt.step(net, grads, g);
        let after = values(net.fc.weight.val());
        // first Adam step: m̂/√v̂ = sign(g)
        let sign = [1.0f32, -1.0, 1.0];
        for i in 0..3 {
            assert!((before[i] - after[i] - 0.01 * sign[i]).abs() < 1e-6);
        }
    }

    /// Clipping by norm inside the update's pass gives the bits of clipping the gradients first
    /// (the trainer did that before), for every rule, Muon's matrices included, over two steps.
    #[test]
    fn clipping_inside_the_pass_is_clipping_first() {
        use crate::train::clip::{clip_norm, global_norm, on_update};
        use burn::tensor::Distribution;
        let device = crate::device();
        let x = Tensor::<2>::random([5, 16], Distribution::Normal(0.0, 1.0), &device);
        let start = Net {
            fc: LinearConfig::new(16, 8).init(&device),
        };
        let lrs = GroupLr {
            lr: [0.01, 0.02, 0.03],
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let c = 0.05;
        let grads = |net: &Net| {
            let loss = net.fc.forward(x.clone()).powf_scalar(2.0).sum();
            GradientsParams::from_grads(loss.backward(), net)
        };
        for make in [
            || GroupOptimizer::new(false),
            || GroupOptimizer::new(true),
            GroupOptimizer::musgd,
        ] {
            let (mut first, mut inside) = (make(), make());
            let (mut a, mut b) = (start.clone(), start.clone());
            for _ in 0..2 {
                let mut ga = grads(&a);
                let norm = clip_norm(&a, &mut ga, c);
                assert!(norm > 10.0 * c, "the clip must bite: ‖g‖ = {norm}");
                a = first.step(a, ga, lrs);
                let gb = grads(&b);
                let clip = on_update(Some(global_norm(&b, &gb)), c, None);
                b = inside.step_clipped(b, gb, lrs, clip);
                for (wa, wb) in [
                    (values(a.fc.weight.val()), values(b.fc.weight.val())),
                    (
                        values(a.fc.bias.as_ref().unwrap().val().unsqueeze()),
                        values(b.fc.bias.as_ref().unwrap().val().unsqueeze()),
                    ),
                ] {
                    let same = wa.iter().zip(&wb).all(|(p, q)| p.to_bits() == q.to_bits());
                    assert!(same, "adamw {} muon {}", first.adamw, first.muon);
                }
            }
        }
    }

    /// The fused pass (the update, then each tensor's average from the weights just written,
    /// in one task) gives the bits of the step followed by `Ema::update`, for every rule and
    /// over three steps: weights, optimizer state and the averaged model, BatchNorm's running
    /// statistics (no gradient; updated by the fused kernel) and a frozen bias (its gradient
    /// taken out) included.
    #[test]
    fn optimizer_and_ema_in_one_pass_are_the_step_then_the_average() {
        use crate::kernels::bn_act::{batch_norm_act, Act};
        use burn::nn::{BatchNorm, BatchNormConfig};
        use burn::tensor::Distribution;

        #[derive(Module, Debug)]
        struct Norm {
            fc: Linear,
            bn: BatchNorm,
        }
        let device = crate::device();
        let x = Tensor::<2>::random([6, 5], Distribution::Normal(0.0, 1.0), &device);
        let start = Norm {
            fc: LinearConfig::new(5, 4).init(&device),
            bn: BatchNormConfig::new(4).init(&device),
        };
        let lrs = GroupLr {
            lr: [0.05, 0.02, 0.03],
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let grads = |net: &Norm| {
            let h = net.fc.forward(x.clone()).reshape([6, 4, 1, 1]);
            let y = batch_norm_act(&net.bn, h, Act::Silu);
            let loss = y.powf_scalar(2.0).sum();
            let mut g = GradientsParams::from_grads(loss.backward(), net);
            if let Some(b) = &net.fc.bias {
                g.remove::<1>(b.id);
            }
            g
        };
        /// The bits of every float tensor, in visiting order.
        struct Bits(Vec<Vec<u32>>);
        impl ModuleVisitor for Bits {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let v = param.val().into_data().convert::<f32>();
                let v = v.try_into_vec::<f32>().unwrap();
                self.0.push(v.iter().map(|x| x.to_bits()).collect());
            }
        }
        let all = |m: &Norm| {
            let mut c = Bits(Vec::new());
            m.visit(&mut c);
            c.0
        };
        for make in [
            || GroupOptimizer::new(false),
            || GroupOptimizer::new(true),
            GroupOptimizer::musgd,
        ] {
            let (mut apart, mut fused) = (make(), make());
            // valid().train(): the same weights with running statistics of their own (a clone
            // shares them)
            let (mut a, mut b) = (start.valid().train(), start.valid().train());
            let (mut ea, mut eb) = (Ema::new(&a), Ema::new(&b));
            for _ in 0..3 {
                let ga = grads(&a);
                let clip = crate::train::clip::on_update(Some(0.5), 0.1, None);
                a = apart.step_clipped(a, ga, lrs, clip);
                ea.update(&a);
                let gb = GroupOptimizer::gather(&b, grads(&b));
                b = fused.apply(b, gb, lrs, clip, Some(&mut eb));
                assert_eq!(
                    all(&a),
                    all(&b),
                    "adamw {} muon {}",
                    apart.adamw,
                    apart.muon
                );
                assert_eq!(all(&ea.model(&a)), all(&eb.model(&b)));
                assert_eq!(ea.updates, eb.updates);
            }
            let names = |o: &GroupOptimizer, m: &Norm| o.export(m);
            let (sa, sb) = (names(&apart, &a), names(&fused, &b));
            assert_eq!(sa.1, sb.1);
            let bits = |t: &ExportedState| {
                t.0.iter()
                    .map(|(n, _, v)| (n.clone(), v.iter().map(|x| x.to_bits()).collect()))
                    .collect::<Vec<(String, Vec<u32>)>>()
            };
            assert_eq!(bits(&sa), bits(&sb));
        }
    }

    /// What the measured pass reports for the probe — ‖W‖² before the step and ‖ΔW‖² — is a
    /// read of the weights before and after the step (to f32 rounding: the pass sums in other
    /// blocks), for every rule (Muon's two-step update included), by the probe's names; an
    /// unmeasured gather reports nothing, and the weights are the unmeasured step's bits.
    #[test]
    fn the_measured_pass_reports_the_weights_the_probe_would_read() {
        use crate::probe::params::{diff_norm, norm_sq, values as named};
        use burn::tensor::Distribution;
        let device = crate::device();
        let x = Tensor::<2>::random([5, 16], Distribution::Normal(0.0, 1.0), &device);
        let start = Net {
            fc: LinearConfig::new(16, 8).init(&device),
        };
        let lrs = GroupLr {
            lr: [0.05, 0.02, 0.03],
            momentum: 0.9,
            weight_decay: 5e-4,
        };
        let grads = |net: &Net| {
            let loss = net.fc.forward(x.clone()).powf_scalar(2.0).sum();
            GradientsParams::from_grads(loss.backward(), net)
        };
        for make in [
            || GroupOptimizer::new(false),
            || GroupOptimizer::new(true),
            GroupOptimizer::musgd,
        ] {
            let (mut plain, mut measured) = (make(), make());
            let (mut a, mut b) = (start.clone(), start.clone());
            for _ in 0..2 {
                let ga = GroupOptimizer::gather(&a, grads(&a));
                let (next, none) = plain.apply_measured(a, ga, lrs, Clip::NONE, None);
                assert!(none.is_empty());
                a = next;
                let before = named(&b);
                let gb = GroupOptimizer::gather_named(&b, grads(&b));
                let (next, got) = measured.apply_measured(b, gb, lrs, Clip::NONE, None);
                b = next;
                let after = named(&b);
                assert_eq!(
                    got.len(),
                    before.len(),
                    "adamw {} muon {}",
                    plain.adamw,
                    plain.muon
                );
                for ((path, w0), (m, (_, w1))) in before.iter().zip(got.iter().zip(&after)) {
                    assert_eq!(&m.path, path);
                    let (w_sq, d) = (norm_sq(w0.clone()), diff_norm(w0, w1));
                    assert!(
                        (m.w_sq - w_sq).abs() <= 1e-5 * w_sq,
                        "{path}: {} vs {w_sq}",
                        m.w_sq
                    );
                    let got_d = m.delta_sq.sqrt();
                    assert!(
                        d > 0.0 && (got_d - d).abs() <= 1e-4 * d,
                        "{path}: {got_d} vs {d}"
                    );
                }
                assert_eq!(values(a.fc.weight.val()), values(b.fc.weight.val()));
            }
        }
    }

    #[test]
    fn groups_from_paths() {
        let p = |s: &str| s.split('.').map(String::from).collect::<Vec<_>>();
        assert_eq!(group_of(&p("model.0.conv.weight"), 4), 0);
        assert_eq!(group_of(&p("model.0.bn.gamma"), 1), 1);
        assert_eq!(group_of(&p("model.0.bn.beta"), 1), 2);
        assert_eq!(group_of(&p("model.23.cv2.0.s2.bias"), 1), 2);
    }
}
