//! Faults ("Hardening"): what the agent does when things go wrong around it.
//!
//! | fault | test |
//! |---|---|
//! | `kill -9` of the agent | [`lifecycle::kill_9_leaves_no_link_program_map_or_pin_and_a_new_agent_starts_at_once`] (live.rs checks `ip link`/`tc` for one interface; here: every link, program and map id the agent held is gone, nothing new under /sys/fs/bpf, and a new agent starts on the same two interfaces and counts) |
//! | two agents on one interface | [`lifecycle::a_second_agent_on_the_same_interface_exits_2_naming_the_holder`] |
//! | an interface deleted and re-created; `-i 'vpns*'` | [`interfaces::an_interface_that_goes_and_comes_back_counts_on_in_its_slot`], [`interfaces::a_glob_follows_tun_and_veth_devices_as_they_come_and_go`] |
//! | more interfaces than counter slots, coming and going | [`interfaces::slots_of_gone_interfaces_are_reused_zeroed_and_their_counts_kept`], [`interfaces::interfaces_past_the_counter_slots_are_reported_together_once`] |
//! | the consumer stalled (SIGSTOP) with a tiny ring buffer | [`output::a_stalled_consumer_loses_events_exactly_and_resumes`] |
//! | the JSON target full, or a closed pipe | [`output::a_full_json_target_is_reported_once_and_the_agent_keeps_counting`], [`output::json_into_a_closed_pipe_is_reported_and_the_agent_keeps_counting`] |
//! | an adversarial flood with small caps; random names and addresses never reach a metric label | [`flood::an_adversarial_flood_stays_within_the_caps_and_memory`] |
//! | idle | [`limits::an_idle_agent_uses_almost_no_cpu`] |
//! | least privilege | [`limits::after_attaching_the_agent_keeps_only_cap_bpf_and_cap_net_admin`] |
//! | /metrics out of file descriptors; idle connections | [`limits::the_metrics_server_rests_when_out_of_descriptors_and_caps_its_connections`] |
//!
//! Each test builds namespaces of its own (`pwt-flt<N>-a`, where the agent runs, and
//! `pwt-flt<N>-b`, its peer) joined by veth pairs, with addresses in 198.18.0.0/15 only
//! (198.18.6N.0/24, and 198.19.6N.0/24 for a second pair). IPv6 is off in them, so the
//! kernel's own neighbour discovery adds nothing to the counts. Every traffic loop is
//! bounded in count and time; namespaces, the agent and every helper process are
//! removed by name and PID when a test ends, also when it fails. The harness is
//! `pathwatch_tests`' (netns, proc, procfs, metrics); what is here is this file's
//! network plan and its shorthands.

mod flood;
mod interfaces;
mod lifecycle;
mod limits;
mod output;

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    path::Path,
    time::Duration,
};

use pathwatch::lab::netns::NetNs;
use pathwatch_tests::{
    bin, dns_query,
    http::get_in,
    json_lines,
    metrics::metric,
    netns::{Pair, in_netns, ipv4_only, link, udp_send_here},
    proc::{self, Proc},
};
use serde_json::Value;

/// The destination MAC of the frames the tests send raw: not the agent's interface,
/// so the agent's stack drops them after XDP and TC has nothing to answer.
const FLOOD_DST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x66, 0x99];

/// Test `n`'s namespaces `pwt-flt<N>-a`/`-b` (IPv6 off) joined by `f<N>a0`
/// (198.18.6N.1) – `f<N>b0` (198.18.6N.2).
fn pair(n: u8) -> Pair {
    let a = ipv4_only(&format!("pwt-flt{n}-a"));
    let b = ipv4_only(&format!("pwt-flt{n}-b"));
    Pair::new(a, b, &format!("f{n}a0"), &format!("f{n}b0"), [198, 18, 60 + n])
}

/// A second veth pair between the namespaces of `p`: `f<N>a1` (198.19.6N.1) and
/// `f<N>b1` (198.19.6N.2). Returns the agent's end and both addresses.
fn second_link(p: &Pair, n: u8) -> (String, Ipv4Addr, Ipv4Addr) {
    let (a_if, b_if) = (format!("f{n}a1"), format!("f{n}b1"));
    let (a_ip, b_ip) = (Ipv4Addr::new(198, 19, 60 + n, 1), Ipv4Addr::new(198, 19, 60 + n, 2));
    link(&p.a, &a_if, a_ip, &p.b, &b_if, b_ip);
    (a_if, a_ip, b_ip)
}

/// Sends `n` DNS queries for `name` from `from` (inside `ns`) to `to`:53, `gap` apart.
fn queries(ns: &str, from: Ipv4Addr, to: Ipv4Addr, name: &str, n: usize, gap: Duration) {
    let name = name.to_string();
    in_netns(ns, move || send_queries(from, to, &name, n, gap, 0));
}

/// Sends `n` DNS queries (ids from `id0`) from this thread's namespace; returns `n`.
fn send_queries(from: Ipv4Addr, to: Ipv4Addr, name: &str, n: usize, gap: Duration, id0: u16) -> usize {
    let payloads: Vec<Vec<u8>> = (0..n).map(|i| dns_query(id0.wrapping_add(i as u16), name)).collect();
    udp_send_here(from, SocketAddr::from((to, 53)), &payloads, None, gap);
    n
}

/// A UDP socket bound to `addr`:53 in `ns` that never answers: queries to it raise no
/// ICMP port unreachable (an event of its own).
fn silent_sink(ns: &str, addr: Ipv4Addr) -> UdpSocket {
    in_netns(ns, move || UdpSocket::bind(SocketAddrV4::new(addr, 53)).expect("bind the sink"))
}

/// DNS packets the agent counted at ingress on `iface`, from its /metrics (None when
/// it does not answer).
fn dns_in(ns: &str, port: u16, iface: &str) -> Option<u64> {
    let (status, text) = get_in(ns, SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "/metrics").ok()?;
    (status == 200).then(|| {
        metric(&text, "pathwatch_packets_total", &[("iface", iface), ("direction", "ingress"), ("class", "dns")])
    })
}

/// Starts `pathwatch ARGS` in `ns` behind `wrapper`, output in `DIR/TAG.*`, and waits
/// until it says it is watching.
fn agent_with(ns: &NetNs, wrapper: &[&str], args: &[&str], dir: &Path, tag: &str) -> Proc {
    proc::agent_with(ns, wrapper, &bin(), args, dir, tag)
}

/// The summary: the last JSON line of `text`.
fn summary_of(text: &str) -> Value {
    let lines = json_lines(text);
    let s = lines.last().cloned().unwrap_or(Value::Null);
    assert_eq!(s["type"], "summary", "the last JSON line is not the summary:\n{text}");
    s
}

/// A count of the summary or a stats line.
fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}
