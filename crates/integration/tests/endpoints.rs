//! The agent's HTTP endpoint cannot be used to starve it: idle connections are capped and closed
//! after their lifetime, so the agent's descriptors stay few and ADDs go on. `/healthz` and
//! `/readyz` answer for a healthy node.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strait_integration::cni::address;
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_netns::Netns;

fn open_descriptors(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the agent's descriptors")
        .count()
}

#[test]
fn idle_http_connections_never_starve_the_agent() {
    let node = Node::start(NodeSpec::default());
    assert_eq!(node.http_get("/healthz"), (200, "ok\n".to_string()));
    assert_eq!(node.http_get("/readyz").0, 200);
    let pid = node.agent_pid().expect("running");
    let before = open_descriptors(pid);

    // 100 clients connect and send nothing (more than the agent serves at once, fewer than the
    // kernel queues for it: past that, connecting itself waits).
    let ns = Netns::open(node.ns.path()).expect("the node's namespace");
    let idle: Vec<TcpStream> = ns
        .run(|| {
            (0..100)
                .map(|_| TcpStream::connect("127.0.0.1:9462").expect("connect"))
                .collect()
        })
        .expect("enter the node's namespace");
    std::thread::sleep(Duration::from_millis(500));
    let during = open_descriptors(pid);
    assert!(
        during <= before + 16 + 4,
        "100 idle connections took {} descriptors",
        during - before
    );
    let pod = TestNetns::new("ep");
    let added = node.add("c1", &pod);
    assert!(address(&added).starts_with("10.244."), "{added}");

    // The server closes the connections it accepted once their lifetime is over.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut closed = 0;
    for mut conn in idle {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        conn.set_read_timeout(Some(left)).expect("timeout");
        let mut byte = [0u8; 1];
        if matches!(conn.read(&mut byte), Ok(0) | Err(_)) && Instant::now() < deadline {
            closed += 1;
        }
        if closed >= 16 {
            break;
        }
    }
    assert!(closed >= 16, "only {closed} idle connections were closed");
    node.del("c1", &pod);
}
