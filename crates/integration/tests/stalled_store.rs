//! No request waits on another, and nothing runs after its caller gave up: while the cluster store
//! stalls, only the ADD that needs a new block from it waits (and gives up with "try again later"
//! when the store stays away); a DEL, `straitctl status` and `/metrics` answer meanwhile. An ADD
//! whose caller left while it waited leaves nothing behind.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use strait_integration::cni::{Env, address};
use strait_integration::inspect::{Snapshot, link_names};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::{bin, wait_until};

/// What the agent logs when an ADD needs a block from the store.
const CLAIMING: &str = "claiming a block";

/// Holds the embedded store's lock, as a stalled store would, until dropped.
fn hold_store_lock(store: &Path) -> File {
    let file = File::options()
        .write(true)
        .open(store.join(".lock"))
        .expect("the store's lock file");
    // SAFETY: flock(2) on a descriptor this function owns.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
    assert_eq!(rc, 0, "flock: {}", std::io::Error::last_os_error());
    file
}

/// Waits until the node's agent has logged `line` `times` times.
fn wait_logged(node: &Node, line: &str, times: usize) {
    wait_until(
        &format!("straitd logging {line:?}"),
        Duration::from_secs(30),
        || node.agent_log().matches(line).count() >= times,
        || node.agent_log(),
    );
}

/// Runs `f` on a thread and waits for it, at most `limit`; `None` if it was still running.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let handle = thread::spawn(f);
    let deadline = Instant::now() + limit;
    while !handle.is_finished() {
        if Instant::now() > deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(10));
    }
    Some(handle.join().expect("no panic"))
}

#[test]
fn a_stalled_store_holds_up_only_the_add_that_needs_a_new_block() {
    let node = std::sync::Arc::new(Node::start(NodeSpec {
        pools: vec![("10.244.0.0/16".into(), 30)],
        ..NodeSpec::default()
    }));
    let pods: Vec<TestNetns> = (0..4).map(|_| TestNetns::new("st")).collect();
    // The node's first /30 has room for three pods.
    for (i, pod) in pods.iter().take(3).enumerate() {
        node.add(&format!("c{i}"), pod);
    }
    let claims = node.agent_log().matches(CLAIMING).count();
    let lock = hold_store_lock(&node.store_dir());
    let add = {
        let (node, path) = (std::sync::Arc::clone(&node), pods[3].path());
        thread::spawn(move || {
            node.cni(
                &Env::attachment("ADD", "c3", &path, "eth0"),
                &node.conf("1.0.0"),
            )
        })
    };
    wait_logged(&node, CLAIMING, claims + 1);

    // A loaded machine answers these in well under a second; a minute means they waited.
    let limit = Duration::from_secs(60);
    let del = {
        let (node, path) = (std::sync::Arc::clone(&node), pods[0].path());
        within(limit, move || {
            node.cni(
                &Env::attachment("DEL", "c0", &path, "eth0"),
                &node.conf("1.0.0"),
            )
        })
    };
    assert!(del.expect("DEL waited for the stalled store").success);
    let status = {
        let node = std::sync::Arc::clone(&node);
        within(limit, move || node.ctl(&["status"]))
    };
    assert_eq!(
        status.expect("status waited")["node"],
        node.ns.name.as_str()
    );
    let metrics = {
        let node = std::sync::Arc::clone(&node);
        within(limit, move || node.http_get("/metrics"))
    };
    assert_eq!(metrics.expect("/metrics waited").0, 200);

    drop(lock);
    // The ADD either got its block once the store came back, or gave up first (the store's
    // lock stayed held past its 10 s) asking the runtime to retry; a retry then succeeds.
    let first = add.join().unwrap();
    let added = if first.success {
        first.ok()
    } else {
        first.err(11);
        node.add("c3", &pods[3])
    };
    assert!(address(&added).starts_with("10.244.0."), "{added}");
}

#[test]
fn an_add_whose_caller_left_while_the_store_stalled_leaves_nothing_behind() {
    let node = Node::start(NodeSpec {
        pools: vec![("10.244.0.0/16".into(), 30)],
        ..NodeSpec::default()
    });
    let pods: Vec<TestNetns> = (0..4).map(|_| TestNetns::new("st")).collect();
    for (i, pod) in pods.iter().take(3).enumerate() {
        node.add(&format!("c{i}"), pod);
    }
    // Block claims are node state that outlives pods: everything else must be as before.
    let without_blocks = |s: Snapshot| Snapshot {
        blocks: vec![],
        ..s
    };
    let before = without_blocks(node.snapshot());
    let claims = node.agent_log().matches(CLAIMING).count();
    let lock = hold_store_lock(&node.store_dir());
    let env = Env::attachment("ADD", "c3", &pods[3].path(), "eth0");
    let mut plugin = Command::new(bin("strait"))
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the plugin runs");
    plugin
        .stdin
        .take()
        .expect("piped")
        .write_all(node.conf("1.0.0").as_bytes())
        .expect("the plugin reads its configuration");
    wait_logged(&node, CLAIMING, claims + 1);
    // The runtime gives up: the plugin is killed while the agent waits for the store.
    plugin.kill().expect("kill the plugin");
    plugin.wait().expect("reap the plugin");
    drop(lock);
    wait_logged(&node, "container_id=c3", 1);

    assert_eq!(without_blocks(node.snapshot()), before);
    assert_eq!(link_names(&pods[3]), ["lo"]);
    assert!(
        node.agent_log()
            .contains("the caller left before the answer"),
        "{}",
        node.agent_log()
    );
}
