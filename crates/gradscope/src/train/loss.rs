//! Softmax cross-entropy: L = −(1/B) Σ_b log softmax(z_b)\[y_b\]; ∂L/∂z = (p − y)/B.

use burn::tensor::activation::log_softmax;
use burn::tensor::{Int, Tensor};

pub fn cross_entropy(logits: Tensor<2>, y: Tensor<1, Int>) -> Tensor<1> {
    let [b, _] = logits.dims();
    let logp = log_softmax(logits, 1);
    let picked = logp.gather(1, y.reshape([b, 1]));
    picked.mean().neg()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::TensorData;

    #[test]
    fn gradient_at_the_logits_is_p_minus_y() {
        let dev = crate::device();
        let z = [[1.0f32, -0.5, 2.0], [0.3, 0.3, -1.2]];
        let y = [2i64, 0];
        let logits: Tensor<2> =
            Tensor::from_data(TensorData::new(z.concat(), [2, 3]), &dev).require_grad();
        let labels = Tensor::<1, Int>::from_data(TensorData::new(y.to_vec(), [2]), &dev);
        let grads = cross_entropy(logits.clone(), labels).backward();
        let g = logits
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        for b in 0..2 {
            let e: Vec<f64> = z[b].iter().map(|&v| (v as f64).exp()).collect();
            let s: f64 = e.iter().sum();
            for c in 0..3 {
                let p = e[c] / s;
                let onehot = if y[b] as usize == c { 1.0 } else { 0.0 };
                let expect = (p - onehot) / 2.0; // mean over the batch of 2
                assert!(
                    (g[b * 3 + c] as f64 - expect).abs() < 1e-6,
                    "[{b},{c}] {} vs {expect}",
                    g[b * 3 + c]
                );
            }
        }
    }
}
