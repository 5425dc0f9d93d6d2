//! The remedies as parts: activations, initialisation schemes, the MLP family.

pub mod init;
pub mod mlp;
pub mod recurrent;
