//! Errors of node interface discovery; each names the operation that failed.

/// Why talking to the kernel's routing netlink failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The code was called outside a tokio runtime, which must drive the
    /// netlink connection.
    #[error("node discovery needs a tokio runtime to drive its netlink connection")]
    NoRuntime,
    /// A netlink socket could not be opened.
    #[error("opening the rtnetlink socket for {what}")]
    Connect {
        /// What the socket is for ("requests", "notifications").
        what: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A dump request failed.
    #[error("dumping {what}")]
    Dump {
        /// What was being dumped ("links", "IPv4 routes", ...).
        what: &'static str,
        /// The cause.
        #[source]
        source: rtnetlink::Error,
    },
}
