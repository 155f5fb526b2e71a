//! Pods on different nodes, as the design says: three nodes on one fabric, VXLAN and routed,
//! with the embedded store, a real etcd and a real Kubernetes API. All-pairs connectivity,
//! full-MTU packets, a bulk transfer, and what operators look at: straitctl and the metrics
//! endpoint.

use std::time::Duration;

use strait_integration::cluster::{Backend, Cluster, Pod};
use strait_integration::inspect::ip_json;
use strait_integration::traffic::{ping, ping_df};

fn pods_everywhere(cluster: &Cluster, per_node: usize) -> Vec<Pod> {
    (0..cluster.nodes.len())
        .flat_map(|n| (0..per_node).map(move |_| n))
        .map(|n| cluster.pod(n))
        .collect()
}

fn pod_mtu(pod: &Pod) -> u32 {
    ip_json(&pod.ns, &["link", "show", "eth0"])[0]["mtu"]
        .as_u64()
        .unwrap() as u32
}

#[test]
fn all_pairs_reach_each_other_in_both_modes_with_every_store() {
    for backend in [Backend::Embedded, Backend::Etcd, Backend::Kubernetes] {
        for mode in ["vxlan", "routed"] {
            let cluster = Cluster::start(3, mode, backend);
            let pods = pods_everywhere(&cluster, 2);
            cluster.wait_converged(Duration::from_secs(10));
            let bad = Cluster::unreachable(&pods);
            assert!(
                bad.is_empty(),
                "{mode} with {backend:?}: unreachable pairs {bad:?}"
            );

            // Full-size packets cross nodes unfragmented; one byte more does not fit.
            let (a, b) = (&pods[0], &pods[2]);
            let mtu = pod_mtu(a);
            let expected = if mode == "vxlan" { 1450 } else { 1500 };
            assert_eq!(mtu, expected, "{mode}: the pod MTU follows the underlay");
            assert!(
                ping_df(&a.ns, &b.ip, mtu - 28),
                "{mode}: a full-MTU packet crosses nodes"
            );
            assert!(
                !ping_df(&a.ns, &b.ip, mtu - 27),
                "{mode}: an oversized one does not"
            );
            // Nodes reach remote pods too.
            assert!(
                ping(&cluster.nodes[0].ns, &b.ip),
                "{mode}: node to remote pod"
            );
        }
    }
}

#[test]
fn a_bulk_transfer_crosses_nodes() {
    let cluster = Cluster::start(2, "vxlan", Backend::Embedded);
    let (server, client) = (cluster.pod(1), cluster.pod(0));
    cluster.wait_converged(Duration::from_secs(10));
    let mut iperf = server
        .ns
        .command("iperf3", &["-s", "-1", "-p", "5201"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 is installed");
    std::thread::sleep(Duration::from_millis(300));
    let out = client
        .ns
        .exec("iperf3", &["-c", &server.ip, "-p", "5201", "-t", "1", "-J"]);
    let _ = iperf.kill();
    let _ = iperf.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bytes = report["end"]["sum_received"]["bytes"].as_u64().unwrap();
    assert!(bytes > 1_000_000, "only {bytes} bytes crossed");
}

#[test]
fn operators_see_peers_routes_status_and_metrics() {
    let cluster = Cluster::start(3, "vxlan", Backend::Embedded);
    let _pods = pods_everywhere(&cluster, 1);
    cluster.wait_converged(Duration::from_secs(10));
    let node = &cluster.nodes[0];
    let status = node.ctl(&["status"]);
    assert_eq!(status["peers"], 2);
    assert_eq!(status["address"], node.address.as_str());
    assert_eq!(status["networks"][0]["vni"], 4096);
    assert_eq!(status["ready"], true);
    let peers = node.ctl(&["peers"]);
    let names: Vec<&str> = peers
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&cluster.nodes[1].ns.name.as_str()) && names.len() == 2,
        "{peers}"
    );
    let routes = node.ctl(&["routes"]);
    assert_eq!(
        routes.as_array().unwrap().len(),
        2,
        "one block per peer: {routes}"
    );
    assert!(
        routes
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["device"] == "strait.4096")
    );

    assert_eq!(node.http_get("/healthz").0, 200);
    assert_eq!(node.http_get("/readyz").0, 200);
    let (_, metrics) = node.http_get("/metrics");
    for needle in [
        "strait_peers 2",
        "strait_reconcile_passes_total{result=\"ok\"}",
        "strait_reconcile_duration_seconds_bucket",
        "strait_cni_requests_total{command=\"ADD\",result=\"ok\"} 1",
        "strait_ipam_addresses_allocated{network=\"strait\",family=\"ipv4\"} 1",
    ] {
        assert!(metrics.contains(needle), "{needle} missing:\n{metrics}");
    }
}
