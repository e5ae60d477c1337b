//! NetworkPolicy semantics and the compiler (pure: no I/O).
pub mod compile;
pub mod eval;
pub mod explain;
pub mod identity;
pub mod identity_cache;
pub mod ids;
pub mod lookup;
pub mod plan;
pub mod tiers;

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;

pub use compile::Compiler;
