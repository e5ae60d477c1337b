//! Why the loop stops.

use crate::datapath;

/// Errors that stop the loop.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The datapath failed in a way the loop cannot work around.
    #[error(transparent)]
    Datapath(#[from] datapath::Error),
    /// A map write failed for a reason other than a full map.
    #[error(transparent)]
    MapWrite(#[from] crate::sync::WriteError),
    /// The source ended (its task died).
    #[error("the source stopped sending events")]
    SourceEnded,
}
