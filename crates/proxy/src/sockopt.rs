//! The one place that needs `unsafe`: what std and tokio do not expose — the pre-NAT
//! destination of a redirected connection (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`) and
//! the host's interface addresses (`getifaddrs`).
#![allow(unsafe_code, reason = "getsockopt for SO_ORIGINAL_DST and getifaddrs have no safe wrapper")]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;

const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination the client dialled before an iptables REDIRECT/DNAT, if there was one.
pub fn original_dst<S: AsRawFd>(sock: &S, ipv6: bool) -> Option<SocketAddr> {
    let fd = sock.as_raw_fd();
    if ipv6 {
        let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: `addr` is a properly sized, writable sockaddr_in6 and `len` holds its size.
        let rc =
            unsafe { libc::getsockopt(fd, libc::SOL_IPV6, IP6T_SO_ORIGINAL_DST, (&mut addr as *mut libc::sockaddr_in6).cast(), &mut len) };
        if rc != 0 {
            return None;
        }
        let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
        Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(addr.sin6_port), 0, 0)))
    } else {
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: `addr` is a properly sized, writable sockaddr_in and `len` holds its size.
        let rc = unsafe { libc::getsockopt(fd, libc::SOL_IP, SO_ORIGINAL_DST, (&mut addr as *mut libc::sockaddr_in).cast(), &mut len) };
        if rc != 0 {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
        Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port))))
    }
}

/// What Envoy calls the node's local address (`--local-address-ip-version`): the first
/// interface address of that family, in `getifaddrs` order, that is not loopback; the
/// loopback address when there is none.
pub fn first_non_loopback(v6: bool) -> IpAddr {
    let fallback = if v6 { IpAddr::V6(Ipv6Addr::LOCALHOST) } else { IpAddr::V4(Ipv4Addr::LOCALHOST) };
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list that is freed once, below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return fallback;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() && found.is_none() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, which is not freed yet.
        let ifa = unsafe { &*cur };
        if !ifa.ifa_addr.is_null() {
            // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its real type.
            let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
            let ip = if family == libc::AF_INET && !v6 {
                // SAFETY: an AF_INET ifa_addr is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))))
            } else if family == libc::AF_INET6 && v6 {
                // SAFETY: an AF_INET6 ifa_addr is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                Some(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)))
            } else {
                None
            };
            found = ip.filter(|ip| !ip.is_loopback());
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: `head` came from a successful getifaddrs and is freed exactly once.
    unsafe { libc::freeifaddrs(head) };
    found.unwrap_or(fallback)
}
