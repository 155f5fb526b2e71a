//! Real CNI clients against a real agent: Debian's cnitool with the conflist the agent wrote,
//! and Strait first in a chain with the reference portmap, bandwidth and tuning plugins.

use std::process::Command;

use serde_json::Value;
use strait_integration::cni::address;
use strait_integration::inspect::{ip_json, link_names};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::runtime::{cni_path, in_node, ipv4_only_path, output, tool};
use strait_integration::traffic::{PeerEcho, ping, tcp_peer};

fn cnitool(node: &Node, action: &str, pod: &TestNetns, extra_env: &[(&str, &str)]) -> Command {
    let tool = tool("cnitool");
    let mut c = in_node(
        node,
        tool.to_str().unwrap(),
        &[action, &node.spec.network, &pod.path()],
    );
    c.env("NETCONFPATH", node.conf_dir())
        .env("CNI_PATH", cni_path());
    for (k, v) in extra_env {
        c.env(k, v);
    }
    c
}

fn run(c: Command) -> String {
    let out = output(c);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn cnitool_adds_checks_and_deletes_with_the_conflist_the_agent_wrote() {
    let node = Node::start(NodeSpec::default());
    node.warm_up();
    let before = node.snapshot();
    let (a, b) = (TestNetns::new("ta"), TestNetns::new("tb"));
    let ra: Value = serde_json::from_str(&run(cnitool(&node, "add", &a, &[]))).unwrap();
    let rb: Value = serde_json::from_str(&run(cnitool(&node, "add", &b, &[]))).unwrap();
    assert!(ping(&a, &address(&rb)) && ping(&b, &address(&ra)));
    run(cnitool(&node, "check", &a, &[]));
    run(cnitool(&node, "del", &a, &[]));
    run(cnitool(&node, "del", &b, &[]));
    run(cnitool(&node, "del", &b, &[]));
    // The snapshot waits for the releases the DELs started.
    assert_eq!(node.snapshot(), before);
    assert_eq!(
        (link_names(&a), link_names(&b)),
        (vec!["lo".to_string()], vec!["lo".to_string()])
    );
}

#[test]
fn first_in_a_chain_with_portmap_bandwidth_and_tuning() {
    let node = Node::start(NodeSpec {
        extra: r#"[cni]
chain = [
  { type = "portmap", capabilities = { portMappings = true }, snat = true },
  { type = "bandwidth", capabilities = { bandwidth = true } },
  { type = "tuning", sysctl = { "net.core.somaxconn" = "512" } },
]"#
        .into(),
        ..NodeSpec::default()
    });
    node.warm_up();
    let outside = node.outside();
    let before = node.snapshot();
    let rules_before = node.ns.exec("iptables-save", &["-t", "nat"]);
    let pod = TestNetns::new("chain");
    let caps = r#"{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}],
        "bandwidth":{"ingressRate":100000000,"ingressBurst":1000000,"egressRate":100000000,"egressBurst":1000000}}"#;
    let result: Value =
        serde_json::from_str(&run(cnitool(&node, "add", &pod, &[("CAP_ARGS", caps)]))).unwrap();
    let veth = result["interfaces"][0]["name"]
        .as_str()
        .unwrap()
        .to_string();

    // portmap: the host port reaches the pod from outside the node.
    let _server = PeerEcho::start(&pod, 80);
    assert_eq!(
        tcp_peer(&outside, "192.0.2.1", 8080).as_deref(),
        Some("192.0.2.2")
    );
    // bandwidth: a token bucket on our host veth (it found it in our result).
    let qdiscs =
        String::from_utf8_lossy(&node.ns.exec("tc", &["qdisc", "show", "dev", &veth]).stdout)
            .into_owned();
    assert!(
        qdiscs.contains("tbf") && qdiscs.contains("100Mbit"),
        "{qdiscs}"
    );
    // tuning: the sysctl inside the pod.
    let somaxconn = pod.exec("sysctl", &["-n", "net.core.somaxconn"]);
    assert_eq!(String::from_utf8_lossy(&somaxconn.stdout).trim(), "512");
    assert!(ping(&pod, "192.0.2.1"));

    // CHECK through the whole chain. The reference portmap (1.1.1) checks its IPv4 rules in
    // ip6tables too whenever ip6tables is usable, so its CHECK passes only on a node without
    // IPv6 netfilter. Strait's own CHECK, first in the chain, passes either way.
    // (With ip6tables present it stops at "could not check ipv6 dnat".)
    let ipv4_only = ipv4_only_path(&node.dir);
    run(cnitool(
        &node,
        "check",
        &pod,
        &[("CAP_ARGS", caps), ("PATH", &ipv4_only)],
    ));

    run(cnitool(&node, "del", &pod, &[("CAP_ARGS", caps)]));
    let after = node.snapshot();
    assert_eq!(link_names(&pod), ["lo"]);
    assert_eq!(after.links, before.links, "no veth, no ifb left");
    assert_eq!(after, before);
    let rules_after = node.ns.exec("iptables-save", &["-t", "nat"]);
    let dnat = |o: &std::process::Output| {
        String::from_utf8_lossy(&o.stdout)
            .matches("CNI-DN-")
            .count()
    };
    assert_eq!(
        dnat(&rules_after),
        dnat(&rules_before),
        "portmap's chain is gone"
    );
    assert!(ip_json(&node.ns, &["link", "show", "type", "ifb"]).is_empty());
}
