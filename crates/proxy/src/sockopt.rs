//! The one place that needs `unsafe`: reading the pre-NAT destination of a redirected
//! connection (`SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`), which std and tokio do not expose.
#![allow(unsafe_code, reason = "getsockopt for SO_ORIGINAL_DST has no safe wrapper")]

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
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
