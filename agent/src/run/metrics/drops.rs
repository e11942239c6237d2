//! The drop program's metric families: what the kernel dropped by reason and class, the
//! drop events it held back or lost, and whether it is watching at all. Apart from the
//! other families because they come from another program, one that may be missing: a
//! host without BTF still exposes every family here (at 0, `pathwatch_drops_watched`
//! 0), so that dashboards and alerts can tell "no drops" from "not watching".

use prometheus_client::encoding::DescriptorEncoder;

use super::{Labels, counter_family, gauge_family};
use crate::kernel::drops::DropCounts;

/// Writes the drop families for `counts` (`None`: the drop program is not attached).
pub(super) fn encode(enc: &mut DescriptorEncoder, counts: Option<&DropCounts>) -> Result<(), std::fmt::Error> {
    let empty = DropCounts::default();
    let c = counts.unwrap_or(&empty);
    // Reason names come from the kernel's `enum skb_drop_reason` (about 130 of them, or
    // REASON_<n> for a value past it), classes from DropClass::ALL: bounded either way.
    let by: Vec<(Labels, u64)> = c
        .by_reason_class
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|((reason, class), n)| (vec![("reason", reason.clone()), ("class", class.name().to_string())], *n))
        .collect();
    counter_family(
        enc,
        "pathwatch_drops",
        "Packets this host's kernel dropped (kfree_skb), by the kernel's drop reason (enum skb_drop_reason, \
         SKB_DROP_REASON_ taken off; OTHER_SUBSYSTEM for subsystem reasons) and packet class; only nonzero series.",
        &by,
    )?;
    counter_family(
        enc,
        "pathwatch_drop_events_suppressed",
        "Drop events the kernel did not send to the agent because a CPU went over its rate limit (the drops \
         themselves are still counted in pathwatch_drops_total).",
        &[(vec![], c.suppressed)],
    )?;
    counter_family(
        enc,
        "pathwatch_drop_events_lost",
        "Drop events lost because the drop ring buffer was full (the drops themselves are still counted in \
         pathwatch_drops_total).",
        &[(vec![], c.ring_full)],
    )?;
    gauge_family(
        enc,
        "pathwatch_drops_watched",
        "1 when the drop program is attached to kfree_skb, 0 when it is not (no BTF, an old kernel, or \
         kernel.drops = false): findings then say dropped_here \"unknown\".",
        &[(vec![], i64::from(counts.is_some()))],
    )
}

#[cfg(test)]
mod tests {
    use agent_common::drop::DropClass;
    use prometheus_client::{collector::Collector, registry::Registry};

    use super::*;

    #[derive(Debug)]
    struct Fixed(Option<DropCounts>);

    impl Collector for Fixed {
        fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            encode(&mut enc, self.0.as_ref())
        }
    }

    fn text(counts: Option<DropCounts>) -> String {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(Fixed(counts)));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn watched_drops_by_reason_and_class_nonzero_only() {
        let mut c = DropCounts { suppressed: 7, ring_full: 2, ..DropCounts::default() };
        c.by_reason_class.insert(("NO_SOCKET".into(), DropClass::Dns), 3);
        c.by_reason_class.insert(("NETFILTER_DROP".into(), DropClass::IcmpError), 0);
        let t = text(Some(c));
        let samples: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "pathwatch_drops_total{reason=\"NO_SOCKET\",class=\"dns\"} 3",
                "pathwatch_drop_events_suppressed_total 7",
                "pathwatch_drop_events_lost_total 2",
                "pathwatch_drops_watched 1",
            ],
            "{t}"
        );
        for name in [
            "pathwatch_drops_total",
            "pathwatch_drop_events_suppressed_total",
            "pathwatch_drop_events_lost_total",
            "pathwatch_drops_watched",
        ] {
            assert!(t.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{t}");
        }
    }

    #[test]
    fn not_watching_is_said_with_zeroes() {
        let t = text(None);
        assert!(t.contains("\npathwatch_drops_watched 0\n"), "{t}");
        assert!(t.contains("\npathwatch_drop_events_lost_total 0\n"), "{t}");
        assert!(!t.contains("pathwatch_drops_total{"), "{t}");
    }
}
