//! The input pipeline: where the data comes from ([`sources`], [`download`]), the decoded sets and
//! their batches ([`dataset`]), and augmentation ([`augment`]).

pub mod augment;
pub mod dataset;
pub mod download;
pub mod sources;
