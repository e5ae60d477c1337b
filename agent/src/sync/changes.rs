//! What differs between two key-ordered maps (pure).

use std::collections::BTreeMap;

/// One map's entries to put (added or changed) and keys to delete.
pub type Changes<K, V> = (Vec<(K, V)>, Vec<K>);

/// Entries of `new` that `old` lacks or holds with another value, and keys
/// of `old` that `new` lacks: one merge pass over both (key-ordered) maps.
pub fn changes<K: Ord + Copy, V: PartialEq + Copy>(
    old: &BTreeMap<K, V>,
    new: &BTreeMap<K, V>,
) -> Changes<K, V> {
    let (mut puts, mut deletes) = (Vec::new(), Vec::new());
    let mut o = old.iter().peekable();
    let mut n = new.iter().peekable();
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some((ok, _)), None) => {
                deletes.push(**ok);
                o.next();
            }
            (None, Some((nk, nv))) => {
                puts.push((**nk, **nv));
                n.next();
            }
            (Some((ok, ov)), Some((nk, nv))) => match ok.cmp(nk) {
                std::cmp::Ordering::Less => {
                    deletes.push(**ok);
                    o.next();
                }
                std::cmp::Ordering::Greater => {
                    puts.push((**nk, **nv));
                    n.next();
                }
                std::cmp::Ordering::Equal => {
                    if ov != nv {
                        puts.push((**nk, **nv));
                    }
                    o.next();
                    n.next();
                }
            },
        }
    }
    (puts, deletes)
}
