//! Optimisation: the grouped optimizers (SGD, AdamW, MuSGD) ([`optimizer`]) and the EMA of the
//! weights ([`ema`]).

pub mod ema;
pub mod optimizer;
