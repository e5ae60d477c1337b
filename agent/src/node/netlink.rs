//! The kernel side of node discovery: rtnetlink dumps into a [`Snapshot`] and
//! a multicast subscription reporting that the node's links, routes or
//! neighbours changed.
//!
//! Everything goes through netlink sockets opened in the caller's network
//! namespace (the node's); nothing reads sysfs or runs `ip`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::channel::mpsc::UnboundedReceiver;
use futures::{Stream, StreamExt, TryStreamExt};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::sys::{AsyncSocket, SocketAddr};
use rtnetlink::{MulticastGroup, RouteMessageBuilder};
use tokio::task::JoinHandle;

use super::convert;
use super::error::Error;
use super::resolve::{MAIN_TABLE, Snapshot};

/// Receive buffer requested for the notification socket, so bursts (a node
/// starting many pods) rarely overrun it. The kernel caps it at `rmem_max`.
const NOTIFY_RCVBUF: libc::c_int = 4 << 20;

/// A change notification. Only says what kind of object changed; consumers
/// re-snapshot and re-resolve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// A link appeared or changed (`RTM_NEWLINK`).
    Link {
        /// The link's ifindex.
        ifindex: u32,
    },
    /// A link vanished (`RTM_DELLINK`).
    LinkRemoved {
        /// The vanished link's ifindex.
        ifindex: u32,
    },
    /// An IPv4 or IPv6 route was added or removed.
    Route,
    /// A neighbour or bridge FDB entry was added, changed or removed.
    Neighbour,
    /// The kernel dropped notifications (socket buffer overrun): anything may
    /// have changed.
    Overrun,
}

/// Classifies one notification; `None` for messages that are not changes.
fn classify(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<Change> {
    match msg.payload {
        NetlinkPayload::Overrun(_) => Some(Change::Overrun),
        NetlinkPayload::InnerMessage(inner) => match inner {
            RouteNetlinkMessage::NewLink(link) => Some(Change::Link {
                ifindex: link.header.index,
            }),
            RouteNetlinkMessage::DelLink(link) => Some(Change::LinkRemoved {
                ifindex: link.header.index,
            }),
            RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => {
                Some(Change::Route)
            }
            RouteNetlinkMessage::NewNeighbour(_) | RouteNetlinkMessage::DelNeighbour(_) => {
                Some(Change::Neighbour)
            }
            _ => None,
        },
        _ => None,
    }
}

/// A request connection to the kernel's routing netlink.
///
/// The connection is driven by a task on the tokio runtime it was created
/// on; dropping the `Netlink` stops that task.
#[derive(Debug)]
pub struct Netlink {
    handle: rtnetlink::Handle,
    task: JoinHandle<()>,
}

impl Netlink {
    /// Opens a request connection in the calling thread's network namespace
    /// and spawns its driver on the current tokio runtime.
    pub fn connect() -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let (connection, handle, _unsolicited) =
            rtnetlink::new_connection().map_err(|source| Error::Connect {
                what: "requests",
                source,
            })?;
        let task = runtime.spawn(connection);
        Ok(Self { handle, task })
    }

    /// Dumps links, main-table routes (IPv4 and IPv6), ARP/NDP neighbours and
    /// the bridge FDB.
    ///
    /// The dumps are taken one after the other, not atomically; a change in
    /// between is reported by the subscription, so the caller re-snapshots.
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let links = dump("links", self.handle.link().get().execute()).await?;

        let v4 = RouteMessageBuilder::<Ipv4Addr>::new().build();
        let v6 = RouteMessageBuilder::<Ipv6Addr>::new().build();
        let mut routes = dump("IPv4 routes", self.handle.route().get(v4).execute()).await?;
        routes.extend(dump("IPv6 routes", self.handle.route().get(v6).execute()).await?);

        let mut neighbours = Vec::new();
        for (what, family) in [
            ("IPv4 neighbours", AddressFamily::Inet),
            ("IPv6 neighbours", AddressFamily::Inet6),
        ] {
            let request = self.handle.neighbours().get().set_address_family(family);
            neighbours.extend(dump(what, request.execute()).await?);
        }
        let fdb_request = self
            .handle
            .neighbours()
            .get()
            .set_address_family(AddressFamily::Bridge);
        let fdb = dump("bridge FDB", fdb_request.execute()).await?;

        Ok(Snapshot {
            links: links.iter().map(convert::link).collect(),
            routes: routes
                .iter()
                .filter_map(convert::route)
                .filter(|r| r.table == MAIN_TABLE)
                .collect(),
            neighbours: neighbours.iter().filter_map(convert::neighbour).collect(),
            fdb: fdb.iter().filter_map(convert::fdb_entry).collect(),
        })
    }

    /// Subscribes to link, IPv4/IPv6 route and neighbour (including FDB)
    /// notifications, on a separate socket in the calling thread's network
    /// namespace. Needs a tokio runtime like [`Netlink::connect`].
    pub fn subscribe(&self) -> Result<Subscription, Error> {
        Subscription::open()
    }
}

impl Drop for Netlink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Collects a dump stream, naming the dump in the error.
async fn dump<T>(
    what: &'static str,
    stream: impl Stream<Item = Result<T, rtnetlink::Error>>,
) -> Result<Vec<T>, Error> {
    stream
        .map_err(|source| Error::Dump { what, source })
        .try_collect()
        .await
}

/// Change notifications from the kernel, as a [`Stream`] of [`Change`]s.
///
/// The stream ends when the notification socket fails; the caller should
/// then open a new subscription and re-snapshot.
#[derive(Debug)]
pub struct Subscription {
    messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// Opens the multicast socket and spawns its driver.
    fn open() -> Result<Self, Error> {
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let groups = [
            MulticastGroup::Link,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Neigh,
        ];
        let (mut connection, _handle, messages) = rtnetlink::new_multicast_connection(&groups)
            .map_err(|source| Error::Connect {
                what: "notifications",
                source,
            })?;
        if let Err(error) = connection
            .socket_mut()
            .socket_ref()
            .set_rx_buf_sz(NOTIFY_RCVBUF)
        {
            tracing::warn!(%error, "could not enlarge the netlink notification buffer");
        }
        let task = runtime.spawn(connection);
        Ok(Self { messages, task })
    }
}

impl Stream for Subscription {
    type Item = Change;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Change>> {
        loop {
            match self.messages.poll_next_unpin(cx) {
                Poll::Ready(Some((message, _))) => {
                    if let Some(change) = classify(message) {
                        return Poll::Ready(Some(change));
                    }
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use netlink_packet_route::link::LinkMessage;
    use netlink_packet_route::neighbour::NeighbourMessage;
    use netlink_packet_route::route::RouteMessage;

    use super::*;

    #[test]
    fn classifies_notifications() {
        let mut link = LinkMessage::default();
        link.header.index = 42;
        let msg = |inner| NetlinkMessage::from(inner);
        assert_eq!(
            classify(msg(RouteNetlinkMessage::NewLink(link.clone()))),
            Some(Change::Link { ifindex: 42 })
        );
        assert_eq!(
            classify(msg(RouteNetlinkMessage::DelLink(link))),
            Some(Change::LinkRemoved { ifindex: 42 })
        );
        assert_eq!(
            classify(msg(RouteNetlinkMessage::DelRoute(RouteMessage::default()))),
            Some(Change::Route)
        );
        assert_eq!(
            classify(msg(RouteNetlinkMessage::NewNeighbour(
                NeighbourMessage::default()
            ))),
            Some(Change::Neighbour)
        );
        assert_eq!(
            classify(msg(RouteNetlinkMessage::GetLink(LinkMessage::default()))),
            None
        );
        let overrun = NetlinkMessage::new(Default::default(), NetlinkPayload::Overrun(Vec::new()));
        assert_eq!(classify(overrun), Some(Change::Overrun));
    }

    #[test]
    fn connect_needs_a_runtime() {
        assert!(matches!(Netlink::connect(), Err(Error::NoRuntime)));
    }

    // Kernel tests, each in its own network namespace.
    mod kernel {
        use std::collections::BTreeMap;
        use std::future::Future;
        use std::net::IpAddr;
        use std::os::fd::AsRawFd;
        use std::process::Command;
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::time::Duration;

        use crate::node::{Discovery, Interface};

        static NEXT: AtomicUsize = AtomicUsize::new(0);

        /// A network namespace `plsd-node-<pid>-<n>`, deleted on drop.
        struct Netns {
            name: String,
        }

        impl Netns {
            /// Creates the namespace, or `None` when not running as root.
            fn create() -> Option<Self> {
                // SAFETY: geteuid has no preconditions and cannot fail.
                if unsafe { libc::geteuid() } != 0 {
                    eprintln!("skipping: kernel tests need root");
                    return None;
                }
                let n = NEXT.fetch_add(1, Ordering::Relaxed);
                let name = format!("plsd-node-{}-{n}", std::process::id());
                run("ip", &["netns", "add", &name]);
                Some(Self { name })
            }

            /// Runs `ip -n <ns> <args>`, panicking on failure.
            fn ip(&self, args: &str) {
                let mut full = vec!["-n", self.name.as_str()];
                full.extend(args.split_whitespace());
                run("ip", &full);
            }

            /// Runs `bridge -n <ns> <args>`, panicking on failure.
            fn bridge(&self, args: &str) {
                let mut full = vec!["-n", self.name.as_str()];
                full.extend(args.split_whitespace());
                run("bridge", &full);
            }

            /// Runs `future` on a current-thread runtime on a thread that
            /// entered this namespace.
            fn block_on<F, T>(&self, make: impl FnOnce() -> F + Send + 'static) -> T
            where
                F: Future<Output = T>,
                T: Send + 'static,
            {
                let path = format!("/run/netns/{}", self.name);
                std::thread::spawn(move || {
                    let ns = std::fs::File::open(&path).expect("open netns handle");
                    // SAFETY: `ns` is an open namespace fd; setns only
                    // changes this (dedicated) thread's network namespace.
                    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime")
                        .block_on(make())
                })
                .join()
                .expect("namespace thread panicked")
            }
        }

        impl Drop for Netns {
            fn drop(&mut self) {
                let status = Command::new("ip")
                    .args(["netns", "del", &self.name])
                    .status();
                if !matches!(status, Ok(s) if s.success()) {
                    eprintln!("failed to delete netns {}: {status:?}", self.name);
                }
            }
        }

        fn run(program: &str, args: &[&str]) {
            let out = Command::new(program)
                .args(args)
                .output()
                .expect("spawn command");
            assert!(
                out.status.success(),
                "{program} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }

        fn ip(s: &str) -> IpAddr {
            s.parse().expect("test IP")
        }

        /// A routed pod (veth + /32 + /128) and a bridged pod (bridge, port,
        /// neighbour, FDB entry), plus a bridged address without neighbour.
        fn build_node(ns: &Netns) {
            ns.ip("link set lo up");
            // Routed layout.
            ns.ip("link add cali0 type veth peer name pod0");
            ns.ip("link set cali0 up");
            ns.ip("link set pod0 up");
            ns.ip("route add 10.99.0.5/32 dev cali0");
            ns.ip("-6 route add fd00:99::5/128 dev cali0");
            // Bridge layout.
            ns.ip("link add cni0 type bridge");
            ns.ip("link set cni0 up");
            ns.ip("addr add 10.98.0.1/24 dev cni0");
            ns.ip("link add veth1 type veth peer name pod1");
            ns.ip("link set veth1 master cni0");
            ns.ip("link set veth1 up");
            ns.ip("link set pod1 up");
            ns.ip("neigh replace 10.98.0.7 lladdr 02:00:00:98:00:07 dev cni0 nud permanent");
            ns.bridge("fdb replace 02:00:00:98:00:07 dev veth1 master static");
        }

        #[test]
        fn resolves_routed_and_bridged_pods_and_reports_vanished_links() {
            let Some(ns) = Netns::create() else { return };
            build_node(&ns);
            let ns_name = ns.name.clone();
            let (results, removed, cali0) = ns.block_on(move || async move {
                let mut discovery = Discovery::new().await.expect("discovery");
                let snapshot = discovery.snapshot().await.expect("snapshot");
                let cali0 = snapshot
                    .links
                    .iter()
                    .find(|(_, l)| l.name == "cali0")
                    .map(|(i, _)| *i)
                    .expect("cali0 in snapshot");
                let pods = vec![
                    ("routed", vec![ip("10.99.0.5"), ip("fd00:99::5")]),
                    ("routed-v6", vec![ip("fd00:99::5")]),
                    ("bridged", vec![ip("10.98.0.7")]),
                    ("no-neigh", vec![ip("10.98.0.9")]),
                    ("remote", vec![ip("10.1.2.3")]),
                ];
                let results = discovery.resolve_all(&pods).await;

                // Delete the routed pod's veth from outside: the monitor
                // must report its ifindex.
                let deleter = tokio::task::spawn_blocking(move || {
                    run("ip", &["-n", &ns_name, "link", "del", "cali0"]);
                });
                let mut removed = Vec::new();
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !removed.contains(&cali0) {
                    let batch = tokio::time::timeout_at(deadline, discovery.changes())
                        .await
                        .expect("link removal reported in time")
                        .expect("monitor open");
                    removed.extend(batch.removed_links);
                }
                deleter.await.expect("deleter");
                (results, removed, cali0)
            });

            let by_name: BTreeMap<_, _> = results.into_iter().collect();
            let routed = by_name["routed"].as_ref().expect("routed pod resolves");
            assert_eq!(routed.name, "cali0");
            assert_eq!(routed.ifindex, cali0);
            assert_eq!(by_name["routed-v6"].as_ref(), Ok(routed));
            let bridged: &Interface = by_name["bridged"].as_ref().expect("bridged pod resolves");
            assert_eq!(bridged.name, "veth1");
            let no_neigh = by_name["no-neigh"].as_ref().expect_err("no neighbour");
            assert!(
                no_neigh
                    .reason
                    .contains("no neighbour entry for 10.98.0.9 on bridge cni0"),
                "{no_neigh}"
            );
            let remote = by_name["remote"].as_ref().expect_err("no route");
            assert!(remote.reason.contains("no route"), "{remote}");
            assert!(removed.contains(&cali0));
        }

        #[test]
        fn snapshot_sees_the_kernel_objects() {
            let Some(ns) = Netns::create() else { return };
            build_node(&ns);
            let snapshot = ns.block_on(|| async {
                let netlink = super::super::Netlink::connect().expect("connect");
                netlink.snapshot().await.expect("snapshot")
            });
            let index = |name: &str| {
                snapshot
                    .links
                    .iter()
                    .find(|(_, l)| l.name == name)
                    .map(|(i, _)| *i)
                    .unwrap_or_else(|| panic!("{name} missing"))
            };
            let (cni0, veth1) = (index("cni0"), index("veth1"));
            assert_eq!(snapshot.links[&veth1].master, Some(cni0));
            assert!(
                snapshot
                    .routes
                    .iter()
                    .any(|r| r.dst == ip("fd00:99::5") && r.prefix_len == 128)
            );
            assert!(
                snapshot
                    .neighbours
                    .iter()
                    .any(|n| n.ip == ip("10.98.0.7") && n.ifindex == cni0)
            );
            assert!(
                snapshot
                    .fdb
                    .iter()
                    .any(|e| e.port == veth1 && e.bridge == Some(cni0))
            );
            // Local-table routes (the bridge's own address) are filtered out.
            assert!(snapshot.routes.iter().all(|r| r.table == super::MAIN_TABLE));
        }
    }
}
