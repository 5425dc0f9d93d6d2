//! The training objective: target assignment ([`assign`]) and the two-branch loss ([`loss`]).

pub mod assign;
pub mod loss;
