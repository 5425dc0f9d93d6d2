//! gradscope: train deep networks with gradient flow as a first-class signal.
//!
//! measure ([`probe`]) → localise ([`probe::producer`]) → diagnose ([`diagnose`]) → remedy
//! ([`nn`], [`train`]); [`lab`] runs experiments that show each claim side by side.

pub mod activation;
pub mod atomic;
mod choice;
pub mod crash;
pub mod data;
pub mod detect;
pub mod devices;
pub mod diagnose;
pub mod kernels;
pub mod lab;
pub mod nn;
pub mod probe;
pub mod report;
pub mod settings;
pub mod train;
pub mod yolo;

pub use burn::tensor::Device;

/// The names most programs need: the probe and its tap, the diagnosis, and the YOLO26 model and
/// trainer.
///
/// Probe any Burn model by passing each layer's output through [`Tap::point`](probe::Tap::point)
/// (see `examples/probe_your_model.rs` for a whole training loop):
///
/// ```
/// use burn::module::Module;
/// use burn::nn::{Linear, LinearConfig};
/// use burn::tensor::Tensor;
/// use gradscope::prelude::*;
///
/// #[derive(Module, Debug)]
/// struct Net {
///     layers: Vec<Linear>,
/// }
///
/// impl Net {
///     // the forward pass takes a `&mut Tap`; probe points are named by the module path of
///     // their parameters (`layers.0` owns `layers.0.weight`)
///     fn forward(&self, mut h: Tensor<2>, tap: &mut Tap) -> Tensor<2> {
///         for (i, l) in self.layers.iter().enumerate() {
///             let pre = l.forward(h);
///             let out = Activation::Tanh.forward(pre.clone());
///             h = tap.point(&format!("layers.{i}"), "dense", Some(Activation::Tanh), Some(&pre), out);
///         }
///         h
///     }
/// }
///
/// let device = device();
/// let net = Net {
///     layers: (0..4).map(|_| LinearConfig::new(8, 8).init(&device)).collect(),
/// };
/// let mut probe = Probe::new(ProbeConfig::default());
/// let x = Tensor::<2>::ones([16, 8], &device);
/// let mut tap = probe.tap(0);
/// let loss = net.forward(x, &mut tap).powf_scalar(2.0).mean();
/// let grads = loss.backward();
/// let pending = probe.after_backward(0, 0, 1.0, tap, &net, &grads);
/// probe.after_step(pending, &net, 0.1).unwrap();
/// let record = &probe.records()[0];
/// assert_eq!(record.layers.len(), 4);
/// assert!(record.layers.iter().all(|l| l.grad_h.norm > 0.0));
/// let d: Diagnosis = diagnose(probe.records()).unwrap();
/// assert_eq!(d.layers.len(), 4);
/// assert_eq!(d.verdict, Verdict::Healthy);
/// ```
pub mod prelude {
    pub use crate::activation::Activation;
    pub use crate::detect::args::DetectArgs;
    pub use crate::detect::train::{train, TrainEvent, TrainOutcome};
    pub use crate::device;
    pub use crate::diagnose::{diagnose, Change, Diagnosis, Remedy, Verdict};
    pub use crate::probe::{Probe, ProbeConfig, StepRecord, Tap};
    pub use crate::yolo::model::{Yolo, YoloConfig};
}

/// Keeps large freed buffers in the process instead of handing them back to the kernel (glibc).
///
/// A training step allocates and frees activation-sized buffers (tens of MB) hundreds of times.
/// glibc serves anything above its mmap threshold (at most 32 MB) with a fresh `mmap` and returns
/// it with `munmap`, so every such buffer costs page faults, zeroing by the kernel and TLB
/// shootdowns across cores (≈10% of a YOLO26n step in `perf`). Raising the mmap and trim
/// thresholds to 1 GiB keeps those buffers for reuse: 6–9% faster YOLO26n steps here at the same
/// peak RSS. Call once at the start of a program (the CLI and the benchmarks do); elsewhere a no-op.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes glibc's allocation thresholds; any value is valid.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
    }
}

/// Makes a write to a closed pipe end the program quietly, as Unix tools do (`gradscope diagnose
/// … | head`, once `head` has read its lines): Rust starts a program with SIGPIPE ignored, so such
/// a write fails and `println!` panics. Call once at the start of a program that prints (the CLI
/// does); elsewhere a no-op.
pub fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restores the default disposition of one signal; no handler of ours runs.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Runs `work` on one of rayon's worker threads and returns its result (directly when already on
/// one).
///
/// The kernels split every large operation across the pool. Called from an outside thread (a
/// program's main thread), each split is a job injected into the pool while the caller sleeps on
/// a futex until it is done: two wake-ups per operation, which made a 128×256×256 product 1.5×
/// slower than the same product issued from a worker (`examples/gemm_threads.rs`). From a worker,
/// the other half is pushed on the local deque and taken by a spinning sibling. Call it once
/// around a program's whole job (the CLI and the benchmarks do). The pool's threads get 64 MiB
/// stacks (virtual; only touched pages count), like a main thread's, for deep models.
pub fn on_workers<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return work();
    }
    // fails when the global pool already exists (then its settings stay)
    let _ = rayon::ThreadPoolBuilder::new()
        .stack_size(64 << 20)
        .build_global();
    warm(work)
}

/// Runs `work` in the current pool (entered from outside it) with the pool's other threads in
/// [`stay_warm`] until it returns.
fn warm<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    /// Tells the warm workers to stop when dropped, also when `work` panics: otherwise they would
    /// spin on and the scope (which waits for them) would never end.
    struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);
    impl Drop for StopOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::Release);
        }
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    rayon::scope(|s| {
        let main = rayon::current_thread_index();
        let stop = &stop;
        s.spawn_broadcast(move |_, ctx| {
            if Some(ctx.index()) != main {
                stay_warm(stop);
            }
        });
        let _stop = StopOnDrop(stop);
        work()
    })
}

/// A pool thread's loop while [`on_workers`] runs: takes the jobs the main worker splits off as
/// soon as they appear, instead of sleeping between them (rayon parks an idle thread on a futex
/// after a few dozen yields, and waking it again cost 10–20% of a small model's step). For `HOT`
/// after its last job it spins on the CPU; then, up to `SPIN`, it offers the core to any other
/// thread that is ready between looks (`sched_yield`: where threads outnumber the cores, as
/// with `RAYON_NUM_THREADS` above the core count, the data loader's threads or another
/// program, a thread that only spun held its core from the job thread and the loaders — the
/// default run took 135 s at 4 threads on 2 cores, 26 s now); after `SPIN` it naps in short
/// sleeps, so a long pause (validation, I/O) does not hold a core.
fn stay_warm(stop: &std::sync::atomic::AtomicBool) {
    use std::time::{Duration, Instant};
    const HOT: Duration = Duration::from_micros(50);
    const SPIN: Duration = Duration::from_millis(5);
    const FLUSH: Duration = Duration::from_micros(50);
    let mut last = Instant::now();
    // the time without work since this worker last added to IDLE_NS, counted from `mark` (the
    // end of the previous look for work) to the end of a look that found none
    let mut idle = Duration::ZERO;
    let mut mark = last;
    while !stop.load(std::sync::atomic::Ordering::Acquire) {
        let executed = matches!(rayon::yield_now(), Some(rayon::Yield::Executed));
        let now = Instant::now();
        if !executed {
            idle += now - mark;
        }
        // published when work comes, and every FLUSH while there is none: a reader of
        // `idle_seconds` at a phase boundary then sees the phase's waiting, not the next one's
        if !idle.is_zero() && (executed || idle >= FLUSH) {
            IDLE_NS.fetch_add(idle.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
            idle = Duration::ZERO;
        }
        if executed {
            last = now;
        } else if now - last < HOT {
            for _ in 0..16 {
                std::hint::spin_loop();
            }
        } else if now - last < SPIN {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
        mark = now;
    }
    idle += mark.elapsed();
    IDLE_NS.fetch_add(idle.as_nanos() as u64, std::sync::atomic::Ordering::Relaxed);
}

/// Waits until `done` says so, running the pool's pending work meanwhile when called on one of
/// its threads. A thread of our own that the job waits for (a picture being drawn, a file being
/// written) may split its work over the pool; if the job's thread blocked in a plain join, on a
/// one-thread pool that work would wait for it forever.
pub(crate) fn wait_helping(mut done: impl FnMut() -> bool) {
    while !done() {
        if !matches!(rayon::yield_now(), Some(rayon::Yield::Executed)) {
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
    }
}

/// Nanoseconds the pool's other workers spent without work inside [`on_workers`], summed over
/// them (added when a worker next finds work, every 50 µs while it finds none, and when
/// `on_workers` ends).
static IDLE_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Seconds the pool's other workers have spent without work inside [`on_workers`] so far,
/// summed over them: while the thread that runs the job works alone they wait, so over an
/// interval of wall time W on p threads, this counter's growth divided by p − 1 is the time the
/// job ran serially (or unbalanced), and the serial fraction of the one-thread time is about
/// s / (s + p·(W − s)). The benchmarks report it per phase of a training step.
pub fn idle_seconds() -> f64 {
    IDLE_NS.load(std::sync::atomic::Ordering::Relaxed) as f64 * 1e-9
}

/// The serial fraction of an interval of `wall` seconds on `threads` threads during which the
/// other workers were idle for `idle` seconds in all (see [`idle_seconds`]): e = s / (s + p·(W −
/// s)) with s = idle / (p − 1), the share of the one-thread time that cannot be split. 0 on one
/// thread (nothing to measure).
pub fn serial_fraction(wall: f64, idle: f64, threads: usize) -> f64 {
    if threads < 2 || wall <= 0.0 {
        return 0.0;
    }
    let p = threads as f64;
    let s = (idle / (p - 1.0)).clamp(0.0, wall);
    s / (s + p * (wall - s))
}

/// The training device, with autodiff: burn's pure-Rust `flex` CPU backend unless `device=`
/// selected another ([`devices::select`]).
pub fn device() -> Device {
    devices::selected().autodiff()
}

#[cfg(test)]
mod tests {
    #[test]
    fn serial_fraction_from_idle_time() {
        // all serial: the other worker idle the whole time
        assert!((super::serial_fraction(1.0, 1.0, 2) - 1.0).abs() < 1e-12);
        // all parallel
        assert_eq!(super::serial_fraction(1.0, 0.0, 2), 0.0);
        // 2 threads, 0.2 s serial + 0.8 s parallel: one thread would take 0.2 + 1.6
        assert!((super::serial_fraction(1.0, 0.2, 2) - 0.2 / 1.8).abs() < 1e-12);
        // 4 threads: 3 workers idle 0.1 s each
        assert!((super::serial_fraction(1.0, 0.3, 4) - 0.1 / (0.1 + 3.6)).abs() < 1e-12);
        assert_eq!(super::serial_fraction(1.0, 0.5, 1), 0.0);
    }

    #[test]
    fn a_job_on_one_thread_waits_for_a_thread_that_uses_the_pool() {
        use rayon::prelude::*;
        let pool = std::sync::Arc::new(
            rayon::ThreadPoolBuilder::new()
                .num_threads(1)
                .build()
                .unwrap(),
        );
        let theirs = std::sync::Arc::clone(&pool);
        let sum = pool.install(|| {
            // a thread of our own whose work goes to the pool, as a picture's drawing does
            let h = std::thread::spawn(move || {
                theirs.install(|| (0..10_000u64).into_par_iter().sum::<u64>())
            });
            // a plain `h.join()` here would never return: the pool's one thread is this one
            super::wait_helping(|| h.is_finished());
            h.join().unwrap()
        });
        assert_eq!(sum, (0..10_000u64).sum::<u64>());
    }

    #[test]
    fn idle_time_grows_while_the_job_runs_alone() {
        // a pool of its own, so that no other test's job keeps its second thread busy
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let before = super::idle_seconds();
        pool.install(|| {
            super::warm(|| std::thread::sleep(std::time::Duration::from_millis(30)));
        });
        let idle = super::idle_seconds() - before;
        // the other worker(s) waited while this one slept (other tests may add to the counter)
        assert!(idle >= 0.02, "idle {idle} s");
    }

    #[test]
    fn on_workers_returns_and_a_panic_inside_it_ends_it() {
        assert_eq!(super::on_workers(|| 6 * 7), 42);
        // the warm workers must stop when the work panics, else the scope would wait forever
        let r = std::panic::catch_unwind(|| super::on_workers(|| panic!("inside on_workers")));
        assert!(r.is_err());
        assert_eq!(super::on_workers(|| 1), 1);
    }
}
