//! Echo servers inside a namespace: TCP, UDP and raw SCTP, each listening
//! on IPv4 and IPv6, running on background threads until their [`Server`]
//! guard is dropped.
//!
//! Sockets are created inside the namespace and then served from ordinary
//! threads (a socket keeps the namespace it was created in). All waits are
//! bounded by short timeouts, so dropping a guard stops it within ~100 ms.

use std::{
    io::{Read, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::OwnedFd,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result};
use nix::sys::socket::{AddressFamily, Backlog, SockType, listen, setsockopt, sockopt};

use crate::{
    netns::NetNs,
    node::{Node, Pod},
    sctp, sock,
};

/// How long a server thread blocks before it looks at its stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Wildcard addresses of both families.
const WILDCARDS: [IpAddr; 2] = [
    IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    IpAddr::V6(Ipv6Addr::UNSPECIFIED),
];

/// Shared state of one server's threads.
#[derive(Debug, Default)]
struct Shared {
    stop: AtomicBool,
    hits: AtomicU64,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn spawn(self: &Arc<Self>, name: String, f: impl FnOnce(Arc<Self>) + Send + 'static) {
        let shared = Arc::clone(self);
        match std::thread::Builder::new()
            .name(name)
            .spawn(move || f(shared))
        {
            Ok(handle) => self
                .workers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(handle),
            Err(e) => eprintln!("palisade-tests: spawning a server thread: {e}"),
        }
    }
}

/// A running echo server; stops (and joins its threads) on drop.
#[derive(Debug)]
pub struct Server {
    kind: &'static str,
    port: u16,
    shared: Arc<Shared>,
}

impl Server {
    /// `"tcp"`, `"udp"` or `"sctp"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The port it serves.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many messages it has received to echo so far (TCP: reads; UDP:
    /// datagrams; SCTP: packets for its port). Counted before the echo is
    /// sent, so a client that got an answer already sees it counted.
    pub fn hits(&self) -> u64 {
        self.shared.hits.load(Ordering::Relaxed)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        // Connection threads register themselves while we join, so drain
        // until nothing is left.
        loop {
            let batch: Vec<_> = std::mem::take(
                &mut *self
                    .shared
                    .workers
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            );
            if batch.is_empty() {
                break;
            }
            for handle in batch {
                if handle.join().is_err() {
                    eprintln!("palisade-tests: a {} server thread panicked", self.kind);
                }
            }
        }
    }
}

/// Starts a TCP echo server on `port` (IPv4 and IPv6) in `netns`: every
/// accepted connection gets back whatever it sends, until it closes.
pub fn serve_tcp(netns: &NetNs, port: u16) -> Result<Server> {
    let listeners = netns.try_run(|| -> Result<Vec<TcpListener>> {
        WILDCARDS
            .iter()
            .map(|&ip| {
                let fd = sock::socket(sock::family_of(ip), SockType::Stream)?;
                setsockopt(&fd, sockopt::ReuseAddr, &true)?;
                sock::bind(&fd, SocketAddr::new(ip, port))?;
                listen(&fd, Backlog::new(128)?)?;
                let listener = TcpListener::from(fd);
                listener.set_nonblocking(true)?;
                Ok(listener)
            })
            .collect::<Result<_>>()
            .with_context(|| format!("TCP listener on port {port} in {}", netns.name()))
    })??;
    let shared = Arc::new(Shared::default());
    for listener in listeners {
        shared.spawn(format!("tcp-accept-{port}"), move |shared| {
            accept_loop(&listener, &shared);
        });
    }
    Ok(Server {
        kind: "tcp",
        port,
        shared,
    })
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stopped() {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.spawn("tcp-echo".to_owned(), move |shared| {
                    echo_stream(stream, &shared);
                });
            }
            Err(e) if sock::is_timeout(&e) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => {}
            Err(e) => {
                eprintln!("palisade-tests: tcp accept: {e}");
                std::thread::sleep(POLL);
            }
        }
    }
}

fn echo_stream(mut stream: TcpStream, shared: &Shared) {
    if stream.set_nonblocking(false).is_err() || stream.set_read_timeout(Some(POLL)).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    while !shared.stopped() {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                // Count before answering: the client may look right after.
                shared.hits.fetch_add(1, Ordering::Relaxed);
                if stream.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if sock::is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}

/// Starts a UDP echo server on `port` (IPv4 and IPv6) in `netns`: every
/// datagram is sent back to its sender.
pub fn serve_udp(netns: &NetNs, port: u16) -> Result<Server> {
    let sockets = netns.try_run(|| -> Result<Vec<UdpSocket>> {
        WILDCARDS
            .iter()
            .map(|&ip| {
                let fd = sock::socket(sock::family_of(ip), SockType::Datagram)?;
                sock::bind(&fd, SocketAddr::new(ip, port))?;
                let socket = UdpSocket::from(fd);
                socket.set_read_timeout(Some(POLL))?;
                Ok(socket)
            })
            .collect::<Result<_>>()
            .with_context(|| format!("UDP socket on port {port} in {}", netns.name()))
    })??;
    let shared = Arc::new(Shared::default());
    for socket in sockets {
        shared.spawn(format!("udp-echo-{port}"), move |shared| {
            let mut buf = [0u8; 65536];
            while !shared.stopped() {
                match socket.recv_from(&mut buf) {
                    Ok((n, peer)) => {
                        shared.hits.fetch_add(1, Ordering::Relaxed);
                        let _ = socket.send_to(&buf[..n], peer);
                    }
                    Err(e) if sock::is_timeout(&e) => {}
                    // ICMP errors from earlier replies surface here; go on.
                    Err(_) => {}
                }
            }
        });
    }
    Ok(Server {
        kind: "udp",
        port,
        shared,
    })
}

/// Starts a raw SCTP "echo" on `port` (IPv4 and IPv6) in `netns`: every
/// SCTP packet (IP protocol 132) with destination port `port` and a valid
/// checksum is sent back to its sender with the ports swapped. The kernel
/// has no SCTP stack; this is how SCTP reachability is tested.
pub fn serve_sctp(netns: &NetNs, port: u16) -> Result<Server> {
    let sockets = netns.try_run(|| -> Result<Vec<(AddressFamily, OwnedFd)>> {
        [AddressFamily::Inet, AddressFamily::Inet6]
            .into_iter()
            .map(|family| {
                let fd = sock::raw_socket(family, sctp::IPPROTO_SCTP)?;
                sock::set_recv_timeout(&fd, POLL)?;
                Ok((family, fd))
            })
            .collect::<Result<_>>()
            .with_context(|| format!("raw SCTP socket in {}", netns.name()))
    })??;
    let shared = Arc::new(Shared::default());
    for (family, fd) in sockets {
        shared.spawn(format!("sctp-echo-{port}"), move |shared| {
            let mut buf = [0u8; 65536];
            while !shared.stopped() {
                let (n, peer) = match sock::recv_from(&fd, &mut buf) {
                    Ok((n, Some(peer))) => (n, peer),
                    Ok((_, None)) => continue,
                    Err(e) if sock::is_timeout(&e) => continue,
                    Err(_) => continue,
                };
                // Raw IPv4 sockets deliver the IP header; IPv6 ones do not.
                let start = match family {
                    AddressFamily::Inet => match sock::ipv4_header_len(&buf[..n]) {
                        Some(len) => len,
                        None => continue,
                    },
                    _ => 0,
                };
                let packet = &mut buf[start..n];
                if sctp::dst_port(packet) != Some(port) || !sctp::checksum_ok(packet) {
                    continue;
                }
                sctp::swap_ports(packet);
                shared.hits.fetch_add(1, Ordering::Relaxed);
                let _ = sock::send_to(&fd, packet, SocketAddr::new(peer, 0));
            }
        });
    }
    Ok(Server {
        kind: "sctp",
        port,
        shared,
    })
}

impl Pod {
    /// TCP echo server on `port` in this pod (see [`serve_tcp`]).
    pub fn serve_tcp(&self, port: u16) -> Result<Server> {
        serve_tcp(self.netns(), port)
    }

    /// UDP echo server on `port` in this pod (see [`serve_udp`]).
    pub fn serve_udp(&self, port: u16) -> Result<Server> {
        serve_udp(self.netns(), port)
    }

    /// Raw SCTP echo on `port` in this pod (see [`serve_sctp`]).
    pub fn serve_sctp(&self, port: u16) -> Result<Server> {
        serve_sctp(self.netns(), port)
    }
}

impl Node {
    /// TCP echo server on `port` in the node namespace (host network).
    pub fn serve_tcp(&self, port: u16) -> Result<Server> {
        serve_tcp(self.netns(), port)
    }

    /// UDP echo server on `port` in the node namespace (host network).
    pub fn serve_udp(&self, port: u16) -> Result<Server> {
        serve_udp(self.netns(), port)
    }

    /// Raw SCTP echo on `port` in the node namespace (host network).
    pub fn serve_sctp(&self, port: u16) -> Result<Server> {
        serve_sctp(self.netns(), port)
    }
}
