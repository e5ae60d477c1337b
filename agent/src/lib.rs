//! Palisade agent library.
pub mod datapath;
pub mod policy;
pub mod state;
pub mod sync;
