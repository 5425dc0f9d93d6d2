//! Element-wise maths written so that the compiler vectorises it, and a way to compile a loop three
//! times (AVX-512, AVX2 + FMA, plain SSE2) without a global `target-cpu` flag.

/// Defines `fn $name(args) -> ret` whose body is compiled three times: for AVX-512 and for
/// AVX2 (each with FMA, chosen at run time when the CPU has them) and for the baseline target.
/// The body must be safe code. In the two FMA builds, `exp`, `sigmoid`, `tanh` and `madd` named
/// in the body are [`fused`]'s (one fused multiply-add per polynomial step; Rust never contracts
/// `a * b + c` by itself), in the baseline build the plain ones (where `mul_add` would be a slow
/// library call).
macro_rules! multiversion {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx512($($arg: $ty),*) $(-> $ret)? {
                    #[allow(unused_imports)]
                    use $crate::kernels::simd::fused::{exp, madd, sigmoid, tanh};
                    $body
                }
                if $crate::kernels::simd::has_avx512() {
                    // SAFETY: the CPU supports AVX-512 F/VL/BW/DQ, AVX2 and FMA (checked at run
                    // time just above).
                    return unsafe { avx512($($arg),*) };
                }
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? {
                    #[allow(unused_imports)]
                    use $crate::kernels::simd::fused::{exp, madd, sigmoid, tanh};
                    $body
                }
                if $crate::kernels::simd::has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time just above).
                    return unsafe { avx2($($arg),*) };
                }
            }
            #[allow(clippy::too_many_arguments)]
            fn plain($($arg: $ty),*) $(-> $ret)? {
                #[allow(unused_imports)]
                use $crate::kernels::simd::{exp, madd, sigmoid, tanh};
                $body
            }
            plain($($arg),*)
        }
    };
}
pub(crate) use multiversion;

/// The vector extensions the kernels may use on this CPU: 0 none, 1 AVX2 + FMA, 2 also AVX-512
/// F/VL/BW/DQ. Detected once (the kernels ask per row; six feature tests each time showed as 1%
/// of a convolution benchmark).
fn level() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(u8::MAX);
    let l = LEVEL.load(Ordering::Relaxed);
    if l != u8::MAX {
        return l;
    }
    #[cfg(target_arch = "x86_64")]
    let l = {
        use std::arch::is_x86_feature_detected as has;
        if !(has!("avx2") && has!("fma")) {
            0
        } else if has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            2
        } else {
            1
        }
    };
    #[cfg(not(target_arch = "x86_64"))]
    let l = 0;
    LEVEL.store(l, Ordering::Relaxed);
    l
}

/// Whether the CPU has AVX-512 (F, VL, BW, DQ) besides AVX2 and FMA.
#[inline]
pub fn has_avx512() -> bool {
    level() >= 2
}

/// Whether the CPU has AVX2 and FMA.
#[inline]
pub fn has_avx2() -> bool {
    level() >= 1
}

/// a·b + c: one fused multiply-add (single rounding) when `FMA`, a product and a sum otherwise.
#[inline(always)]
pub fn madd_with<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// eˣ for f32 with ≤ 2 ulp error on [-87, 88], branch-free so that loops over it vectorise:
/// x = n·ln2 + r with n rounded to nearest by the 1.5·2²³ trick, eʳ by a degree-6 polynomial
/// on |r| ≤ ln2/2 (truncation error r⁷/7! ≤ 1.2e-7), 2ⁿ built in the exponent bits.
/// Inputs are clamped to [-87.3, 88.3]: below, the result is the smallest normal (≈1e-38)
/// instead of 0; above, ≈2e38 instead of ∞. NaN gives NaN.
#[inline(always)]
pub fn exp_with<const FMA: bool>(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5·2²³
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    let xc = x.clamp(-87.3, 88.3);
    let m = madd_with::<FMA>;
    let k = m(xc, std::f32::consts::LOG2_E, MAGIC);
    let n = k - MAGIC;
    let r = m(-n, LN2_LO, m(-n, LN2_HI, xc));
    let mut p = 1.0 / 720.0;
    for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = m(p, r, c);
    }
    let ni = (k.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let scale = f32::from_bits(((ni + 127) << 23) as u32);
    // NaN in → NaN out: `clamp` keeps NaN, and it flows through r into p.
    p * scale
}

/// σ(x) = 1 / (1 + e⁻ˣ).
#[inline(always)]
pub fn sigmoid_with<const FMA: bool>(x: f32) -> f32 {
    1.0 / (1.0 + exp_with::<FMA>(-x))
}

/// tanh(x) with relative error ≤ 5e-7 everywhere: an odd Taylor polynomial up to x¹¹ for
/// |x| < 0.3 (where 2σ(2x) − 1 would lose the low digits of small values), 2σ(2x) − 1 above.
#[inline(always)]
pub fn tanh_with<const FMA: bool>(x: f32) -> f32 {
    let x2 = x * x;
    let mut p = -1382.0 / 155_925.0;
    for c in [62.0 / 2835.0, -17.0 / 315.0, 2.0 / 15.0, -1.0 / 3.0] {
        p = madd_with::<FMA>(p, x2, c);
    }
    let small = madd_with::<FMA>(x * x2, p, x);
    let large = madd_with::<FMA>(2.0, sigmoid_with::<FMA>(2.0 * x), -1.0);
    if x.abs() < 0.3 {
        small
    } else {
        large
    }
}

/// The plain (no FMA) versions, for code outside `multiversion!` and its baseline build.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    exp_with::<false>(x)
}
/// See [`exp`].
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    sigmoid_with::<false>(x)
}
/// See [`exp`].
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    tanh_with::<false>(x)
}
/// a·b + c as a product and a sum (see [`exp`]).
#[inline(always)]
pub fn madd(a: f32, b: f32, c: f32) -> f32 {
    madd_with::<false>(a, b, c)
}

/// The FMA versions, which `multiversion!` puts in scope in its AVX2 and AVX-512 builds.
pub mod fused {
    #[inline(always)]
    pub fn exp(x: f32) -> f32 {
        super::exp_with::<true>(x)
    }
    #[inline(always)]
    pub fn sigmoid(x: f32) -> f32 {
        super::sigmoid_with::<true>(x)
    }
    #[inline(always)]
    pub fn tanh(x: f32) -> f32 {
        super::tanh_with::<true>(x)
    }
    #[inline(always)]
    pub fn madd(a: f32, b: f32, c: f32) -> f32 {
        super::madd_with::<true>(a, b, c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each accuracy test runs on the plain and the FMA versions.
    const EXP: [fn(f32) -> f32; 2] = [exp_with::<false>, exp_with::<true>];
    const SIGMOID: [fn(f32) -> f32; 2] = [sigmoid_with::<false>, sigmoid_with::<true>];
    const TANH: [fn(f32) -> f32; 2] = [tanh_with::<false>, tanh_with::<true>];

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        for exp in EXP {
            exp_case(exp);
        }
    }

    fn exp_case(exp: fn(f32) -> f32) {
        let mut worst = 0.0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.0173;
        }
        assert!(worst < 3.0e-7, "worst relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) < 2e-38 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0) > 1e38 && exp(1000.0).is_finite());
        assert_eq!(exp(0.0), 1.0);
    }

    #[test]
    fn sigmoid_matches_reference() {
        for (sigmoid, i) in SIGMOID
            .iter()
            .flat_map(|f| (-400..=400).map(move |i| (f, i)))
        {
            let x = i as f32 * 0.1;
            let want = 1.0 / (1.0 + (-(x as f64)).exp());
            assert!((sigmoid(x) as f64 - want).abs() < 1e-7, "x {x}");
        }
    }

    #[test]
    fn tanh_is_accurate_relative_to_its_value() {
        for tanh in TANH {
            tanh_case(tanh);
        }
    }

    fn tanh_case(tanh: fn(f32) -> f32) {
        let mut worst = 0.0f64;
        for i in -20000..=20000 {
            let x = i as f32 * 5e-4;
            let want = (x as f64).tanh();
            let err = if want == 0.0 {
                (tanh(x) as f64).abs()
            } else {
                ((tanh(x) as f64 - want) / want).abs()
            };
            worst = worst.max(err);
        }
        assert!(worst < 5e-7, "worst relative error {worst:e}");
        assert_eq!(tanh(1e-20), 1e-20);
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
    }

    #[test]
    fn tanh_is_within_3e_7_absolute() {
        for (tanh, i) in TANH.iter().flat_map(|f| (-200..=200).map(move |i| (f, i))) {
            let x = i as f32 * 0.05;
            assert!((tanh(x) - x.tanh()).abs() < 3e-7, "{x}");
        }
    }

    multiversion! {
        fn sum_exp(v: &[f32]) -> f32 {
            v.iter().map(|&x| exp(x)).sum()
        }
    }

    #[test]
    fn multiversioned_function_runs() {
        let v = [0.0f32, 1.0, -1.0];
        let want = 1.0 + std::f32::consts::E + 1.0 / std::f32::consts::E;
        assert!((sum_exp(&v) - want).abs() < 1e-6);
    }
}
