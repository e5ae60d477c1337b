//! Reachability probes from a namespace to an address: TCP, UDP, ICMP echo
//! and raw SCTP, each bounded by a timeout, plus [`EchoConn`], a kept-open
//! TCP connection for tests about established connections.
//!
//! Every probe runs inside the source namespace and answers with an
//! [`Outcome`]; the target is expected to run the matching server from
//! [`crate::servers`] (ICMP echo is answered by the target's kernel).

use std::{
    fmt,
    io::{self, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    os::fd::OwnedFd,
    time::{Duration, Instant},
};

use anyhow::{Result, anyhow};
use nix::sys::socket::{AddressFamily, SockType};

use crate::{
    checksum::internet_checksum,
    netns::NetNs,
    node::{Node, Pod},
    random::{random_port, random_u32},
    sctp, sock,
};

/// How often connectionless probes resend while waiting for an answer.
const RESEND_EVERY: Duration = Duration::from_millis(250);

/// What a probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub enum Outcome {
    /// The echo came back.
    Reachable,
    /// Actively rejected: TCP reset, ICMP unreachable, or an error from the
    /// local stack (e.g. `EPERM`). The detail says which.
    Refused(String),
    /// No answer before the timeout (what a policy drop looks like).
    TimedOut,
    /// The probe itself went wrong (bad local setup, unexpected reply).
    Failed(String),
}

impl Outcome {
    /// Whether the target answered.
    pub fn is_reachable(&self) -> bool {
        matches!(self, Outcome::Reachable)
    }

    /// Whether the target did not answer, for any reason.
    pub fn is_blocked(&self) -> bool {
        !self.is_reachable()
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Reachable => write!(f, "reachable"),
            Outcome::Refused(why) => write!(f, "refused ({why})"),
            Outcome::TimedOut => write!(f, "timed out"),
            Outcome::Failed(why) => write!(f, "probe failed: {why}"),
        }
    }
}

/// Maps a socket error to an outcome.
fn classify(e: &io::Error) -> Outcome {
    if sock::is_timeout(e) {
        return Outcome::TimedOut;
    }
    match e.raw_os_error() {
        Some(libc::EINPROGRESS | libc::ETIMEDOUT) => Outcome::TimedOut,
        Some(
            libc::ECONNREFUSED
            | libc::ECONNRESET
            | libc::ENOPROTOOPT
            | libc::EPROTO
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH
            | libc::EACCES
            | libc::EPERM,
        ) => Outcome::Refused(e.to_string()),
        _ => Outcome::Failed(e.to_string()),
    }
}

fn failed(e: impl fmt::Display) -> Outcome {
    Outcome::Failed(e.to_string())
}

/// Runs `probe` inside `netns`, turning a failure to enter it into
/// [`Outcome::Failed`].
fn in_netns(netns: &NetNs, probe: impl FnOnce() -> Outcome + Send) -> Outcome {
    netns
        .try_run(probe)
        .unwrap_or_else(|e| failed(format!("{e:#}")))
}

/// A socket of `dst`'s family, bound to `src` (any port) if given.
fn bound_socket(src: Option<IpAddr>, dst: IpAddr, ty: SockType) -> io::Result<OwnedFd> {
    let fd = sock::socket(sock::family_of(dst), ty)?;
    if let Some(src) = src {
        sock::bind(&fd, SocketAddr::new(src, 0))?;
    }
    Ok(fd)
}

/// A raw socket of `dst`'s family for `protocol`, bound to `src` if given.
fn bound_raw_socket(src: Option<IpAddr>, dst: IpAddr, protocol: u8) -> io::Result<OwnedFd> {
    let fd = sock::raw_socket(sock::family_of(dst), protocol)?;
    if let Some(src) = src {
        sock::bind(&fd, SocketAddr::new(src, 0))?;
    }
    Ok(fd)
}

/// Time left until `deadline` (zero once passed).
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// The connectionless probe loop: sends, then waits for `recv` to find the
/// answer, resending every [`RESEND_EVERY`] until `timeout`.
///
/// `recv(wait)` blocks for at most `wait` and returns `Ok(Some(outcome))`
/// when done, `Ok(None)` for a packet that is not the answer, or an error
/// (timeouts continue the loop, other errors end it).
fn send_and_wait(
    timeout: Duration,
    mut send: impl FnMut() -> io::Result<()>,
    mut recv: impl FnMut(Duration) -> io::Result<Option<Outcome>>,
) -> Outcome {
    let deadline = Instant::now() + timeout;
    let mut next_send = Instant::now();
    loop {
        let now = Instant::now();
        if now >= deadline {
            return Outcome::TimedOut;
        }
        if now >= next_send {
            if let Err(e) = send() {
                return classify(&e);
            }
            next_send = now + RESEND_EVERY;
        }
        let wait = next_send
            .min(deadline)
            .saturating_duration_since(Instant::now());
        match recv(wait) {
            Ok(Some(outcome)) => return outcome,
            Ok(None) => {}
            Err(e) if sock::is_timeout(&e) => {}
            Err(e) => return classify(&e),
        }
    }
}

/// An 8-byte probe token: a per-probe nonce and a sequence number.
fn token(nonce: u32, seq: u32) -> [u8; 8] {
    let mut t = [0u8; 8];
    t[..4].copy_from_slice(&nonce.to_be_bytes());
    t[4..].copy_from_slice(&seq.to_be_bytes());
    t
}

/// A TCP connection whose peer echoes what it is sent (a
/// [`crate::servers::serve_tcp`] server), kept open so a test can check
/// that an established connection keeps working, or gets cut.
#[derive(Debug)]
pub struct EchoConn {
    stream: TcpStream,
    nonce: u32,
    seq: u32,
    /// Bytes read but not yet consumed as whole tokens.
    pending: Vec<u8>,
}

impl EchoConn {
    fn connect(
        src: Option<IpAddr>,
        dst: IpAddr,
        port: u16,
        timeout: Duration,
    ) -> Result<Self, Outcome> {
        let fd = bound_socket(src, dst, SockType::Stream).map_err(failed)?;
        sock::set_send_timeout(&fd, timeout).map_err(failed)?;
        sock::connect(&fd, SocketAddr::new(dst, port)).map_err(|e| classify(&e))?;
        let stream = TcpStream::from(fd);
        stream.set_nodelay(true).map_err(failed)?;
        Ok(Self {
            stream,
            nonce: random_u32(),
            seq: 0,
            pending: Vec::new(),
        })
    }

    /// Sends a few bytes and waits up to `timeout` for them to come back.
    pub fn exchange(&mut self, timeout: Duration) -> bool {
        self.exchange_outcome(timeout).is_reachable()
    }

    /// Like [`EchoConn::exchange`], with the reason when it fails. Echoes of
    /// earlier exchanges that arrive late are skipped.
    pub fn exchange_outcome(&mut self, timeout: Duration) -> Outcome {
        let deadline = Instant::now() + timeout;
        self.seq += 1;
        let want = token(self.nonce, self.seq);
        if let Err(e) = self
            .stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .and_then(|()| self.stream.write_all(&want))
        {
            return classify(&e);
        }
        let mut buf = [0u8; 256];
        loop {
            while self.pending.len() >= want.len() {
                let got: Vec<u8> = self.pending.drain(..want.len()).collect();
                if got == want {
                    return Outcome::Reachable;
                }
                let old = got[..4] == self.nonce.to_be_bytes()
                    && u32::from_be_bytes([got[4], got[5], got[6], got[7]]) < self.seq;
                if !old {
                    return failed(format!("unexpected echo {got:02x?}"));
                }
            }
            let wait = left(deadline);
            if wait.is_zero() {
                return Outcome::TimedOut;
            }
            if let Err(e) = self.stream.set_read_timeout(Some(wait)) {
                return failed(e);
            }
            match self.stream.read(&mut buf) {
                Ok(0) => return Outcome::Refused("connection closed by peer".to_owned()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return classify(&e),
            }
        }
    }

    /// The local end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }
}

/// Opens an [`EchoConn`] from `netns` (bound to `src` if given) to
/// `dst:port`, waiting at most `timeout` for the handshake.
pub fn connect_tcp(
    netns: &NetNs,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Result<EchoConn> {
    netns
        .try_run(|| EchoConn::connect(src, dst, port, timeout))?
        .map_err(|o| {
            anyhow!(
                "TCP connect from {} to {dst} port {port}: {o}",
                netns.name()
            )
        })
}

/// TCP probe: connect, send a token, read it back, all within `timeout`.
pub fn probe_tcp(
    netns: &NetNs,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Outcome {
    in_netns(netns, || {
        let deadline = Instant::now() + timeout;
        match EchoConn::connect(src, dst, port, timeout) {
            Ok(mut conn) => conn.exchange_outcome(left(deadline)),
            Err(outcome) => outcome,
        }
    })
}

/// UDP probe: send a datagram (resent every 250 ms) and wait for its echo.
/// An ICMP port unreachable ends it early as [`Outcome::Refused`].
pub fn probe_udp(
    netns: &NetNs,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Outcome {
    in_netns(netns, || {
        let socket = match bound_socket(src, dst, SockType::Datagram)
            .and_then(|fd| sock::connect(&fd, SocketAddr::new(dst, port)).map(|()| fd))
        {
            Ok(fd) => UdpSocket::from(fd),
            Err(e) => return classify(&e),
        };
        let nonce = random_u32();
        let mut seq = 0;
        let mut buf = [0u8; 64];
        send_and_wait(
            timeout,
            || {
                seq += 1;
                socket.send(&token(nonce, seq)).map(drop)
            },
            |wait| {
                socket.set_read_timeout(Some(wait.max(Duration::from_millis(1))))?;
                let n = socket.recv(&mut buf)?;
                Ok((n == 8 && buf[..4] == nonce.to_be_bytes()).then_some(Outcome::Reachable))
            },
        )
    })
}

/// ICMP probe: send echo requests (ICMPv4 or ICMPv6 by `dst`'s family) from
/// a raw socket and wait for an echo reply from `dst` with the same
/// identifier. An ICMP destination unreachable about our request ends it
/// as [`Outcome::Refused`].
pub fn probe_icmp(netns: &NetNs, src: Option<IpAddr>, dst: IpAddr, timeout: Duration) -> Outcome {
    in_netns(netns, || {
        let v6 = dst.is_ipv6();
        let protocol = if v6 { 58 } else { 1 };
        let fd = match bound_raw_socket(src, dst, protocol) {
            Ok(fd) => fd,
            Err(e) => return failed(format!("raw ICMP socket: {e}")),
        };
        let id = (random_u32() & 0xffff) as u16;
        let mut seq: u16 = 0;
        let mut buf = [0u8; 2048];
        send_and_wait(
            timeout,
            || {
                seq = seq.wrapping_add(1);
                let request = icmp_echo_request(v6, id, seq);
                sock::send_to(&fd, &request, SocketAddr::new(dst, 0))
            },
            |wait| {
                sock::set_recv_timeout(&fd, wait)?;
                let (n, from) = sock::recv_from(&fd, &mut buf)?;
                let message = if v6 {
                    &buf[..n]
                } else {
                    match sock::ipv4_header_len(&buf[..n]) {
                        Some(len) => &buf[len..n],
                        None => return Ok(None),
                    }
                };
                Ok(match_icmp(v6, message, id, from == Some(dst)))
            },
        )
    })
}

/// An ICMP(v6) echo request with `id`/`seq` and a small payload. The ICMPv4
/// checksum is filled in; for ICMPv6 the kernel fills it on raw sockets.
fn icmp_echo_request(v6: bool, id: u16, seq: u16) -> Vec<u8> {
    let mut m = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(b"palisade-probe!!");
    if !v6 {
        let c = internet_checksum(&m);
        m[2..4].copy_from_slice(&c.to_be_bytes());
    }
    m
}

/// Whether an ICMP message answers our echo request `id`: an echo reply
/// from the target, or a destination unreachable quoting our request.
fn match_icmp(v6: bool, m: &[u8], id: u16, from_target: bool) -> Option<Outcome> {
    if m.len() < 8 {
        return None;
    }
    let (reply, unreach, quoted_hdr, request) = if v6 { (129, 1, 40, 128) } else { (0, 3, 0, 8) };
    let ours =
        |icmp: &[u8]| icmp.len() >= 8 && icmp[0] == request && icmp[4..6] == id.to_be_bytes();
    if m[0] == reply && m[4..6] == id.to_be_bytes() && from_target {
        return Some(Outcome::Reachable);
    }
    if m[0] == unreach {
        let quoted = &m[8..];
        let header_len = if v6 {
            // Only a request without extension headers is ours.
            (quoted.len() >= quoted_hdr && quoted[6] == 58).then_some(quoted_hdr)
        } else {
            sock::ipv4_header_len(quoted)
        };
        if let Some(len) = header_len
            && ours(&quoted[len..])
        {
            return Some(Outcome::Refused(format!(
                "ICMP{} destination unreachable, code {}",
                if v6 { "v6" } else { "" },
                m[1]
            )));
        }
    }
    None
}

/// SCTP probe over a raw IP socket (protocol 132): sends an INIT with a
/// random source port and a random initiate tag (resent every 250 ms) and
/// waits for the same packet back from `dst` with the ports swapped, as a
/// [`crate::servers::serve_sctp`] echo sends it. An ICMP protocol
/// unreachable (no SCTP listener at all) ends it as [`Outcome::Refused`].
pub fn probe_sctp(
    netns: &NetNs,
    src: Option<IpAddr>,
    dst: IpAddr,
    port: u16,
    timeout: Duration,
) -> Outcome {
    in_netns(netns, || {
        let fd = match bound_raw_socket(src, dst, sctp::IPPROTO_SCTP)
            .and_then(|fd| sock::connect(&fd, SocketAddr::new(dst, 0)).map(|()| fd))
        {
            Ok(fd) => fd,
            Err(e) => return failed(format!("raw SCTP socket: {e}")),
        };
        let sport = random_port(port);
        let tag = random_u32() | 1;
        let init = sctp::init_packet(sport, port, tag, random_u32());
        let v4 = sock::family_of(dst) == AddressFamily::Inet;
        let mut buf = [0u8; 2048];
        send_and_wait(
            timeout,
            || sock::send(&fd, &init),
            |wait| {
                sock::set_recv_timeout(&fd, wait)?;
                let (n, from) = sock::recv_from(&fd, &mut buf)?;
                if from != Some(dst) {
                    return Ok(None);
                }
                let start = if v4 {
                    match sock::ipv4_header_len(&buf[..n]) {
                        Some(len) => len,
                        None => return Ok(None),
                    }
                } else {
                    0
                };
                let p = &buf[start..n];
                let answer = sctp::src_port(p) == Some(port)
                    && sctp::dst_port(p) == Some(sport)
                    && sctp::initiate_tag(p) == Some(tag)
                    && sctp::checksum_ok(p);
                Ok(answer.then_some(Outcome::Reachable))
            },
        )
    })
}

/// A probe source: a namespace and the address to send from.
fn node_src(node: &Node, dst: IpAddr) -> Option<IpAddr> {
    Some(node.ip_like(dst))
}

impl Pod {
    /// [`probe_tcp`] from this pod.
    pub fn probe_tcp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_tcp(self.netns(), None, dst, port, timeout)
    }

    /// [`probe_udp`] from this pod.
    pub fn probe_udp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_udp(self.netns(), None, dst, port, timeout)
    }

    /// [`probe_icmp`] from this pod.
    pub fn probe_icmp(&self, dst: IpAddr, timeout: Duration) -> Outcome {
        probe_icmp(self.netns(), None, dst, timeout)
    }

    /// [`probe_sctp`] from this pod.
    pub fn probe_sctp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_sctp(self.netns(), None, dst, port, timeout)
    }

    /// [`connect_tcp`] from this pod.
    pub fn connect_tcp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Result<EchoConn> {
        connect_tcp(self.netns(), None, dst, port, timeout)
    }
}

impl Node {
    /// [`probe_tcp`] from the node itself, sourced from its `lo` address.
    pub fn probe_tcp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_tcp(self.netns(), node_src(self, dst), dst, port, timeout)
    }

    /// [`probe_udp`] from the node itself, sourced from its `lo` address.
    pub fn probe_udp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_udp(self.netns(), node_src(self, dst), dst, port, timeout)
    }

    /// [`probe_icmp`] from the node itself, sourced from its `lo` address.
    pub fn probe_icmp(&self, dst: IpAddr, timeout: Duration) -> Outcome {
        probe_icmp(self.netns(), node_src(self, dst), dst, timeout)
    }

    /// [`probe_sctp`] from the node itself, sourced from its `lo` address.
    pub fn probe_sctp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Outcome {
        probe_sctp(self.netns(), node_src(self, dst), dst, port, timeout)
    }

    /// [`connect_tcp`] from the node itself, sourced from its `lo` address.
    pub fn connect_tcp(&self, dst: IpAddr, port: u16, timeout: Duration) -> Result<EchoConn> {
        connect_tcp(self.netns(), node_src(self, dst), dst, port, timeout)
    }
}
