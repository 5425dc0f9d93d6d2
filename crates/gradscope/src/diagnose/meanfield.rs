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

/// E[f(z₁, z₂)] for independent standard normal z₁, z₂: the trapezoid rule on a 161 × 161
/// grid over ±8.
pub fn gaussian_expect2(f: impl Fn(f64, f64) -> f64) -> f64 {
    let n = 160;
    let (lo, hi) = (-8.0, 8.0);
    let h = (hi - lo) / n as f64;
    let w = |i: usize| if i == 0 || i == n { 0.5 } else { 1.0 };
    let node = |i: usize| lo + i as f64 * h;
    let density: Vec<f64> = (0..=n)
        .map(|i| w(i) * (-0.5 * node(i).powi(2)).exp())
        .collect();
    let mut acc = 0.0;
    for (i, di) in density.iter().enumerate() {
        for (j, dj) in density.iter().enumerate() {
            acc += di * dj * f(node(i), node(j));
        }
    }
    acc * h * h / (2.0 * std::f64::consts::PI)
}

/// The fixed point q* of the length map q ↦ σ_w²·E[φ(√q z)²] + σ_b² (Poole et al. 2016): the
/// variance every layer's pre-activations settle at, iterated from q = 1.
pub fn q_star(act: Activation, sigma_w2: f64, sigma_b2: f64) -> f64 {
    let mut q = 1.0;
    for _ in 0..500 {
        let next = sigma_w2 * gaussian_expect(|z| act.value(z).powi(2), 0.0, q) + sigma_b2;
        if (next - q).abs() < 1e-12 {
            return next;
        }
        q = next;
    }
    q
}

/// The correlation map: how the correlation c of two inputs' pre-activations (both at
/// variance q) changes through one layer.
pub fn c_map(act: Activation, sigma_w2: f64, sigma_b2: f64, q: f64, c: f64) -> f64 {
    if q <= 0.0 {
        return 1.0;
    }
    let s = q.sqrt();
    let r = (1.0 - c * c).max(0.0).sqrt();
    let e = gaussian_expect2(|z1, z2| act.value(s * z1) * act.value(s * (c * z1 + r * z2)));
    (sigma_w2 * e + sigma_b2) / q
}

/// Where signals and gradients settle in a deep random network, and how fast: Schoenholz et al.
/// 2017, §3.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DepthScale {
    /// The pre-activations' variance fixed point.
    pub q_star: f64,
    /// The fixed point of the correlation map (1 in the ordered phase).
    pub c_star: f64,
    /// χ₁ = σ_w²·E[φ'(√q* z)²]: the per-layer factor of the squared gradient norm; < 1 ordered,
    /// > 1 chaotic.
    pub chi1: f64,
    /// ξ_c = −1 / ln(σ_w²·E[φ'(u₁)φ'(u₂)]) at c*: the depth over which correlations (and
    /// gradients) propagate; infinite at criticality. Networks deeper than about 6ξ_c do not
    /// train.
    pub xi_c: f64,
}

/// q*, c*, χ₁ and ξ_c of a network with activation `act`, weights of variance σ_w²/fan_in and
/// biases of variance σ_b².
pub fn depth_scale(act: Activation, sigma_w2: f64, sigma_b2: f64) -> DepthScale {
    let q = q_star(act, sigma_w2, sigma_b2);
    let chi1 = sigma_w2 * gaussian_expect(|z| act.derivative(z).powi(2), 0.0, q);
    // ordered (χ₁ ≤ 1): c* = 1; chaotic: iterate the map from below 1 to its other fixed point
    let mut c = if chi1 <= 1.0 { 1.0 } else { 0.5 };
    if chi1 > 1.0 {
        for _ in 0..300 {
            let next = c_map(act, sigma_w2, sigma_b2, q, c).min(1.0);
            if (next - c).abs() < 1e-10 {
                c = next;
                break;
            }
            c = next;
        }
    }
    let s = q.sqrt();
    let r = (1.0 - c * c).max(0.0).sqrt();
    let chi_c = sigma_w2
        * gaussian_expect2(|z1, z2| act.derivative(s * z1) * act.derivative(s * (c * z1 + r * z2)));
    let xi_c = if chi_c >= 1.0 {
        f64::INFINITY
    } else {
        -1.0 / chi_c.ln()
    };
    DepthScale {
        q_star: q,
        c_star: c,
        chi1,
        xi_c,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scales_of_tanh_without_biases_are_closed_form() {
        // σ_b = 0, ordered: q* = 0, so χ₁ = χ_c = σ_w² and ξ_c = −1/ln σ_w²
        for sw2 in [0.3, 0.5, 0.8] {
            let d = depth_scale(Activation::Tanh, sw2, 0.0);
            assert!(d.q_star < 1e-3, "{d:?}");
            assert!((d.chi1 - sw2).abs() < 2e-3, "{d:?}");
            assert!((d.xi_c + 1.0 / sw2.ln()).abs() < 0.05 * d.xi_c, "{d:?}");
        }
        // σ_b = 0, chaotic: an odd φ decorrelates completely, c* = 0, so
        // χ_c = σ_w²·E[φ'(√q* z)]²
        let d = depth_scale(Activation::Tanh, 2.0, 0.0);
        assert!(d.chi1 > 1.0 && d.c_star.abs() < 1e-3, "{d:?}");
        let e = gaussian_expect(|z| Activation::Tanh.derivative(z), 0.0, d.q_star);
        assert!(
            (d.xi_c + 1.0 / (2.0 * e * e).ln()).abs() < 1e-3 * d.xi_c,
            "{d:?}"
        );
    }

    #[test]
    fn tanh_with_small_biases_is_critical_near_sigma_w2_1_76() {
        // Schoenholz et al. 2017 (Fig. 1, σ_b² = 0.05): the order-to-chaos line crosses at
        // σ_w² ≈ 1.76; ξ_c grows without bound there
        let below = depth_scale(Activation::Tanh, 1.70, 0.05);
        let above = depth_scale(Activation::Tanh, 1.82, 0.05);
        assert!(below.chi1 < 1.0 && above.chi1 > 1.0, "{below:?} {above:?}");
        let far = depth_scale(Activation::Tanh, 3.0, 0.05);
        assert!(below.xi_c > 3.0 * far.xi_c, "{below:?} {far:?}");
        assert!((gaussian_expect2(|a, b| a * a * b * b) - 1.0).abs() < 1e-6);
    }

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
