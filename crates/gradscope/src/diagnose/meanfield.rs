//! Mean-field theory of signal propagation (Poole et al. 2016; Schoenholz et al. 2017).
//!
//! For a dense layer z = W h + b with weights of variance σ_w²/fan_in, the squared norm of the
//! back-propagated gradient changes per layer by the factor
//!   χ₁ = σ_w² · E_{z∼N(μ,q)}[φ'(z)²]
//! so ‖∂L/∂h_{l−1}‖ ≈ √χ₁ · ‖∂L/∂h_l‖. χ₁ < 1: gradients vanish exponentially with depth;
//! χ₁ > 1: they explode; χ₁ = 1 is the critical line (ReLU with He init: σ_w² = 2, E[φ'²] = ½).

use crate::activation::Activation;

/// E[f(z)] for z ∼ N(mean, var), by the trapezoid rule over ±10 standard deviations.
pub fn gaussian_expect(f: impl Fn(f64) -> f64, mean: f64, var: f64) -> f64 {
    if var <= 0.0 || !var.is_finite() {
        return f(mean);
    }
    let sd = var.sqrt();
    let n = 8000;
    let (lo, hi) = (-10.0, 10.0);
    let h = (hi - lo) / n as f64;
    let mut acc = 0.0;
    for i in 0..=n {
        let u = lo + i as f64 * h;
        let w = if i == 0 || i == n { 0.5 } else { 1.0 };
        acc += w * f(mean + sd * u) * (-0.5 * u * u).exp();
    }
    acc * h / (2.0 * std::f64::consts::PI).sqrt()
}

/// χ₁ = σ_w² · E[φ'(z)²] at pre-activations z ∼ N(mean, var).
pub fn chi1(act: Activation, sigma_w2: f64, pre_mean: f64, pre_var: f64) -> f64 {
    sigma_w2 * gaussian_expect(|z| act.derivative(z).powi(2), pre_mean, pre_var)
}

/// σ_w² = fan_in · Var(W) estimated from a weight's Frobenius norm and its `[fan_in, fan_out]`
/// shape: ‖W‖² / fan_out.
pub fn sigma_w2(weight_norm: f64, shape: &[usize]) -> Option<f64> {
    match shape {
        [_fan_in, fan_out] if *fan_out > 0 => Some(weight_norm * weight_norm / *fan_out as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_with_he_init_is_critical() {
        for q in [0.1, 1.0, 7.0] {
            let c = chi1(Activation::Relu, 2.0, 0.0, q);
            assert!((c - 1.0).abs() < 1e-3, "q={q}: χ₁={c}");
        }
        assert!((chi1(Activation::Relu, 1.0, 0.0, 1.0) - 0.5).abs() < 1e-3);
    }

    #[test]
    fn sigmoid_can_never_reach_criticality_with_unit_weights() {
        // σ' ≤ 1/4 so χ₁ ≤ σ_w²/16
        for q in [0.01, 1.0, 10.0] {
            let c = chi1(Activation::Sigmoid, 1.0, 0.0, q);
            assert!(c <= 1.0 / 16.0 + 1e-9, "{c}");
        }
        let c = chi1(Activation::Sigmoid, 1.0, 0.0, 1e-9);
        assert!((c - 1.0 / 16.0).abs() < 1e-6);
    }

    #[test]
    fn expectation_of_moments() {
        assert!((gaussian_expect(|z| z * z, 1.0, 4.0) - 5.0).abs() < 1e-6);
        assert!((gaussian_expect(|_| 1.0, 0.0, 2.0) - 1.0).abs() < 1e-9);
    }
}
