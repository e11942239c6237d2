//! Table keys hashed in whole words.
//!
//! The detectors look up several keys per event, each holding two addresses. A
//! derived `Hash` feeds every field separately (an `IpAddr` is its variant, then its
//! bits), one round of the table's hasher each; packing them into 64-bit words first
//! takes a third of the rounds. Equal keys still give equal words, and no bits are
//! dropped, so keys that differ still differ for the keyed hasher.

use std::{hash::Hasher, net::IpAddr};

/// Feeds the pair of addresses (`a`, `b`) to `h`: two IPv4 addresses as one word,
/// anything with IPv6 as each address's 128 bits.
pub fn write_addr_pair<H: Hasher>(h: &mut H, a: IpAddr, b: IpAddr) {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => h.write_u64(u64::from(a.to_bits()) << 32 | u64::from(b.to_bits())),
        _ => {
            h.write_u128(bits(a));
            h.write_u128(bits(b));
        }
    }
}

/// An address's bits, IPv4 in the low 32 with a marker above them (so that an IPv4
/// address and the IPv6 address of the same number stay apart).
fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => 1 << 64 | u128::from(a.to_bits()),
        IpAddr::V6(a) => a.to_bits(),
    }
}

#[cfg(test)]
mod tests {
    use std::{hash::BuildHasher, net::Ipv6Addr};

    use super::*;

    fn hash(a: IpAddr, b: IpAddr) -> u64 {
        let state = ahash::RandomState::with_seeds(1, 2, 3, 4);
        let mut h = state.build_hasher();
        write_addr_pair(&mut h, a, b);
        h.finish()
    }

    #[test]
    fn equal_pairs_hash_equal_and_order_and_family_matter() {
        let (a, b): (IpAddr, IpAddr) = ("198.18.0.1".parse().unwrap(), "198.18.0.2".parse().unwrap());
        let v6: IpAddr = Ipv6Addr::from(0xc612_0001u128).into();
        assert_eq!(hash(a, b), hash(a, b));
        assert_ne!(hash(a, b), hash(b, a));
        assert_ne!(hash(a, b), hash(v6, b));
        assert_ne!(bits(a), bits(v6), "198.18.0.1 and ::198.18.0.1 are two addresses");
    }
}
