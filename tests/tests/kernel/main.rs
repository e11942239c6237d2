//! The kernel programs on crafted frames, with BPF_PROG_TEST_RUN (DESIGN.md, "How we
//! prove it", step 2).
//!
//! Every frame goes through `pathwatch_xdp` and `pathwatch_tc` and through the
//! userspace classifier; each run asserts that the hook passed the packet and that the
//! kernel and its userspace twin agree on the class, the `truncated` statistic and
//! every byte of the event ([`rig`]). On top of that each test asserts what the frame
//! *should* give: the class, and the event's header fields and snap bytes
//! ([`expect`]).
//!
//! Frames are built with etherparse's `PacketBuilder`; what it cannot express (VLAN
//! and QinQ tags, PPPoE, IPv6 extension chains, a bad IHL, DTLS and TLS records) is
//! spliced in as bytes ([`frames`]). Every frame is tried under six link layers:
//! untagged, one 802.1Q tag, QinQ (0x88a8 outer, 0x8100 inner), two 802.1Q tags,
//! PPPoE, and 802.1Q + PPPoE. The frames themselves are in [`cases_app`] and
//! [`cases_tcp_ip`].
//!
//! - [`classes`]: `dns_frames`, `dtls_frames`, `tls_frames`, `icmp_error_frames`,
//!   `tcp_syn_frames`, `tcp_fin_frames`, `large_df_frames`, `other_frames`: every
//!   class, over IPv4 and IPv6; `ipv6_extension_header_chains`,
//!   `ipv4_options_and_fragments`: the IP layer's walk; `tunnel_frames`: every
//!   encapsulation decapsulated, two deep, three deep past the limit, DTLS behind
//!   CAPWAP ([`cases_tunnel`]); `crafted_frames_cover_every_class`.
//! - [`truncation`]: `every_truncation_of_every_crafted_frame`: each of those frames
//!   cut at every length.
//! - [`maps`]: `config_change_reaches_the_kernel_without_reload` (the CONFIG map is
//!   live), `ringbuf_reservation_failures_are_counted` (a full ring buffer loses
//!   events, counted), `flow_table_insertions_are_counted_at_the_cap`,
//!   `forwarded_packets_raise_events_once` (TC reports only what XDP did not),
//!   `a_cleared_counter_slot_starts_at_zero_and_a_slot_is_summed_once`.
//! - `each_packet_program_and_the_drop_program_verify_well_under_the_limit`
//!   ([`verifier`]): room under the verifier's limit.

mod cases_app;
mod cases_tcp_ip;
mod cases_tunnel;
mod classes;
mod expect;
mod frames;
mod maps;
mod rig;
mod truncation;
mod verifier;

use cases_app::{dns_cases, dtls_cases, icmp_cases, tls_cases};
use cases_tcp_ip::{ipv4_header_cases, ipv6_ext_cases, large_df_cases, other_cases, tcp_fin_cases, tcp_syn_cases};
use cases_tunnel::tunnel_cases;
use expect::Case;

/// Every crafted frame.
fn all_cases() -> Vec<Case> {
    [
        dns_cases(),
        dtls_cases(),
        tls_cases(),
        icmp_cases(),
        tcp_syn_cases(),
        tcp_fin_cases(),
        large_df_cases(),
        other_cases(),
        ipv6_ext_cases(),
        ipv4_header_cases(),
        tunnel_cases(),
    ]
    .concat()
}
