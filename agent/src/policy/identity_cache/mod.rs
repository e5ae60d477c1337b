//! Remote identities kept across compiles and brought up to date from what
//! changed (see [`super::identity`] for what an identity is).
//!
//! Every endpoint pod of the cluster keeps the atoms it satisfies. A compile
//! re-evaluates only the pods and namespaces the state's journal names, and
//! patches the atoms that appeared or disappeared into the pods they select,
//! so one pod's change costs a few selector matches and map updates, not a
//! pass over the cluster. When ipBlocks or egress port names change, or the
//! journal cannot say what changed, everything is evaluated again.
//!
//! The ipcache is layered like the full evaluation writes it: ipBlock
//! prefixes, then Service ClusterIPs, then other Nodes' addresses that
//! `nodes` atoms select, then pod IPs (the greatest pod key wins an address
//! several pods claim), then the node's own addresses. The Service, Node and
//! host layers are computed again on every update (there are few of them). Each
//! address's entry is the top layer that has it.
//!
//! - `cache`: the cache, what an update reads and what it changed, and the
//!   update that ties the rest together.
//! - `pods`: each endpoint pod's atoms, evaluated in full or caught up
//!   from the journal.
//! - `ipcache`: the layers' entries, the ipcache they resolve to and the
//!   counts that say which identities are held and live.
//! - `layers`, `pod_index`, `block_index`: the data those read.

mod block_index;
mod cache;
mod ipcache;
mod layers;
mod pod_index;
mod pods;

pub use cache::{IdentityCache, IdentityChanges, Inputs};
