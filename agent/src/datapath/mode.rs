//! How the programs are attached, and what an attached interface is.

/// How the programs are attached to an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// tcx links, pinned (kernel >= 6.6).
    Tcx,
    /// Netlink clsact filters at a fixed slot (every kernel).
    Tc,
}

impl AttachMode {
    /// The name `--attach`, the log, `/status` and the metrics use.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Tcx => "tcx",
            AttachMode::Tc => "tc",
        }
    }
}

impl std::fmt::Display for AttachMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An interface carrying both programs.
#[derive(Debug)]
pub struct Attachment {
    /// Host-side interface index.
    pub ifindex: u32,
    /// Interface name at attach time.
    pub interface: String,
    /// tcx or tc.
    pub mode: AttachMode,
    /// Whether a previous agent's link or filter was taken over (restart or
    /// upgrade).
    pub adopted: bool,
}
