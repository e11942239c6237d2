//! Settings the kernel programs read at run time, from the `CONFIG` array map.
//!
//! Userspace rewrites the single entry when the config file changes (SIGHUP); the
//! programs pick it up on the next packet, without reloading or re-attaching.

/// Port 53's bit in the first word of the DNS port bitmap.
const DNS_PORT_BIT: u32 = 53;

/// Bits in the DNS port bitmap.
pub const DNS_PORT_WORDS: usize = 65536 / 64;

/// The run-time configuration of the kernel programs.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KernelConfig {
    /// Bit `p` set when port `p` carries DNS (UDP and TCP). Port 53 is always DNS.
    pub dns_ports: [u64; DNS_PORT_WORDS],
    /// An IPv4 packet with DF, or any IPv6 packet, whose IP length exceeds this is
    /// `large_df` and its TCP retransmissions are tracked.
    pub large_packet_bytes: u32,
    /// Always zero. The kernel programs add it to header offsets: the verifier cannot
    /// know a map value, so it checks the transport layer once for all link-layer
    /// variants instead of once per VLAN/PPPoE/IPv6-extension combination.
    pub verifier_barrier: u32,
    /// `KCFG_*` bits.
    pub flags: u32,
    /// The consumer is woken when this many bytes of events wait in the ring buffer,
    /// or when it has not been woken for [`WAKEUP_INTERVAL_NS`]; otherwise the event
    /// waits for the next wakeup or the agent's own follow-up read. 0 wakes it for
    /// every event. A wakeup costs far more than an event (an interrupt: several
    /// microseconds in a VM), so under load many events share one.
    pub wakeup_bytes: u32,
    /// The flow cache's sets less one (a power of two less one: see
    /// [`crate::flow::flow_sets`]); set by whoever sizes the cache.
    pub flow_set_mask: u32,
    /// Padding, always zero.
    pub _pad: u32,
    /// Seeds the flow hash ([`crate::flow::flow_hash`]): random for each run of the
    /// agent, so that nobody can choose flows that share a set or a tag; 0 in replay,
    /// whose results must not depend on the run.
    pub flow_seed: u64,
}

/// Timestamp events with the precise monotonic clock (`bpf_ktime_get_ns`) instead of
/// the coarse one (`bpf_ktime_get_coarse_ns`, the kernel tick: 1-4 ms). The precise
/// read costs about 25 ns per event in a VM.
pub const KCFG_PRECISE_TIME: u32 = 1;

/// The kernel wakes the consumer at least this long after the previous wakeup when
/// events arrive, so a trickle of events is read at once and a flood costs at most
/// one wakeup per interval (plus one per `wakeup_bytes`).
pub const WAKEUP_INTERVAL_NS: u64 = 10_000_000;

/// After reading events, the agent reads again this long later, and keeps doing so
/// while it finds events: it picks up the ones that arrived too soon after a wakeup
/// to cause their own. Longer than [`WAKEUP_INTERVAL_NS`] plus one tick of the coarse
/// clock (at most 4 ms), so that an event found by nobody always causes a wakeup.
pub const FOLLOW_UP_READ_NS: u64 = 25_000_000;

const _: () = assert!(FOLLOW_UP_READ_NS > WAKEUP_INTERVAL_NS + 4_000_000 + 5_000_000);

/// Default event ring buffer size: 16 MiB. A stopped or starved consumer loses
/// nothing while the ring holds what arrives meanwhile: 16 MiB is 67 k records of
/// 248 bytes (a small event and the kernel's 8-byte record header), a 250 ms stall at
/// 250 k events/s with room to spare. The memory is the kernel's, locked, for the
/// life of the agent (the agent maps it too, so its RSS counts it once it wrapped).
pub const DEFAULT_RINGBUF_BYTES: u32 = 16 << 20;

/// Default `wakeup_bytes`: 1/32 of the default ring buffer.
pub const DEFAULT_WAKEUP_BYTES: u32 = wakeup_bytes_for(DEFAULT_RINGBUF_BYTES);

/// `wakeup_bytes` for a ring buffer of `ring_bytes`: 1/32 of it, so a woken consumer
/// has 31/32 of the ring left to fill before anything is lost.
pub const fn wakeup_bytes_for(ring_bytes: u32) -> u32 {
    ring_bytes / 32
}

/// Default `large_packet_bytes`: the IPv6 minimum MTU; anything above may not fit a tunnel.
pub const DEFAULT_LARGE_PACKET_BYTES: u32 = 1280;

impl KernelConfig {
    /// Port 53 only, default size threshold.
    pub const fn new() -> Self {
        let mut dns_ports = [0u64; DNS_PORT_WORDS];
        dns_ports[0] |= 1 << DNS_PORT_BIT;
        KernelConfig {
            dns_ports,
            large_packet_bytes: DEFAULT_LARGE_PACKET_BYTES,
            verifier_barrier: 0,
            flags: 0,
            wakeup_bytes: DEFAULT_WAKEUP_BYTES,
            flow_set_mask: crate::flow::flow_sets(crate::flow::DEFAULT_FLOW_ENTRIES) - 1,
            _pad: 0,
            flow_seed: 0,
        }
    }

    /// Marks `port` as a DNS port.
    pub fn add_dns_port(&mut self, port: u16) {
        self.dns_ports[port as usize / 64] |= 1 << (port % 64);
    }

    /// Whether `port` is a DNS port.
    #[inline(always)]
    pub fn is_dns_port(&self, port: u16) -> bool {
        port == 53 || self.dns_ports[(port as usize / 64) % DNS_PORT_WORDS] & (1 << (port % 64)) != 0
    }

    /// Whether an IP packet of `ip_len` bytes is large; `df` is the IPv4 DF bit (true for IPv6).
    #[inline(always)]
    pub fn is_large(&self, ip_len: u32, df: bool) -> bool {
        df && ip_len > self.large_packet_bytes
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `KernelConfig` is `repr(C)` and made only of integers and arrays of them, with no implicit padding: any bit pattern the kernel writes is a valid value, and aya copies it as bytes.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelConfig {}

const _: () = assert!(core::mem::size_of::<KernelConfig>() == 8192 + 32);
