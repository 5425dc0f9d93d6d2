//! Fused operations with their own backward, for the flex CPU backend: where burn composes an
//! operation from many element-wise passes, these do it in one or two. Each falls back to burn's
//! composed operations when the tensors live elsewhere, and each is checked against that
//! composed version (values and gradients) in the tests.

pub mod act;
pub mod bce;
pub mod bn_act;
pub mod conv;
pub mod host;
pub mod lstm;
pub mod simd;
pub mod tap;
