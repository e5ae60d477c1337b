//! The chained CNI plugin `palisade-cni` and the agent's side of it.
//!
//! On ADD the plugin (run by the container runtime after the main CNI made the
//! pod's veth) tells the local agent, over a unix socket, the pod's
//! namespace/name, its host-side interface and its addresses, and waits until
//! the agent has enforced that pod before returning: a pod selected by a policy
//! is isolated from its first packet, instead of after the API server reports
//! its IP and the agent catches up.
//!
//! - [`protocol`]: the request/response spoken on the socket (JSON lines).
//! - [`plugin`]: the CNI 1.0 side (environment, stdin config, results, errors).
//! - [`server`]: the agent's socket server, forwarding requests to the loop.

pub mod plugin;
pub mod protocol;
pub mod server;

/// Where the agent listens by default.
pub const DEFAULT_SOCKET: &str = "/run/palisade/cni.sock";
