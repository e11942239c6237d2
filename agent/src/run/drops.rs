//! The live run's part of the drop program: attach it when the kernel allows (else say
//! why and go on inferring, as before), read its ring of drop records into the
//! detectors, and report what it counted (the summary's and `stats` lines' `drops`).

use std::{collections::BTreeSet, net::IpAddr};

use aya::maps::{MapData, RingBuf};
use serde_json::{Value, json};

use super::{EventClock, Shared};
use crate::{
    config::Config,
    drops::{DropEvent, interface_name, local_addresses},
    kernel::{Kernel, drops::DropCounts, layout::KernelLayout},
    output::Output,
};

/// The drop program's facts for the run: the kernel's reason names, and this host's
/// addresses (a dropped packet to one of them was dropped in `input`).
pub struct DropWatch {
    /// Offsets and reason names read from the kernel's BTF.
    pub layout: KernelLayout,
    /// This host's addresses when the run started.
    pub local: BTreeSet<IpAddr>,
}

/// Attaches the drop program when `kernel.drops` asks for it; says why not when it
/// cannot be (no BTF, an old kernel, a verifier refusal): the run goes on without.
pub fn start(kernel: &mut Kernel, config: &Config, out: &mut Output) -> Option<(DropWatch, RingBuf<MapData>)> {
    if !config.kernel.drops {
        return None;
    }
    let vpn_ports: Vec<u16> = config.dtls.vpn_ports.iter().map(|p| p.0).collect();
    let attached = KernelLayout::from_kernel()
        .map_err(|e| e.to_string())
        .and_then(|layout| kernel.attach_drops(&layout, &vpn_ports).map(|()| layout).map_err(|e| e.to_string()))
        .and_then(|layout| kernel.take_drop_events().map(|ring| (layout, ring)).map_err(|e| e.to_string()));
    // Reading the kernel's BTF twice (ours for the offsets, aya's to load the program)
    // takes tens of MiB for a moment; give back what the allocator kept of it.
    // SAFETY: malloc_trim has no preconditions.
    unsafe { libc::malloc_trim(0) };
    match attached {
        Ok((layout, ring)) => {
            // Not "pathwatch: watching ...": that line says the interfaces are attached, and
            // tests and the lab wait for it before they send.
            out.error("pathwatch: counting this host's own drops (kfree_skb)");
            Some((DropWatch { layout, local: local_addresses() }, ring))
        }
        Err(e) => {
            out.error(&format!(
                "notice: not watching this host's drops ({e}); findings cannot say whether this host dropped \
                 the packets (dropped_here: \"unknown\")"
            ));
            None
        }
    }
}

/// Reads every drop record waiting into the detectors; returns how many.
pub fn drain(ring: &mut RingBuf<MapData>, shared: &Shared, clock: &EventClock) -> u64 {
    let Some(watch) = shared.drops.as_ref() else { return 0 };
    let mut st = shared.state.lock().expect("state lock");
    let mut read = 0;
    while let Some(item) = ring.next() {
        read += 1;
        let decoded = DropEvent::from_record(&item, |v| watch.layout.reason_name(v), |a| watch.local.contains(&a));
        match decoded {
            Ok(mut d) => {
                d.packet.header.ts_ns = clock.wall(d.packet.header.ts_ns);
                d.in_ifname = interface_name(d.in_ifindex);
                d.out_ifname = interface_name(d.out_ifindex);
                st.drop_events += 1;
                st.detectors.on_drop(&d);
            }
            Err(_) => st.undecodable += 1,
        }
    }
    read
}

/// What the drop program counted, when it is attached (takes the kernel lock: call it
/// before taking the state lock, the order every reader keeps).
pub fn counts(shared: &Shared) -> Option<DropCounts> {
    let watch = shared.drops.as_ref()?;
    Some(shared.kernel.lock().expect("kernel lock").drop_counts(&watch.layout).unwrap_or_default())
}

/// The `drops` object of `stats` lines and the summary: the kernel's `counts` and the
/// drop records read.
pub fn drops_json(counts: Option<&DropCounts>, events: u64) -> Value {
    let Some(counts) = counts else {
        return json!({"watching": false});
    };
    let by: Vec<Value> = counts
        .by_reason_class
        .iter()
        .map(|((reason, class), n)| json!({"reason": reason, "class": class.name(), "count": n}))
        .collect();
    json!({
        "watching": true,
        "total": counts.total(),
        "by_reason_class": by,
        "events": events,
        "suppressed": counts.suppressed,
        "ring_full": counts.ring_full,
    })
}
