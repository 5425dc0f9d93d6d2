//! Softmax cross-entropy: L = −(1/B) Σ_b log softmax(z_b)[y_b]; ∂L/∂z = (p − y)/B.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

pub fn cross_entropy(logits: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let picked = logp.gather(1, y.reshape([b, 1]));
    picked.mean().neg()
}
