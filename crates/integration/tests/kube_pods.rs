//! What a Kubernetes cluster adds to a pod's network, against a real kube-apiserver: annotations
//! that choose the network, the pool or the exact address, read from the API at ADD; refusals
//! that leave nothing behind; addresses of pods deleted without a CNI DEL released once the API
//! confirms they are gone; and the blocks of a deleted Node taken back once no pod is bound to it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strait_integration::cluster::{Backend, Cluster};
use strait_integration::cni::{Env, Outcome, address};
use strait_integration::netns::TestNetns;
use strait_integration::node::{NodeSpec, ORPHAN_GRACE_SECONDS};
use strait_integration::traffic::ping;
use strait_integration::unique;

/// A second network, chosen by a namespace annotation.
const OTHER_NETWORK: &str = "[cni]\nnetwork = \"strait\"\n\
    [[network]]\nname = \"other\"\nvni = 2\n[[network.pool]]\ncidr = \"10.250.0.0/16\"\nblock_prefix = 26\n";

/// Two nodes on the Kubernetes store; network "strait" has pools `strait-0` (10.244/16) and
/// `strait-1` (10.245/16); network "other" has 10.250/16.
fn cluster() -> Cluster {
    strait_integration::require_root();
    let template = NodeSpec {
        pools: vec![("10.244.0.0/16".into(), 26), ("10.245.0.0/16".into(), 26)],
        extra: OTHER_NETWORK.into(),
        pool_extra: "fixed_addresses = true\n".into(),
        ..NodeSpec::default()
    };
    Cluster::start_with(2, Backend::Kubernetes, template)
}

/// The pods of one test: their Kubernetes objects and their sandboxes.
struct Pods<'a> {
    cluster: &'a Cluster,
}

/// One pod's sandbox as the runtime would set it up.
struct Sandbox {
    node: usize,
    ns: TestNetns,
    container_id: String,
    args: String,
}

impl<'a> Pods<'a> {
    fn kubectl(&self, args: &[&str]) -> String {
        self.cluster
            .control_plane
            .as_ref()
            .expect("a Kubernetes cluster")
            .kubectl_ok(args)
    }

    /// A namespace, with the service account a controller manager would give it.
    fn namespace(&self, name: &str, annotations: Value) {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": name, "annotations": annotations},
        }));
        self.apply(json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": name},
        }));
    }

    fn apply(&self, manifest: Value) {
        let cp = self
            .cluster
            .control_plane
            .as_ref()
            .expect("a Kubernetes cluster");
        cp.apply(&manifest.to_string());
    }

    /// Creates pod `namespace/name` bound to node `node`, and a sandbox for it (not yet added).
    fn create(&self, node: usize, namespace: &str, name: &str, annotations: Value) -> Sandbox {
        self.apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "annotations": annotations},
            "spec": {
                "nodeName": self.cluster.nodes[node].ns.name,
                "automountServiceAccountToken": false,
                "containers": [{"name": "c", "image": "registry.invalid/pause"}],
            },
        }));
        let uid = self.kubectl(&[
            "get",
            "pod",
            "-n",
            namespace,
            name,
            "-o",
            "jsonpath={.metadata.uid}",
        ]);
        Sandbox {
            node,
            ns: TestNetns::new("kp"),
            container_id: unique("ctr"),
            args: format!(
                "IgnoreUnknown=1;K8S_POD_NAMESPACE={namespace};K8S_POD_NAME={name};K8S_POD_UID={uid}"
            ),
        }
    }

    /// Deletes the pod object at once, as a force delete or a dead node's eviction does: no
    /// kubelet runs CNI DEL.
    fn force_delete(&self, namespace: &str, name: &str) {
        self.kubectl(&[
            "delete",
            "pod",
            "-n",
            namespace,
            name,
            "--force",
            "--grace-period=0",
        ]);
    }

    /// Runs a CNI command for the sandbox; a DEL that succeeded returns once its release is
    /// done.
    fn cni(&self, command: &str, sandbox: &Sandbox) -> Outcome {
        let node = &self.cluster.nodes[sandbox.node];
        let env = Env::attachment(command, &sandbox.container_id, &sandbox.ns.path(), "eth0")
            .set("CNI_ARGS", &sandbox.args);
        let outcome = node.cni(&env, &node.conf("1.0.0"));
        if command == "DEL" && outcome.success {
            node.wait_released(|p| p["container_id"] == sandbox.container_id.as_str());
        }
        outcome
    }
}

/// The attachment of `container_id` on a node, as straitctl lists it.
fn listed(cluster: &Cluster, node: usize, container_id: &str) -> Option<Value> {
    let pods = cluster.nodes[node].ctl(&["pods"]);
    pods.as_array()
        .expect("a list")
        .iter()
        .find(|p| p["container_id"] == container_id)
        .cloned()
}

/// What the admin lets namespace "apps" use: both pools of network strait.
fn apps() -> Value {
    json!({"strait.io/allowed-pools": "strait-0,strait-1"})
}

#[test]
fn annotations_choose_the_address_the_pool_and_the_network_within_the_namespace() {
    let cluster = cluster();
    let pods = Pods { cluster: &cluster };
    pods.namespace("apps", apps());
    pods.namespace("isolated", json!({"strait.io/network": "other"}));
    pods.namespace("second", json!({"strait.io/pool": "strait-1"}));
    pods.namespace("closed", json!({}));
    for node in &cluster.nodes {
        node.warm_up();
    }

    // An exact address: the node claims the block that holds it, and other nodes route to it.
    let fixed = pods.create(
        0,
        "apps",
        "fixed",
        json!({"strait.io/ip-address": "10.244.3.7"}),
    );
    assert_eq!(address(&pods.cni("ADD", &fixed).ok()), "10.244.3.7");
    let plain = pods.create(1, "apps", "plain", json!({}));
    let plain_ip = address(&pods.cni("ADD", &plain).ok());
    assert!(plain_ip.starts_with("10.244."), "{plain_ip}");
    cluster.wait_converged(Duration::from_secs(20));
    assert!(
        ping(&plain.ns, "10.244.3.7"),
        "a pod on node 1 reaches the fixed address"
    );
    assert!(ping(&fixed.ns, &plain_ip), "and back");

    // A pool by name: the namespace's, or one it allows on the pod.
    let pooled = pods.create(0, "apps", "pooled", json!({"strait.io/pool": "strait-1"}));
    let pooled_ip = address(&pods.cni("ADD", &pooled).ok());
    assert!(pooled_ip.starts_with("10.245."), "{pooled_ip}");
    let by_namespace = pods.create(0, "second", "by-namespace", json!({}));
    let ip = address(&pods.cni("ADD", &by_namespace).ok());
    assert!(ip.starts_with("10.245."), "{ip}");

    // A network chosen by the namespace: served, listed and released under that network.
    let isolated = pods.create(1, "isolated", "inside", json!({}));
    let inside_ip = address(&pods.cni("ADD", &isolated).ok());
    assert!(inside_ip.starts_with("10.250."), "{inside_ip}");
    let entry = listed(&cluster, 1, &isolated.container_id).expect("listed");
    assert_eq!(entry["network"], "other", "{entry}");
    pods.cni("DEL", &isolated).ok();
    assert!(listed(&cluster, 1, &isolated.container_id).is_none());
    let status = cluster.nodes[1].ctl(&["status"]);
    let other = status["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "other")
        .cloned()
        .unwrap();
    assert_eq!(
        other["allocated"], 0,
        "DEL freed the other network's address: {other}"
    );

    // Refusals: the right code, advice, and nothing left on the node.
    let before: Vec<_> = cluster.nodes.iter().map(|n| n.snapshot()).collect();
    // A pod cannot leave what its namespace allows.
    let outside = [
        (
            "second",
            json!({"strait.io/pool": "strait-0"}),
            "choose pool",
        ),
        (
            "second",
            json!({"strait.io/network": "other"}),
            "choose network",
        ),
        (
            "isolated",
            json!({"strait.io/network": "strait"}),
            "choose network",
        ),
        (
            "closed",
            json!({"strait.io/ip-address": "10.244.9.9"}),
            "may not take",
        ),
        ("apps", json!({"strait.io/pool": "nope"}), "choose pool"),
    ];
    for (i, (namespace, annotations, needle)) in outside.into_iter().enumerate() {
        let sandbox = pods.create(0, namespace, &format!("outside-{i}"), annotations.clone());
        let error = pods.cni("ADD", &sandbox).err(106);
        let msg = error["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{namespace} {annotations}: {error}");
    }
    let refused = [
        (
            0,
            json!({"strait.io/ip-address": "10.244.3.7"}),
            105,
            "another pod",
        ),
        (
            1,
            json!({"strait.io/ip-address": "10.244.3.9"}),
            105,
            "belongs to node",
        ),
        (
            0,
            json!({"strait.io/ip-address": "banana"}),
            7,
            "not an IP address",
        ),
        (
            0,
            json!({"strait.io/ip-address": "10.99.0.1"}),
            7,
            "none of network",
        ),
    ];
    for (i, (node, annotations, code, needle)) in refused.into_iter().enumerate() {
        let sandbox = pods.create(node, "apps", &format!("refused-{i}"), annotations.clone());
        let error = pods.cni("ADD", &sandbox).err(code);
        let msg = error["msg"].as_str().unwrap();
        assert!(msg.contains(needle), "{annotations}: {error}");
        if needle == "belongs to node" {
            assert!(
                msg.contains(&cluster.nodes[0].ns.name),
                "names the holder: {msg}"
            );
        }
    }
    let after: Vec<_> = cluster.nodes.iter().map(|n| n.snapshot()).collect();
    assert_eq!(before, after, "refused ADDs leave nothing behind");

    // An address one namespace frees is not another's to ask for, for a while; its own may.
    pods.namespace("neighbour", json!({"strait.io/allowed-pools": "strait-0"}));
    pods.cni("DEL", &fixed).ok();
    let wanted = json!({"strait.io/ip-address": "10.244.3.7"});
    let rival = pods.create(0, "neighbour", "rival", wanted.clone());
    let error = pods.cni("ADD", &rival).err(105);
    let msg = error["msg"].as_str().unwrap();
    assert!(msg.contains("namespace apps freed it"), "{error}");
    let again = pods.create(0, "apps", "again", wanted);
    assert_eq!(address(&pods.cni("ADD", &again).ok()), "10.244.3.7");
}

/// Waits until `container_id` is no longer attached on `node`.
fn wait_released(cluster: &Cluster, node: usize, container_id: &str) -> Duration {
    let started = Instant::now();
    let limit = Duration::from_secs(ORPHAN_GRACE_SECONDS * 5 + 10);
    while listed(cluster, node, container_id).is_some() {
        assert!(
            started.elapsed() < limit,
            "not released after {limit:?}:\n{}",
            cluster.nodes[node].agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    started.elapsed()
}

#[test]
fn a_pod_deleted_without_a_del_gives_its_address_back() {
    let cluster = cluster();
    let pods = Pods { cluster: &cluster };
    pods.namespace("apps", apps());
    cluster.nodes[0].warm_up();
    let empty = cluster.nodes[0].snapshot();

    // Gone from the API: released, data plane and all.
    let gone = pods.create(0, "apps", "gone", json!({}));
    pods.cni("ADD", &gone).ok();
    let kept = pods.create(0, "apps", "kept", json!({}));
    let kept_ip = address(&pods.cni("ADD", &kept).ok());
    pods.force_delete("apps", "gone");
    let took = wait_released(&cluster, 0, &gone.container_id);
    assert!(
        took >= Duration::from_secs(ORPHAN_GRACE_SECONDS) - Duration::from_millis(500),
        "released only after the grace period, not after {took:?}"
    );
    assert!(
        gone.ns.exec("ip", &["link", "show", "eth0"]).status.code() != Some(0),
        "the sandbox's interface is gone"
    );

    // Replaced by a pod of the same name: the old sandbox's attachment goes, the new one stays.
    let first = pods.create(0, "apps", "stateful-0", json!({}));
    pods.cni("ADD", &first).ok();
    pods.force_delete("apps", "stateful-0");
    let second = pods.create(0, "apps", "stateful-0", json!({}));
    pods.cni("ADD", &second).ok();
    wait_released(&cluster, 0, &first.container_id);

    // Pods that exist keep their addresses, however long it takes.
    std::thread::sleep(Duration::from_secs(ORPHAN_GRACE_SECONDS * 2));
    assert_eq!(
        address(&listed(&cluster, 0, &kept.container_id).expect("kept")),
        kept_ip
    );
    assert!(listed(&cluster, 0, &second.container_id).is_some());
    pods.cni("DEL", &kept).ok();
    pods.cni("DEL", &second).ok();
    assert_eq!(cluster.nodes[0].snapshot(), empty, "everything released");
    assert_eq!(
        cluster.nodes[0].metric("strait_orphan_releases_total"),
        2,
        "operators see every release of a pod that left without a DEL"
    );
}

#[test]
fn an_unreachable_api_makes_add_try_again_later_and_leaves_nothing() {
    let mut cluster = cluster();
    let sandbox = {
        let pods = Pods { cluster: &cluster };
        pods.namespace("apps", apps());
        pods.create(0, "apps", "waiting", json!({}))
    };
    cluster.nodes[0].warm_up();
    let before = cluster.nodes[0].snapshot();
    cluster.control_plane.as_mut().unwrap().stop_apiserver();
    let error = Pods { cluster: &cluster }.cni("ADD", &sandbox).err(11);
    assert!(
        error["msg"].as_str().unwrap().contains("Kubernetes"),
        "{error}"
    );
    assert_eq!(cluster.nodes[0].snapshot(), before);
}

/// The blocks (CIDRs) `node` holds, as the API lists them.
fn blocks_of(cluster: &Cluster, node: &str) -> Vec<String> {
    let cp = cluster
        .control_plane
        .as_ref()
        .expect("a Kubernetes cluster");
    let list: Value =
        serde_json::from_str(&cp.kubectl_ok(&["get", "ipblocks", "-o", "json"])).expect("JSON");
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|b| b["spec"]["node"] == node)
        .map(|b| b["spec"]["cidr"].as_str().expect("a CIDR").to_string())
        .collect()
}

/// Waits until the other nodes have taken back every block of `node`.
fn wait_blocks_taken_back(cluster: &Cluster, node: &str) {
    let limit = Duration::from_secs(ORPHAN_GRACE_SECONDS * 5 + 10);
    let started = Instant::now();
    while !blocks_of(cluster, node).is_empty() {
        assert!(
            started.elapsed() < limit,
            "{node}'s blocks are still held after {limit:?}:\n{}",
            cluster.nodes[0].agent_log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes node 1's Node and waits until node 0 no longer lists it as a peer nor routes to
/// `block` (the peer leaves the view first; the reconciler's pass then removes the route).
fn delete_node_1(cluster: &Cluster, block: &str) {
    let cp = cluster.control_plane.as_ref().unwrap();
    cp.kubectl_ok(&["delete", "node", &cluster.nodes[1].ns.name]);
    let node = &cluster.nodes[0];
    let took = strait_integration::wait_until(
        "node 0 drops the deleted node as a peer, and its route to the node's block",
        Duration::from_secs(10),
        || {
            node.ctl(&["peers"]).as_array().unwrap().is_empty()
                && node.ns.ip(&["route", "show", block]).is_empty()
        },
        || {
            format!(
                "peers: {}\nroute: {}",
                node.ctl(&["peers"]),
                node.ns.ip(&["route", "show", block])
            )
        },
    );
    eprintln!("the deleted node left node 0's peers and routes after {took:?}");
}

#[test]
fn a_node_deleted_from_the_api_leaves_its_peers_and_returns_when_registered_again() {
    let cluster = cluster();
    let (a, b) = (cluster.pod(0), cluster.pod(1));
    cluster.wait_converged(Duration::from_secs(20));
    assert!(ping(&a.ns, &b.ip));
    let routes = cluster.nodes[0].ctl(&["routes"]);
    let block = routes[0]["dst"]
        .as_str()
        .expect("a route to node 1's block")
        .to_string();
    let gone = cluster.nodes[1].ns.name.clone();
    let held = blocks_of(&cluster, &gone);
    delete_node_1(&cluster, &block);
    // No pod of the API is bound to it: after the grace period its blocks (one per network)
    // are taken back.
    wait_blocks_taken_back(&cluster, &gone);
    assert_eq!(
        cluster.nodes[0].metric("strait_blocks_reclaimed_total"),
        held.len() as u64
    );

    // The kubelet registers the node again: its agent claims its block back and puts its record
    // back; traffic flows.
    let cp = cluster.control_plane.as_ref().unwrap();
    cp.register_node(&gone);
    cluster.wait_converged(Duration::from_secs(20));
    assert!(ping(&a.ns, &b.ip), "{}", cluster.nodes[1].agent_log());
    assert_eq!(blocks_of(&cluster, &gone), held);
}

#[test]
fn a_deleted_node_keeps_its_blocks_while_pods_are_bound_to_it_and_restarts_if_they_are_taken() {
    let mut cluster = cluster();
    let pods = Pods { cluster: &cluster };
    pods.namespace("apps", apps());
    let a = cluster.pod(0);
    let bound = pods.create(1, "apps", "bound", json!({}));
    pods.cni("ADD", &bound).ok();
    cluster.wait_converged(Duration::from_secs(20));
    let gone = cluster.nodes[1].ns.name.clone();
    let held = blocks_of(&cluster, &gone);
    let block = held
        .iter()
        .find(|b| b.starts_with("10.244."))
        .expect("node 1 holds a block of network strait")
        .clone();
    delete_node_1(&cluster, &block);

    // A pod bound to the deleted node still holds its address: the blocks stay.
    std::thread::sleep(Duration::from_secs(ORPHAN_GRACE_SECONDS * 3));
    assert_eq!(blocks_of(&cluster, &gone), held);

    // The pod goes (as the pod garbage collector deletes it): node 1 releases it, node 0 takes
    // the block back, and then a pod on node 0 asks for an address in it.
    pods.force_delete("apps", "bound");
    wait_blocks_taken_back(&cluster, &gone);
    let net: ipnet::Ipv4Net = block.parse().unwrap();
    let wanted = net.hosts().nth(4).unwrap().to_string();
    let squatter = pods.create(
        0,
        "apps",
        "squatter",
        json!({"strait.io/ip-address": wanted}),
    );
    assert_eq!(address(&pods.cni("ADD", &squatter).ok()), wanted);

    // Node 1 returns: its block is someone else's now, so its agent stops, saying why; started
    // again, it takes a new block and its pods reach node 0's.
    cluster.control_plane.as_ref().unwrap().register_node(&gone);
    assert!(
        cluster.nodes[1].wait_agent_exit(Duration::from_secs(20)),
        "node 1's agent goes on with a block it lost:\n{}",
        cluster.nodes[1].agent_log()
    );
    assert!(
        cluster.nodes[1]
            .agent_log()
            .contains("restart straitd to take new blocks")
    );
    cluster.nodes[1].spawn_agent();
    cluster.nodes[1]
        .wait_ready(Duration::from_secs(20))
        .expect("node 1's agent starts again");
    let fresh = blocks_of(&cluster, &gone);
    assert!(
        fresh.iter().any(|b| b.starts_with("10.244.")) && !fresh.contains(&block),
        "{fresh:?}"
    );
    // Unless node 1 released the gone pod before it stopped, its record still holds an address
    // of the lost block: the node takes no pod until the orphan sweep has released it.
    strait_integration::wait_until(
        "node 1 ready",
        Duration::from_secs(30),
        || cluster.nodes[1].ctl(&["status"])["ready"] == true,
        || cluster.nodes[1].agent_log(),
    );
    let b = cluster.pod(1);
    cluster.wait_converged(Duration::from_secs(20));
    assert!(ping(&a.ns, &b.ip), "{}", cluster.nodes[1].agent_log());
    assert!(ping(&b.ns, &wanted));
}
