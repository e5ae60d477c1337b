//! The `IPCACHE` entries of a [`KernelState`](super::KernelState), shared
//! between states (`Arc`): a render hands out its last map while the plan's
//! ipcache stays the same, and the diff skips a map both states share
//! without reading it.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use palisade_common::addr::Addr16;
use palisade_common::ipcache::IpcacheValue;

/// An `IPCACHE` key as the kernel holds it: (prefix length, address).
pub type IpcacheKey = (u32, Addr16);

/// Every `IPCACHE` entry. Reads go through the map it derefs to; writes
/// copy it first when another state shares it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IpcacheMap {
    entries: Arc<BTreeMap<IpcacheKey, IpcacheValue>>,
}

impl IpcacheMap {
    /// Whether both are the same map (so equal, without reading either).
    pub fn shares(&self, other: &IpcacheMap) -> bool {
        Arc::ptr_eq(&self.entries, &other.entries)
    }

    /// Inserts or replaces an entry; the value it replaced.
    pub fn insert(&mut self, key: IpcacheKey, value: IpcacheValue) -> Option<IpcacheValue> {
        Arc::make_mut(&mut self.entries).insert(key, value)
    }

    /// Removes an entry; its value.
    pub fn remove(&mut self, key: &IpcacheKey) -> Option<IpcacheValue> {
        if !self.entries.contains_key(key) {
            return None;
        }
        Arc::make_mut(&mut self.entries).remove(key)
    }
}

impl Deref for IpcacheMap {
    type Target = BTreeMap<IpcacheKey, IpcacheValue>;

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

impl Extend<(IpcacheKey, IpcacheValue)> for IpcacheMap {
    fn extend<I: IntoIterator<Item = (IpcacheKey, IpcacheValue)>>(&mut self, iter: I) {
        Arc::make_mut(&mut self.entries).extend(iter);
    }
}

impl FromIterator<(IpcacheKey, IpcacheValue)> for IpcacheMap {
    fn from_iter<I: IntoIterator<Item = (IpcacheKey, IpcacheValue)>>(iter: I) -> Self {
        IpcacheMap {
            entries: Arc::new(iter.into_iter().collect()),
        }
    }
}

impl fmt::Debug for IpcacheMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.entries.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use palisade_common::ids::IdentityId;

    use super::*;

    fn value(identity: u32) -> IpcacheValue {
        IpcacheValue {
            identity: IdentityId(identity),
            flags: 0,
        }
    }

    #[test]
    fn a_write_to_a_shared_map_leaves_the_other_state_as_it_was() {
        let key = (128, Addr16::from_v4([10, 0, 0, 1]));
        let old: IpcacheMap = [(key, value(20))].into_iter().collect();
        let mut new = old.clone();
        assert!(new.shares(&old));
        new.insert(key, value(21));
        assert!(!new.shares(&old));
        assert_eq!(old.get(&key), Some(&value(20)));
        assert_eq!(new.get(&key), Some(&value(21)));
        new.remove(&key);
        assert!(new.is_empty());
        assert_eq!(old.len(), 1);
    }
}
