//! The data path: throughput (iperf3, one and two streams) and TCP request/response latency
//! between two pods, for Strait's three paths (same node, across nodes routed, across nodes over
//! VXLAN), each against a bare veth pair and against the same topology built by hand with `ip`
//! and `nft` (the kernel's own cost for that path). Rounds are interleaved and the median kept,
//! because this machine is noisy. Ratios: Strait / bare veth and Strait / hand-built; the last
//! row prices the masquerading table (a hand-built node with it / one without).
//!
//! Run as root: `bench/run datapath`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use strait_integration::cluster::{Backend, Cluster};
use strait_integration::fabric::Fabric;
use strait_integration::netns::{TestNetns, link};
use strait_netns::Netns;

const ROUNDS: usize = 5;
const SECONDS: &str = "2";
const ROUND_TRIPS: usize = 5000;

/// Two namespaces that can talk, and what keeps them alive.
struct Path {
    name: &'static str,
    client: String,
    server: String,
    server_ip: String,
    _keep: Vec<Box<dyn std::any::Any>>,
}

/// iperf3 throughput from client to server, in Gbit/s.
fn throughput(path: &Path, streams: &str) -> f64 {
    let mut iperf = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &path.server,
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let out = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &path.client,
            "iperf3",
            "-c",
            &path.server_ip,
            "-p",
            "5201",
        ])
        .args(["-t", SECONDS, "-P", streams, "-J"])
        .output()
        .unwrap();
    let _ = iperf.kill();
    let _ = iperf.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9
}

/// Mean TCP round trip of one byte each way, in microseconds.
fn round_trip(path: &Path) -> f64 {
    let server_ns = Netns::open(format!("/var/run/netns/{}", path.server)).unwrap();
    let client_ns = Netns::open(format!("/var/run/netns/{}", path.client)).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let server = server_ns
        .spawn(move || {
            let listener = TcpListener::bind("0.0.0.0:7300").unwrap();
            ready_tx.send(()).unwrap();
            let (mut conn, _) = listener.accept().unwrap();
            conn.set_nodelay(true).unwrap();
            let mut byte = [0u8; 1];
            while conn.read_exact(&mut byte).is_ok() {
                if conn.write_all(&byte).is_err() {
                    break;
                }
            }
        })
        .unwrap();
    ready_rx.recv().unwrap();
    let address = format!("{}:7300", path.server_ip);
    let mean = client_ns
        .spawn(move || {
            let mut conn = TcpStream::connect(address).unwrap();
            conn.set_nodelay(true).unwrap();
            let mut byte = [7u8; 1];
            // Warm up caches and neighbour state first.
            for _ in 0..200 {
                conn.write_all(&byte).unwrap();
                conn.read_exact(&mut byte).unwrap();
            }
            let started = Instant::now();
            for _ in 0..ROUND_TRIPS {
                conn.write_all(&byte).unwrap();
                conn.read_exact(&mut byte).unwrap();
            }
            started.elapsed().as_secs_f64() * 1e6 / ROUND_TRIPS as f64
        })
        .unwrap()
        .join()
        .unwrap()
        .unwrap();
    let _ = server.join();
    mean
}

fn bare_veth() -> Path {
    let (a, b) = (TestNetns::new("va"), TestNetns::new("vb"));
    link(&a, "eth0", "10.97.0.1/24", &b, "eth0", "10.97.0.2/24");
    Path {
        name: "bare veth pair",
        client: a.name.clone(),
        server: b.name.clone(),
        server_ip: "10.97.0.2".into(),
        _keep: vec![Box::new(a), Box::new(b)],
    }
}

fn strait(name: &'static str, nodes: usize, mode: &str) -> Path {
    let cluster = Cluster::start(nodes, mode, Backend::Embedded);
    let (a, b) = (cluster.pod(0), cluster.pod(nodes - 1));
    cluster.wait_converged(Duration::from_secs(10));
    Path {
        name,
        client: a.ns.name.clone(),
        server: b.ns.name.clone(),
        server_ip: b.ip.clone(),
        _keep: vec![Box::new(a), Box::new(b), Box::new(cluster)],
    }
}

/// A pod as Strait builds one, by hand: veth, /32, link-scope gateway, permanent neighbours.
fn hand_pod(node: &TestNetns, pod: &TestNetns, ip: &str, host_if: &str, mtu: &str) {
    node.ip(&[
        "link", "add", host_if, "mtu", mtu, "type", "veth", "peer", "name", "eth0", "mtu", mtu,
        "netns", &pod.name,
    ]);
    node.ip(&["link", "set", host_if, "up"]);
    pod.ip(&["addr", "add", &format!("{ip}/32"), "dev", "eth0"]);
    pod.ip(&["link", "set", "eth0", "up"]);
    let host_mac =
        strait_integration::inspect::ip_json(node, &["link", "show", host_if])[0]["address"]
            .as_str()
            .unwrap()
            .to_string();
    let pod_mac =
        strait_integration::inspect::ip_json(pod, &["link", "show", "eth0"])[0]["address"]
            .as_str()
            .unwrap()
            .to_string();
    pod.ip(&[
        "neigh",
        "add",
        "169.254.1.1",
        "lladdr",
        &host_mac,
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    pod.ip(&[
        "route",
        "add",
        "169.254.1.1",
        "dev",
        "eth0",
        "scope",
        "link",
    ]);
    pod.ip(&[
        "route",
        "add",
        "default",
        "via",
        "169.254.1.1",
        "dev",
        "eth0",
    ]);
    node.ip(&["route", "add", ip, "dev", host_if, "scope", "link"]);
    node.ip(&[
        "neigh",
        "add",
        ip,
        "lladdr",
        &pod_mac,
        "dev",
        host_if,
        "nud",
        "permanent",
    ]);
}

/// What straitd does to a node before pods arrive: forwarding on, and (unless `bare`) the same
/// masquerading table, whose NAT hook makes the kernel track connections.
fn prepare(node: &TestNetns, bare: bool) {
    let out = node.exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
    assert!(out.status.success());
    if bare {
        return;
    }
    let script = strait_nft::Ruleset {
        snat_sources: vec!["10.98.0.0/16".parse().unwrap()],
        cluster: vec![
            "10.98.0.0/16".parse().unwrap(),
            "10.96.0.0/12".parse().unwrap(),
        ],
    }
    .table()
    .script();
    let mut nft = node
        .command("nft", &["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success());
}

fn hand_same_node(bare: bool) -> Path {
    let node = TestNetns::new("hn");
    prepare(&node, bare);
    let (a, b) = (TestNetns::new("ha"), TestNetns::new("hb"));
    hand_pod(&node, &a, "10.98.0.1", "ha0", "1500");
    hand_pod(&node, &b, "10.98.0.2", "hb0", "1500");
    Path {
        name: if bare {
            "hand-built, no table"
        } else {
            "hand-built, same node"
        },
        client: a.name.clone(),
        server: b.name.clone(),
        server_ip: "10.98.0.2".into(),
        _keep: vec![Box::new(a), Box::new(b), Box::new(node)],
    }
}

/// Two nodes on a bridge; pods in 10.98.N.0/26; routed, or over a VXLAN device built by hand.
fn hand_cross_node(vxlan: bool) -> Path {
    let bare = false;
    let fabric = Fabric::new();
    let nodes: Vec<TestNetns> = (0..2).map(|_| TestNetns::new("hx")).collect();
    let mtu = if vxlan { "1450" } else { "1500" };
    let mut pods = Vec::new();
    let mut macs = Vec::new();
    let mut underlay = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        prepare(node, bare);
        underlay.push(fabric.attach(node));
        if vxlan {
            let mac = format!("02:00:00:00:00:0{}", i + 1);
            node.ip(&[
                "link",
                "add",
                "vx0",
                "address",
                &mac,
                "mtu",
                "1450",
                "type",
                "vxlan",
                "id",
                "42",
                "local",
                &underlay[i],
                "dev",
                "eth0",
                "dstport",
                "4789",
                "nolearning",
            ]);
            node.ip(&["addr", "add", &format!("10.98.{i}.0/32"), "dev", "vx0"]);
            node.ip(&["link", "set", "vx0", "up"]);
            macs.push(mac);
        }
        let pod = TestNetns::new("hp");
        hand_pod(node, &pod, &format!("10.98.{i}.1"), "hp0", mtu);
        pods.push(pod);
    }
    for (i, node) in nodes.iter().enumerate() {
        let peer = 1 - i;
        if vxlan {
            node.ip(&[
                "nexthop",
                "add",
                "id",
                "7",
                "via",
                &format!("10.98.{peer}.0"),
                "dev",
                "vx0",
                "onlink",
            ]);
            strait_integration::run_ok(
                "bridge",
                &[
                    "-n",
                    &node.name,
                    "fdb",
                    "add",
                    &macs[peer],
                    "dev",
                    "vx0",
                    "dst",
                    &underlay[peer],
                    "self",
                    "permanent",
                ],
            );
            node.ip(&[
                "neigh",
                "add",
                &format!("10.98.{peer}.0"),
                "lladdr",
                &macs[peer],
                "dev",
                "vx0",
                "nud",
                "permanent",
            ]);
        } else {
            node.ip(&[
                "nexthop",
                "add",
                "id",
                "7",
                "via",
                &underlay[peer],
                "dev",
                "eth0",
            ]);
        }
        node.ip(&["route", "add", &format!("10.98.{peer}.0/26"), "nhid", "7"]);
    }
    let (a, b) = (pods.remove(0), pods.remove(0));
    Path {
        name: if vxlan {
            "hand-built, VXLAN"
        } else {
            "hand-built, routed"
        },
        client: a.name.clone(),
        server: b.name.clone(),
        server_ip: "10.98.1.1".into(),
        _keep: vec![Box::new(a), Box::new(b), Box::new(nodes), Box::new(fabric)],
    }
}

#[derive(Default, Clone)]
struct Figures {
    one: Vec<f64>,
    two: Vec<f64>,
    rtt: Vec<f64>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    strait_integration::require_root();
    let paths = [
        bare_veth(),
        strait("strait, same node", 1, "vxlan"),
        hand_same_node(false),
        strait("strait, routed", 2, "routed"),
        hand_cross_node(false),
        strait("strait, VXLAN", 2, "vxlan"),
        hand_cross_node(true),
        hand_same_node(true),
    ];
    let mut figures = vec![Figures::default(); paths.len()];
    for round in 0..ROUNDS {
        eprintln!("round {} of {ROUNDS}", round + 1);
        for (path, f) in paths.iter().zip(figures.iter_mut()) {
            f.one.push(throughput(path, "1"));
            f.two.push(throughput(path, "2"));
            f.rtt.push(round_trip(path));
        }
    }
    let m: Vec<(f64, f64, f64)> = figures
        .iter()
        .map(|f| (median(&f.one), median(&f.two), median(&f.rtt)))
        .collect();
    println!(
        "Data path between two pods (median of {ROUNDS} interleaved rounds; iperf3 {SECONDS} s, TCP 1-byte round trips)\n"
    );
    println!(
        "{:<24}{:>12}{:>12}{:>12}",
        "path", "1 stream", "2 streams", "round trip"
    );
    for (path, (one, two, rtt)) in paths.iter().zip(&m) {
        println!(
            "{:<24}{:>8.2} Gb/s{:>8.2} Gb/s{:>9.1} µs",
            path.name, one, two, rtt
        );
    }
    println!("\nratios (throughput: higher is better; round trip: lower is better)");
    println!(
        "{:<40}{:>10}{:>10}{:>12}",
        "", "1 stream", "2 streams", "round trip"
    );
    let bare = m[0];
    let row = |label: String, a: (f64, f64, f64), b: (f64, f64, f64)| {
        println!(
            "{label:<40}{:>10.3}{:>10.3}{:>12.3}",
            a.0 / b.0,
            a.1 / b.1,
            a.2 / b.2
        );
    };
    for (strait, hand) in [(1, 2), (3, 4), (5, 6)] {
        row(
            format!("{} / bare veth", paths[strait].name),
            m[strait],
            bare,
        );
        row(
            format!("{} / hand-built", paths[strait].name),
            m[strait],
            m[hand],
        );
    }
    row("masquerading table (with / without)".into(), m[2], m[7]);
}
