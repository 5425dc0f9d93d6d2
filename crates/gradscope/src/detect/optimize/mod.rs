//! Optimisation: the grouped optimizers (SGD, AdamW, MuSGD) ([`optimizer`]), the EMA of the
//! weights ([`ema`]) and frozen layers ([`freeze`]).

pub mod ema;
pub mod freeze;
pub mod optimizer;
