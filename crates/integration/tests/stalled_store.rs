//! No request waits on another: while the cluster store stalls, only the ADD that needs a new block
//! from it waits; a DEL, `straitctl status` and `/metrics` answer meanwhile.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use strait_integration::cni::{Env, address};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};

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

/// Waits until process `pid` is blocked on a file lock (a `->` line of /proc/locks).
fn wait_blocked_on_a_lock(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if locks
            .lines()
            .filter(|l| l.contains("->"))
            .any(|l| l.split_whitespace().nth(5) == Some(&pid.to_string()))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "straitd never waited on the store's lock:\n{locks}"
        );
        thread::sleep(Duration::from_millis(20));
    }
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
    wait_blocked_on_a_lock(node.agent_pid().expect("running"));

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
    assert!(
        !add.is_finished(),
        "the ADD did not need the store after all"
    );

    drop(lock);
    let added = add.join().unwrap().ok();
    assert!(address(&added).starts_with("10.244.0."), "{added}");
}
