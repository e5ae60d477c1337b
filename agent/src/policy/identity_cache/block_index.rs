//! ipBlock membership of prefixes and addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::identity::AtomId;
use crate::state::netpol::IpBlock;

/// ipBlock membership of prefixes and addresses.
#[derive(Debug, Default)]
pub(super) struct BlockIndex {
    /// Every cidr and except -> atoms of the ipBlocks containing the prefix.
    pub(super) prefixes: BTreeMap<IpNet, Vec<AtomId>>,
    /// Distinct prefix lengths present, longest first, per family.
    pub(super) lens_v4: Vec<u8>,
    pub(super) lens_v6: Vec<u8>,
}

impl BlockIndex {
    pub(super) fn new(blocks: &[(AtomId, IpBlock)]) -> Self {
        let mut nets: BTreeSet<IpNet> = BTreeSet::new();
        for (_, b) in blocks {
            nets.insert(b.cidr);
            nets.extend(b.except.iter().copied());
        }
        let mut prefixes = BTreeMap::new();
        for p in nets {
            let mut m: Vec<AtomId> = blocks
                .iter()
                .filter(|(_, b)| b.cidr.contains(&p) && !b.except.iter().any(|e| e.contains(&p)))
                .map(|(a, _)| *a)
                .collect();
            m.sort_unstable();
            prefixes.insert(p, m);
        }
        let lens = |v4: bool| {
            let set: BTreeSet<u8> = prefixes
                .keys()
                .filter(|n| matches!(n, IpNet::V4(_)) == v4)
                .map(|n| n.prefix_len())
                .collect();
            set.into_iter().rev().collect::<Vec<u8>>()
        };
        let (lens_v4, lens_v6) = (lens(true), lens(false));
        BlockIndex {
            prefixes,
            lens_v4,
            lens_v6,
        }
    }

    /// Atoms of the ipBlocks containing `ip`.
    pub(super) fn membership(&self, ip: IpAddr) -> &[AtomId] {
        let lens = if ip.is_ipv4() {
            &self.lens_v4
        } else {
            &self.lens_v6
        };
        for len in lens {
            if let Ok(net) = IpNet::new(ip, *len)
                && let Some(m) = self.prefixes.get(&net.trunc())
            {
                return m;
            }
        }
        &[]
    }
}
