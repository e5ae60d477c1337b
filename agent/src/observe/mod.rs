//! What the agent shows: status (readiness, endpoints, errors) and the HTTP
//! endpoints that serve it.

pub mod http;
pub mod metrics;
pub mod status;

pub use status::{EndpointStatus, SharedStatus, Status};
