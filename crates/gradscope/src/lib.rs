//! gradscope: train deep networks with gradient flow as a first-class signal.
//!
//! measure ([`probe`]) → localise ([`probe::producer`]) → diagnose ([`diagnose`]) → remedy
//! ([`nn`], [`train`]); [`lab`] runs experiments that show each claim side by side.

mod choice;
pub mod data;
pub mod detect;
pub mod diagnose;
pub mod kernels;
pub mod lab;
pub mod nn;
pub mod probe;
pub mod report;
pub mod train;
pub mod yolo;

pub use burn::tensor::Device;

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

/// The training device: burn's pure-Rust `flex` CPU backend with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}
