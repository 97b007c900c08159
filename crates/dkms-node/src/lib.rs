//! The dkms node daemon: sealed share store, identity keys and protocol session execution.

pub mod identity;
pub mod runner;
pub mod sealer;
pub mod store;
