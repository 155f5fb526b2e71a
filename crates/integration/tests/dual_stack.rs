//! Dual-stack and IPv6-only pods in real namespaces: ADD gives one address of each family the
//! network has, the kernel holds both sides as designed, traffic flows over both families (pod
//! to pod, pod to node, masqueraded to the outside, across three nodes over VXLAN with every
//! store, and routed), CHECK reports a deleted IPv6 route, the reconciler repairs a deleted IPv6
//! host route and gateway address on the event, DEL leaves nothing, VXLAN runs over an IPv6
//! underlay too, and a pool the node cannot route is refused with the reason.

use std::time::Duration;

use serde_json::Value;
use strait_integration::cluster::{Backend, Cluster, Pod};
use strait_integration::cni::{Env, addresses};
use strait_integration::inspect::{ip_json, link_names};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::traffic::{PeerEcho, ping, ping_df, tcp_peer};

const V4_POOL: &str = "10.244.0.0/16";
const V6_POOL: &str = "fd00:10:244::/56";

fn is_permanent(n: &Value) -> bool {
    n["state"]
        .as_array()
        .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))
}

/// A kernel setting inside `ns`.
fn sysctl(ns: &TestNetns, name: &str) -> String {
    let out = ns.exec("sysctl", &["-n", name]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The node's underlay device: the one holding its fabric address.
fn underlay_device(node: &Node) -> String {
    ip_json(&node.ns, &["-4", "addr", "show"])
        .iter()
        .find(|l| {
            l["addr_info"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["local"] == node.address.as_str()))
        })
        .and_then(|l| l["ifname"].as_str().map(String::from))
        .expect("the node's underlay device")
}

#[test]
fn dual_stack_pod_lifecycle_add_inspect_traffic_check_repair_del() {
    let node = Node::start(NodeSpec {
        pools: vec![(V4_POOL.into(), 26), (V6_POOL.into(), 122)],
        ..NodeSpec::default()
    });
    let underlay = underlay_device(&node);
    assert_eq!(sysctl(&node.ns, "net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(
        sysctl(&node.ns, &format!("net.ipv6.conf.{underlay}.accept_ra")),
        "2",
        "the underlay keeps its router advertisements while the node forwards"
    );
    let outside = node.outside();
    node.ns.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::1/64",
        "dev",
        "up0",
        "nodad",
    ]);
    outside.ip(&[
        "-6",
        "addr",
        "add",
        "2001:db8:1::2/64",
        "dev",
        "eth0",
        "nodad",
    ]);
    node.ns
        .ip(&["-6", "route", "add", "default", "via", "2001:db8:1::2"]);
    outside.ip(&["-6", "addr", "add", "2001:db8:ff::1/128", "dev", "lo"]);
    // Some IPv6 nodes accept router advertisements on every interface while forwarding; a
    // pod's must still never reach the node's routes.
    node.ns
        .exec("sysctl", &["-qw", "net.ipv6.conf.default.accept_ra=2"]);
    let before = node.snapshot();
    let (a, b) = (TestNetns::new("d6a"), TestNetns::new("d6b"));

    let ra = node.add("ctr-a", &a);
    let rb = node.add("ctr-b", &b);
    let (ips_a, ips_b) = (addresses(&ra), addresses(&rb));
    for (r, ips) in [(&ra, &ips_a), (&rb, &ips_b)] {
        assert_eq!(ips.len(), 2, "{r}");
        assert!(
            ips[0].starts_with("10.244.") && ips[1].starts_with("fd00:10:244:"),
            "{r}"
        );
        assert!(
            r["ips"][0]["address"].as_str().unwrap().ends_with("/32"),
            "{r}"
        );
        assert!(
            r["ips"][1]["address"].as_str().unwrap().ends_with("/128"),
            "{r}"
        );
        assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(r["ips"][1]["gateway"], "fe80::1");
        let routes: Vec<(&str, &str)> = r["routes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["dst"].as_str().unwrap(), r["gw"].as_str().unwrap()))
            .collect();
        assert_eq!(routes, [("0.0.0.0/0", "169.254.1.1"), ("::/0", "fe80::1")]);
    }
    let (v6_a, v6_b) = (ips_a[1].as_str(), ips_b[1].as_str());
    // Both families' addresses are counted apart.
    let (_, metrics) = node.http_get("/metrics");
    for family in ["ipv4", "ipv6"] {
        let needle =
            format!("strait_ipam_addresses_allocated{{network=\"strait\",family=\"{family}\"}} 2");
        assert!(metrics.contains(&needle), "{needle} missing:\n{metrics}");
    }

    // The pod side: the IPv6 address as a /128 without duplicate address detection, the default
    // route through fe80::1, and a permanent neighbour for it at the host veth's MAC.
    let addrs = ip_json(
        &a,
        &["-6", "addr", "show", "dev", "eth0", "scope", "global"],
    );
    let info = &addrs[0]["addr_info"][0];
    assert_eq!(
        (info["local"].as_str(), info["prefixlen"].as_u64()),
        (Some(v6_a), Some(128))
    );
    assert_eq!(info["nodad"], true, "{info}");
    assert!(info.get("tentative").is_none(), "usable at once: {info}");
    let routes = ip_json(&a, &["-6", "route", "show", "default"]);
    assert_eq!(
        (routes[0]["gateway"].as_str(), routes[0]["dev"].as_str()),
        (Some("fe80::1"), Some("eth0")),
        "{routes:?}"
    );
    let host_mac = ra["interfaces"][0]["mac"].as_str().unwrap();
    let neigh = ip_json(&a, &["-6", "neigh", "show", "dev", "eth0"]);
    assert!(
        neigh
            .iter()
            .any(|n| n["dst"] == "fe80::1" && n["lladdr"] == host_mac && is_permanent(n)),
        "{neigh:?}"
    );

    // The host side: fe80::1 on the veth (no DAD), the pod's /128 routed to it, and a
    // permanent neighbour at the pod's MAC.
    let veth_a = ra["interfaces"][0]["name"].as_str().unwrap();
    let gw = ip_json(&node.ns, &["-6", "addr", "show", "dev", veth_a]);
    assert!(
        gw[0]["addr_info"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["local"] == "fe80::1" && i["prefixlen"] == 64 && i["nodad"] == true),
        "{gw:?}"
    );
    assert_eq!(
        sysctl(&node.ns, &format!("net.ipv6.conf.{veth_a}.accept_ra")),
        "0",
        "the host veth ignores the pod's router advertisements"
    );
    let host_route = ip_json(&node.ns, &["-6", "route", "show", v6_a]);
    assert_eq!(
        (
            host_route[0]["dev"].as_str(),
            host_route[0]["protocol"].as_str()
        ),
        (Some(veth_a), Some("83")),
        "{host_route:?}"
    );
    let pod_mac = ra["interfaces"][1]["mac"].as_str().unwrap();
    let neigh = ip_json(&node.ns, &["-6", "neigh", "show", "dev", veth_a]);
    assert!(
        neigh
            .iter()
            .any(|n| n["dst"] == v6_a && n["lladdr"] == pod_mac && is_permanent(n)),
        "{neigh:?}"
    );

    // Traffic over both families: pod to pod both ways, TCP with the real source, pod to its
    // gateway on the node, the node to a pod.
    for (from, to) in [(&a, &ips_b), (&b, &ips_a)] {
        for ip in to.iter() {
            assert!(ping(from, ip), "ping {ip}");
        }
    }
    let echo = PeerEcho::start6(&b, 7000);
    assert_eq!(tcp_peer(&a, v6_b, 7000).as_deref(), Some(v6_a));
    drop(echo);
    let echo = PeerEcho::start(&b, 7001);
    assert_eq!(
        tcp_peer(&a, &ips_b[0], 7001).as_deref(),
        Some(ips_a[0].as_str())
    );
    drop(echo);
    assert!(ping(&a, "fe80::1%eth0"), "a pod reaches its IPv6 gateway");
    assert!(ping(&node.ns, v6_a), "the node reaches a pod over IPv6");

    // Leaving the cluster over IPv6: masqueraded to the node's IPv6 address.
    let echo = PeerEcho::start6(&outside, 8000);
    assert_eq!(
        tcp_peer(&a, "2001:db8:ff::1", 8000).as_deref(),
        Some("2001:db8:1::1")
    );
    drop(echo);

    let check = |cid: &str, pod: &TestNetns| {
        node.cni(
            &Env::attachment("CHECK", cid, &pod.path(), "eth0"),
            &node.conf("1.0.0"),
        )
    };
    check("ctr-a", &a).ok();
    check("ctr-b", &b).ok();
    // CHECK reports the pod's deleted IPv6 default route.
    a.ip(&["-6", "route", "del", "default"]);
    let err = check("ctr-a", &a).err(103);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains("pod route ::/0 via fe80::1"),
        "{err}"
    );
    // The pod's IPv6 host route is repaired on the event (the reconciler's timer is 30 s).
    node.ns.ip(&["-6", "route", "del", v6_b]);
    strait_integration::wait_until(
        "the deleted IPv6 host route is repaired",
        Duration::from_secs(10),
        || check("ctr-b", &b).success,
        || node.ns.ip(&["-6", "route", "show", v6_b]),
    );
    assert!(ping(&node.ns, v6_b));
    // So is the IPv6 gateway address on its host veth.
    let veth_b = rb["interfaces"][0]["name"].as_str().unwrap();
    node.ns
        .ip(&["-6", "addr", "del", "fe80::1/64", "dev", veth_b]);
    strait_integration::wait_until(
        "the deleted IPv6 gateway address is repaired",
        Duration::from_secs(10),
        || check("ctr-b", &b).success,
        || node.ns.ip(&["-6", "addr", "show", "dev", veth_b]),
    );
    // A repeated ADD repairs the pod side, with the same addresses.
    let again = node.add("ctr-a", &a);
    assert_eq!(addresses(&again), ips_a);
    check("ctr-a", &a).ok();
    assert!(ping(&a, v6_b));

    for _ in 0..2 {
        node.del("ctr-a", &a);
        node.del("ctr-b", &b);
    }
    assert_eq!(link_names(&a), ["lo"]);
    assert_eq!(link_names(&b), ["lo"]);
    let after = node.snapshot();
    assert_eq!(after.links, before.links);
    assert_eq!(after.kernel, before.kernel);
    assert_eq!(after.records, before.records);
    assert_eq!(after.allocated, 0);
    assert_eq!(after.nft, before.nft);
}

#[test]
fn an_ipv6_only_network_gives_pods_ipv6_alone() {
    let node = Node::start(NodeSpec {
        pools: vec![(V6_POOL.into(), 122)],
        ..NodeSpec::default()
    });
    let before = node.snapshot();
    let (a, b) = (TestNetns::new("o6a"), TestNetns::new("o6b"));
    let ra = node.add("ctr-a", &a);
    let rb = node.add("ctr-b", &b);
    let (ips_a, ips_b) = (addresses(&ra), addresses(&rb));
    assert!(
        ips_a.len() == 1 && ips_a[0].starts_with("fd00:10:244:"),
        "{ra}"
    );
    assert_eq!(ra["routes"][0]["dst"], "::/0", "{ra}");
    assert_eq!(ra["routes"].as_array().unwrap().len(), 1, "{ra}");
    let v4 = ip_json(&a, &["-4", "addr", "show", "dev", "eth0"]);
    assert!(
        v4.is_empty() || v4[0]["addr_info"].as_array().unwrap().is_empty(),
        "no IPv4 address: {v4:?}"
    );
    assert!(ping(&a, &ips_b[0]) && ping(&b, &ips_a[0]));
    assert!(ping(&node.ns, &ips_a[0]), "the node reaches a pod");
    let status = node.ctl(&["status"]);
    assert!(
        status["networks"][0]["vtep"]
            .as_str()
            .is_some_and(|v| v.starts_with("fd00:10:244:") && v.ends_with("::")),
        "an IPv6-only network's VTEP is the first address of the node's block: {status}"
    );
    node.del("ctr-a", &a);
    node.del("ctr-b", &b);
    let after = node.snapshot();
    assert_eq!(after.links, before.links);
    assert_eq!(after.kernel, before.kernel);
    assert_eq!(after.allocated, 0);
}

/// Two dual-stack pods on each of the cluster's nodes, once every pod reaches every other over
/// both families (`what` names the case in a failure).
fn two_pods_per_node_reaching_each_other(cluster: &Cluster, what: &str) -> Vec<Pod> {
    let pods: Vec<_> = (0..cluster.nodes.len())
        .flat_map(|n| [n, n])
        .map(|n| cluster.pod(n))
        .collect();
    cluster.wait_converged(Duration::from_secs(10));
    for (family, i) in [("IPv4", 0), ("IPv6", 1)] {
        let bad = Cluster::unreachable_at(&pods, |p| p.ips[i].as_str());
        assert!(bad.is_empty(), "{what} {family}: unreachable {bad:?}");
    }
    pods
}

fn dual_stack() -> NodeSpec {
    NodeSpec {
        pools: vec![(V4_POOL.into(), 26), (V6_POOL.into(), 122)],
        ..NodeSpec::default()
    }
}

#[test]
fn dual_stack_pods_reach_each_other_across_three_nodes_in_both_modes_with_every_store() {
    for backend in [Backend::Embedded, Backend::Etcd, Backend::Kubernetes] {
        for mode in ["vxlan", "routed"] {
            let what = format!("{mode} with {backend:?}");
            let spec = NodeSpec {
                mode: mode.into(),
                ..dual_stack()
            };
            let cluster = Cluster::start_with(3, backend, spec);
            let pods = two_pods_per_node_reaching_each_other(&cluster, &what);
            // Full-size IPv6 packets cross unfragmented (IPv6's header is 40 bytes, ICMPv6's 8):
            // inside VXLAN over the IPv4 underlay, or routed at the underlay's MTU.
            let (a, b) = (&pods[0], &pods[4]);
            let v6_b = b.ips[1].as_str();
            let mtu = if mode == "vxlan" { 1450 } else { 1500 };
            assert!(
                ping_df(&a.ns, v6_b, mtu - 48),
                "{what}: a full-MTU IPv6 packet crosses"
            );
            assert!(
                !ping_df(&a.ns, v6_b, mtu - 47),
                "{what}: one byte more does not"
            );
            assert!(
                ping(&cluster.nodes[0].ns, v6_b),
                "{what}: node to remote pod over IPv6"
            );
            let echo = PeerEcho::start6(&b.ns, 7000);
            assert_eq!(
                tcp_peer(&a.ns, v6_b, 7000).as_deref(),
                Some(a.ips[1].as_str()),
                "{what}: pods see each other's real IPv6 address across nodes"
            );
            drop(echo);
            // Other nodes' IPv6 blocks are routed through their VXLAN devices' link-local
            // addresses (which follow from the devices' MACs), or through their IPv6 underlay
            // addresses.
            let routes = cluster.nodes[0].ctl(&["routes"]);
            let v6_via: Vec<&str> = routes
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["dst"].as_str().is_some_and(|d| d.contains(':')))
                .filter_map(|r| r["via"].as_str())
                .collect();
            let expected = if mode == "vxlan" {
                "fe80::"
            } else {
                "fd00:fab::"
            };
            assert!(
                v6_via.len() >= 2 && v6_via.iter().all(|v| v.starts_with(expected)),
                "{what}: {routes}"
            );
        }
    }
}

#[test]
fn vxlan_over_an_ipv6_underlay_carries_both_families_between_three_nodes() {
    let spec = NodeSpec {
        extra: "vxlan_underlay = \"ipv6\"".into(),
        ..dual_stack()
    };
    let cluster = Cluster::start_with(3, Backend::Embedded, spec);
    let pods = two_pods_per_node_reaching_each_other(&cluster, "");
    // The device sends from the node's IPv6 address, and every peer is reached at its own:
    // no IPv4 outer address is left to carry anything.
    let node = &cluster.nodes[0];
    let device = ip_json(&node.ns, &["-d", "link", "show", "strait.4096"]);
    let local = device[0]["linkinfo"]["info_data"]["local6"].as_str();
    assert!(
        local.is_some_and(|l| l.starts_with("fd00:fab::")),
        "{device:?}"
    );
    let fdb = node
        .ns
        .exec("bridge", &["-j", "fdb", "show", "dev", "strait.4096"]);
    let fdb: Vec<Value> = serde_json::from_slice(&fdb.stdout).unwrap();
    let dsts: Vec<&str> = fdb.iter().filter_map(|e| e["dst"].as_str()).collect();
    assert!(
        dsts.len() == 2 && dsts.iter().all(|d| d.starts_with("fd00:fab::")),
        "{fdb:?}"
    );
    // Settled: both families' masquerade sets read back as written, so passes leave the table
    // alone (replacing it would give it a new handle), and every peer's block is routed.
    let table_handle = || {
        let out = node
            .ns
            .exec("nft", &["-j", "list", "table", "inet", "strait-snat"]);
        let listing: Value = serde_json::from_slice(&out.stdout).unwrap();
        listing["nftables"][1]["table"]["handle"].as_u64()
    };
    let handle = table_handle();
    assert!(handle.is_some());
    node.ns.exec(
        "nft",
        &[
            "add",
            "set",
            "inet",
            "strait-snat",
            "wake",
            "{ type ipv4_addr; }",
        ],
    );
    strait_integration::wait_until(
        "the stray set is gone",
        Duration::from_secs(10),
        || {
            !node
                .ns
                .exec("nft", &["list", "set", "inet", "strait-snat", "wake"])
                .status
                .success()
        },
        String::new,
    );
    let repaired = table_handle();
    // Nor does traffic wake passes: the underlay's neighbour entries (IPv6 neighbour
    // discovery towards the peers) are its network's, not Strait's.
    let before = node.reconcile_passes();
    for p in &pods[2..] {
        assert!(ping(&pods[0].ns, p.ips[1].as_str()));
    }
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        table_handle(),
        repaired,
        "the table is rewritten without a change"
    );
    assert!(node.reconcile_passes() - before <= 1, "traffic woke passes");
    assert_eq!(node.metric("strait_peer_blocks_unreachable"), 0);
    // The pods' MTU leaves room for IPv6's 70 bytes of encapsulation: full-size packets of
    // both families cross unfragmented, one byte more does not (ICMP 28 bytes with IPv4's
    // header, ICMPv6 48 with IPv6's).
    let (a, b) = (&pods[0], &pods[4]);
    for (i, headers) in [(0, 28), (1, 48)] {
        let to = b.ips[i].as_str();
        assert!(ping_df(&a.ns, to, 1430 - headers), "{to}: full size");
        assert!(!ping_df(&a.ns, to, 1431 - headers), "{to}: one byte more");
    }
}

#[test]
fn nodes_with_an_ipv6_underlay_alone_carry_both_families_and_announce_their_ipv6_address() {
    // Node 0 has both families on its underlay, nodes 1 and 2 IPv6 alone.
    let mut cluster = Cluster::start_with(
        1,
        Backend::Embedded,
        NodeSpec {
            extra: "vxlan_underlay = \"ipv6\"".into(),
            ..dual_stack()
        },
    );
    cluster.template.ipv6_only = true;
    cluster.add_node();
    cluster.add_node();
    let v4_on_underlay = ip_json(&cluster.nodes[1].ns, &["-4", "addr", "show", "dev", "eth0"]);
    assert!(
        v4_on_underlay
            .iter()
            .all(|l| l["addr_info"].as_array().is_none_or(|a| a.is_empty())),
        "{v4_on_underlay:?}"
    );
    let _pods = two_pods_per_node_reaching_each_other(&cluster, "");
    // An IPv6-only node is known by its IPv6 address, as its address and its address6.
    let alone = &cluster.nodes[1];
    let status = alone.ctl(&["status"]);
    assert_eq!(status["address"].as_str(), Some(alone.address.as_str()));
    assert_eq!(status["address6"], status["address"]);
    // The dual node sends VXLAN to both others at their IPv6 addresses, and routes every block.
    let dual = &cluster.nodes[0];
    let fdb = dual
        .ns
        .exec("bridge", &["-j", "fdb", "show", "dev", "strait.4096"]);
    let fdb: Vec<Value> = serde_json::from_slice(&fdb.stdout).unwrap();
    let mut dsts: Vec<&str> = fdb.iter().filter_map(|e| e["dst"].as_str()).collect();
    dsts.sort();
    let others = [
        cluster.nodes[1].address.as_str(),
        cluster.nodes[2].address.as_str(),
    ];
    assert_eq!(dsts, others, "{fdb:?}");
    for node in &cluster.nodes {
        assert_eq!(node.metric("strait_peer_blocks_unreachable"), 0);
    }
    // Unconfigured, the address is found through the IPv6 default route.
    let mut found = Node::create(NodeSpec {
        extra: "vxlan_underlay = \"ipv6\"".into(),
        ipv6_only: true,
        ..dual_stack()
    });
    found.ns.ip(&[
        "-6",
        "route",
        "add",
        "default",
        "via",
        "fd00:fab::fe",
        "dev",
        "eth0",
    ]);
    let unconfigured = found
        .config_text()
        .replace(&format!("node_address6 = \"{}\"\n", found.address), "");
    assert!(!unconfigured.contains("node_address"), "{unconfigured}");
    std::fs::write(found.config_path(), unconfigured).unwrap();
    found.try_start_agent().unwrap();
    assert_eq!(
        found.ctl(&["status"])["address"].as_str(),
        Some(found.address.as_str())
    );
    // Without vxlan_underlay = "ipv6" such a node refuses to start, and says what to set.
    let mut refused = Node::create(NodeSpec {
        ipv6_only: true,
        ..dual_stack()
    });
    let log = refused.try_start_agent().unwrap_err();
    assert!(
        log.contains("no IPv4 address") && log.contains("vxlan_underlay = \"ipv6\""),
        "{log}"
    );
}

#[test]
fn a_routed_ipv6_pool_without_an_ipv6_underlay_address_is_refused_with_the_reason() {
    let mut node = Node::create(NodeSpec {
        mode: "routed".into(),
        ..dual_stack()
    });
    node.ns
        .ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
    let log = node.try_start_agent().unwrap_err();
    assert!(
        log.contains(V6_POOL) && log.contains("has no IPv6 address"),
        "{log}"
    );
    // So is VXLAN over an IPv6 underlay the node has no IPv6 address on.
    let mut node = Node::create(NodeSpec {
        extra: "vxlan_underlay = \"ipv6\"".into(),
        ..dual_stack()
    });
    node.ns
        .ip(&["-6", "addr", "flush", "dev", "eth0", "scope", "global"]);
    let log = node.try_start_agent().unwrap_err();
    assert!(
        log.contains("vxlan_underlay is \"ipv6\"") && log.contains("no IPv6 address"),
        "{log}"
    );
    // A configured IPv6 address the underlay does not hold is refused too.
    let mut node = Node::create(NodeSpec {
        mode: "routed".into(),
        extra: "node_address6 = \"fd00:fab::99\"".into(),
        ..dual_stack()
    });
    let log = node.try_start_agent().unwrap_err();
    assert!(
        log.contains(
            "node_address6 fd00:fab::99 is not a global address of the underlay device eth0"
        ),
        "{log}"
    );
}

/// The node's attachments that no readable record accounts for, with their addresses.
fn quarantined(node: &Node) -> Vec<Vec<String>> {
    node.ctl(&["status"])["quarantined"]
        .as_array()
        .expect("status lists quarantined veths")
        .iter()
        .map(addresses)
        .collect()
}

#[test]
fn a_restart_without_records_keeps_dual_stack_pods_and_hands_out_neither_address_again() {
    let mut node = Node::start(dual_stack());
    let pods: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("d6r")).collect();
    let ips0 = addresses(&node.add("c0", &pods[0]));
    let ips1 = addresses(&node.add("c1", &pods[1]));
    node.kill_agent();
    std::fs::remove_dir_all(node.state_dir().join("attachments")).unwrap();
    if let Err(log) = node.try_start_agent() {
        panic!("straitd did not come back:\n{log}");
    }
    // Both families of both pods are read back from the kernel's host routes and neighbours.
    let mut held = quarantined(&node);
    held.sort();
    let mut want = vec![ips0.clone(), ips1.clone()];
    want.sort();
    assert_eq!(held, want);
    for ip in ips0.iter().chain(&ips1) {
        assert!(ping(&node.ns, ip), "the node no longer reaches {ip}");
    }
    let ips2 = addresses(&node.add("c2", &pods[2]));
    for ip in &ips2 {
        assert!(
            !ips0.contains(ip) && !ips1.contains(ip),
            "{ip} was handed out twice"
        );
    }
    assert!(
        ping(&pods[2], &ips0[1]),
        "a new pod reaches a restored one over IPv6"
    );

    // GC lists c0 and c2: c1's quarantined veth is the runtime's leftover, both addresses go.
    node.gc(&["c0", "c2"]).ok();
    assert_eq!(link_names(&pods[1]), ["lo"]);
    assert_eq!(quarantined(&node), vec![ips0.clone()]);
    node.del("c0", &pods[0]);
    node.del("c2", &pods[2]);
    assert_eq!(quarantined(&node), Vec::<Vec<String>>::new());
    let after = node.snapshot();
    assert_eq!(after.allocated, 0);
}
