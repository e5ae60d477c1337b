//! Thin socket helpers over nix and libc: sockets of a family, raw IP
//! sockets for any protocol, bind/connect, timeouts and datagram I/O.
//!
//! A socket belongs to the network namespace of the thread that created it,
//! so these are called inside [`crate::NetNs::run`].

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::Duration,
};

use nix::sys::{
    socket::{
        self, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrLike, SockaddrStorage,
        setsockopt, sockopt,
    },
    time::TimeVal,
};

/// The address family of `addr`.
pub(crate) fn family_of(addr: IpAddr) -> AddressFamily {
    match addr {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

/// A TCP or UDP socket of `family`; IPv6 sockets are IPv6-only, so an IPv4
/// and an IPv6 socket can share a port.
pub(crate) fn socket(family: AddressFamily, ty: SockType) -> io::Result<OwnedFd> {
    let fd = socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)?;
    if family == AddressFamily::Inet6 {
        setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
    }
    Ok(fd)
}

/// A raw IP socket of `family` for IP protocol `protocol`.
pub(crate) fn raw_socket(family: AddressFamily, protocol: u8) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a fresh
    // descriptor that nothing else owns.
    let fd = unsafe {
        libc::socket(
            family as libc::c_int,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::c_int::from(protocol),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Binds `fd` to `addr`.
pub(crate) fn bind(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    Ok(socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?)
}

/// Connects `fd` to `addr` (for raw sockets: fixes the peer).
pub(crate) fn connect(fd: &OwnedFd, addr: SocketAddr) -> io::Result<()> {
    Ok(socket::connect(
        fd.as_raw_fd(),
        &SockaddrStorage::from(addr),
    )?)
}

fn timeval(timeout: Duration) -> TimeVal {
    // Zero would mean "block forever"; never ask for that.
    let t = timeout.max(Duration::from_millis(1));
    TimeVal::new(
        libc::time_t::try_from(t.as_secs()).unwrap_or(libc::time_t::MAX),
        libc::suseconds_t::from(t.subsec_micros()),
    )
}

/// Sets `SO_RCVTIMEO` (at least 1 ms).
pub(crate) fn set_recv_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    Ok(setsockopt(fd, sockopt::ReceiveTimeout, &timeval(timeout))?)
}

/// Sets `SO_SNDTIMEO` (at least 1 ms); on Linux it also bounds a blocking
/// `connect`, which then fails with `EINPROGRESS`.
pub(crate) fn set_send_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    Ok(setsockopt(fd, sockopt::SendTimeout, &timeval(timeout))?)
}

/// Sends `buf` to `dst` (port 0 for raw sockets).
pub(crate) fn send_to(fd: &OwnedFd, buf: &[u8], dst: SocketAddr) -> io::Result<()> {
    socket::sendto(
        fd.as_raw_fd(),
        buf,
        &SockaddrStorage::from(dst),
        MsgFlags::empty(),
    )?;
    Ok(())
}

/// Sends `buf` on a connected socket.
pub(crate) fn send(fd: &OwnedFd, buf: &[u8]) -> io::Result<()> {
    socket::send(fd.as_raw_fd(), buf, MsgFlags::empty())?;
    Ok(())
}

/// Receives one datagram/packet; returns its length and sender address.
/// A receive timeout shows up as `WouldBlock`.
pub(crate) fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, Option<IpAddr>)> {
    let (n, addr) = socket::recvfrom::<SockaddrStorage>(fd.as_raw_fd(), buf)?;
    let ip = addr.and_then(|a| match a.family() {
        Some(AddressFamily::Inet) => a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())),
        Some(AddressFamily::Inet6) => a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())),
        _ => None,
    });
    Ok((n, ip))
}

/// Whether an I/O error is a receive/send timeout.
pub(crate) fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// Length of the IPv4 header at the start of `packet` (raw IPv4 sockets
/// receive it), or `None` if it is malformed.
pub(crate) fn ipv4_header_len(packet: &[u8]) -> Option<usize> {
    let first = *packet.first()?;
    let len = usize::from(first & 0x0f) * 4;
    (first >> 4 == 4 && len >= 20 && packet.len() >= len).then_some(len)
}
