//! An identity operation that keeps the gradient flowing through it: how the probe reads ∂L/∂h
//! on flex without an extra tensor.
//!
//! The portable way (used on other backends) adds a zero-valued leaf to h and reads the leaf's
//! gradient: a zero tensor, an addition forward and one backward per probe point. Here the
//! forward returns h itself (a shared handle, no copy) and the backward hands the incoming
//! gradient on unchanged while keeping a handle to it.

use std::sync::{Arc, Mutex};

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::NoCheckpointing;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::flex::FlexTensor;
use burn::backend::{Autodiff, Flex};
use burn::tensor::Tensor;

use super::grads::hand_to;
use super::host::{contiguous, values};
use super::moments;

type Ad = Autodiff<Flex>;

/// What a tap's backward keeps of the gradient through it: the values, or only its
/// [`moments::finite_moments`] and length, taken while the gradient was still in cache.
#[derive(Clone, Debug)]
enum Caught {
    Values(FlexTensor),
    Moments(moments::Finite, usize),
}

/// Where the gradient of a tapped tensor lands after `backward`.
#[derive(Clone, Debug, Default)]
pub struct GradSlot(Arc<Mutex<Option<Caught>>>);

impl GradSlot {
    /// Stores a gradient's [`moments::finite_moments`] and number of values, taken by a fused
    /// operation's backward while the values are in cache (how it hands a gradient over).
    pub fn set_moments(&self, moments: moments::Finite, len: usize) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(Caught::Moments(moments, len));
        }
    }

    /// Runs `f` on the gradient's values, or returns `None` when no gradient reached the tap
    /// (or the tap kept only its moments).
    pub fn with<R>(&self, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
        match self.0.lock().ok()?.take()? {
            Caught::Values(g) => Some(f(values(&contiguous(&g)?))),
            Caught::Moments(..) => None,
        }
    }

    /// The gradient's [`moments::finite_moments`] and number of values, or `None` when no
    /// gradient reached the tap.
    pub fn moments(&self) -> Option<(moments::Finite, usize)> {
        match self.0.lock().ok()?.take()? {
            Caught::Values(g) => moments_of(&g),
            Caught::Moments(m, n) => Some((m, n)),
        }
    }
}

/// A gradient's [`moments::finite_moments`] and number of values.
fn moments_of(g: &FlexTensor) -> Option<(moments::Finite, usize)> {
    let c = contiguous(g)?;
    let v = values(&c);
    Some((moments::finite_moments(v, None), v.len()))
}

#[derive(Debug)]
struct TapBackward;

/// The slot, and whether the backward keeps the moments only.
type TapState = (GradSlot, bool);

impl Backward<Flex, 1> for TapBackward {
    type State = TapState;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [parent] = ops.parents;
        let g = grads.consume::<Flex>(&ops.node);
        let (slot, measure) = ops.state;
        let caught = if measure {
            moments_of(&g).map(|(m, n)| Caught::Moments(m, n))
        } else {
            Some(Caught::Values(g.clone()))
        };
        if let Ok(mut slot) = slot.0.lock() {
            *slot = caught;
        }
        if let Some(node) = parent {
            hand_to!(grads, node, g);
        }
    }
}

/// `h` unchanged, with a slot that will hold ∂L/∂h (with `measure`, only its moments, taken
/// in the backward pass while it is in cache: the values are not kept); `None` when `h` is not
/// a tracked `Autodiff<Flex>` tensor (the caller then takes the portable path).
pub fn tap<const D: usize>(h: &Tensor<D>, measure: bool) -> Option<(Tensor<D>, GradSlot)> {
    let hp = h.clone().try_into_primitive::<Ad>().ok()?;
    let slot = GradSlot::default();
    match TapBackward
        .prepare::<NoCheckpointing>([hp.node()])
        .compute_bound()
        .stateful()
    {
        OpsKind::Tracked(prep) => {
            let out = prep.finish((slot.clone(), measure), hp.primitive().clone());
            Some((Tensor::from_primitive::<Ad>(out), slot))
        }
        OpsKind::UnTracked(_) => None,
    }
}

/// Runs `f` on the values of a flex tensor without copying them (one layout copy when the
/// tensor is a strided view); `None` for tensors of other backends or dtypes.
pub fn with_values<const D: usize, R>(t: &Tensor<D>, f: impl FnOnce(&[f32]) -> R) -> Option<R> {
    let p = match t.clone().try_into_primitive::<Ad>() {
        Ok(p) => p.into_primitive(),
        Err(_) => t.clone().try_into_primitive::<Flex>().ok()?,
    };
    let c = contiguous(&p)?;
    Some(f(values(&c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::tensor::{Distribution, TensorData};

    #[test]
    fn tap_passes_values_and_gradients_through_and_keeps_the_gradient() {
        let dev = crate::device();
        let x = Tensor::<2>::random([3, 4], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let h = x.clone() * 3.0;
        let (t, slot) = tap(&h, false).expect("tracked flex tensor");
        let w = Tensor::<2>::from_data(
            TensorData::new((0..12).map(|i| i as f32).collect::<Vec<_>>(), [3, 4]),
            &dev,
        );
        let grads = (t.clone() * w.clone()).sum().backward();
        let got = slot.with(|g| g.to_vec()).unwrap();
        assert_eq!(got, (0..12).map(|i| i as f32).collect::<Vec<_>>());
        let dx = x
            .grad(&grads)
            .unwrap()
            .into_data()
            .try_into_vec::<f32>()
            .unwrap();
        assert_eq!(dx, (0..12).map(|i| 3.0 * i as f32).collect::<Vec<_>>());
        let same = with_values(&t, |v| v.to_vec()).unwrap();
        let want = h.into_data().try_into_vec::<f32>().unwrap();
        assert_eq!(same, want);
    }

    #[test]
    fn untracked_tensors_are_not_tapped() {
        let x = Tensor::<1>::zeros([3], &burn::tensor::Device::flex());
        assert!(tap(&x, false).is_none());
        assert_eq!(with_values(&x, |v| v.len()), Some(3));
    }

    /// A measuring tap keeps the gradient's moments (those of its values), not the values.
    #[test]
    fn a_measuring_tap_keeps_the_moments_only() {
        let dev = crate::device();
        let x = Tensor::<2>::random([30, 70], Distribution::Normal(0.0, 1.0), &dev).require_grad();
        let w = Tensor::<2>::random([30, 70], Distribution::Normal(0.0, 2.0), &dev);
        let (t, slot) = tap(&(x.clone() * 1.0), true).expect("tracked flex tensor");
        let (t2, slot2) = tap(&(x.clone() * 1.0), false).expect("tracked flex tensor");
        let (t3, slot3) = tap(&(x * 1.0), true).expect("tracked flex tensor");
        let _ = ((t + t2 + t3) * w.clone()).sum().backward();
        let want = w.into_data().try_into_vec::<f32>().unwrap();
        let (m, n) = slot.moments().unwrap();
        assert_eq!(n, want.len());
        assert_eq!(m, moments::finite_moments(&want, None));
        assert!(slot3.with(|g| g.len()).is_none());
        assert_eq!(slot2.with(|g| g.to_vec()).unwrap(), want);
    }
}
