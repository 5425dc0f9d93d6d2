//! Fused operations with their own backward, for the flex CPU backend: where burn composes an
//! operation from many element-wise passes, these do it in one or two. Each falls back to burn's
//! composed operations when the tensors live elsewhere, and each is checked against that
//! composed version (values and gradients) in the tests; the whole YOLO26n training step is
//! checked against Ultralytics in `tests/yolo_train_grads.rs`.
//!
//! How a custom operation plugs into burn 0.22.1 (learnt writing these):
//! - `Tensor::try_into_primitive::<Autodiff<Flex>>()` gives the `AutodiffTensor<Flex>` behind a
//!   tensor (it fails, and we fall back, for plain flex tensors, other backends, or a gradient
//!   checkpointing strategy other than none); `.primitive()` is the `FlexTensor`, whose
//!   `as_slice::<f32>()` is the data when contiguous. `Tensor::from_primitive::<…>` goes back.
//! - A type implementing `Backward<Flex, N>` whose `State` holds what the backward needs (flex
//!   tensors are reference-counted, so keeping one costs no copy), prepared with
//!   `.prepare::<NoCheckpointing>([nodes]).compute_bound().stateful()`; in `backward`,
//!   `grads.consume::<Flex>(&ops.node)` is ∂L/∂output and `grads.register::<Flex>(parent.id, g)`
//!   hands each parent its gradient (burn sums several registrations).
//! - burn's `RunningState::update` keeps a value aside until the next update, so visitors (and
//!   checkpoints) see the statistics one step late unless `value_sync()` follows; the fused
//!   BatchNorm does that.

pub mod act;
pub mod add;
pub mod attention;
pub mod bce;
pub mod bn_act;
pub mod branch;
pub mod cat;
pub mod census;
pub mod conv;
pub mod ema;
pub mod grads;
pub mod host;
pub mod linear;
pub mod lstm;
pub mod moments;
pub mod pool;
pub mod simd;
pub mod tap;
pub mod update;

/// What the kernels' tests share: a tensor's values, and the largest difference between two
/// results (absolute, or relative to the reference's largest magnitude).
#[cfg(test)]
pub(crate) mod testing {
    use burn::tensor::Tensor;

    pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .unwrap()
    }

    pub fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()))
    }

    pub fn max_rel(a: &[f32], b: &[f32]) -> f32 {
        max_abs(a, b) / b.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12)
    }
}
