//! Directions and drop reasons: the one list both sides and the metrics use.

/// Direction from the pod's point of view.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Direction {
    /// Traffic to the pod (runs on the host-side TC egress hook).
    Ingress = 0,
    /// Traffic from the pod (runs on the host-side TC ingress hook).
    Egress = 1,
}

impl Direction {
    /// Both directions, in index order.
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    /// Metric label value.
    pub const fn as_label(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }

    /// Decodes the `u8` stored in keys and events.
    pub const fn from_u8(v: u8) -> Option<Direction> {
        match v {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }

    /// The other direction.
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

/// Why a packet was dropped (or, under audit, would have been).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(
    feature = "user",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum DropReason {
    /// No rule of any policy selecting the pod allows the flow.
    PolicyDenied = 1,
    /// Headers were truncated or malformed on an isolated pod.
    Malformed = 2,
    /// A non-first IP fragment whose first fragment was not seen or not allowed.
    FragmentUnknown = 3,
    /// The interface carries the programs but has no endpoint entry.
    EndpointUnknown = 4,
    /// The endpoint's policy could not be programmed completely (map full).
    FailClosed = 5,
    /// An established flow whose allow was removed by a policy change.
    PolicyRevoked = 6,
    /// A packet from a pod claiming an address or role that is not the pod's:
    /// an IP source, ARP sender or neighbour advertisement target outside its
    /// own addresses (and allowed source prefixes), or a router advertisement
    /// or redirect. Never passed under audit: the forged identity would
    /// bypass other pods' policies.
    SourceSpoofed = 7,
}

impl DropReason {
    /// Every reason, in value order.
    pub const ALL: [DropReason; 7] = [
        DropReason::PolicyDenied,
        DropReason::Malformed,
        DropReason::FragmentUnknown,
        DropReason::EndpointUnknown,
        DropReason::FailClosed,
        DropReason::PolicyRevoked,
        DropReason::SourceSpoofed,
    ];

    /// Metric label value.
    pub const fn as_label(self) -> &'static str {
        match self {
            DropReason::PolicyDenied => "policy_denied",
            DropReason::Malformed => "malformed",
            DropReason::FragmentUnknown => "fragment_unknown",
            DropReason::EndpointUnknown => "endpoint_unknown",
            DropReason::FailClosed => "map_full",
            DropReason::PolicyRevoked => "policy_revoked",
            DropReason::SourceSpoofed => "source_spoofed",
        }
    }

    /// Decodes the `u32` stored in events.
    pub const fn from_u32(v: u32) -> Option<DropReason> {
        match v {
            1 => Some(DropReason::PolicyDenied),
            2 => Some(DropReason::Malformed),
            3 => Some(DropReason::FragmentUnknown),
            4 => Some(DropReason::EndpointUnknown),
            5 => Some(DropReason::FailClosed),
            6 => Some(DropReason::PolicyRevoked),
            7 => Some(DropReason::SourceSpoofed),
            _ => None,
        }
    }
}

/// TC return code that lets the packet continue (to the next program, if the
/// CNI attached one, else the stack): we never short-circuit other programs.
pub const TC_ACT_UNSPEC: i32 = -1;
/// TC return code that drops the packet.
pub const TC_ACT_SHOT: i32 = 2;
