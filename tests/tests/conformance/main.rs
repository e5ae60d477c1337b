//! Tier 4: NetworkPolicy conformance as a truth table. Each test builds its
//! own virtual cluster (namespaces x, y, z; pods a, b, c in each; every pod
//! serving TCP, UDP and SCTP on ports 80 and 81), runs the real `palisade`
//! agent on every node against a manifest directory, applies policies, and
//! compares who reaches whom (every ordered pair, probed in parallel) with a
//! table written from the Kubernetes NetworkPolicy API reference. Needs root
//! and the embedded object (`cargo xtask build`). `cluster` does the same for
//! ClusterNetworkPolicy, beside and around NetworkPolicy.

mod bad_input;
mod changes;
mod cluster;
mod fixture;
mod model;
mod nodes;
mod peers;
mod ports;
mod restart;
mod types;
