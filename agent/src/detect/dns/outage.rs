//! Resolver outages: one resolver failing many names at once is one finding,
//! `dns_resolver_outage`, not a storm per name.
//!
//! Each resolver keeps its lookups of the last `outage_window_s` (by send time, at
//! most [`WINDOW_CAP`]) with running counts: lookups, failed ones (timeout, SERVFAIL,
//! REFUSED, ICMP error; NXDOMAIN and NOERROR are answers) and failures per name. A
//! lookup's state changes (timeout, late answer, ICMP) update the counts in O(1), so
//! the rule is checked on every change without a scan: at least `outage_min_names`
//! names failing and at least `outage_min_failed_ratio` of the lookups failed. An
//! episode runs from the first failure of the window where the rule first held to
//! the last failure while it held, and is over once the rule has not held for a
//! window past that; lookups sent inside an episode are its evidence, and the
//! per-name storms leave out their packets.
//!
//! A capture of one direction shows queries and no answers: every lookup "times
//! out". A resolver never seen answering is only in an outage when its clients say
//! so themselves, by retransmitting at least half of the failed lookups.

use std::{
    collections::{BTreeMap, VecDeque},
    net::IpAddr,
};

use ahash::{AHashMap as HashMap, AHashSet as HashSet};

/// Lookups held per resolver for the window (a flood keeps the latest).
pub const WINDOW_CAP: usize = 512;
/// Past episodes remembered per resolver (for leaving their failures out of storms).
const EPISODES_KEPT: usize = 16;
/// Distinct clients and names counted per outage.
const DISTINCT_CAP: usize = 4096;

/// What became of a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LookupState {
    /// Not answered, not yet due.
    Pending,
    /// Unanswered for `timeout_s` (a late answer replaces this).
    TimedOut,
    /// First answer's RCODE.
    Answered(u8),
    /// Answered by an ICMP error.
    Icmp,
}

impl LookupState {
    /// Whether this is a resolver failure (NXDOMAIN is an answer).
    fn failed(self) -> bool {
        matches!(self, LookupState::TimedOut | LookupState::Icmp | LookupState::Answered(2 | 5))
    }
}

struct Lookup {
    ts: u64,
    name: u64,
    client: IpAddr,
    state: LookupState,
    packets: u64,
    in_outage: bool,
}

/// The outage rule's thresholds.
pub struct OutageRule {
    /// `dns.outage_window_s`.
    pub window_ns: u64,
    /// `dns.outage_min_names`.
    pub min_names: u64,
    /// `dns.outage_min_failed_ratio`.
    pub min_failed: f64,
}

/// An outage's evidence, over every episode.
#[derive(Clone, Debug, Default)]
pub struct OutageEvidence {
    /// Start of the first episode.
    pub start: u64,
    /// End of the latest episode.
    pub end: u64,
    /// Episodes.
    pub episodes: u64,
    /// Time in ended episodes.
    pub closed_ns: u64,
    /// Distinct clients (counted up to a cap).
    pub clients: HashSet<IpAddr>,
    /// Distinct names (counted up to a cap).
    pub names: HashSet<u64>,
    /// Query packets.
    pub queries: u64,
    /// Lookups.
    pub lookups: u64,
    /// Lookups failed.
    pub failed: u64,
    /// Answers by RCODE.
    pub rcodes: BTreeMap<u8, u64>,
    /// Lookups timed out.
    pub timeouts: u64,
    /// Lookups answered by ICMP.
    pub icmp_errors: u64,
}

impl OutageEvidence {
    fn account(&mut self, l: &Lookup, sign: i64) {
        let add = |n: &mut u64, by: bool| *n = n.saturating_add_signed(sign * i64::from(by));
        self.queries = self.queries.saturating_add_signed(sign * l.packets as i64);
        add(&mut self.lookups, true);
        add(&mut self.failed, l.state.failed());
        add(&mut self.timeouts, l.state == LookupState::TimedOut);
        add(&mut self.icmp_errors, l.state == LookupState::Icmp);
        if let LookupState::Answered(r) = l.state {
            add(self.rcodes.entry(r).or_default(), true);
        }
    }

    /// Time in episodes, the ongoing one (ending at `active_end`) included.
    pub fn duration_ns(&self, active: Option<(u64, u64)>) -> u64 {
        self.closed_ns + active.map_or(0, |(a, b)| b.saturating_sub(a))
    }
}

/// One resolver: its recent lookups and outages.
#[derive(Default)]
pub struct Resolver {
    /// Serial number of `lookups[0]`.
    base: u64,
    lookups: VecDeque<Lookup>,
    total: u64,
    failed: u64,
    retried_failed: u64,
    failing_names: HashMap<u64, u32>,
    /// Send time of the latest lookup that failed.
    latest_failed: u64,
    /// Whether it was ever seen answering.
    pub answered: bool,
    active: Option<(u64, u64)>,
    /// Past episodes, then the ongoing one ending at `u64::MAX`: what the per-name
    /// storms leave out.
    spans: Vec<(u64, u64)>,
    /// Evidence of its outages (`episodes` 0: none).
    pub evidence: OutageEvidence,
    /// Lookups pushed out of a full window before their time.
    pub evicted: u64,
}

impl Resolver {
    /// The window's counts without `l`, or with it (`sign` -1 / +1).
    fn count(&mut self, at: usize, sign: i64) {
        let l = &self.lookups[at];
        let (failed, retried, name, in_outage) = (l.state.failed(), l.packets > 1, l.name, l.in_outage);
        let step = |n: &mut u64, by: bool| *n = n.saturating_add_signed(sign * i64::from(by));
        step(&mut self.total, true);
        step(&mut self.failed, failed);
        step(&mut self.retried_failed, failed && retried);
        if failed && sign > 0 {
            self.latest_failed = self.latest_failed.max(self.lookups[at].ts);
        }
        if failed {
            let n = self.failing_names.entry(name).or_default();
            *n = n.saturating_add_signed(sign as i32);
            if *n == 0 {
                self.failing_names.remove(&name);
            }
        }
        if in_outage {
            let l = &self.lookups[at];
            self.evidence.account(l, sign);
        }
    }

    /// A new lookup sent at `ts`; its serial number. It joins an outage only when a
    /// failure at or after it extends the outage past it.
    pub fn lookup(&mut self, ts: u64, name: u64, client: IpAddr, rule: &OutageRule) -> u64 {
        self.slide(ts, rule);
        if self.lookups.len() >= WINDOW_CAP {
            self.pop_front();
            self.evicted += 1;
        }
        self.lookups.push_back(Lookup { ts, name, client, state: LookupState::Pending, packets: 1, in_outage: false });
        self.count(self.lookups.len() - 1, 1);
        self.base + self.lookups.len() as u64 - 1
    }

    /// Adds the lookups sent in `[from, to]` to the outage (scanning from the newest,
    /// so each lookup is looked at about once).
    fn join(&mut self, from: u64, to: u64) {
        for at in (0..self.lookups.len()).rev() {
            let ts = self.lookups[at].ts;
            if ts < from {
                break;
            }
            if ts <= to && !self.lookups[at].in_outage {
                self.lookups[at].in_outage = true;
                let (client, name) = (self.lookups[at].client, self.lookups[at].name);
                self.note_distinct(client, name);
                self.evidence.account(&self.lookups[at], 1);
            }
        }
    }

    fn note_distinct(&mut self, client: IpAddr, name: u64) {
        if self.evidence.clients.len() < DISTINCT_CAP {
            self.evidence.clients.insert(client);
        }
        if self.evidence.names.len() < DISTINCT_CAP {
            self.evidence.names.insert(name);
        }
    }

    fn pop_front(&mut self) {
        if !self.lookups.is_empty() {
            let outage = self.lookups[0].in_outage;
            // Leaving the window, not the outage: its evidence stays.
            self.lookups[0].in_outage = false;
            self.count(0, -1);
            self.lookups[0].in_outage = outage;
            self.lookups.pop_front();
            self.base += 1;
        }
    }

    /// Drops lookups sent more than a window before `now`.
    fn slide(&mut self, now: u64, rule: &OutageRule) {
        while self.lookups.front().is_some_and(|l| l.ts.saturating_add(rule.window_ns) < now) {
            self.pop_front();
        }
    }

    /// Changes lookup `serial` (still in the window) with `update`; whether its
    /// outage evidence changed.
    pub fn update(&mut self, serial: u64, update: impl FnOnce(&mut LookupState, &mut u64)) -> bool {
        let Some(at) = serial.checked_sub(self.base).map(|i| i as usize).filter(|i| *i < self.lookups.len()) else {
            return false;
        };
        self.count(at, -1);
        let l = &mut self.lookups[at];
        update(&mut l.state, &mut l.packets);
        self.count(at, 1);
        self.lookups[at].in_outage
    }

    /// Checks the rule at `now`; whether the outage evidence changed (an episode began
    /// or grew).
    pub fn check(&mut self, now: u64, rule: &OutageRule) -> bool {
        self.slide(now, rule);
        let holds = self.failing_names.len() as u64 >= rule.min_names
            && self.total > 0
            && self.failed as f64 >= rule.min_failed * self.total as f64
            && (self.answered || 2 * self.retried_failed >= self.failed);
        match (holds, self.active) {
            (true, None) => {
                let start = self.lookups.iter().find(|l| l.state.failed()).map_or(now, |l| l.ts);
                let end = self.latest_failed.max(start);
                self.active = Some((start, end));
                self.spans.push((start, u64::MAX));
                if self.evidence.episodes == 0 {
                    self.evidence.start = start;
                }
                self.evidence.episodes += 1;
                self.evidence.end = end;
                self.join(start, end);
                true
            }
            (true, Some((start, end))) if self.latest_failed > end => {
                let latest = self.latest_failed;
                self.active = Some((start, latest));
                self.evidence.end = self.evidence.end.max(latest);
                self.join(end.saturating_add(1), latest);
                true
            }
            (false, Some((start, end))) if now > end.saturating_add(rule.window_ns) => {
                self.active = None;
                self.evidence.closed_ns += end - start;
                self.spans.pop();
                if self.spans.len() == EPISODES_KEPT {
                    self.spans.remove(0);
                }
                self.spans.push((start, end));
                false
            }
            _ => false,
        }
    }

    /// Its outages as (start, end), an ongoing one ending at `u64::MAX`.
    pub fn outages(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// The ongoing episode, if any.
    pub fn active(&self) -> Option<(u64, u64)> {
        self.active
    }

    /// Lookups held in the window.
    pub fn held(&self) -> usize {
        self.lookups.len()
    }
}
