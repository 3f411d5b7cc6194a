//! Addresses: workloads get consecutive addresses on the bridge's subnet (the host end takes
//! the first); Services get virtual addresses from the service range, derived from their name
//! so the same file gives the same addresses on every run.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// The default private subnet for the bridge, and the default service range.
pub const DEFAULT_SUBNET: &str = "10.233.0.0/24";
pub const DEFAULT_SERVICE_CIDR: &str = "10.234.0.0/16";

/// Address `n` (1-based) of `net`: 1 is the host's end of the bridge.
pub fn host_address(net: Ipv4Net, n: u32) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - net.prefix_len());
    // The network and broadcast addresses are not usable.
    (u64::from(n) < size.saturating_sub(1)).then(|| Ipv4Addr::from(u32::from(net.network()) + n))
}

/// Stable virtual addresses for `names` (`namespace/name`), from `range`. A name's address
/// depends only on the name unless two names collide, then the later (in sorted order)
/// takes the next free one.
pub fn virtual_addresses(range: Ipv4Net, names: &BTreeSet<String>) -> Result<Vec<(String, Ipv4Addr)>, String> {
    let size = (1u64 << (32 - range.prefix_len())).saturating_sub(2);
    if (names.len() as u64) > size {
        return Err(format!("the service range {range} has room for {size} services, the file declares {}", names.len()));
    }
    let mut used = BTreeSet::new();
    let mut out = Vec::new();
    for name in names {
        let mut slot = fnv(name) % size;
        while used.contains(&slot) {
            slot = (slot + 1) % size;
        }
        used.insert(slot);
        out.push((name.clone(), Ipv4Addr::from(u32::from(range.network()) + 1 + slot as u32)));
    }
    Ok(out)
}

/// FNV-1a: stable across builds and platforms (std's hasher is not).
pub(crate) fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addresses_skip_network_and_broadcast() {
        let net: Ipv4Net = "10.233.0.0/30".parse().unwrap();
        assert_eq!(host_address(net, 1), Some(Ipv4Addr::new(10, 233, 0, 1)));
        assert_eq!(host_address(net, 2), Some(Ipv4Addr::new(10, 233, 0, 2)));
        assert_eq!(host_address(net, 3), None);
    }

    #[test]
    fn service_addresses_are_stable_and_distinct() {
        let range: Ipv4Net = DEFAULT_SERVICE_CIDR.parse().unwrap();
        let names: BTreeSet<String> = ["default/details", "default/reviews", "default/ratings"].map(String::from).into();
        let a = virtual_addresses(range, &names).unwrap();
        let b = virtual_addresses(range, &names).unwrap();
        assert_eq!(a, b);
        let distinct: BTreeSet<_> = a.iter().map(|(_, ip)| *ip).collect();
        assert_eq!(distinct.len(), 3);
        assert!(a.iter().all(|(_, ip)| range.contains(ip) && *ip != range.network() && *ip != range.broadcast()));
        let tiny: Ipv4Net = "10.0.0.0/31".parse().unwrap();
        assert!(virtual_addresses(tiny, &names).is_err());
    }
}
