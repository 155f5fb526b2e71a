//! Podman (CNI backend) runs containers on a Strait network: they reach each other, and
//! `podman rm` leaves nothing behind.

use strait_integration::node::{Node, NodeSpec};
use strait_integration::podman::{IMAGE, Podman};

#[test]
fn podman_containers_on_a_strait_network_reach_each_other_and_rm_leaves_nothing() {
    let node = Node::start(NodeSpec::default());
    node.warm_up();
    let before = node.snapshot();
    let podman = Podman::new(&node);
    let networks = podman.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(
        networks.lines().any(|n| n == "strait"),
        "podman sees the agent's conflist: {networks}"
    );
    let mut ids = Vec::new();
    for name in ["c1", "c2"] {
        ids.push(podman.ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            "strait",
            IMAGE,
            "sleep",
            "1000",
        ]));
    }
    let ip = |name: &str| {
        podman.ok(&[
            "inspect",
            name,
            "--format",
            "{{.NetworkSettings.Networks.strait.IPAddress}}",
        ])
    };
    let (ip1, ip2) = (ip("c1"), ip("c2"));
    assert!(
        ip1.starts_with("10.244.") && ip2.starts_with("10.244.") && ip1 != ip2,
        "{ip1} {ip2}"
    );
    podman.ok(&["exec", "c1", "ping", "-c1", "-W2", &ip2]);
    podman.ok(&["exec", "c2", "ping", "-c1", "-W2", &ip1]);

    let pods = node.ctl(&["pods"]);
    let known: Vec<&str> = pods
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["container_id"].as_str().unwrap())
        .collect();
    for id in &ids {
        assert!(
            known.contains(&id.as_str()),
            "the agent knows container {id}: {pods}"
        );
    }

    podman.ok(&["rm", "--force", "--time", "0", "c1", "c2"]);
    assert_eq!(node.snapshot(), before, "podman rm leaves nothing behind");
}
