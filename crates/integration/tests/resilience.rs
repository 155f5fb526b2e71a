//! What keeps a multi-node network up: drift repaired on the event (not on the 30 s timer), the
//! overlay's and the pods' host sides alike; nodes that leave (or die, with etcd) disappear from
//! their peers; an agent killed and restarted loses no packet; an etcd outage stops nothing that
//! runs, and everything converges when it returns.

use std::process::Stdio;
use std::time::Duration;

use strait_integration::cluster::{Backend, Cluster};
use strait_integration::inspect::ip_json;
use strait_integration::netns::TestNetns;
use strait_integration::traffic::ping;

/// Polls `check` until it holds; returns how long that took. Panics after `limit`.
fn time_until(what: &str, limit: Duration, check: impl Fn() -> bool) -> Duration {
    strait_integration::wait_until(what, limit, check, String::new)
}

fn lines(ns: &TestNetns, program: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&ns.exec(program, args).stdout).into_owned()
}

#[test]
fn drift_is_repaired_on_the_event() {
    let cluster = Cluster::start(2, "vxlan", Backend::Embedded);
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    cluster.wait_converged(Duration::from_secs(10));
    let node = &cluster.nodes[0].ns;
    let routes = cluster.nodes[0].ctl(&["routes"]);
    let block = routes[0]["dst"].as_str().unwrap().to_string();
    let vtep = routes[0]["via"].as_str().unwrap().to_string();
    let peers = cluster.nodes[0].ctl(&["peers"]);
    let vtep_mac = peers[0]["vteps"][0]["mac"].as_str().unwrap().to_string();
    let pod_route = format!("{}/32", a.ip);
    let veth_of = |pod: &strait_integration::cluster::Pod| {
        let pods = cluster.nodes[0].ctl(&["pods"]);
        pods.as_array()
            .unwrap()
            .iter()
            .find(|p| p["container_id"] == pod.container_id.as_str())
            .and_then(|p| p["host_veth"].as_str())
            .unwrap_or_else(|| panic!("the pod's host veth in {pods}"))
            .to_string()
    };
    let veth_a = veth_of(&a);
    // Far below the reconciler's 30 s timer, so only the event can have repaired it, and loose
    // enough for a loaded machine; how fast it was is printed (bench/convergence measures it).
    let limit = Duration::from_secs(10);

    type Restored<'a> = Box<dyn Fn() -> bool + 'a>;
    let cases: Vec<(&str, Vec<&str>, Restored)> = vec![
        (
            "route",
            vec!["ip", "route", "del", &block],
            Box::new(|| lines(node, "ip", &["route", "show", &block]).contains("strait.4096")),
        ),
        (
            "nexthop (and with it the route)",
            vec!["ip", "nexthop", "flush", "proto", "83"],
            Box::new(|| lines(node, "ip", &["route", "show", &block]).contains("nhid")),
        ),
        (
            "fdb entry",
            vec![
                "bridge",
                "fdb",
                "del",
                &vtep_mac,
                "dev",
                "strait.4096",
                "self",
            ],
            Box::new(|| {
                lines(node, "bridge", &["fdb", "show", "dev", "strait.4096"]).contains(&vtep_mac)
            }),
        ),
        (
            "neighbour",
            vec!["ip", "neigh", "del", &vtep, "dev", "strait.4096"],
            Box::new(|| {
                lines(node, "ip", &["neigh", "show", "dev", "strait.4096"]).contains("PERMANENT")
            }),
        ),
        (
            "vxlan device",
            vec!["ip", "link", "del", "strait.4096"],
            Box::new(|| {
                lines(node, "ip", &["route", "show", &block]).contains("strait.4096")
                    && lines(node, "bridge", &["fdb", "show", "dev", "strait.4096"])
                        .contains(&vtep_mac)
            }),
        ),
        (
            "a pod's host route",
            vec!["ip", "route", "del", &pod_route],
            Box::new(|| {
                lines(node, "ip", &["route", "show", &pod_route]).contains("proto 83 scope link")
            }),
        ),
        (
            "a pod's neighbour",
            vec!["ip", "neigh", "del", &a.ip, "dev", &veth_a],
            Box::new(|| {
                lines(node, "ip", &["neigh", "show", &a.ip, "dev", &veth_a]).contains("PERMANENT")
            }),
        ),
        (
            "nftables table",
            vec!["nft", "delete", "table", "inet", "strait-snat"],
            Box::new(|| {
                node.exec("nft", &["list", "table", "inet", "strait-snat"])
                    .status
                    .success()
            }),
        ),
        (
            "nftables table turned off",
            vec![
                "nft",
                "add",
                "table",
                "inet",
                "strait-snat",
                "{ flags dormant; }",
            ],
            Box::new(|| {
                let listing = lines(node, "nft", &["list", "table", "inet", "strait-snat"]);
                listing.contains("masquerade") && !listing.contains("dormant")
            }),
        ),
        (
            "nftables rule",
            vec![
                "nft",
                "flush",
                "chain",
                "inet",
                "strait-snat",
                "postrouting",
            ],
            Box::new(|| {
                lines(
                    node,
                    "nft",
                    &["list", "chain", "inet", "strait-snat", "postrouting"],
                )
                .contains("masquerade fully-random")
            }),
        ),
    ];
    for (what, damage, restored) in cases {
        let out = node.exec(damage[0], &damage[1..]);
        assert!(
            out.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let took = time_until(what, limit, &*restored);
        eprintln!("{what} deleted by hand: restored after {took:?}");
        assert!(ping(&a.ns, &b.ip), "{what}: traffic flows again");
    }
    // A pod added just now, whose veth no pass has read yet, is kept all the same.
    let fresh = cluster.pod(0);
    let veth = veth_of(&fresh);
    node.exec("ip", &["neigh", "del", &fresh.ip, "dev", &veth]);
    let took = time_until("a new pod's neighbour", limit, || {
        lines(node, "ip", &["neigh", "show", &fresh.ip, "dev", &veth]).contains("PERMANENT")
    });
    eprintln!("a new pod's neighbour deleted by hand: restored after {took:?}");
    let repairs = cluster.nodes[0].metric("strait_drift_repairs_total");
    assert!(repairs >= 5, "every repair is counted: {repairs}");
}

#[test]
fn a_node_that_leaves_disappears_from_its_peers() {
    let mut cluster = Cluster::start(3, "vxlan", Backend::Embedded);
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    cluster.wait_converged(Duration::from_secs(10));
    let leaving_address = cluster.nodes[2].address.clone();
    // Refused while it has pods; accepted once it has none.
    let busy = cluster.pod(2);
    let refused = std::process::Command::new(strait_integration::bin("straitctl"))
        .args([
            "--socket",
            cluster.nodes[2].socket().to_str().unwrap(),
            "leave",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let conflist = cluster.nodes[2].conf_dir().join("10-strait.conflist");
    assert!(conflist.exists(), "a ready node has its conflist");
    cluster.nodes[2].del(&busy.container_id, &busy.ns);
    cluster.nodes[2].ctl_ok(&["leave"]);
    assert!(
        !conflist.exists(),
        "a node that left keeps telling runtimes to use it"
    );
    for n in 0..2 {
        let ns = &cluster.nodes[n].ns;
        time_until("peers forget the node", Duration::from_secs(5), || {
            !lines(ns, "bridge", &["fdb", "show", "dev", "strait.4096"]).contains(&leaving_address)
                && cluster.nodes[n].ctl(&["peers"]).as_array().unwrap().len() == 1
                && cluster.nodes[n].ctl(&["routes"]).as_array().unwrap().len() == 1
        });
        let neighbours = ip_json(ns, &["neigh", "show", "dev", "strait.4096"]);
        assert_eq!(neighbours.len(), 1, "{neighbours:?}");
    }
    assert!(ping(&a.ns, &b.ip), "the others still reach each other");
    // The node that left stopped and removed its overlay.
    assert!(cluster.nodes[2].wait_agent_exit(Duration::from_secs(5)));
    assert!(!lines(&cluster.nodes[2].ns, "ip", &["link"]).contains("strait.4096"));
    let _ = cluster.nodes.pop();
}

#[test]
fn with_etcd_a_dead_node_expires_from_its_peers() {
    let mut cluster = Cluster::start(3, "vxlan", Backend::Etcd);
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    let _c = cluster.pod(2);
    cluster.wait_converged(Duration::from_secs(10));
    cluster.nodes[2].kill_agent();
    // The test nodes' lease lives 3 s; etcd sweeps expired leases within about a second more.
    let took = time_until("the dead node's routes go", Duration::from_secs(15), || {
        cluster.nodes[0].ctl(&["routes"]).as_array().unwrap().len() == 1
            && cluster.nodes[1].ctl(&["peers"]).as_array().unwrap().len() == 1
    });
    eprintln!("a dead node left its peers after {took:?}");
    assert!(ping(&a.ns, &b.ip));
    // It comes back when its agent does.
    cluster.nodes[2].try_start_agent().unwrap();
    cluster.wait_converged(Duration::from_secs(10));
    let _ = cluster.nodes.pop();
}

#[test]
fn killing_an_agent_loses_no_packet_of_a_cross_node_ping() {
    let mut cluster = Cluster::start(2, "vxlan", Backend::Embedded);
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    cluster.wait_converged(Duration::from_secs(10));
    // 600 echo requests, 10 ms apart: six seconds of continuous traffic across the crash.
    let pinger =
        a.ns.command(
            "ping",
            &["-n", "-q", "-i", "0.01", "-c", "600", "-W", "1", &b.ip],
        )
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    for node in [0, 1] {
        cluster.nodes[node].kill_agent();
        std::thread::sleep(Duration::from_millis(500));
        cluster.nodes[node].try_start_agent().unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("600 packets transmitted, 600 received, 0% packet loss"),
        "{summary}"
    );
}

#[test]
fn an_etcd_outage_stops_nothing_that_runs_and_everything_converges_after() {
    let mut cluster = Cluster::start(2, "vxlan", Backend::Etcd);
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    cluster.wait_converged(Duration::from_secs(10));
    cluster.etcd.as_mut().unwrap().stop();
    assert!(ping(&a.ns, &b.ip), "running pods keep working");
    // New pods start while the node's blocks have room, and reach the others.
    let c = cluster.pod(0);
    assert!(ping(&c.ns, &b.ip) && ping(&b.ns, &c.ip));
    // A node that boots now waits for the store: alive, not ready, no conflist.
    let n = cluster.create_node();
    cluster.nodes[n].spawn_agent();
    std::thread::sleep(Duration::from_secs(4));
    assert!(ping(&a.ns, &b.ip), "still working after the lease time");
    let waiting = &mut cluster.nodes[n];
    assert!(
        !waiting.socket().exists() && !waiting.conf_dir().exists(),
        "not ready without its store"
    );
    assert!(
        !waiting.wait_agent_exit(Duration::ZERO),
        "the agent waits rather than exits:\n{}",
        waiting.agent_log()
    );
    cluster.etcd.as_mut().unwrap().resume();
    // Afterwards the cluster grows again: the waiting node joins and everyone reaches everyone.
    cluster.nodes[n]
        .wait_ready(Duration::from_secs(30))
        .unwrap();
    let d = cluster.pod(n);
    cluster.wait_converged(Duration::from_secs(20));
    let pods = [a, b, c, d];
    let bad = Cluster::unreachable(&pods);
    assert!(bad.is_empty(), "{bad:?}");
}

#[test]
fn events_that_change_nothing_cost_no_pass() {
    let cluster = Cluster::start(2, "vxlan", Backend::Embedded);
    cluster.wait_converged(Duration::from_secs(10));
    let node = &cluster.nodes[0];
    let before = node.reconcile_passes();
    // A peer's record rewritten 30 times, 50 ms apart (each its own event), with nothing new but
    // its revision.
    let record = node
        .store_dir()
        .join("nodes")
        .join(format!("{}.json", cluster.nodes[1].ns.name));
    let mut stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    for _ in 0..30 {
        stored["revision"] = (stored["revision"].as_u64().unwrap() + 1).into();
        let temporary = record.with_extension("rewrite");
        std::fs::write(&temporary, stored.to_string()).unwrap();
        std::fs::rename(&temporary, &record).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    // Another program's nftables table comes and goes 40 times.
    for _ in 0..40 {
        node.ns.exec("nft", &["add", "table", "ip", "sttother"]);
        node.ns.exec("nft", &["delete", "table", "ip", "sttother"]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let spent = node.reconcile_passes() - before;
    // The slow timer may fall in this window; 70 events must not each cost a pass.
    assert!(spent <= 2, "{spent} passes for events that changed nothing");
    // A change to Strait's own table still wakes it (and is repaired).
    node.ns
        .exec("nft", &["delete", "table", "inet", "strait-snat"]);
    time_until("our table is back", Duration::from_secs(10), || {
        node.ns
            .exec("nft", &["list", "table", "inet", "strait-snat"])
            .status
            .success()
    });
    // The table an older agent kept everything in goes.
    node.ns.exec("nft", &["add", "table", "inet", "strait"]);
    time_until("the older table is gone", Duration::from_secs(10), || {
        !node
            .ns
            .exec("nft", &["list", "table", "inet", "strait"])
            .status
            .success()
    });
}
