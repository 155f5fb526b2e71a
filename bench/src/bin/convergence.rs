//! Convergence: how long a node takes, from the store event to every route, FDB entry and
//! neighbour programmed, when 100, 1,000 and 5,000 peers appear at once (one etcd transaction of
//! node and block records; no namespace per peer), and when one peer joins 5,000. The reference,
//! in the same run: `ip -batch` and `bridge -batch` installing the same entries into a scratch
//! namespace, the kernel's own floor. Also the agent's resident memory at 5,000 peers. Then the
//! same with a dual-stack network: each peer also holds an IPv6 block, reached through its
//! VXLAN device's link-local address (a neighbour, a nexthop and a route more per peer).
//!
//! Run as root: `bench/run convergence`.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use etcd_client::{Client, Txn, TxnOp};
use ipnet::IpNet;
use strait_bench::{ms, percentile};
use strait_integration::cluster::{Backend, Cluster};
use strait_integration::netns::TestNetns;
use strait_integration::node::NodeSpec;
use strait_netlink::{Netlink, TABLE_MAIN};
use strait_netns::Netns;
use strait_store::{BlockRecord, Kind, NodeRecord, Vtep, etcd_key};

/// Clear of the test nodes' service range (10.96.0.0/12).
const POOL: &str = "10.128.0.0/10";
const POOL6: &str = "fd00:128::/96";
const DEVICE: &str = "strait.4096";
const JOINS: u32 = 20;

/// Peer `i` (from 1): its name, underlay address, blocks, VTEP address and MAC, and the
/// link-local address its VXLAN device has for that MAC.
struct Peer {
    name: String,
    address: Ipv4Addr,
    block: IpNet,
    block6: IpNet,
    vtep: Ipv4Addr,
    mac: String,
    link_local: Ipv6Addr,
}

fn peer(i: u32) -> Peer {
    let block_start = u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i * 64;
    let block6_start = u128::from("fd00:128::".parse::<Ipv6Addr>().unwrap()) + u128::from(i) * 64;
    let [_, b, c, d] = i.to_be_bytes();
    let mac = strait_netlink::MacAddr([2, 0, 0, b, c, d]);
    Peer {
        name: format!("peer-{i}"),
        address: Ipv4Addr::new(172, 16 + b, c, d),
        block: IpNet::new(IpAddr::V4(Ipv4Addr::from(block_start)), 26).unwrap(),
        block6: IpNet::new(IpAddr::V6(Ipv6Addr::from(block6_start)), 122).unwrap(),
        vtep: Ipv4Addr::from(block_start),
        mac: mac.to_string(),
        link_local: strait_dataplane::link_local(mac),
    }
}

/// A thread inside the fabric namespace (where etcd listens) that commits one transaction per
/// request and answers with the instant the transaction was committed.
struct Writer {
    requests: mpsc::Sender<(Vec<u32>, mpsc::Sender<Instant>)>,
}

impl Writer {
    /// `dual`: the node's network has two pools (named `strait-0` and `strait-1`), and each peer
    /// holds a block of both.
    fn start(fabric: &TestNetns, endpoint: String, dual: bool) -> Writer {
        let (requests, incoming) = mpsc::channel::<(Vec<u32>, mpsc::Sender<Instant>)>();
        let ns = Netns::open(fabric.path()).unwrap();
        ns.spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut client = Client::connect([endpoint], None).await.unwrap();
                while let Ok((peers, done)) = incoming.recv() {
                    let mut ops = Vec::new();
                    for p in peers.into_iter().map(peer) {
                        let node = NodeRecord {
                            address: p.address.into(),
                            address6: None,
                            vxlan_over_ipv6: false,
                            networks: [(
                                "strait".to_string(),
                                Vtep {
                                    ip: p.vtep.into(),
                                    mac: p.mac,
                                },
                            )]
                            .into(),
                        };
                        ops.push(TxnOp::put(
                            etcd_key("/strait", Kind::Node, &p.name),
                            serde_json::to_vec(&node).unwrap(),
                            None,
                        ));
                        let blocks = match dual {
                            false => vec![("strait-v4", p.block)],
                            true => vec![("strait-0", p.block), ("strait-1", p.block6)],
                        };
                        for (pool, cidr) in blocks {
                            let block = BlockRecord {
                                pool: pool.into(),
                                cidr,
                                node: p.name.clone(),
                                space: None,
                            };
                            let name = strait_ipam::block_name(None, cidr);
                            ops.push(TxnOp::put(
                                etcd_key("/strait", Kind::IpBlock, &name),
                                serde_json::to_vec(&block).unwrap(),
                                None,
                            ));
                        }
                    }
                    client.txn(Txn::new().and_then(ops)).await.unwrap();
                    let _ = done.send(Instant::now());
                }
            });
        })
        .unwrap();
        Writer { requests }
    }

    /// Adds peers `range` in one transaction; returns when it was committed.
    fn add(&self, peers: std::ops::RangeInclusive<u32>) -> Instant {
        let (done, committed) = mpsc::channel();
        self.requests.send((peers.collect(), done)).unwrap();
        committed.recv().unwrap()
    }
}

/// Counts what the node holds towards peers: routes via the device (both families), FDB
/// entries, neighbours.
fn programmed(nl: &mut Netlink) -> (usize, usize, usize) {
    let Some(dev) = nl.link_by_name(DEVICE).unwrap() else {
        return (0, 0, 0);
    };
    let mut routes = nl.routes(false, TABLE_MAIN).unwrap();
    routes.extend(nl.routes(true, TABLE_MAIN).unwrap());
    let routes = routes
        .iter()
        .filter(|r| r.protocol == 83 && r.oif == Some(dev.index))
        .count();
    let fdb = nl.fdb(dev.index).unwrap().len();
    let neighbours = nl
        .neighbours(dev.index)
        .unwrap()
        .iter()
        .filter(|n| n.permanent)
        .count();
    (routes, fdb, neighbours)
}

fn node_spec(dual: bool) -> NodeSpec {
    let mut pools = vec![(POOL.into(), 26)];
    if dual {
        pools.push((POOL6.into(), 122));
    }
    NodeSpec {
        pools,
        ..NodeSpec::default()
    }
}

/// A one-node cluster on etcd, and a netlink socket inside the node.
fn single_node(dual: bool) -> (Cluster, Netlink, Writer) {
    let cluster = Cluster::start_with(1, Backend::Etcd, node_spec(dual));
    let socket = Netns::open(cluster.nodes[0].ns.path())
        .unwrap()
        .route_socket();
    let nl = Netlink::from_socket(socket.unwrap()).unwrap();
    let writer = Writer::start(
        &cluster.fabric.ns,
        cluster.etcd.as_ref().unwrap().endpoint.clone(),
        dual,
    );
    (cluster, nl, writer)
}

/// The same kernel objects (neighbours, nexthops, routes through them, FDB entries) installed
/// by iproute2 in batch mode into a scratch namespace.
fn reference(peers: u32, dual: bool) -> Duration {
    let ns = TestNetns::new("ref");
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["addr", "add", "192.168.100.1/24", "dev", "up0"]);
    ns.ip(&[
        "link",
        "add",
        DEVICE,
        "type",
        "vxlan",
        "id",
        "4096",
        "local",
        "192.168.100.1",
        "dev",
        "up0",
        "dstport",
        "4789",
        "nolearning",
    ]);
    ns.ip(&["link", "set", DEVICE, "up"]);
    let (mut ip_batch, mut fdb_batch) = (String::new(), String::new());
    for i in 1..=peers {
        let p = peer(i);
        let _ = writeln!(
            ip_batch,
            "neigh add {} lladdr {} dev {DEVICE} nud permanent",
            p.vtep, p.mac
        );
        let _ = writeln!(
            ip_batch,
            "nexthop add id {i} via {} dev {DEVICE} onlink proto 83",
            p.vtep
        );
        let _ = writeln!(ip_batch, "route add {} nhid {i} proto 83", p.block);
        if dual {
            let _ = writeln!(
                ip_batch,
                "neigh add {} lladdr {} dev {DEVICE} nud permanent",
                p.link_local, p.mac
            );
            let id = i + 1_000_000;
            let _ = writeln!(
                ip_batch,
                "nexthop add id {id} via {} dev {DEVICE} proto 83",
                p.link_local
            );
            let _ = writeln!(ip_batch, "route add {} nhid {id} proto 83", p.block6);
        }
        let _ = writeln!(
            fdb_batch,
            "fdb add {} dev {DEVICE} dst {} self permanent",
            p.mac, p.address
        );
    }
    let scratch = strait_integration::ScratchDir::new("batch");
    let dir = scratch.path();
    std::fs::write(dir.join("ip"), ip_batch).unwrap();
    std::fs::write(dir.join("fdb"), fdb_batch).unwrap();
    let started = Instant::now();
    let ip = ns.exec("ip", &["-batch", dir.join("ip").to_str().unwrap()]);
    let bridge = ns.exec("bridge", &["-batch", dir.join("fdb").to_str().unwrap()]);
    let took = started.elapsed();
    assert!(
        ip.status.success() && bridge.status.success(),
        "{}",
        String::from_utf8_lossy(&ip.stderr)
    );
    took
}

/// Waits until peer `last`'s routes are in: routes are programmed last in a batch and the store
/// delivers peers in order, so then everything should be. One full count confirms it, so that
/// polling does not steal the CPU the agent is converging with.
fn wait_programmed(nl: &mut Netlink, last: u32, dual: bool) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(120);
    let families = if dual { 2 } else { 1 };
    loop {
        if route_in(nl, &peer(last)) && (!dual || route6_in(nl, &peer(last))) {
            let done = Instant::now();
            let (r, f, n) = programmed(nl);
            let want = last as usize;
            if r == want * families && f == want && n == want * families {
                return done;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not converged: {:?} of {last}",
            programmed(nl)
        );
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Is peer `p`'s block routed through its VTEP?
fn route_in(nl: &mut Netlink, p: &Peer) -> bool {
    let probe = IpAddr::V4(Ipv4Addr::from(u32::from(p.vtep) + 1));
    nl.route_to(probe)
        .unwrap()
        .is_some_and(|r| r.gateway == Some(IpAddr::V4(p.vtep)))
}

/// Is peer `p`'s IPv6 block routed through its device's link-local address?
fn route6_in(nl: &mut Netlink, p: &Peer) -> bool {
    let IpNet::V6(block) = p.block6 else {
        return false;
    };
    let probe = IpAddr::V6(Ipv6Addr::from(u128::from(block.network()) + 1));
    nl.route_to(probe)
        .unwrap()
        .is_some_and(|r| r.gateway == Some(IpAddr::V6(p.link_local)))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn main() {
    strait_integration::require_root();
    println!(
        "Convergence on one node (store event -> every route, FDB entry and neighbour programmed)"
    );
    println!(
        "reference: ip -batch + bridge -batch installing the same kernel objects (ratio = strait / reference)\n"
    );
    println!(
        "{:<24}{:>10}{:>14}{:>10}{:>12}",
        "peers at once", "objects", "strait ms", "ref ms", "ratio"
    );
    let mut last = None;
    for (peers, dual) in [
        (100u32, false),
        (1000, false),
        (1000, true),
        (5000, true),
        (5000, false),
    ] {
        let (cluster, mut nl, writer) = single_node(dual);
        let committed = writer.add(1..=peers);
        let done = wait_programmed(&mut nl, peers, dual);
        let ours = done - committed;
        let theirs = reference(peers, dual);
        println!(
            "{:<24}{:>10}{:>14.1}{:>10.1}{:>12.2}",
            format!("{peers}{}", if dual { " dual-stack" } else { "" }),
            peers * if dual { 7 } else { 4 },
            ms(ours),
            ms(theirs),
            ms(ours) / ms(theirs)
        );
        last = Some((cluster, nl, writer));
    }
    let (cluster, mut nl, writer) = last.unwrap();
    let mut joins = Vec::new();
    // Let the echo of the bulk pass settle, then time single joins.
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..JOINS {
        let p = peer(5001 + i);
        let committed = writer.add(5001 + i..=5001 + i);
        while !route_in(&mut nl, &p) {
            std::thread::sleep(Duration::from_micros(100));
        }
        joins.push(committed.elapsed());
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = cluster.nodes[0].agent_pid().unwrap();
    println!(
        "\none peer joining 5,000:  p50 {:.1} ms, p99 {:.1} ms ({JOINS} joins; nexthop, route, FDB and neighbour in one batch)",
        ms(percentile(&joins, 50.0)),
        ms(percentile(&joins, 99.0))
    );
    println!(
        "agent resident memory with 5,020 peers: {:.1} MiB",
        rss_kib(pid) as f64 / 1024.0
    );
}
