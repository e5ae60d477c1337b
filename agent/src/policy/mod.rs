//! NetworkPolicy semantics and the compiler (pure: no I/O).
pub mod adopt;
mod changed;
mod cluster_rules;
pub mod compile;
pub mod eval;
pub mod explain;
pub mod identity;
pub mod identity_cache;
pub mod ids;
pub mod l4fn;
pub mod lookup;
mod network_rules;
mod origins;
pub mod plan;
mod subjects;
mod tiered;
pub mod tiers;

#[cfg(test)]
mod api_tiers_cases;
#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod proptests_api_tiers;
#[cfg(test)]
mod proptests_tiers;
#[cfg(test)]
mod strategies;

pub use compile::Compiler;
