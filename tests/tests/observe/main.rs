//! Observability end to end: the real agent on a virtual node (manifests),
//! real packets, and what `/metrics`, `/flows`, `/status` and `palisade flows`
//! report about them. Needs root and the embedded object (`cargo xtask test`).

mod cnp;
mod fixture;
mod flows;
mod metrics;
mod restart;
