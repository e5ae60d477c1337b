//! Loading the eBPF object: maps pinned under the agent's bpffs directory (so a
//! restarted agent adopts them and enforcement never pauses), capacities from
//! the configuration, both programs loaded and ready to attach.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use palisade_common::maps;

use super::bpffs::{ensure_bpffs, links_dir, maps_dir};
use super::error::Error;
use super::maps::{Capacities, Maps};
use super::mode::{AttachMode, Attachment};
use super::object::{
    OBJECT, OBJECT_EMBEDDED, PROG_CLOCK_ANCHOR, PROG_POD_EGRESS, PROG_POD_EGRESS_CONTROL,
    PROG_POD_INGRESS,
};

/// Where and how big.
#[derive(Clone, Debug)]
pub struct DatapathConfig {
    /// The agent's own bpffs directory (maps under `maps/`, links under `links/`).
    pub bpffs: PathBuf,
    /// Map capacities.
    pub capacities: Capacities,
    /// How the programs attach to interfaces.
    pub attach: AttachMode,
}

/// The loaded object, its typed maps and the interfaces carrying its programs.
pub struct Datapath {
    pub(crate) ebpf: Ebpf,
    /// Typed handles on every map.
    pub maps: Maps,
    pub(crate) bpffs: PathBuf,
    pub(crate) attachments: BTreeMap<u32, Attachment>,
    pub(crate) mode: AttachMode,
    /// Loaded over the pins of a build that tracked IPv4 flows in
    /// `CONNTRACK`: its programs may still add such flows until every link
    /// carries the new ones (see [`Datapath::finish_conntrack_upgrade`]).
    legacy_conntrack: bool,
}

impl Datapath {
    /// Loads the embedded object, creating or adopting the pinned maps under
    /// `config.bpffs`.
    pub fn load(config: &DatapathConfig) -> Result<Datapath, Error> {
        if !OBJECT_EMBEDDED {
            return Err(Error::NoObject);
        }
        Self::load_object(OBJECT, config)
    }

    /// Loads a given object (tests and upgrades load a specific build).
    pub fn load_object(object: &[u8], config: &DatapathConfig) -> Result<Datapath, Error> {
        let maps_dir = maps_dir(&config.bpffs);
        ensure_bpffs(&config.bpffs)?;
        for dir in [&maps_dir, &links_dir(&config.bpffs)] {
            fs::create_dir_all(dir).map_err(|source| Error::Bpffs {
                path: dir.clone(),
                source,
            })?;
        }
        let caps = config.capacities;
        // Pins of a build from before conntrack was split by family: its
        // IPv4 flows are in `CONNTRACK` and move over once the maps are loaded.
        let legacy_conntrack =
            maps_dir.join(maps::CONNTRACK).exists() && !maps_dir.join(maps::CONNTRACK_V4).exists();
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .map_max_entries(maps::ENDPOINTS, caps.endpoints)
            .map_max_entries(maps::IPCACHE, caps.ipcache)
            .map_max_entries(maps::POLICY, caps.policy)
            .map_max_entries(maps::CONNTRACK_V4, caps.conntrack_v4)
            .map_max_entries(maps::CONNTRACK, caps.conntrack_v6)
            .map_max_entries(maps::FRAGMENTS, caps.fragments)
            .load(object)
            .map_err(|source| Error::Load {
                pins: maps_dir.clone(),
                source: Box::new(source),
            })?;
        for name in [
            PROG_POD_EGRESS_CONTROL,
            PROG_POD_EGRESS,
            PROG_POD_INGRESS,
            PROG_CLOCK_ANCHOR,
        ] {
            program_mut(&mut ebpf, name)?
                .load()
                .map_err(|source| Error::Program {
                    name,
                    source: Box::new(source),
                })?;
        }
        install_control_program(&mut ebpf)?;
        // Before the maps are handed out, so every load re-anchors; a failure
        // leaves the programs on the clock helper (slower, still correct).
        match program(&ebpf, PROG_CLOCK_ANCHOR).and_then(super::clock::anchor) {
            Ok(super::clock::Anchored::Tick(tick_ns)) => {
                tracing::debug!(tick_ns, "programs' clock anchored to jiffies");
            }
            Ok(super::clock::Anchored::KeptEarlierTick(tick_ns)) => tracing::warn!(
                tick_ns,
                "programs' clock re-anchored with the tick an earlier load set, not this reading"
            ),
            Err(error) => {
                tracing::warn!(%error, "programs' clock not anchored; they call the clock helper")
            }
        }
        let maps = Maps::take(&mut ebpf, caps)?;
        let mut datapath = Datapath {
            ebpf,
            maps,
            bpffs: config.bpffs.clone(),
            attachments: BTreeMap::new(),
            mode: config.attach,
            legacy_conntrack,
        };
        // Now, for the flows of links this agent never attaches to again, and
        // once more when the links carry the new programs.
        datapath.carry_over_legacy_conntrack();
        Ok(datapath)
    }

    /// Carries IPv4 flows that the older build's programs tracked in
    /// `CONNTRACK` into `CONNTRACK_V4` a last time. Call once every link of
    /// this node carries this build's programs: until then the old programs
    /// keep adding flows there.
    pub fn finish_conntrack_upgrade(&mut self) {
        self.carry_over_legacy_conntrack();
        self.legacy_conntrack = false;
    }

    fn carry_over_legacy_conntrack(&mut self) {
        if !self.legacy_conntrack {
            return;
        }
        // Failing here only means those flows are checked again as new
        // (fail closed); not a reason to refuse to start.
        match self.maps.copy_legacy_v4_conntrack() {
            Ok(copied) => tracing::info!(copied, "IPv4 conntrack entries moved to CONNTRACK_V4"),
            Err(error) => tracing::warn!(%error, "copying IPv4 conntrack entries to CONNTRACK_V4"),
        }
    }

    /// The agent's bpffs directory.
    pub fn bpffs(&self) -> &Path {
        &self.bpffs
    }

    /// One of the object's classifiers, by name.
    fn program(&self, name: &'static str) -> Result<&SchedClassifier, Error> {
        program(&self.ebpf, name)
    }

    /// The kernel's id of program `name`, to check attachments.
    pub fn program_id(&self, name: &'static str) -> Result<u32, Error> {
        self.program(name)?
            .info()
            .map(|i| i.id())
            .map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })
    }
}

/// Puts this build's `pod_egress_control` into the (pinned) `CONTROL` slot,
/// replacing a previous build's in one write: the programs attached now
/// tail-call into it from the next packet on.
fn install_control_program(ebpf: &mut Ebpf) -> Result<(), Error> {
    let name = PROG_POD_EGRESS_CONTROL;
    let fd = program_mut(ebpf, name)?
        .fd()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })?
        .try_clone()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source.into()),
        })?;
    let map = ebpf.map_mut(maps::CONTROL).ok_or(Error::MapMissing {
        name: maps::CONTROL,
    })?;
    let mut control =
        aya::maps::ProgramArray::try_from(map).map_err(|e| Error::map(maps::CONTROL, e))?;
    control
        .set(maps::CONTROL_PROGRAM_INDEX, &fd, 0)
        .map_err(|e| Error::map(maps::CONTROL, e))
}

/// One of `ebpf`'s classifiers, by name.
pub(crate) fn program<'a>(
    ebpf: &'a Ebpf,
    name: &'static str,
) -> Result<&'a SchedClassifier, Error> {
    ebpf.program(name)
        .ok_or(Error::ProgramMissing { name })?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })
}

pub(crate) fn program_mut<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, Error> {
    ebpf.program_mut(name)
        .ok_or(Error::ProgramMissing { name })?
        .try_into()
        .map_err(|source| Error::Program {
            name,
            source: Box::new(source),
        })
}

/// The result of one `BPF_PROG_TEST_RUN`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The program's return code (`TC_ACT_*` as i32).
    pub verdict: i32,
    /// Kernel-measured average time per run.
    pub avg_ns: u64,
}

impl Datapath {
    /// Runs the program of `direction` on a crafted Ethernet frame in the kernel
    /// (`BPF_PROG_TEST_RUN`), `repeat` times. The kernel runs it as if received
    /// on the loopback interface of the calling thread's network namespace, so
    /// the endpoint under test is keyed by that ifindex (1).
    pub fn test_run(
        &self,
        direction: palisade_common::verdict::Direction,
        frame: &[u8],
        repeat: u32,
    ) -> Result<TestRunOutcome, Error> {
        use aya::programs::{TestRun, TestRunOptions};
        let name = match direction {
            palisade_common::verdict::Direction::Egress => PROG_POD_EGRESS,
            palisade_common::verdict::Direction::Ingress => PROG_POD_INGRESS,
        };
        let prog = self.program(name)?;
        let result = prog
            .test_run(TestRunOptions {
                data_in: Some(frame),
                repeat: repeat.max(1),
                ..TestRunOptions::default()
            })
            .map_err(|source| Error::Program {
                name,
                source: Box::new(source),
            })?;
        Ok(TestRunOutcome {
            verdict: result.return_value as i32,
            avg_ns: result.duration.as_nanos() as u64,
        })
    }
}
