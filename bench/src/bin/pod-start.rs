//! Pod start latency on a real Kubernetes 1.20 cluster on this machine (two nodes, each with
//! containerd, kubelet and kube-proxy): a Deployment of 30 pods, from create to all Ready, with
//! Strait (installed by `kubectl apply -k deploy/`) and, in the same run, with the reference
//! `bridge` + `host-local` plugins. Rounds alternate between the two; the bridge rounds put a
//! conflist that sorts first into each node's CNI directory, and take it away after. Prints each
//! round, the medians and the ratio Strait / bridge (lower is better). A first, uncounted round
//! warms the nodes up.
//!
//! Run as root: `bench/run pod-start`.

use std::time::{Duration, Instant};

use serde_json::json;
use strait_bench::percentile;
use strait_integration::ScratchDir;
use strait_integration::images::kubernetes_images;
use strait_integration::kube_cluster::KubeCluster;
use strait_integration::kube_node::PAUSE_IMAGE;

const PODS: usize = 30;
const ROUNDS: usize = 3;
const BRIDGE_CONFLIST: &str = "/etc/cni/net.d/00-bridge.conflist";

fn deployment() -> serde_json::Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "bench", "namespace": "default"},
        "spec": {
            "replicas": PODS,
            "selector": {"matchLabels": {"app": "bench"}},
            "template": {
                "metadata": {"labels": {"app": "bench"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "c", "image": PAUSE_IMAGE, "imagePullPolicy": "Never"}],
                },
            },
        },
    })
}

/// The reference network on node `n`: a bridge with a subnet of its own, chained with portmap
/// as Strait's deployed conflist is.
fn bridge_conflist(n: usize) -> String {
    json!({
        "cniVersion": "1.0.0", "name": "bench-bridge",
        "plugins": [{
            "type": "bridge", "bridge": "cni-bench0", "isGateway": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": format!("10.88.{n}.0/24")}]]},
        }, {
            "type": "portmap", "capabilities": {"portMappings": true}, "snat": true,
        }],
    })
    .to_string()
}

/// Creates the Deployment, waits until all its pods are Ready (checking that their addresses
/// start with `prefix`: the network under test gave them), deletes it and waits until they are
/// gone; returns the time from create to all Ready.
fn round(cluster: &KubeCluster, prefix: &str) -> Duration {
    let started = Instant::now();
    cluster.control_plane.apply(&deployment().to_string());
    cluster.wait_until(
        "all pods Ready",
        Duration::from_secs(300),
        || {
            let pods = cluster.pods("default", "app=bench");
            pods.len() == PODS && pods.iter().all(|p| p.ready)
        },
        || cluster.kubectl(&["get", "pods", "-o", "wide"]),
    );
    let took = started.elapsed();
    let pods = cluster.pods("default", "app=bench");
    assert!(
        pods.iter().all(|p| p.ip.starts_with(prefix)),
        "not all from the network under test ({prefix}): {pods:?}"
    );
    cluster.kubectl(&["delete", "deployment", "bench", "--wait=true"]);
    cluster.wait_until(
        "all pods gone",
        Duration::from_secs(300),
        || {
            cluster.get(&["pods", "-l", "app=bench"])["items"]
                .as_array()
                .is_some_and(Vec::is_empty)
        },
        || cluster.kubectl(&["get", "pods", "-o", "wide"]),
    );
    took
}

fn main() {
    let work = ScratchDir::new("podstart");
    let images = kubernetes_images(work.path(), true);
    {
        let cluster = KubeCluster::start(2, &images, &["bridge", "host-local", "portmap"]);
        cluster.apply_strait();
        cluster.wait_strait_ready();
        // The first pods on a node also unpack the image and warm the kubelet: not counted.
        let warm_up = round(&cluster, "10.244.");
        println!(
            "warm-up: {PODS} pods Ready in {:.2} s (not counted)",
            warm_up.as_secs_f64()
        );
        let (mut strait, mut bridge) = (Vec::new(), Vec::new());
        for r in 0..ROUNDS {
            let s = round(&cluster, "10.244.");
            for (n, node) in cluster.nodes.iter().enumerate() {
                std::fs::write(node.host_path(BRIDGE_CONFLIST), bridge_conflist(n)).unwrap();
            }
            // containerd picks up the new configuration by itself.
            std::thread::sleep(Duration::from_secs(2));
            let b = round(&cluster, "10.88.");
            for node in &cluster.nodes {
                std::fs::remove_file(node.host_path(BRIDGE_CONFLIST)).unwrap();
            }
            std::thread::sleep(Duration::from_secs(2));
            println!(
                "round {}: {PODS} pods Ready in {:.2} s with Strait, {:.2} s with bridge",
                r + 1,
                s.as_secs_f64(),
                b.as_secs_f64()
            );
            strait.push(s);
            bridge.push(b);
        }
        let (s, b) = (percentile(&strait, 50.0), percentile(&bridge, 50.0));
        println!(
            "median: Strait {:.2} s, bridge {:.2} s, ratio {:.2}",
            s.as_secs_f64(),
            b.as_secs_f64(),
            s.as_secs_f64() / b.as_secs_f64()
        );
    }
}
