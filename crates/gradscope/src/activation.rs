//! Activation functions as a switch, with their analytic derivatives.
//!
//! The derivative is what decides whether a deep stack of layers passes gradients back:
//! the chain rule multiplies one φ'(z) per layer, and sigmoid' never exceeds 0.25.

use crate::choice::choice;
use crate::kernels::act;
use burn::tensor::activation;
use burn::tensor::Tensor;

/// Slope of `leaky_relu` for negative inputs.
pub const LEAKY_SLOPE: f64 = 0.01;

/// |z| above which sigmoid'(z) < 0.01: the unit is saturated (ln((1+√0.96)/(1−√0.96)) ≈ 4.585).
pub const SIGMOID_SATURATION_Z: f64 = 4.584_863_339;
/// |z| above which tanh'(z) = 1 − tanh²(z) < 0.01 (atanh(√0.99) ≈ 2.993).
pub const TANH_SATURATION_Z: f64 = 2.993_222_846;

choice! {
    /// A pointwise nonlinearity φ.
    pub enum Activation ("activation") {
        Sigmoid = "sigmoid",
        Tanh = "tanh",
        Relu = "relu",
        LeakyRelu = "leaky_relu",
        Silu = "silu",
        Gelu = "gelu",
        /// z / (1 + |z|) (Bergstra et al. 2009; Glorot & Bengio 2010): tanh's shape with
        /// polynomial rather than exponential tails, so it saturates more gently.
        Softsign = "softsign",
        /// The identity: a deep *linear* network (Saxe et al. 2014), nonlinear only in its
        /// learning dynamics.
        Linear = "linear",
    }
}

impl Activation {
    /// φ applied to a tensor (differentiable).
    pub fn forward<const D: usize>(self, z: Tensor<D>) -> Tensor<D> {
        if let Some(y) = self.fused_kind().and_then(|k| act::apply(&z, k)) {
            return y;
        }
        match self {
            Activation::Sigmoid => activation::sigmoid(z),
            Activation::Tanh => activation::tanh(z),
            Activation::Relu => activation::relu(z),
            Activation::LeakyRelu => activation::leaky_relu(z, LEAKY_SLOPE),
            Activation::Silu => activation::silu(z),
            Activation::Gelu => activation::gelu(z),
            Activation::Softsign => z.clone() / (z.abs() + 1.0),
            Activation::Linear => z,
        }
    }

    /// The fused kernel ([`act`]) that computes φ on flex, where there is one.
    pub fn fused_kind(self) -> Option<act::Kind> {
        match self {
            Activation::Sigmoid => Some(act::Kind::Sigmoid),
            Activation::Tanh => Some(act::Kind::Tanh),
            Activation::Silu => Some(act::Kind::Silu),
            _ => None,
        }
    }

    /// φ(z) for one value.
    pub fn value(self, z: f64) -> f64 {
        match self {
            Activation::Sigmoid => sigmoid(z),
            Activation::Tanh => z.tanh(),
            Activation::Relu => z.max(0.0),
            Activation::LeakyRelu => {
                if z > 0.0 {
                    z
                } else {
                    LEAKY_SLOPE * z
                }
            }
            Activation::Silu => z * sigmoid(z),
            Activation::Gelu => z * normal_cdf(z),
            Activation::Softsign => z / (1.0 + z.abs()),
            Activation::Linear => z,
        }
    }

    /// φ'(z), analytic.
    pub fn derivative(self, z: f64) -> f64 {
        match self {
            Activation::Sigmoid => {
                let s = sigmoid(z);
                s * (1.0 - s)
            }
            Activation::Tanh => 1.0 - z.tanh().powi(2),
            Activation::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Activation::LeakyRelu => {
                if z > 0.0 {
                    1.0
                } else {
                    LEAKY_SLOPE
                }
            }
            Activation::Silu => {
                let s = sigmoid(z);
                s * (1.0 + z * (1.0 - s))
            }
            Activation::Gelu => normal_cdf(z) + z * normal_pdf(z),
            Activation::Softsign => (1.0 + z.abs()).powi(-2),
            Activation::Linear => 1.0,
        }
    }

    /// Whether a unit can die (output ≤ 0 with zero gradient): the ReLU family.
    pub fn can_die(self) -> bool {
        matches!(self, Activation::Relu | Activation::LeakyRelu)
    }

    /// Whether φ saturates (φ' → 0 for large |z|) so that a saturated fraction is meaningful.
    pub fn saturates(self) -> bool {
        matches!(
            self,
            Activation::Sigmoid | Activation::Tanh | Activation::Softsign
        )
    }

    /// Is this *output* value h = φ(z) in the saturated region (φ'(z) < 0.01)?
    /// Decided from the output so the probe needs only the activation itself.
    #[inline]
    pub fn is_saturated_output(self, h: f32) -> bool {
        match self {
            // σ' = h(1−h) < 0.01
            Activation::Sigmoid => (h as f64) * (1.0 - h as f64) < 0.01,
            // tanh' = 1 − h² < 0.01
            Activation::Tanh => 1.0 - (h as f64) * (h as f64) < 0.01,
            // softsign' = (1 − |h|)² < 0.01
            Activation::Softsign => 1.0 - (h as f64).abs() < 0.1,
            _ => false,
        }
    }

    /// Gain for He-style and orthogonal initialisation: Var(W)·fan_in = gain² keeps the forward
    /// signal's scale. √2 for the ReLU family (half the units are off); SiLU and GELU, which
    /// behave like ReLU for large |z|, take the same gain; 5/3 for tanh; 1 for sigmoid,
    /// softsign and the identity.
    pub fn gain(self) -> f64 {
        match self {
            Activation::Sigmoid | Activation::Softsign | Activation::Linear => 1.0,
            Activation::Tanh => 5.0 / 3.0,
            Activation::Relu | Activation::Silu | Activation::Gelu => std::f64::consts::SQRT_2,
            Activation::LeakyRelu => (2.0 / (1.0 + LEAKY_SLOPE * LEAKY_SLOPE)).sqrt(),
        }
    }
}

pub fn sigmoid(z: f64) -> f64 {
    1.0 / (1.0 + (-z).exp())
}

pub fn normal_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * std::f64::consts::PI).sqrt()
}

pub fn normal_cdf(z: f64) -> f64 {
    0.5 * (1.0 + libm::erf(z / std::f64::consts::SQRT_2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(a: Activation) -> (f64, f64, f64) {
        // (min φ', max φ', argmax) over a fine grid
        let (mut lo, mut hi, mut arg) = (f64::INFINITY, f64::NEG_INFINITY, 0.0);
        for i in -200_000..=200_000 {
            let z = i as f64 * 1e-4;
            let d = a.derivative(z);
            lo = lo.min(d);
            if d > hi {
                hi = d;
                arg = z;
            }
        }
        (lo, hi, arg)
    }

    #[test]
    fn sigmoid_derivative_peaks_at_a_quarter_at_zero() {
        let (_, hi, arg) = scan(Activation::Sigmoid);
        assert!((hi - 0.25).abs() < 1e-12, "max σ' = {hi}");
        assert!(arg.abs() < 1e-9, "argmax at {arg}");
    }

    #[test]
    fn tanh_derivative_peaks_at_one() {
        let (lo, hi, arg) = scan(Activation::Tanh);
        assert!((hi - 1.0).abs() < 1e-12 && arg.abs() < 1e-9);
        assert!(lo >= 0.0);
    }

    #[test]
    fn silu_derivative_range() {
        let (lo, hi, _) = scan(Activation::Silu);
        assert!((lo - (-0.0998)).abs() < 1e-4, "min SiLU' = {lo}");
        assert!((hi - 1.0998).abs() < 1e-4, "max SiLU' = {hi}");
    }

    #[test]
    fn derivatives_match_finite_differences() {
        for &a in Activation::ALL {
            for &z in &[-3.1, -0.7, 0.3, 1.9, 4.2] {
                let h = 1e-5;
                let fd = (a.value(z + h) - a.value(z - h)) / (2.0 * h);
                assert!((fd - a.derivative(z)).abs() < 1e-7, "{a} at {z}");
            }
        }
    }

    #[test]
    fn saturation_thresholds_are_where_the_derivative_is_one_percent() {
        let s = Activation::Sigmoid.derivative(SIGMOID_SATURATION_Z);
        let t = Activation::Tanh.derivative(TANH_SATURATION_Z);
        assert!((s - 0.01).abs() < 1e-8, "{s}");
        assert!((t - 0.01).abs() < 1e-8, "{t}");
        let h = sigmoid(SIGMOID_SATURATION_Z + 0.01) as f32;
        assert!(Activation::Sigmoid.is_saturated_output(h));
        assert!(!Activation::Sigmoid.is_saturated_output(sigmoid(4.5) as f32));
    }

    #[test]
    fn parse_rejects_unknown_names_and_lists_accepted() {
        assert_eq!("silu".parse::<Activation>().unwrap(), Activation::Silu);
        let e = "foo".parse::<Activation>().unwrap_err();
        assert!(e.contains("foo") && e.contains("leaky_relu"), "{e}");
    }
}
