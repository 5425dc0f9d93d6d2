//! The input pipeline: where the data comes from ([`sources`], [`download`]), the decoded sets and
//! their batches ([`dataset`]), where decoded images are kept ([`pixels`], `cache=`), and
//! augmentation ([`augment`]).

pub mod augment;
pub mod dataset;
pub mod download;
pub mod pixels;
pub mod sources;
