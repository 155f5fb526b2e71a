//! A node gives back the blocks it no longer uses: a block empty for the grace period returns to
//! its pool, in the store too; the block holding the VTEP stays; a later pod claims a block again.

use std::time::Duration;

use strait_integration::cni::address;
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::wait_until;

fn held(node: &Node) -> Vec<String> {
    node.ctl(&["status"])["networks"][0]["blocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect()
}

fn claims(node: &Node) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(node.store_dir().join("ipblocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn an_empty_block_goes_back_to_its_pool_and_the_vteps_block_stays() {
    let node = Node::start(NodeSpec {
        pools: vec![("10.244.0.0/16".into(), 30)],
        extra: "empty_block_grace = 2\nfreed_address_hold = 2\n".into(),
        ..NodeSpec::default()
    });
    // The first /30 holds the VTEP and three pods; the fourth pod needs a second block.
    let pods: Vec<TestNetns> = (0..5).map(|_| TestNetns::new("br")).collect();
    for (i, pod) in pods.iter().take(4).enumerate() {
        node.add(&format!("c{i}"), pod);
    }
    assert_eq!(held(&node), ["10.244.0.0/30", "10.244.0.4/30"]);
    node.del("c3", &pods[3]);

    wait_until(
        "the empty block's return",
        Duration::from_secs(30),
        || held(&node).len() == 1,
        || node.agent_log(),
    );
    assert_eq!(held(&node), ["10.244.0.0/30"]);
    assert_eq!(
        claims(&node),
        ["10-244-0-0-30.json"],
        "given back in the store too"
    );
    assert_eq!(node.metric("strait_blocks_returned_total"), 1);

    // Emptied too, the VTEP's block stays (well past the grace period).
    for (i, pod) in pods.iter().take(3).enumerate() {
        node.del(&format!("c{i}"), pod);
    }
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(held(&node), ["10.244.0.0/30"]);
    // And pods still get addresses, claiming blocks as they need them.
    for (i, pod) in pods.iter().enumerate().take(5) {
        let ip = address(&node.add(&format!("d{i}"), pod));
        assert!(ip.starts_with("10.244.0."), "{ip}");
    }
    assert_eq!(held(&node).len(), 2);
}
