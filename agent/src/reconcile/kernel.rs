//! What the loop needs of the datapath, as a trait so the loop runs against
//! a fake in its tests; [`Datapath`] is the real one.

use std::collections::BTreeSet;

use palisade_common::ids::Revision;

use crate::datapath::{self, Attachment, Datapath};
use crate::sync::{KernelState, MapWriter};

/// The kernel side of enforcement: the maps and the programs on interfaces.
pub trait Kernel {
    /// The maps the syncer writes.
    type Maps: MapWriter;

    /// What the pinned maps hold now (a previous agent's state after a restart).
    fn read_state(&self) -> Result<(KernelState, Revision), datapath::Error>;

    /// The maps, for the syncer's writes.
    fn maps(&mut self) -> &mut Self::Maps;

    /// Puts both programs on `interface` (or confirms they are there).
    fn attach(&mut self, interface: &str) -> Result<&Attachment, datapath::Error>;

    /// Removes the programs from an interface.
    fn detach(&mut self, ifindex: u32) -> Result<(), datapath::Error>;

    /// Interfaces carrying the programs now.
    fn attached(&self) -> BTreeSet<u32>;

    /// Interfaces a previous agent pinned links for.
    fn pinned(&self) -> Vec<u32>;

    /// Keeps a previous agent's link on `ifindex` with this build's programs;
    /// the interface's name, or `None` when the interface is gone.
    fn retain_pinned(&mut self, ifindex: u32) -> Result<Option<String>, datapath::Error>;

    /// Called once every pinned link carries this build's programs or is gone.
    fn finish_conntrack_upgrade(&mut self);

    /// The current name of an interface (`None` when it is gone).
    fn interface_name(&self, ifindex: u32) -> Option<String>;
}

impl Kernel for Datapath {
    type Maps = datapath::maps::Maps;

    fn read_state(&self) -> Result<(KernelState, Revision), datapath::Error> {
        self.maps.read_state()
    }

    fn maps(&mut self) -> &mut datapath::maps::Maps {
        &mut self.maps
    }

    fn attach(&mut self, interface: &str) -> Result<&Attachment, datapath::Error> {
        Datapath::attach(self, interface)
    }

    fn detach(&mut self, ifindex: u32) -> Result<(), datapath::Error> {
        Datapath::detach(self, ifindex)
    }

    fn attached(&self) -> BTreeSet<u32> {
        self.attachments().map(|a| a.ifindex).collect()
    }

    fn pinned(&self) -> Vec<u32> {
        self.pinned_ifindexes()
    }

    fn retain_pinned(&mut self, ifindex: u32) -> Result<Option<String>, datapath::Error> {
        Datapath::retain_pinned(self, ifindex)
    }

    fn finish_conntrack_upgrade(&mut self) {
        Datapath::finish_conntrack_upgrade(self);
    }

    fn interface_name(&self, ifindex: u32) -> Option<String> {
        datapath::interface_name(ifindex)
    }
}
