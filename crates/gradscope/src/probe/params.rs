//! Parameter statistics by module path, read with a [`ModuleVisitor`] that tracks the path.
//! Norms are read straight from flex's buffers (one pass, f64), elsewhere reduced on the device
//! with one scalar read back per statistic; a probed step copies no weights either way.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

/// One parameter at one moment.
pub struct ParamSnapshot {
    /// Full path, e.g. `layers.3.linear.weight`.
    pub path: String,
    pub shape: Vec<usize>,
    /// ‖W‖² (NaN from [`values`]).
    pub sq: f64,
    /// The values, flattened, without autodiff (a shared handle, not a copy).
    pub values: Tensor<1>,
    /// (‖g‖², NaN count, ∞ count); `None` when the parameter got no gradient.
    pub grad: Option<(f64, usize, usize)>,
}

/// What an optimizer's update pass measured of one parameter (`train::Optimizer::step_measured`):
/// its gradient's norm (the step's gradient norm and NaN check), and on a probed step the
/// probe's weight statistics.
#[derive(Clone, Debug)]
pub struct Measured {
    /// Full path, as the probe names parameters (`layers.3.linear.weight`).
    pub path: String,
    pub shape: Vec<usize>,
    /// ‖g‖² of the gradient as it came (before clipping); non-finite when an element is.
    /// `None`: the parameter got no gradient and was not updated.
    pub g_sq: Option<f64>,
    /// ‖W‖² before the step (NaN when the weights were not measured).
    pub w_sq: f64,
    /// ‖W_new − W‖² (NaN when the weights were not measured or not updated).
    pub delta_sq: f64,
}

impl Measured {
    /// ‖W_new − W‖: 0 for a parameter the pass did not update (its weights stayed).
    pub fn delta(&self) -> f64 {
        self.g_sq.map_or(0.0, |_| self.delta_sq.sqrt())
    }
}

/// ‖t‖² read in place from a flex buffer; `None` for a tensor elsewhere (a GPU's).
pub fn norm_sq_in_place<const D: usize>(t: &Tensor<D>) -> Option<f64> {
    // One pass over the buffer (no temporaries). Squares are summed in f32 lanes (twice the
    // f64 throughput, on every thread); a square beyond f32's range (|x| > 1.8e19, exploding
    // gradients) is summed again in f64.
    let fast = |v: &[f32]| {
        let sq = super::stats::sum_and_sq(v).1;
        if sq.is_finite() {
            sq
        } else {
            sum_sq_f64(v)
        }
    };
    crate::kernels::tap::with_values(t, fast)
}

/// ‖t‖² in f64. The f32 sum of squares overflows for elements above ~1e19 although each is
/// finite; then the tensor is rescaled by its largest magnitude first.
pub fn norm_sq<const D: usize>(t: Tensor<D>) -> f64 {
    if let Some(sq) = norm_sq_in_place(&t) {
        return sq;
    }
    let sq = t.clone().powf_scalar(2.0).sum().into_scalar::<f64>();
    if sq.is_finite() {
        return sq;
    }
    let m = t.clone().abs().max().into_scalar::<f64>();
    if !m.is_finite() || m == 0.0 {
        return sq;
    }
    m * m * t.div_scalar(m).powf_scalar(2.0).sum().into_scalar::<f64>()
}

crate::kernels::simd::multiversion! {
    /// Σx² in f64 lanes.
    fn sum_sq_f64(v: &[f32]) -> f64 {
        let mut acc = [0.0f64; 8];
        let mut it = v.chunks_exact(8);
        for c in &mut it {
            for j in 0..8 {
                let x = c[j] as f64;
                acc[j] += x * x;
            }
        }
        let rest: f64 = it.remainder().iter().map(|&x| (x as f64) * (x as f64)).sum();
        acc.iter().sum::<f64>() + rest
    }
}

/// ‖t‖², and the NaN and ±∞ counts (counted only when the norm is not finite).
pub fn sum_sq_nonfinite<const D: usize>(t: Tensor<D>) -> (f64, usize, usize) {
    let sq = norm_sq(t.clone());
    if sq.is_finite() {
        return (sq, 0, 0);
    }
    let nan = t.clone().is_nan().int().sum().into_scalar::<i64>() as usize;
    let inf = t.is_inf().int().sum().into_scalar::<i64>() as usize;
    (sq, nan, inf)
}

/// Collects every trainable parameter's values and gradient (flattened); the norms are computed
/// afterwards, the parameters side by side ([`snapshot_with`]).
struct Collector<'a> {
    grads: Option<&'a Gradients>,
    path: Vec<String>,
    out: Vec<ParamSnapshot>,
    /// Each entry's gradient, flattened (`None`: it got none).
    found: Vec<Option<Tensor<1>>>,
}

impl ModuleVisitor for Collector<'_> {
    fn enter_module(&mut self, name: &str, _ty: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _ty: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let value = param.val();
        if !value.is_require_grad() {
            return; // buffers such as BatchNorm running statistics
        }
        let shape = value.dims().to_vec();
        let n: usize = shape.iter().product();
        let grad = self.grads.and_then(|g| value.grad(g));
        self.found.push(grad.map(|g| g.reshape([n])));
        self.out.push(ParamSnapshot {
            path: self.path.join("."),
            shape,
            sq: f64::NAN,
            values: value.inner().reshape([n]),
            grad: None,
        });
    }
}

/// Every trainable parameter of `model`, in visiting order, with its gradient from `grads`.
/// Buffers that take no gradient (BatchNorm's running mean/var) are left out.
pub fn snapshot<M: Module>(model: &M, grads: Option<&Gradients>) -> Vec<ParamSnapshot> {
    snapshot_with(model, grads, true)
}

/// [`snapshot`], with ‖W‖² read only when `weights` (else NaN: an update pass measures it).
pub fn snapshot_with<M: Module>(
    model: &M,
    grads: Option<&Gradients>,
    weights: bool,
) -> Vec<ParamSnapshot> {
    use rayon::prelude::*;
    let mut c = Collector {
        grads,
        path: Vec::new(),
        out: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut c);
    // each parameter's norms on its own task (one after another, small parameters left the
    // other threads idle)
    let mut out = c.out;
    if grads.is_none() && !weights {
        return out; // nothing to measure: an update pass does it
    }
    out.par_iter_mut()
        .zip(c.found.into_par_iter())
        .for_each(|(p, g)| {
            p.grad = g.map(sum_sq_nonfinite);
            if weights {
                p.sq = norm_sq(p.values.clone());
            }
        });
    out
}

/// (path, flattened values) of every trainable parameter, without computing anything.
pub fn values<M: Module>(model: &M) -> Vec<(String, Tensor<1>)> {
    let mut c = Collector {
        grads: None,
        path: Vec::new(),
        out: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut c);
    c.out.into_iter().map(|p| (p.path, p.values)).collect()
}

/// ‖a − b‖: on flex one pass over both buffers (no difference tensor), else on the device.
pub fn diff_norm(a: &Tensor<1>, b: &Tensor<1>) -> f64 {
    use crate::kernels::tap::with_values;
    let fused = with_values(a, |x| with_values(b, |y| diff_sq(x, y))).flatten();
    if let Some(sq) = fused.filter(|sq| sq.is_finite()) {
        return sq.sqrt();
    }
    (a.clone() - b.clone())
        .powf_scalar(2.0)
        .sum()
        .into_scalar::<f64>()
        .sqrt()
}

/// Σ(x − y)²: f32 lanes over runs of 1024 added in f64, blocks on every thread for big
/// parameters, added in order (the same result whatever the thread count).
fn diff_sq(x: &[f32], y: &[f32]) -> f64 {
    use rayon::prelude::*;
    const BLOCK: usize = 1 << 16;
    let block = |(x, y): (&[f32], &[f32])| {
        let mut total = 0f64;
        for (xs, ys) in x.chunks(1024).zip(y.chunks(1024)) {
            let mut acc = [0f32; 8];
            let (xc, yc) = (xs.chunks_exact(8), ys.chunks_exact(8));
            let tail: f32 = xc
                .remainder()
                .iter()
                .zip(yc.remainder())
                .map(|(a, b)| (a - b) * (a - b))
                .sum();
            for (a, b) in xc.zip(yc) {
                for j in 0..8 {
                    let d = a[j] - b[j];
                    acc[j] += d * d;
                }
            }
            total += (acc.iter().sum::<f32>() + tail) as f64;
        }
        total
    };
    if x.len() != y.len() {
        return f64::NAN;
    }
    if x.len() <= BLOCK {
        return block((x, y));
    }
    let parts: Vec<f64> = x
        .par_chunks(BLOCK)
        .zip(y.par_chunks(BLOCK))
        .map(block)
        .collect();
    parts.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    /// The fused ‖a − b‖ is the composed one, for one block and for many.
    #[test]
    fn the_fused_difference_norm_is_the_composed_one() {
        let dev = crate::device();
        for n in [1000usize, 200_003] {
            let a: Vec<f32> = (0..n).map(|i| ((i % 89) as f32 - 44.0) / 9.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i % 31) as f32 - 15.0) / 5.0).collect();
            let want: f64 = a
                .iter()
                .zip(&b)
                .map(|(x, y)| ((x - y) as f64).powi(2))
                .sum::<f64>()
                .sqrt();
            let (ta, tb) = (
                Tensor::<1>::from_data(TensorData::new(a, [n]), &dev),
                Tensor::<1>::from_data(TensorData::new(b, [n]), &dev),
            );
            let got = diff_norm(&ta, &tb);
            assert!((got - want).abs() <= 1e-6 * want, "{n}: {got} vs {want}");
        }
    }

    #[test]
    fn norms_are_exact_and_survive_squares_beyond_f32() {
        let dev = crate::device();
        // 70 000 values: more than one parallel block
        let v: Vec<f32> = (0..70_000)
            .map(|i| ((i % 97) as f32 - 48.0) / 7.0)
            .collect();
        let want: f64 = v.iter().map(|&x| (x as f64) * (x as f64)).sum();
        let t = Tensor::<1>::from_data(TensorData::new(v.clone(), [v.len()]), &dev);
        assert!((norm_sq(t) - want).abs() <= 1e-6 * want);
        // 3e20² overflows f32 but not f64: still a finite norm
        let big = Tensor::<1>::from_data(TensorData::new(vec![3e20f32, 4e20], [2]), &dev);
        let sq = norm_sq(big);
        assert!((sq - 25e40).abs() <= 1e-6 * 25e40, "{sq}");
        let (sq, nan, inf) = sum_sq_nonfinite(Tensor::<1>::from_data(
            TensorData::new(vec![1.0f32, f32::NAN], [2]),
            &dev,
        ));
        assert!(sq.is_nan() && nan == 1 && inf == 0);
    }
}
