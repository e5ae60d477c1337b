//! Tier 3: real packets between pods of a virtual node, policed by the real
//! programs attached to the pods' host-side veths. Needs root and the embedded
//! object (`cargo xtask test`).

mod cni;
mod datapath;
mod fixture;
mod readiness;
mod spoofing;
mod upgrade;
mod upgrade_cnp;
