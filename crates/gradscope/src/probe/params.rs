//! Parameter statistics by module path, read with a [`ModuleVisitor`] that tracks the path.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{Gradients, Tensor};

use super::stats::sum_sq;

/// One parameter's values (and gradient, when one was asked for) at one moment.
pub struct ParamSnapshot {
    /// Full path, e.g. `layers.3.linear.weight`.
    pub path: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
    /// (‖g‖², NaN count, ∞ count); `None` when the parameter got no gradient.
    pub grad: Option<(f64, usize, usize)>,
}

struct Collector<'a> {
    grads: Option<&'a Gradients>,
    path: Vec<String>,
    out: Vec<ParamSnapshot>,
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
        let grad = self
            .grads
            .and_then(|g| value.grad(g))
            .and_then(|g| g.into_data().try_into_vec::<f32>().ok())
            .map(|g| sum_sq(&g));
        let data = value.to_data();
        self.out.push(ParamSnapshot {
            path: self.path.join("."),
            shape: data.shape().to_vec(),
            values: data.try_into_vec::<f32>().unwrap_or_default(),
            grad,
        });
    }
}

/// Every float parameter of `model`, in visiting order, with its gradient from `grads`.
/// Buffers that take no gradient (BatchNorm's running mean/var) are left out.
pub fn snapshot<M: Module>(model: &M, grads: Option<&Gradients>) -> Vec<ParamSnapshot> {
    let mut c = Collector { grads, path: Vec::new(), out: Vec::new() };
    model.visit(&mut c);
    c.out
}
