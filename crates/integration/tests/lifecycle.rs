//! A pod's whole life on one node, in real namespaces: ADD, inspect the kernel objects, traffic
//! between pods, to the node and masqueraded to the outside, CHECK (also after drift, and after
//! the reconciler repaired a host route), DEL, and proof that nothing is left.

use std::time::Duration;

use serde_json::Value;
use strait_integration::cni::{Env, address};
use strait_integration::inspect::{
    ONLY_NET_ADMIN, effective_capabilities, ip_json, link_names, strait_routes,
};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::traffic::{PeerEcho, ping, ping_df, tcp_peer};

#[test]
fn pod_lifecycle_add_inspect_traffic_check_del() {
    let node = Node::start(NodeSpec::default());
    // The whole lifecycle runs with an agent that holds CAP_NET_ADMIN and nothing else.
    let pid = node.agent_pid().expect("the agent runs");
    assert_eq!(
        effective_capabilities(pid),
        Some(ONLY_NET_ADMIN),
        "straitd's capabilities"
    );
    let outside = node.outside();
    let before = node.snapshot();
    let (a, b) = (TestNetns::new("pa"), TestNetns::new("pb"));

    let ra = node.add("ctr-a", &a);
    let rb = node.add("ctr-b", &b);
    let (ip_a, ip_b) = (address(&ra), address(&rb));
    assert_ne!(ip_a, ip_b);
    for r in [&ra, &rb] {
        assert!(
            r["ips"][0]["address"]
                .as_str()
                .unwrap()
                .starts_with("10.244."),
            "{r}"
        );
        assert!(
            r["ips"][0]["address"].as_str().unwrap().ends_with("/32"),
            "{r}"
        );
        assert_eq!(r["ips"][0]["gateway"], "169.254.1.1");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert!(r["interfaces"][0].get("sandbox").is_none());
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
    }
    assert_eq!(ra["interfaces"][1]["sandbox"], a.path());

    // The pod side, exactly as designed.
    let addrs = ip_json(&a, &["addr", "show", "dev", "eth0"]);
    let v4: Vec<&Value> = addrs[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["family"] == "inet")
        .collect();
    assert_eq!(v4.len(), 1);
    assert_eq!(v4[0]["local"], ip_a.as_str());
    assert_eq!(v4[0]["prefixlen"], 32);
    assert_eq!(addrs[0]["mtu"], 1450);
    let routes = ip_json(&a, &["route", "show"]);
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "default" && r["gateway"] == "169.254.1.1" && r["dev"] == "eth0"),
        "{routes:?}"
    );
    assert!(
        routes
            .iter()
            .any(|r| r["dst"] == "169.254.1.1" && r["scope"] == "link"),
        "{routes:?}"
    );
    let neigh = ip_json(&a, &["neigh", "show", "dev", "eth0"]);
    let host_mac = ra["interfaces"][0]["mac"].as_str().unwrap();
    assert!(
        neigh.iter().any(|n| n["dst"] == "169.254.1.1"
            && n["lladdr"] == host_mac
            && n["state"]
                .as_array()
                .is_some_and(|s| s.iter().any(|x| x == "PERMANENT"))),
        "{neigh:?}"
    );

    // The host side.
    let veth_a = ra["interfaces"][0]["name"].as_str().unwrap();
    let host = ip_json(&node.ns, &["link", "show", "dev", veth_a]);
    assert!(
        host[0]["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == "UP")
    );
    assert_eq!(host[0]["mtu"], 1450);
    let host_routes = strait_routes(&node.ns);
    assert!(
        host_routes.contains(&format!("{ip_a} dev {veth_a}")),
        "{host_routes:?}"
    );
    let scope = ip_json(&node.ns, &["route", "show", &ip_a]);
    assert_eq!(scope[0]["scope"], "link");
    assert_eq!(scope[0]["protocol"], "83");

    // Traffic: pod to pod both ways, at full MTU without fragmenting, over TCP, pod to node.
    assert!(ping(&a, &ip_b) && ping(&b, &ip_a));
    assert!(ping_df(&a, &ip_b, 1450 - 28), "a full-MTU packet crosses");
    assert!(!ping_df(&a, &ip_b, 1450 - 27), "one byte more does not fit");
    let echo = PeerEcho::start(&b, 7000);
    assert_eq!(
        tcp_peer(&a, &ip_b, 7000).as_deref(),
        Some(ip_a.as_str()),
        "pods see each other's real address"
    );
    drop(echo);
    assert!(ping(&a, "192.0.2.1"), "a pod reaches its node");
    assert!(ping(&node.ns, &ip_a), "the node reaches a pod");

    // Leaving the cluster: masqueraded to the node's address.
    let echo = PeerEcho::start(&outside, 8000);
    assert_eq!(
        tcp_peer(&a, "198.51.100.1", 8000).as_deref(),
        Some("192.0.2.1")
    );
    assert!(ping(&b, "198.51.100.1"));
    drop(echo);

    // CHECK passes, then reports each kind of drift.
    let check = |cid: &str, pod: &TestNetns| {
        node.cni(
            &Env::attachment("CHECK", cid, &pod.path(), "eth0"),
            &node.conf("1.0.0"),
        )
    };
    check("ctr-a", &a).ok();
    a.ip(&["route", "del", "default"]);
    let err = check("ctr-a", &a).err(103);
    assert!(
        err["msg"].as_str().unwrap().contains("pod route 0.0.0.0/0"),
        "{err}"
    );
    // The pod's host route belongs to the node model: deleted, it is put back on the event (well
    // within the limit on a loaded machine; the reconciler's timer is 30 s), and CHECK passes.
    node.ns.ip(&["route", "del", &ip_b]);
    strait_integration::wait_until(
        "the deleted host route is repaired",
        Duration::from_secs(10),
        || check("ctr-b", &b).success,
        || node.ns.ip(&["route", "show", &ip_b]),
    );
    b.ip(&["link", "set", "eth0", "down"]);
    let err = check("ctr-b", &b).err(103);
    assert!(err["msg"].as_str().unwrap().contains("is down"), "{err}");
    b.ip(&["addr", "del", &format!("{ip_b}/32"), "dev", "eth0"]);
    let err = check("ctr-b", &b).err(103);
    assert!(
        err["msg"]
            .as_str()
            .unwrap()
            .contains(&format!("address {ip_b}/32 is missing")),
        "{err}"
    );
    let veth_b = rb["interfaces"][0]["name"].as_str().unwrap();
    node.ns.ip(&["link", "del", veth_b]);
    let err = check("ctr-b", &b).err(103);
    let msg = err["msg"].as_str().unwrap();
    assert!(
        msg.contains(&format!("host interface {veth_b} is missing"))
            && msg.contains("interface eth0 is missing"),
        "{err}"
    );

    // A repeated ADD repairs the attachment with the same address.
    let again = node.add("ctr-a", &a);
    assert_eq!(address(&again), ip_a);
    check("ctr-a", &a).ok();

    // DEL (twice: it is repeat-safe), then nothing is left.
    for _ in 0..2 {
        node.del("ctr-a", &a);
        node.del("ctr-b", &b);
    }
    assert_eq!(link_names(&a), ["lo"]);
    assert_eq!(link_names(&b), ["lo"]);
    let after = node.snapshot();
    assert_eq!(after.links, before.links);
    assert_eq!(after.routes, before.routes);
    assert_eq!(after.records, before.records);
    assert_eq!(after.allocated, 0);
    assert_eq!(after.nft, before.nft, "the table holds no per-pod state");
    assert!(node.ctl(&["pods"]).as_array().unwrap().is_empty());
}

#[test]
fn every_cni_version_gets_its_own_result_shape() {
    let node = Node::start(NodeSpec::default());
    for version in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"] {
        let pod = TestNetns::new("v");
        let cid = format!("ctr-{}", version.replace('.', "-"));
        let env = Env::attachment("ADD", &cid, &pod.path(), "eth0");
        let result = node.cni(&env, &node.conf(version)).ok();
        assert_eq!(result["cniVersion"], version);
        let has_version = result["ips"][0].get("version").is_some();
        assert_eq!(
            has_version,
            version.starts_with("0."),
            "{version}: {result}"
        );
        let has_mtu = result["interfaces"][1].get("mtu").is_some();
        assert_eq!(has_mtu, version == "1.1.0", "{version}: {result}");
        if version != "0.3.0" && version != "0.3.1" {
            node.cni(
                &env.clone().set("CNI_COMMAND", "CHECK"),
                &node.conf(version),
            )
            .ok();
        }
        node.cni(&env.set("CNI_COMMAND", "DEL"), &node.conf(version))
            .ok();
    }
}

#[test]
fn a_previous_result_is_kept_and_checked() {
    let node = Node::start(NodeSpec::default());
    let pod = TestNetns::new("prev");
    let prev = serde_json::json!({
        "cniVersion": "1.0.0",
        "interfaces": [{"name": "other0", "sandbox": pod.path()}],
        "ips": [{"address": "192.168.7.2/24", "interface": 0}],
    });
    let mut conf: Value = serde_json::from_str(&node.conf("1.0.0")).unwrap();
    conf["prevResult"] = prev;
    let env = Env::attachment("ADD", "ctr-prev", &pod.path(), "eth0");
    let result = node.cni(&env, &conf.to_string()).ok();
    assert_eq!(result["interfaces"][0]["name"], "other0");
    assert_eq!(result["interfaces"].as_array().unwrap().len(), 3);
    assert_eq!(result["ips"][0]["address"], "192.168.7.2/24");
    assert_eq!(
        result["ips"][1]["interface"], 2,
        "our index is shifted past the previous interface"
    );

    // CHECK with the chain's final result passes; with the original prevResult it does not.
    conf["prevResult"] = result;
    node.cni(&env.clone().set("CNI_COMMAND", "CHECK"), &conf.to_string())
        .ok();
    conf["prevResult"] = serde_json::json!({"cniVersion": "1.0.0", "ips": []});
    let err = node
        .cni(&env.clone().set("CNI_COMMAND", "CHECK"), &conf.to_string())
        .err(103);
    assert!(err["msg"].as_str().unwrap().contains("prevResult"), "{err}");
    node.cni(&env.set("CNI_COMMAND", "DEL"), &conf.to_string())
        .ok();
}

#[test]
fn the_namespace_path_only_has_to_exist_where_the_runtime_runs() {
    let node = Node::start(NodeSpec::default());
    let pod = TestNetns::new("priv");
    // The runtime mounts the namespace at a path of its own private mount namespace, as podman
    // and containerd do: the agent cannot open that path, the plugin passes the namespace itself.
    let private = node.dir.join("runtime-private-netns");
    std::fs::write(&private, b"").unwrap();
    let script = format!(
        "mount --bind {} {} && exec {}",
        pod.path(),
        private.display(),
        strait_integration::bin("strait").display()
    );
    let mut in_runtime = std::process::Command::new("unshare");
    in_runtime.args(["-m", "--propagation", "private", "sh", "-c", &script]);
    let env = Env::attachment("ADD", "ctr-priv", private.to_str().unwrap(), "eth0");
    let result =
        strait_integration::cni::invoke_command(in_runtime, &env, &node.conf("1.0.0")).ok();
    assert_eq!(
        result["interfaces"][1]["sandbox"],
        private.to_str().unwrap()
    );
    assert_eq!(link_names(&pod), ["eth0", "lo"]);
    assert!(ping(&node.ns, &address(&result)));
    node.cni(&env.set("CNI_COMMAND", "DEL"), &node.conf("1.0.0"))
        .ok();
    assert_eq!(link_names(&pod), ["lo"]);
}

#[test]
fn del_succeeds_for_unknown_containers_and_vanished_namespaces() {
    let node = Node::start(NodeSpec::default());
    node.warm_up();
    let before = node.snapshot();
    node.cni(
        &Env::attachment("DEL", "never-added", "/var/run/netns/none", "eth0"),
        &node.conf("1.0.0"),
    )
    .ok();
    node.cni(
        &Env::attachment("DEL", "never-added", "", "eth0").unset("CNI_NETNS"),
        &node.conf("1.0.0"),
    )
    .ok();

    let pod = TestNetns::new("gone");
    let path = pod.path();
    node.add("ctr-gone", &pod);
    drop(pod);
    node.cni(
        &Env::attachment("DEL", "ctr-gone", &path, "eth0"),
        &node.conf("1.0.0"),
    )
    .ok();
    assert_eq!(node.snapshot(), before);
}

#[test]
fn the_agent_records_the_kubernetes_pod_and_keeps_its_socket_private() {
    use std::os::unix::fs::PermissionsExt;
    let node = Node::start(NodeSpec::default());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&node.socket()), 0o600);
    assert_eq!(mode(node.socket().parent().unwrap()), 0o700);
    let pod = TestNetns::new("k8s");
    let env = Env::attachment("ADD", "ctr-k8s", &pod.path(), "eth0").set(
        "CNI_ARGS",
        "IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=ctr-k8s",
    );
    node.cni(&env, &node.conf("1.0.0")).ok();
    let pods = node.ctl(&["pods"]);
    assert_eq!(pods[0]["pod"], "shop/web-0", "{pods}");
    assert_eq!(pods[0]["netns"], pod.path());
}

#[test]
fn gc_releases_everything_not_listed_and_status_answers() {
    let node = Node::start(NodeSpec::default());
    let pods: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("gc")).collect();
    for (i, pod) in pods.iter().enumerate() {
        node.add(&format!("ctr-{i}"), pod);
    }
    let mut conf: Value = serde_json::from_str(&node.conf("1.1.0")).unwrap();
    let status = Env::default()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", "/opt/cni/bin");
    assert!(
        node.cni(&status, &conf.to_string()).ok().is_null(),
        "STATUS prints nothing"
    );
    conf["cni.dev/valid-attachments"] =
        serde_json::json!([{"containerID": "ctr-1", "ifname": "eth0"}]);
    let gc = Env::default()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", "/opt/cni/bin");
    node.cni(&gc, &conf.to_string()).ok();
    let left = node.ctl(&["pods"]);
    assert_eq!(left.as_array().unwrap().len(), 1, "{left}");
    assert_eq!(left[0]["container_id"], "ctr-1");
    assert_eq!(link_names(&pods[0]), ["lo"]);
    assert_eq!(link_names(&pods[1]), ["eth0", "lo"]);
    assert_eq!(node.snapshot().allocated, 1);
}
