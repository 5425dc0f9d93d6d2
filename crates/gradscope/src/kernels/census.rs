//! A census of the convolution kernels' parallel loops: for every call while it is on, the
//! kernel, the number of independent tasks its loop was cut into, and how long it took.
//!
//! A loop of `T` equal tasks on `P` threads takes ⌈T/P⌉ task-lengths however well they are
//! scheduled, so `T` sets a ceiling on its speed-up that no number of cores lifts: 4 tasks run
//! no faster on 16 threads than on 4. [`ceiling`] is that bound summed over a census, weighted by
//! each call's time; measured at one thread it tells, on any machine, how far a step's
//! convolutions could scale on a bigger one (`bench conv_census`). It is a bound from the split
//! alone: memory bandwidth, unequal tasks and the serial code between loops come on top.
//!
//! Off (the default), a call costs one relaxed atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ON: AtomicBool = AtomicBool::new(false);
static CALLS: Mutex<Vec<Call>> = Mutex::new(Vec::new());

/// One kernel call's parallel loop.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// `conv_forward`, `conv_input_grad` or `conv_weight_grad`.
    pub kind: &'static str,
    /// The independent tasks the loop was cut into.
    pub tasks: usize,
    /// The convolution it ran, as `n×cin×h×w → cout, kh×kw s<stride>[ g<groups>]` (an input
    /// gradient run as a convolution of ∂L/∂Y: that convolution).
    pub shape: String,
    /// The loop's wall time.
    pub secs: f64,
}

/// Starts recording (and forgets what an earlier census recorded).
pub fn start() {
    calls().clear();
    ON.store(true, Ordering::Relaxed);
}

/// Stops recording and returns the calls recorded since [`start`], in call order.
pub fn stop() -> Vec<Call> {
    ON.store(false, Ordering::Relaxed);
    std::mem::take(&mut *calls())
}

fn calls() -> std::sync::MutexGuard<'static, Vec<Call>> {
    // a panic elsewhere while holding the lock leaves the list as it was: still usable
    CALLS.lock().unwrap_or_else(|e| e.into_inner())
}

/// A loop being timed for the census; recorded when dropped.
pub(crate) struct Timed {
    kind: &'static str,
    tasks: usize,
    shape: String,
    start: Instant,
}

/// Starts timing a loop of `tasks` independent tasks over `shape` when the census is on (else
/// `None`, and nothing is recorded): the loop is recorded when the returned guard is dropped.
pub(crate) fn time(
    kind: &'static str,
    tasks: usize,
    shape: impl FnOnce() -> String,
) -> Option<Timed> {
    ON.load(Ordering::Relaxed).then(|| Timed {
        kind,
        tasks,
        shape: shape(),
        start: Instant::now(),
    })
}

impl Drop for Timed {
    fn drop(&mut self) {
        let call = Call {
            kind: self.kind,
            tasks: self.tasks,
            shape: std::mem::take(&mut self.shape),
            secs: self.start.elapsed().as_secs_f64(),
        };
        calls().push(call);
    }
}

/// The speed-up on `threads` threads that the calls' splits allow at most: their time over the
/// time each would take with its tasks equal and perfectly shared (⌈T/P⌉ of its T tasks'
/// lengths). `threads` when every call has a multiple of `threads` tasks; 1 for no calls.
pub fn ceiling(calls: &[Call], threads: usize) -> f64 {
    let p = threads.max(1);
    let (mut total, mut bound) = (0.0, 0.0);
    for c in calls {
        let t = c.tasks.max(1);
        total += c.secs;
        bound += c.secs * t.div_ceil(p) as f64 / t as f64;
    }
    if bound > 0.0 {
        total / bound
    } else {
        1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tasks: usize, secs: f64) -> Call {
        Call {
            kind: "conv_forward",
            tasks,
            secs,
            shape: String::new(),
        }
    }

    #[test]
    fn the_ceiling_is_set_by_the_tasks() {
        // 4 tasks: as fast on 16 threads as on 4; 3 threads take two rounds
        assert_eq!(ceiling(&[call(4, 1.0)], 16), 4.0);
        assert_eq!(ceiling(&[call(4, 1.0)], 4), 4.0);
        assert_eq!(ceiling(&[call(4, 1.0)], 3), 2.0);
        // weighted by time: 1 s that reaches 16×, 1 s that reaches 4× → 2 / (1/16 + 1/4)
        let mixed = [call(16, 1.0), call(4, 1.0)];
        assert!((ceiling(&mixed, 16) - 2.0 / (1.0 / 16.0 + 0.25)).abs() < 1e-12);
        assert_eq!(ceiling(&[], 16), 1.0);
    }
}
