//! Handing a parent its gradient, summed in parallel when it has one already.
//!
//! burn's `Gradients::register` adds a second registration for the same tensor to the first with
//! one element-wise add, on one thread below 4 M values (flex's threshold). A tensor that feeds
//! two operations — a convolution's input that is also the residual, the halves of a split that
//! also go to a concatenation, the head's features read by both of its branches — paid that
//! serial pass in every backward: the largest part of a YOLO26n step that still ran on one
//! thread. Here, when one of these kernels already registered a gradient for the tensor, that
//! gradient is taken back out of `Gradients` and added to the new one in parallel, and the sum is
//! registered in its place. Where burn's own operations registered first, burn's add stays
//! (correct, on one thread).
//!
//! A gradient is only taken back when these kernels registered it themselves (kept in a set of
//! node ids), so it is certainly there: the only other reader of an intermediate tensor's
//! gradient is the backward of the operation that produced it, which runs after every consumer's.
//! Leaves (tensors made to require a gradient, with no parents) are never taken back: burn keeps
//! their gradient on reading it, so the sum would count it twice.

use std::collections::HashSet;
use std::sync::Mutex;

use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::NodeId;
use burn::backend::flex::FlexTensor;
use burn::backend::Flex;
use rayon::prelude::*;

use super::host::{contiguous, ShortRuns};

/// Values per parallel task of the sum.
const CHUNK: usize = 1 << 15;

/// How many ids the set keeps before it starts afresh: forgetting one only loses the parallel
/// sum for that tensor (burn's add then does it), so the bound is a memory bound, nothing more.
const KEEP: usize = 1 << 16;

/// The nodes these kernels have registered a gradient for.
static MINE: Mutex<Option<HashSet<NodeId>>> = Mutex::new(None);

/// Whether one of these kernels registered a gradient for `id` before; marks it as registered.
fn registered_before(id: NodeId) -> bool {
    let Ok(mut guard) = MINE.lock() else {
        return false;
    };
    let set = guard.get_or_insert_with(HashSet::new);
    if set.len() >= KEEP {
        set.clear();
    }
    !set.insert(id)
}

/// Hands the node `id` the gradient `g`. `leaf` tells whether the node has no parents; `take`
/// takes its current gradient out of `grads` (`grads.consume::<Flex>(&node)`), and is only
/// called when one of these kernels registered one before.
pub fn hand(
    grads: &mut Gradients,
    id: NodeId,
    leaf: bool,
    take: impl FnOnce(&mut Gradients) -> FlexTensor,
    g: FlexTensor,
) {
    if leaf || !registered_before(id) {
        grads.register::<Flex>(id, g);
        return;
    }
    let old = take(grads);
    let sum = add(g, &old).unwrap_or_else(|g| {
        // not two f32 tensors of one shape: burn's add
        grads.register::<Flex>(id, old);
        g
    });
    grads.register::<Flex>(id, sum);
}

/// `a + b` element by element, in parallel, into `a`'s buffer when nothing else holds it; `a`
/// comes back as the error when the two are not f32 tensors of one shape.
fn add(mut a: FlexTensor, b: &FlexTensor) -> Result<FlexTensor, FlexTensor> {
    if a.layout().shape() != b.layout().shape() {
        return Err(a);
    }
    let Some(b) = contiguous(b) else {
        return Err(a);
    };
    let bv = b.as_slice::<f32>().expect("contiguous f32");
    let n = bv.len();
    if a.is_unique() && a.layout().contiguous_offsets() == Some((0, n)) {
        let av = a.try_storage_mut::<f32>().expect("a unique f32 tensor");
        let av = &mut av[..n];
        // in place: read each value before writing it, chunk by chunk
        av.par_chunks_mut(CHUNK)
            .zip(bv.par_chunks(CHUNK))
            .short_runs()
            .for_each(|(o, y)| o.iter_mut().zip(y).for_each(|(o, &y)| *o += y));
        return Ok(a);
    }
    let Some(ac) = contiguous(&a) else {
        return Err(a);
    };
    let av = ac.as_slice::<f32>().expect("contiguous f32");
    // SAFETY: every element is written, chunk by chunk.
    let out = unsafe {
        super::host::filled(n, |out| {
            out.par_chunks_mut(CHUNK)
                .zip(av.par_chunks(CHUNK))
                .zip(bv.par_chunks(CHUNK))
                .short_runs()
                .for_each(|((o, x), y)| {
                    for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
                        o.write(x + y);
                    }
                })
        })
    };
    Ok(super::host::tensor(out, a.layout().shape().to_vec()))
}

/// `hand` for an operation's parent `$node` (an `Option<NodeRef>` taken from `ops.parents`,
/// whose type burn does not export by name).
macro_rules! hand_to {
    ($grads:expr, $node:expr, $g:expr) => {
        $crate::kernels::grads::hand(
            $grads,
            $node.id,
            $node.parents.is_empty(),
            |gr| gr.consume::<burn::backend::Flex>(&$node),
            $g,
        )
    };
}
pub(crate) use hand_to;
