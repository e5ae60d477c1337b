//! What an untrusted pod can do with the default container capability
//! `CAP_NET_RAW`: send IP packets with any header (raw sockets with the
//! header included) and any Ethernet frame (packet sockets); and a
//! [`Sniffer`] that sees what arrives in a namespace, to tell whether a
//! forged packet got there.
//!
//! Packets are built with [`crate::Frame`] and only ever sent inside the
//! namespaces of the bed.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    os::fd::{AsRawFd, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockaddrStorage};

use crate::{frames::ETH_HLEN, netns::NetNs, sock};

/// `IPPROTO_RAW`: a raw socket whose packets carry their own IP header.
const IPPROTO_RAW: u8 = 255;

/// Sends the IP packet inside `frame` (an Ethernet frame from
/// [`crate::Frame::build`]; its Ethernet header is dropped) from `netns` as
/// is, header included: the kernel routes it by its destination and fills
/// in nothing.
pub fn send_raw_ip(netns: &NetNs, frame: &[u8]) -> Result<()> {
    let packet = frame
        .get(ETH_HLEN..)
        .context("frame shorter than Ethernet")?;
    let (family, dst) = match packet.first().map(|b| b >> 4) {
        Some(4) if packet.len() >= 20 => {
            let d: [u8; 4] = packet[16..20].try_into().expect("four bytes");
            (AddressFamily::Inet, IpAddr::from(Ipv4Addr::from(d)))
        }
        Some(6) if packet.len() >= 40 => {
            let d: [u8; 16] = packet[24..40].try_into().expect("sixteen bytes");
            (AddressFamily::Inet6, IpAddr::from(Ipv6Addr::from(d)))
        }
        _ => bail!("not an IPv4 or IPv6 packet"),
    };
    netns
        .try_run(|| -> io::Result<()> {
            let fd = sock::raw_socket(family, IPPROTO_RAW)?;
            let to = SockaddrStorage::from(SocketAddr::new(dst, 0));
            socket::sendto(fd.as_raw_fd(), packet, &to, MsgFlags::empty())?;
            Ok(())
        })?
        .with_context(|| format!("sending a raw IP packet to {dst} from {}", netns.name()))
}

/// Sends `frame` as is (Ethernet header included) on `ifname` of `netns`.
pub fn send_frame(netns: &NetNs, ifname: &str, frame: &[u8]) -> Result<()> {
    let ifname = ifname.to_owned();
    netns
        .try_run(|| -> io::Result<()> {
            let index = nix::net::if_::if_nametoindex(ifname.as_str())?;
            let fd = packet_socket()?;
            // SAFETY: a zeroed sockaddr_ll is valid; the fields set below are
            // the ones sendto needs for a raw frame.
            let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            to.sll_family = libc::AF_PACKET as u16;
            to.sll_ifindex = index as i32;
            to.sll_halen = 6;
            to.sll_addr[..6].copy_from_slice(&frame[..6]);
            // SAFETY: `frame` and `to` are valid for the lengths passed.
            let sent = unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    std::ptr::from_ref(&to).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if sent < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        })?
        .with_context(|| format!("sending a frame on {} of {}", ifname, netns.name()))
}

fn packet_socket() -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: socket(2) takes no pointers; a non-negative result is a fresh
    // descriptor owned by nothing else.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from((libc::ETH_P_ALL as u16).to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The interesting part of one packet a [`Sniffer`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Source address.
    pub src: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Destination port (TCP, UDP, SCTP), else 0.
    pub dst_port: u16,
}

/// Every IPv4 and IPv6 packet arriving on `eth0` of a namespace, recorded
/// by a background thread until dropped.
#[derive(Debug)]
pub struct Sniffer {
    seen: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Sniffer {
    /// Starts recording what arrives on `eth0` of `netns`.
    pub fn start(netns: &NetNs) -> Result<Sniffer> {
        let fd = netns
            .try_run(|| -> io::Result<OwnedFd> {
                let index = nix::net::if_::if_nametoindex("eth0")?;
                let fd = packet_socket()?;
                // SAFETY: a zeroed sockaddr_ll is valid for bind.
                let mut at: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
                at.sll_family = libc::AF_PACKET as u16;
                at.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
                at.sll_ifindex = index as i32;
                // SAFETY: `at` is valid for its length.
                let rc = unsafe {
                    libc::bind(
                        fd.as_raw_fd(),
                        std::ptr::from_ref(&at).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                    )
                };
                if rc != 0 {
                    return Err(io::Error::last_os_error());
                }
                sock::set_recv_timeout(&fd, Duration::from_millis(50))?;
                Ok(fd)
            })?
            .with_context(|| format!("sniffing eth0 of {}", netns.name()))?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (seen, stop) = (seen.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    // SAFETY: `buf` is valid for its length.
                    let n = unsafe {
                        libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                    };
                    if n <= 0 {
                        continue;
                    }
                    if let Some(s) = parse(&buf[..n as usize]) {
                        seen.lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .push(s);
                    }
                }
            })
        };
        Ok(Sniffer {
            seen,
            stop,
            thread: Some(thread),
        })
    }

    /// How many packets from `src` of `protocol` to `dst_port` arrived.
    pub fn count(&self, src: IpAddr, protocol: u8, dst_port: u16) -> usize {
        self.seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .filter(|s| s.src == src && s.protocol == protocol && s.dst_port == dst_port)
            .count()
    }
}

impl Drop for Sniffer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Source, protocol and destination port of an Ethernet frame carrying
/// IPv4 or IPv6 (no extension headers).
fn parse(frame: &[u8]) -> Option<Seen> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let ip = frame.get(ETH_HLEN..)?;
    let (src, protocol, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let s: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
            (IpAddr::from(s), *ip.get(9)?, ip.get(ihl..)?)
        }
        0x86dd => {
            let s: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
            (IpAddr::from(s), *ip.get(6)?, ip.get(40..)?)
        }
        _ => return None,
    };
    let dst_port = match protocol {
        6 | 17 | 132 => u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]),
        _ => 0,
    };
    Some(Seen {
        src,
        protocol,
        dst_port,
    })
}
