//! A small blob persisted in a BPF map pinned beside the datapath's maps
//! (`<bpffs>/maps/OBSERVE_LEDGER`), so it lives exactly as long as the kernel
//! counters it describes: across agent restarts and crashes, and removed with
//! them by `palisade cleanup` (which clears the whole directory).
//!
//! Layout: a hash map of 4 KiB chunks (allocated on use). Key 0 is the header
//! (magic, active half, length, checksum); the blob is written to the inactive
//! half (keys 1.. or `HALF + 1`..) and then the header flipped with one atomic
//! element update, so a crash mid-write leaves the previous blob readable.

use std::path::{Path, PathBuf};

use aya::maps::{HashMap, Map, MapData};

use super::error::Error;

/// Pin name of the map.
pub const PIN_NAME: &str = "OBSERVE_LEDGER";

const CHUNK: usize = 4096;
type Chunk = [u8; CHUNK];
/// Chunks per half.
const HALF: u32 = 511;
/// Largest blob.
pub const MAX_BYTES: usize = HALF as usize * CHUNK;
const MAGIC: [u8; 8] = *b"PLSDLDG1";
const BPF_F_NO_PREALLOC: u32 = 1;

/// The pinned blob store.
pub struct Store {
    map: HashMap<MapData, u32, Chunk>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Store {
    /// Opens the store pinned in `maps_dir`, creating and pinning it if absent.
    pub fn open(maps_dir: &Path) -> Result<Store, Error> {
        let path = maps_dir.join(PIN_NAME);
        if !path.exists() {
            let created = HashMap::<MapData, u32, Chunk>::create(2 * HALF + 1, BPF_F_NO_PREALLOC)
                .map_err(|e| Error::map(PIN_NAME, e))?;
            created.pin(&path).map_err(|source| Error::Pin {
                path: path.clone(),
                source,
            })?;
        }
        let data = MapData::from_pin(&path).map_err(|e| Error::map(PIN_NAME, e))?;
        let map = Map::from_map_data(data)
            .and_then(HashMap::try_from)
            .map_err(|e| Error::map(PIN_NAME, e))?;
        Ok(Store { map, path })
    }

    /// The blob last written, `None` when nothing valid is stored.
    pub fn read(&self) -> Option<Vec<u8>> {
        let header = self.map.get(&0, 0).ok()?;
        if header[..8] != MAGIC {
            return None;
        }
        let half = u32::from_le_bytes(header[8..12].try_into().ok()?);
        let len = u32::from_le_bytes(header[12..16].try_into().ok()?) as usize;
        let sum = u64::from_le_bytes(header[16..24].try_into().ok()?);
        if half > 1 || len > MAX_BYTES {
            return None;
        }
        let mut out = Vec::with_capacity(len);
        let mut key = 1 + half * HALF;
        while out.len() < len {
            let chunk = self.map.get(&key, 0).ok()?;
            let take = (len - out.len()).min(CHUNK);
            out.extend_from_slice(&chunk[..take]);
            key += 1;
        }
        (fnv1a(&out) == sum).then_some(out)
    }

    /// Replaces the blob.
    pub fn write(&mut self, blob: &[u8]) -> Result<(), Error> {
        if blob.len() > MAX_BYTES {
            return Err(Error::LedgerTooLarge {
                bytes: blob.len(),
                limit: MAX_BYTES,
            });
        }
        let active = self
            .map
            .get(&0, 0)
            .ok()
            .filter(|h| h[..8] == MAGIC)
            .map(|h| u32::from_le_bytes([h[8], h[9], h[10], h[11]]));
        let half = match active {
            Some(0) => 1,
            _ => 0,
        };
        let err = |e: aya::maps::MapError| Error::map(PIN_NAME, e);
        for (key, piece) in (1 + half * HALF..).zip(blob.chunks(CHUNK)) {
            let mut chunk = [0u8; CHUNK];
            chunk[..piece.len()].copy_from_slice(piece);
            self.map.insert(key, chunk, 0).map_err(err)?;
        }
        let mut header = [0u8; CHUNK];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&half.to_le_bytes());
        header[12..16].copy_from_slice(&(blob.len() as u32).to_le_bytes());
        header[16..24].copy_from_slice(&fnv1a(blob).to_le_bytes());
        self.map.insert(0, header, 0).map_err(err)
    }
}
