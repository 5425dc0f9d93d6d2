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

/// The training device: burn's pure-Rust `flex` CPU backend with autodiff.
pub fn device() -> Device {
    Device::flex().autodiff()
}
