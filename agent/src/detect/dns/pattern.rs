//! The shape of a storm's queries, said as what is there: `periodic` (every gap
//! within `periodic_tolerance` of the median: AnyConnect asking every 15 s),
//! `episodes` (bursts separated by long breaks: 4 queries every 5 min), `backoff`
//! (retransmissions of one id at growing gaps: a stub resolver's 1, 2, 4 s) or
//! `burst`.

use std::collections::BTreeMap;

use super::series::QueryPacket;
use crate::detect::util::{intervals, is_backoff, median, regularity};

/// A break between episodes is at least this long...
const EPISODE_BREAK_NS: u64 = 60_000_000_000;
/// ...and at least this many times the median gap.
const EPISODE_BREAK_FACTOR: f64 = 10.0;

/// The shape of a storm's queries.
pub struct Pattern {
    /// `periodic`, `episodes`, `backoff` or `burst`.
    pub name: &'static str,
    /// Period of the queries (`periodic`), of the lookups (`backoff`), or of the
    /// episodes (`episodes`), when there is one.
    pub period: Option<f64>,
    /// Largest deviation from the period.
    pub jitter: Option<f64>,
    /// Retry gaps of the most retried transaction (`backoff`), for the summary.
    pub gaps: Vec<f64>,
    /// Episodes (`episodes`), else 1.
    pub episodes: u64,
}

/// The pattern of `window`'s queries (in time order).
pub fn pattern(window: &[QueryPacket], tolerance: f64) -> Pattern {
    let times: Vec<u64> = window.iter().map(|p| p.ts).collect();
    let gaps = intervals(&times);
    let plain = |name, period, jitter| Pattern { name, period, jitter, gaps: Vec::new(), episodes: 1 };
    if gaps.len() >= 2
        && let Some((true, period, jitter)) = regularity(&gaps, tolerance)
    {
        return plain("periodic", Some(period), Some(jitter));
    }
    if let Some((episodes, period)) = episodes(&gaps) {
        return Pattern { episodes, ..plain("episodes", period, None) };
    }
    let mut txns: BTreeMap<(u16, u16), Vec<u64>> = BTreeMap::new();
    for p in window {
        txns.entry((p.id, p.port)).or_default().push(p.ts);
    }
    let retried: Vec<&Vec<u64>> = txns.values().filter(|t| t.len() >= 3).collect();
    if !retried.is_empty() && retried.iter().all(|t| is_backoff(&intervals(t))) {
        let gaps = intervals(retried.iter().max_by_key(|t| t.len()).expect("not empty"));
        let mut starts: Vec<u64> = txns.values().map(|t| t[0]).collect();
        starts.sort_unstable();
        let (period, jitter) = match regularity(&intervals(&starts), tolerance) {
            Some((_, period, jitter)) => (Some(period), Some(jitter)),
            None => (None, None),
        };
        return Pattern { gaps, ..plain("backoff", period, jitter) };
    }
    plain("burst", None, None)
}

/// Episodes and their period (the median break), when some gaps are breaks: at least
/// a minute and ten times the median gap (5, 5, 5, 305, 5, 5, 5 s is two episodes).
fn episodes(gaps: &[f64]) -> Option<(u64, Option<f64>)> {
    let med = median(&mut gaps.to_vec())?;
    let floor = (EPISODE_BREAK_NS as f64 / 1e9).max(EPISODE_BREAK_FACTOR * med);
    let mut breaks: Vec<f64> = gaps.iter().copied().filter(|g| *g >= floor).collect();
    if breaks.is_empty() {
        return None;
    }
    Some((breaks.len() as u64 + 1, median(&mut breaks)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::dns::series::Outcome;

    const S: u64 = 1_000_000_000;

    fn at(secs: &[u64]) -> Vec<QueryPacket> {
        secs.iter()
            .enumerate()
            .map(|(i, s)| QueryPacket {
                ts: s * S,
                id: i as u16,
                port: 1,
                outcome: Outcome::Pending,
                first: true,
                lookup: Outcome::Pending,
                decided_ms: 0,
            })
            .collect()
    }

    #[test]
    fn bursts_separated_by_long_breaks_are_episodes_not_periodic() {
        let p = pattern(&at(&[0, 5, 10, 15, 320, 325, 330, 335]), 0.1);
        assert_eq!((p.name, p.episodes, p.period), ("episodes", 2, Some(305.0)));
        let p = pattern(&at(&[0, 15, 30, 45, 60]), 0.1);
        assert_eq!(p.name, "periodic");
        // A 56 s gap among 1-4 s retries is under a minute: no break.
        let p = pattern(&at(&[0, 1, 2, 4, 8, 64, 65, 66]), 0.1);
        assert_ne!(p.name, "episodes");
    }
}
