//! A restart never breaks a running pod nor hands its address out again, whatever the agent finds
//! in its state directory: a truncated record, no records at all, or a record whose block the
//! store now gives to another node. The kernel's host veths are the second ledger.

use std::fs;
use std::path::PathBuf;

use serde_json::Value;
use strait_integration::cni::{Env, address};
use strait_integration::inspect::{ip_json, link_names};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::traffic::ping;

/// The IPv4 address on the pod's eth0, if it still has one.
fn pod_address(pod: &TestNetns) -> Option<String> {
    ip_json(pod, &["-4", "addr", "show", "dev", "eth0"])
        .first()?
        .get("addr_info")?
        .get(0)?
        .get("local")?
        .as_str()
        .map(str::to_string)
}

fn host_veth(node: &Node, container_id: &str) -> String {
    let pods = node.ctl(&["pods"]);
    pods.as_array()
        .unwrap()
        .iter()
        .find(|p| p["container_id"] == container_id)
        .unwrap_or_else(|| panic!("no attachment {container_id} in {pods}"))["host_veth"]
        .as_str()
        .unwrap()
        .to_string()
}

fn record_path(node: &Node, veth: &str) -> PathBuf {
    node.state_dir()
        .join("attachments")
        .join(format!("{veth}.json"))
}

fn quarantined(node: &Node) -> Vec<(String, Vec<String>)> {
    node.ctl(&["status"])["quarantined"]
        .as_array()
        .expect("status lists quarantined veths")
        .iter()
        .map(|q| {
            let addresses = q["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_string())
                .collect();
            (q["host_veth"].as_str().unwrap().to_string(), addresses)
        })
        .collect()
}

fn restart(node: &mut Node) {
    node.kill_agent();
    if let Err(log) = node.try_start_agent() {
        panic!("straitd did not come back:\n{log}");
    }
}

#[test]
fn a_truncated_record_keeps_its_pod_running_and_its_address_out_of_reach() {
    let mut node = Node::start(NodeSpec::default());
    let (p1, p2) = (TestNetns::new("rs"), TestNetns::new("rs"));
    let a1 = address(&node.add("c1", &p1));
    let veth = host_veth(&node, "c1");
    node.kill_agent();
    let path = record_path(&node, &veth);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    restart(&mut node);

    assert_eq!(
        pod_address(&p1).as_deref(),
        Some(a1.as_str()),
        "the pod lost eth0"
    );
    assert!(ping(&node.ns, &a1), "the node no longer reaches the pod");
    assert_eq!(quarantined(&node), vec![(veth.clone(), vec![a1.clone()])]);
    assert_eq!(node.metric("strait_quarantined_addresses"), 1);
    assert!(
        node.agent_log().contains("no readable record"),
        "the log says nothing:\n{}",
        node.agent_log()
    );
    let a2 = address(&node.add("c2", &p2));
    assert_ne!(a2, a1, "a running pod's address was handed out again");
    assert!(ping(&p2, &a1), "the pods do not reach each other");

    // The runtime deletes the pod: its veth and its quarantined address go.
    node.del("c1", &p1);
    assert_eq!(quarantined(&node), vec![]);
    assert_eq!(node.metric("strait_quarantined_addresses"), 0);
    assert_eq!(link_names(&p1), ["lo"]);
    assert!(!link_names(&node.ns).contains(&veth));
}

#[test]
fn an_emptied_state_directory_breaks_no_pod_and_gc_frees_what_the_runtime_forgot() {
    let mut node = Node::start(NodeSpec::default());
    let pods: Vec<TestNetns> = (0..3).map(|_| TestNetns::new("rs")).collect();
    let a0 = address(&node.add("c0", &pods[0]));
    let a1 = address(&node.add("c1", &pods[1]));
    node.kill_agent();
    fs::remove_dir_all(node.state_dir().join("attachments")).unwrap();
    restart(&mut node);

    for (pod, a) in [(&pods[0], &a0), (&pods[1], &a1)] {
        assert_eq!(
            pod_address(pod).as_deref(),
            Some(a.as_str()),
            "a pod lost eth0"
        );
        assert!(ping(&node.ns, a));
    }
    assert_eq!(quarantined(&node).len(), 2);
    let a2 = address(&node.add("c2", &pods[2]));
    assert!(a2 != a0 && a2 != a1, "{a2} was handed out twice");

    // GC lists c0 and c2: the quarantined veth of c1 is the runtime's leftover.
    node.gc(&["c0", "c2"]).ok();
    assert_eq!(
        link_names(&pods[1]),
        ["lo"],
        "GC left the forgotten pod's network"
    );
    assert_eq!(
        pod_address(&pods[0]).as_deref(),
        Some(a0.as_str()),
        "GC broke a listed pod"
    );
    let left = quarantined(&node);
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0].1, vec![a0.clone()]);
    node.del("c0", &pods[0]);
    assert_eq!(quarantined(&node), vec![]);
}

#[test]
fn an_address_in_another_nodes_block_keeps_the_node_unready_until_its_pod_is_deleted() {
    let mut node = Node::start(NodeSpec::default());
    let (p1, p2) = (TestNetns::new("rs"), TestNetns::new("rs"));
    let a1 = address(&node.add("c1", &p1));
    node.kill_agent();
    // The store now says another node holds the block of c1's address.
    let blocks = node.store_dir().join("ipblocks");
    let mut moved = 0;
    for entry in fs::read_dir(&blocks).unwrap() {
        let path = entry.unwrap().path();
        let mut stored: Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        let cidr: ipnet::IpNet = stored["value"]["cidr"].as_str().unwrap().parse().unwrap();
        if cidr.contains(&a1.parse::<std::net::IpAddr>().unwrap()) {
            stored["value"]["node"] = "elsewhere".into();
            fs::write(&path, stored.to_string()).unwrap();
            moved += 1;
        }
    }
    assert_eq!(moved, 1);
    restart(&mut node);

    let status = node.ctl(&["status"]);
    assert_eq!(status["ready"], false, "{status}");
    let conflicts = status["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{status}");
    assert_eq!(conflicts[0]["address"], a1.as_str());
    assert!(
        conflicts[0]["reason"]
            .as_str()
            .unwrap()
            .contains("elsewhere"),
        "{status}"
    );
    let (code, body) = node.http_get("/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains(&a1), "{body}");
    assert_eq!(node.metric("strait_address_conflicts"), 1);
    assert_eq!(
        pod_address(&p1).as_deref(),
        Some(a1.as_str()),
        "the pod lost eth0"
    );
    let refused = node.cni(
        &Env::attachment("ADD", "c2", &p2.path(), "eth0"),
        &node.conf("1.0.0"),
    );
    let error = refused.err(11);
    assert!(error["msg"].as_str().unwrap().contains(&a1), "{error}");
    assert_eq!(link_names(&p2), ["lo"], "a refused ADD left something");
    // CHECK of the pod says so too.
    let check = node.cni(
        &Env::attachment("CHECK", "c1", &p1.path(), "eth0"),
        &node.conf("1.0.0"),
    );
    assert!(
        check.err(103)["msg"]
            .as_str()
            .unwrap()
            .contains("cannot be kept")
    );
    let status_call = Env::default()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", "/opt/cni/bin");
    node.cni(&status_call, &node.conf("1.1.0")).err(50);

    // Deleting the pod resolves it: the node is ready and takes pods again.
    node.del("c1", &p1);
    let status = node.ctl(&["status"]);
    assert_eq!(status["conflicts"], serde_json::json!([]), "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(node.http_get("/readyz").0, 200);
    let a2 = address(&node.add("c2", &p2));
    assert_ne!(a2, a1);
}

#[test]
fn a_release_a_crash_interrupted_is_finished_by_the_next_start() {
    let mut node = Node::start(NodeSpec {
        agent_env: vec![("STRAIT_FAULT".into(), "before-release".into())],
        ..NodeSpec::default()
    });
    let pod = TestNetns::new("rs");
    let a1 = address(&node.add("c1", &pod));
    // DEL answers, but the release behind it cannot finish in this run.
    node.cni(
        &Env::attachment("DEL", "c1", &pod.path(), "eth0"),
        &node.conf("1.0.0"),
    )
    .ok();
    strait_integration::wait_until(
        "the failed release",
        std::time::Duration::from_secs(30),
        || node.agent_log().contains("could not finish releasing"),
        || node.agent_log(),
    );
    let pods = node.ctl(&["pods"]);
    assert_eq!(pods[0]["releasing"], true, "{pods}");
    // Its address stays taken while its device still carries it.
    assert_eq!(pod_address(&pod).as_deref(), Some(a1.as_str()));
    let other = TestNetns::new("rs");
    assert_ne!(address(&node.add("c2", &other)), a1);

    node.kill_agent();
    node.spec.agent_env.clear();
    restart(&mut node);
    node.wait_released(|p| p["container_id"] == "c1");
    assert_eq!(
        link_names(&pod),
        ["lo"],
        "the next start finished the release"
    );
    assert_eq!(node.snapshot().allocated, 1);
}
