//! The exponential moving average's step, avg ← avg·d + now·f, as one pass over each tensor:
//! written into the average's own buffer when nothing else holds it, big tensors in parallel
//! blocks. burn's `avg * d + now * f` is three passes and two fresh buffers per tensor (and the
//! detection trainer ran it tensor after tensor).
//!
//! The arithmetic is burn's on flex, operation by operation in f32: both products rounded, then
//! their sum (no fused multiply-add), so the average holds the bits the composed version gives;
//! the test holds them equal.

use burn::backend::Flex;
use burn::tensor::{DType, Tensor};

use super::host::{contiguous, tensor, values};

/// Elements per task: an average bigger than this is blended on every thread in blocks of it;
/// smaller ones on the calling thread (a fork costs more than a bias's blend).
const BLOCK: usize = 1 << 15;

/// `avg·d + now·f` for two flattened f32 tensors of the same length, into `avg`'s buffer when
/// nothing else holds it. `Err(avg)` when a tensor is not an f32 flex tensor or the lengths
/// differ (the caller then composes it from burn's operations; boxed: a tensor is a large value).
pub fn blend(avg: Tensor<1>, now: &Tensor<1>, d: f32, f: f32) -> Result<Tensor<1>, Box<Tensor<1>>> {
    let flex = |t: &Tensor<1>| {
        t.clone()
            .try_into_primitive::<Flex>()
            .ok()
            .filter(|p| p.dtype() == DType::F32)
    };
    let n = avg.dims()[0];
    let Some(nf) = flex(now).and_then(|p| contiguous(&p)) else {
        return Err(Box::new(avg));
    };
    // checked on a clone, which is dropped again before `avg` itself is taken apart
    if flex(&avg).is_none() || values(&nf).len() != n {
        return Err(Box::new(avg));
    }
    let Ok(mut a) = avg.try_into_primitive::<Flex>() else {
        unreachable!("checked to be a flex tensor just above")
    };
    let b = values(&nf);
    if a.is_unique() && a.layout().contiguous_offsets() == Some((0, n)) {
        mix(&mut a.storage_mut::<f32>()[..n], b, d, f);
        return Ok(Tensor::from_primitive::<Flex>(a));
    }
    let Some(ac) = contiguous(&a) else {
        unreachable!("checked to be f32 just above")
    };
    let mut out = values(&ac).to_vec();
    mix(&mut out, b, d, f);
    Ok(Tensor::from_primitive::<Flex>(tensor(out, [n])))
}

/// a ← a·d + b·f, in parallel blocks when `a` is big.
fn mix(a: &mut [f32], b: &[f32], d: f32, f: f32) {
    use rayon::prelude::*;
    if a.len() <= BLOCK {
        return mix_block(a, b, d, f);
    }
    a.par_chunks_mut(BLOCK)
        .zip(b.par_chunks(BLOCK))
        .for_each(|(a, b)| mix_block(a, b, d, f));
}

crate::kernels::simd::multiversion! {
    /// One block of [`mix`]: the products rounded apart, then added (the compiler vectorises the
    /// loop and, without fast-math, never fuses it into a multiply-add).
    fn mix_block(a: &mut [f32], b: &[f32], d: f32, f: f32) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = *x * d + *y * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testing::values as read;
    use burn::tensor::Distribution;

    /// The kernel gives the bits of burn's composed `avg * d + now * f`, in place and into a
    /// fresh buffer (when a copy of the average is held elsewhere, which must not change), for
    /// a small tensor and one split into blocks.
    #[test]
    fn the_blend_is_burns_composed_blend_bit_for_bit() {
        // the plain device: the average lives off autodiff
        let device = crate::device().inner();
        let d64 = 0.9999 * (1.0 - (-7.0f64 / 2000.0).exp());
        let (d, f) = (d64 as f32, (1.0 - d64) as f32);
        for n in [100, 3 * BLOCK + 17] {
            let avg = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
            let now = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &device);
            let want = read(avg.clone() * d64 + now.clone() * (1.0 - d64));
            let before = read(avg.clone());
            // a copy held: a fresh buffer, the copy unchanged
            let kept = avg.clone();
            let fresh = blend(avg, &now, d, f).unwrap_or_else(|_| panic!("flex tensors"));
            assert_eq!(read(kept.clone()), before, "the held copy changed");
            let fresh = read(fresh);
            // held once: in place (the result in the average's own buffer)
            let ptr = |t: &Tensor<1>| {
                let p = t.clone().try_into_primitive::<Flex>().expect("flex");
                values(&p).as_ptr() as usize
            };
            let at = ptr(&kept);
            let in_place = blend(kept, &now, d, f).unwrap_or_else(|_| panic!("flex"));
            assert_eq!(ptr(&in_place), at, "n = {n}: not written in place");
            let in_place = read(in_place);
            for got in [fresh, in_place] {
                let same = got
                    .iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "n = {n}: not burn's bits");
            }
        }
        // different lengths: handed back for burn to compose (which then refuses them itself)
        let (a, b) = (
            Tensor::<1>::zeros([4], &device),
            Tensor::<1>::zeros([5], &device),
        );
        assert!(blend(a, &b, d, f).is_err());
    }
}
