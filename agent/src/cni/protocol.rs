//! One JSON request per connection, one JSON response back.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// What the plugin asks the agent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Request {
    /// A pod's network was just set up: enforce it, answer when done.
    Add {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
        /// Host-side interface the main CNI created, when it says.
        interface: Option<String>,
        /// The pod's addresses from the main CNI's result.
        ips: Vec<IpAddr>,
        /// How long the plugin waits (the agent gives up slightly earlier).
        timeout_ms: u64,
    },
    /// Is this pod enforced?
    Check {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
    /// The pod's network is being torn down.
    Del {
        /// Pod namespace.
        namespace: String,
        /// Pod name.
        name: String,
    },
}

/// The agent's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded (for Add and Check: the pod is enforced).
    pub ok: bool,
    /// Why not.
    pub error: Option<String>,
}

impl Response {
    /// Success.
    pub fn ok() -> Response {
        Response {
            ok: true,
            error: None,
        }
    }

    /// Failure with a reason.
    pub fn error(reason: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(reason.into()),
        }
    }
}
