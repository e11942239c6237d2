//! Counter slots for the watched interfaces.
//!
//! The kernel counts packets per slot, and has 63 of them (1-63; slot 0 is shared by
//! interfaces without one). A slot stays with its interface's name after the
//! interface goes, so that one that comes back counts on where it was. When every
//! slot is taken, a new interface gets the slot of the interface gone longest: a
//! `-i 'vpns*'` agent on a VPN server sees thousands of tun devices come and go, and
//! must not run out. The caller keeps the old interface's final counts in the run's
//! totals and zeroes the slot in the kernel before it counts for the new one.

use std::collections::BTreeMap;

use agent_common::class::MAX_IFACE_SLOTS;

/// An interface that holds a slot.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Holder {
    slot: u32,
    /// Its interface index (the last one, when gone).
    ifindex: u32,
    /// When it went (an increasing sequence number); `None` while watched.
    gone: Option<u64>,
}

/// Where an interface's counters go, before it is committed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// The slot this name held before: it counts on.
    Own(u32),
    /// A slot nobody holds.
    Free(u32),
    /// The slot of `from`, gone longest: its counts must be kept and the slot zeroed.
    Reclaim {
        /// The slot.
        slot: u32,
        /// The gone interface that held it.
        from: String,
    },
    /// No slot: the shared slot 0 (every slot is held by a watched interface).
    Shared,
}

impl Choice {
    /// The slot the interface counts in.
    pub fn slot(&self) -> u32 {
        match self {
            Choice::Own(s) | Choice::Free(s) | Choice::Reclaim { slot: s, .. } => *s,
            Choice::Shared => 0,
        }
    }
}

/// Which interface holds which slot.
#[derive(Debug, Default)]
pub struct SlotBook {
    held: BTreeMap<String, Holder>,
    gone_seq: u64,
}

impl SlotBook {
    /// No slot held.
    pub fn new() -> SlotBook {
        SlotBook::default()
    }

    /// Where `name` would count; nothing changes until [`SlotBook::commit`].
    pub fn choose(&self, name: &str) -> Choice {
        if let Some(h) = self.held.get(name) {
            return Choice::Own(h.slot);
        }
        if let Some(s) = (1..MAX_IFACE_SLOTS).find(|s| !self.held.values().any(|h| h.slot == *s)) {
            return Choice::Free(s);
        }
        let oldest = self.held.iter().filter_map(|(n, h)| h.gone.map(|at| (at, n, h.slot))).min();
        match oldest {
            Some((_, from, slot)) => Choice::Reclaim { slot, from: from.clone() },
            None => Choice::Shared,
        }
    }

    /// `name` (interface `ifindex`) is watched, counting where `choice` says.
    pub fn commit(&mut self, name: &str, ifindex: u32, choice: &Choice) {
        if let Choice::Reclaim { from, .. } = choice {
            self.held.remove(from);
        }
        match choice.slot() {
            0 => {
                self.held.remove(name);
            }
            slot => {
                self.held.insert(name.to_string(), Holder { slot, ifindex, gone: None });
            }
        }
    }

    /// Forgets `name`'s slot (its counts were kept elsewhere).
    pub fn forget(&mut self, name: &str) {
        self.held.remove(name);
    }

    /// `name` went: it keeps its slot until a new interface needs one.
    pub fn gone(&mut self, name: &str) {
        if let Some(h) = self.held.get_mut(name) {
            self.gone_seq += 1;
            h.gone = Some(self.gone_seq);
        }
    }

    /// Interfaces gone that still hold a slot: (name, last ifindex, slot).
    pub fn gone_holders(&self) -> impl Iterator<Item = (&str, u32, u32)> {
        self.held.iter().filter(|(_, h)| h.gone.is_some()).map(|(n, h)| (n.as_str(), h.ifindex, h.slot))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(book: &mut SlotBook, name: &str) -> Choice {
        let c = book.choose(name);
        book.commit(name, 1, &c);
        c
    }

    #[test]
    fn a_name_keeps_its_slot_across_going_and_coming_back() {
        let mut b = SlotBook::new();
        assert_eq!(watch(&mut b, "eth0"), Choice::Free(1));
        assert_eq!(watch(&mut b, "vpns0"), Choice::Free(2));
        b.gone("vpns0");
        assert_eq!(b.gone_holders().collect::<Vec<_>>(), [("vpns0", 1, 2)]);
        assert_eq!(watch(&mut b, "vpns0"), Choice::Own(2));
        assert_eq!(b.gone_holders().count(), 0);
    }

    #[test]
    fn slots_of_interfaces_gone_longest_go_to_new_ones() {
        let mut b = SlotBook::new();
        for k in 0..63 {
            assert_eq!(watch(&mut b, &format!("vpns{k}")), Choice::Free(k + 1));
        }
        // Every slot held by a watched interface: the shared slot.
        assert_eq!(watch(&mut b, "extra"), Choice::Shared);
        b.gone("vpns7");
        b.gone("vpns3");
        assert_eq!(watch(&mut b, "new0"), Choice::Reclaim { slot: 8, from: "vpns7".into() });
        assert_eq!(watch(&mut b, "new1"), Choice::Reclaim { slot: 4, from: "vpns3".into() });
        assert_eq!(b.choose("vpns7"), Choice::Shared, "vpns7 lost its slot for good");
        assert_eq!(b.held.len(), 63);
        // Thousands of devices coming and going: never more than 63 held.
        b.gone("new0");
        for k in 0..5000 {
            let name = format!("tun{k}");
            assert_ne!(watch(&mut b, &name), Choice::Shared, "{name}");
            b.gone(&name);
        }
        assert_eq!(b.held.len(), 63);
        assert_eq!(b.gone_holders().collect::<Vec<_>>(), [("tun4999", 1, 8)], "one slot turned over 5000 times");
    }

    #[test]
    fn nothing_changes_before_commit() {
        let mut b = SlotBook::new();
        for k in 0..63 {
            watch(&mut b, &format!("v{k}"));
        }
        b.gone("v0");
        let c = b.choose("w");
        assert_eq!(c, Choice::Reclaim { slot: 1, from: "v0".into() });
        assert_eq!(b.choose("w"), c, "choosing twice, e.g. after an attach that failed");
        assert_eq!(b.gone_holders().count(), 1);
    }
}
