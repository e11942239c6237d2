//! The lab's hosts: a client, a gateway that forwards, and a server, in their own
//! network namespaces, joined by veth pairs.
//!
//! ```text
//!  {p}client            {p}gw                       {p}server
//!  {p}c0 ──────────── {p}g0    {p}g1 ────────────── {p}s0
//!  198.18.1.2/24   198.18.1.1/24  198.18.2.1/24     198.18.2.2/24
//!  fd00:1::2/64    fd00:1::1/64   fd00:2::1/64      fd00:2::2/64
//! ```
//!
//! [`Layout::Routed`] puts a router between the gateway and the server, for faults
//! beyond the host the agent runs on (the agent sees their symptoms, not their drops).
//! The client and server keep their addresses; the router takes over the server's
//! link (and the server's default route, 198.18.2.1), the gateway reaches it over a
//! transit link of its own:
//!
//! ```text
//!  {p}client          {p}gw                      {p}router                      {p}server
//!  {p}c0 ──────── {p}g0    {p}g1 ──────────── {p}r0    {p}r1 ──────────────── {p}s0
//!  198.18.1.2/24  198.18.1.1/24  198.18.3.1/24  198.18.3.2/24  198.18.2.1/24   198.18.2.2/24
//!  fd00:1::2/64   fd00:1::1/64   fd00:3::1/64   fd00:3::2/64   fd00:2::1/64    fd00:2::2/64
//! ```
//!
//! Only 198.18.0.0/15 and fd00::/8 are used (DESIGN.md, "Test network rules"); every
//! host routes what it has no link to via its neighbour towards the other end, and the
//! gateway and the router forward IPv4 and IPv6. The agent watches `{p}g0` and
//! `{p}g1`, as an operator's gateway would.

use std::io;

use super::netns::{NetNs, veth};

/// The client's address.
pub const CLIENT_V4: &str = "198.18.1.2";
/// The gateway's address on the client side.
pub const GW_CLIENT_V4: &str = "198.18.1.1";
/// The gateway's address on the server side ([`Layout::Routed`]: the router's; the
/// server's default route either way).
pub const GW_SERVER_V4: &str = "198.18.2.1";
/// The server's address.
pub const SERVER_V4: &str = "198.18.2.2";
/// Two more client addresses (same interface): more clients on the client side.
pub const MORE_CLIENTS_V4: [&str; 2] = ["198.18.1.3", "198.18.1.4"];
/// The client's IPv6 address.
pub const CLIENT_V6: &str = "fd00:1::2";
/// The gateway's IPv6 address on the client side.
pub const GW_CLIENT_V6: &str = "fd00:1::1";
/// The gateway's IPv6 address on the server side ([`Layout::Routed`]: the router's).
pub const GW_SERVER_V6: &str = "fd00:2::1";
/// The server's IPv6 address.
pub const SERVER_V6: &str = "fd00:2::2";
/// [`Layout::Routed`]: the gateway's address on the transit link to the router.
pub const GW_TRANSIT_V4: &str = "198.18.3.1";
/// [`Layout::Routed`]: the router's address on the transit link.
pub const ROUTER_TRANSIT_V4: &str = "198.18.3.2";
/// [`Layout::Routed`]: the gateway's IPv6 address on the transit link.
pub const GW_TRANSIT_V6: &str = "fd00:3::1";
/// [`Layout::Routed`]: the router's IPv6 address on the transit link.
pub const ROUTER_TRANSIT_V6: &str = "fd00:3::2";
/// The server's link, which the gateway routes via the router in [`Layout::Routed`].
const SERVER_NET_V4: &str = "198.18.2.0/24";
/// The server's IPv6 link.
const SERVER_NET_V6: &str = "fd00:2::/64";

/// Where the server is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// On the gateway's far link: client, gateway, server.
    Direct,
    /// Behind a router beyond the gateway: client, gateway, router, server.
    Routed,
}

/// The router of [`Layout::Routed`].
pub struct Router {
    /// The router host.
    pub ns: NetNs,
    /// Its interface towards the gateway.
    pub gw_if: String,
    /// Its interface towards the server.
    pub server_if: String,
}

impl Router {
    /// Sets the MTU of the router's server-side interface: the narrow link is beyond
    /// the gateway, and so is the ICMP that says so.
    pub fn narrow_far_link(&self, mtu: u32) -> io::Result<()> {
        self.ns.ip(&["link", "set", &self.server_if, "mtu", &mtu.to_string()])?;
        Ok(())
    }
}

/// Longest interface name the kernel takes (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;

/// Client, gateway, server (and router) namespaces, removed (with their processes)
/// on drop.
pub struct Topology {
    /// The client host.
    pub client: NetNs,
    /// The gateway (forwards; the agent runs here).
    pub gw: NetNs,
    /// The server host.
    pub server: NetNs,
    /// The router between the gateway and the server ([`Layout::Routed`] only).
    pub router: Option<Router>,
    /// The client's interface.
    pub client_if: String,
    /// The gateway's client-side interface.
    pub gw_client_if: String,
    /// The gateway's server-side interface.
    pub gw_server_if: String,
    /// The server's interface.
    pub server_if: String,
}

impl Topology {
    /// Builds `{prefix}client`, `{prefix}gw` and `{prefix}server` (replacing
    /// leftovers of the same names). Interface names are `{prefix}c0`, `{prefix}g0`,
    /// `{prefix}g1`, `{prefix}s0`, so `prefix` has at most 13 bytes.
    pub fn build(prefix: &str) -> io::Result<Topology> {
        Topology::build_layout(prefix, Layout::Direct)
    }

    /// Builds the lab of `layout`; [`Layout::Routed`] adds `{prefix}router` with
    /// interfaces `{prefix}r0` (to the gateway) and `{prefix}r1` (to the server).
    pub fn build_layout(prefix: &str, layout: Layout) -> io::Result<Topology> {
        if prefix.len() + 2 > IFNAME_MAX {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("namespace prefix {prefix:?} is too long"),
            ));
        }
        let client = NetNs::new(&format!("{prefix}client"))?;
        let gw = NetNs::new(&format!("{prefix}gw"))?;
        let server = NetNs::new(&format!("{prefix}server"))?;
        let router = match layout {
            Layout::Direct => None,
            Layout::Routed => Some(Router {
                ns: NetNs::new(&format!("{prefix}router"))?,
                gw_if: format!("{prefix}r0"),
                server_if: format!("{prefix}r1"),
            }),
        };
        let t = Topology {
            client,
            gw,
            server,
            router,
            client_if: format!("{prefix}c0"),
            gw_client_if: format!("{prefix}g0"),
            gw_server_if: format!("{prefix}g1"),
            server_if: format!("{prefix}s0"),
        };
        veth(&t.client, &t.client_if, &t.gw, &t.gw_client_if)?;
        // The server's neighbour: the gateway, or the router that holds the
        // gateway's addresses of the direct layout.
        let server_side = match &t.router {
            None => {
                veth(&t.gw, &t.gw_server_if, &t.server, &t.server_if)?;
                vec![(&t.gw, &t.gw_server_if, GW_SERVER_V4, GW_SERVER_V6)]
            }
            Some(r) => {
                veth(&t.gw, &t.gw_server_if, &r.ns, &r.gw_if)?;
                veth(&r.ns, &r.server_if, &t.server, &t.server_if)?;
                vec![
                    (&t.gw, &t.gw_server_if, GW_TRANSIT_V4, GW_TRANSIT_V6),
                    (&r.ns, &r.gw_if, ROUTER_TRANSIT_V4, ROUTER_TRANSIT_V6),
                    (&r.ns, &r.server_if, GW_SERVER_V4, GW_SERVER_V6),
                ]
            }
        };
        let ends = [
            (&t.client, &t.client_if, CLIENT_V4, CLIENT_V6),
            (&t.gw, &t.gw_client_if, GW_CLIENT_V4, GW_CLIENT_V6),
            (&t.server, &t.server_if, SERVER_V4, SERVER_V6),
        ];
        for (ns, dev, v4, v6) in ends.into_iter().chain(server_side) {
            ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", dev])?;
            // nodad: the address is usable at once instead of after duplicate
            // address detection (a second or so).
            ns.ip(&["-6", "addr", "add", &format!("{v6}/64"), "dev", dev, "nodad"])?;
        }
        for ns in t.forwarders() {
            ns.sysctl("net.ipv4.ip_forward", "1")?;
            ns.sysctl("net.ipv6.conf.all.forwarding", "1")?;
        }
        t.client.ip(&["route", "add", "default", "via", GW_CLIENT_V4])?;
        t.client.ip(&["-6", "route", "add", "default", "via", GW_CLIENT_V6])?;
        t.server.ip(&["route", "add", "default", "via", GW_SERVER_V4])?;
        t.server.ip(&["-6", "route", "add", "default", "via", GW_SERVER_V6])?;
        if let Some(r) = &t.router {
            t.gw.ip(&["route", "add", SERVER_NET_V4, "via", ROUTER_TRANSIT_V4])?;
            t.gw.ip(&["-6", "route", "add", SERVER_NET_V6, "via", ROUTER_TRANSIT_V6])?;
            r.ns.ip(&["route", "add", "default", "via", GW_TRANSIT_V4])?;
            r.ns.ip(&["-6", "route", "add", "default", "via", GW_TRANSIT_V6])?;
        }
        Ok(t)
    }

    /// The hosts that forward: the gateway, and the router when there is one.
    fn forwarders(&self) -> Vec<&NetNs> {
        std::iter::once(&self.gw).chain(self.router.as_ref().map(|r| &r.ns)).collect()
    }

    /// The gateway's interfaces, client side first: what the agent watches.
    pub fn gw_interfaces(&self) -> [&str; 2] {
        [&self.gw_client_if, &self.gw_server_if]
    }

    /// The namespaces, client first, server last.
    pub fn namespaces(&self) -> Vec<&NetNs> {
        let mut all = self.forwarders();
        all.insert(0, &self.client);
        all.push(&self.server);
        all
    }

    /// Sets the MTU of the gateway's server-side interface only: the far link is
    /// narrower than what the hosts send, and the gateway has to say so (ICMP
    /// fragmentation needed). The server keeps 1500, so its SYN-ACK still offers an
    /// MSS that does not fit.
    pub fn narrow_far_link(&self, mtu: u32) -> io::Result<()> {
        self.gw.ip(&["link", "set", &self.gw_server_if, "mtu", &mtu.to_string()])?;
        Ok(())
    }

    /// Adds `v4` (/24) to the client's interface: another client host, as far as
    /// the gateway can tell.
    pub fn add_client_v4(&self, v4: &str) -> io::Result<()> {
        self.client.ip(&["addr", "add", &format!("{v4}/24"), "dev", &self.client_if])?;
        Ok(())
    }

    /// Leaves the namespaces up when the topology drops (`--keep`); returns their names.
    pub fn release(self) -> Vec<String> {
        let Topology { client, gw, server, router, .. } = self;
        let mut names = vec![client.release(), gw.release()];
        names.extend(router.map(|r| r.ns.release()));
        names.push(server.release());
        names
    }
}
