//! matchwell-actors
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod clock;
pub mod ids;
pub mod matching;
pub mod pools;
