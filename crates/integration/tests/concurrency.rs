//! Many runtimes calling at once, and the agent killed in the middle of it: addresses stay
//! distinct, nothing leaks after GC, and running pods keep their traffic.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;
use strait_integration::bin;
use strait_integration::cni::{Env, Outcome, address, invoke};
use strait_integration::inspect::{ip_json, link_names};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_integration::traffic::ping;

#[test]
fn fifty_concurrent_adds_give_fifty_distinct_reachable_addresses() {
    let node = Node::start(NodeSpec::default());
    let pods: Vec<TestNetns> = (0..50).map(|_| TestNetns::new("c")).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = pods
            .iter()
            .enumerate()
            .map(|(i, pod)| {
                let node = &node;
                s.spawn(move || node.add(&format!("ctr-{i}"), pod))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let addresses: HashSet<String> = results.iter().map(address).collect();
    assert_eq!(addresses.len(), 50, "every pod has its own address");
    for (i, r) in results.iter().enumerate().skip(1) {
        assert!(ping(&pods[0], &address(r)), "pod 0 reaches pod {i}");
    }
    for r in &results {
        assert!(ping(&node.ns, &address(r)));
    }
    assert_eq!(node.snapshot().allocated, 50);

    std::thread::scope(|s| {
        for (i, pod) in pods.iter().enumerate() {
            let node = &node;
            s.spawn(move || node.del(&format!("ctr-{i}"), pod));
        }
    });
    let after = node.snapshot();
    assert_eq!((after.allocated, after.records.len()), (0, 0));
    assert_eq!(after.links, ["eth0", "lo", "strait.4096"]);
    assert!(after.routes.is_empty());
}

/// What the runtime believes about one pod namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Nothing attached: free for the next ADD.
    Free,
    /// ADD succeeded and the pod runs.
    Added(String),
    /// ADD failed and the runtime died before calling DEL: only GC can clean this.
    Abandoned(String),
}

/// Requests the agent's death cut short: it took them and died before answering.
#[derive(Debug, Default)]
struct Interrupted {
    adds: AtomicUsize,
    dels: AtomicUsize,
}

/// Whether the agent died while it had this request.
fn cut_short(outcome: &Outcome) -> bool {
    !outcome.success
        && ["without an answer", "Connection reset", "Broken pipe"]
            .iter()
            .any(|s| outcome.stdout.contains(s))
}

/// One runtime under churn until `stop`: picks a slot at random, ADDs a free one and DELs a
/// running one. A failed ADD is answered with DEL (retried until the agent is back), except when
/// the agent died during the call: then the runtime "crashes" too and abandons the slot, which
/// only GC can clean.
fn runtime(
    plugin: &std::path::Path,
    conf: &str,
    pods: &[TestNetns],
    slots: &mut [Slot],
    tag: &str,
    stop: &AtomicBool,
    interrupted: &Interrupted,
) {
    let mut seed = tag
        .bytes()
        .fold(17u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let mut n = 0usize;
    while !stop.load(Ordering::Relaxed) {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (seed >> 33) as usize % slots.len();
        let del_until_done = |cid: &str| {
            let env = Env::attachment("DEL", cid, &pods[i].path(), "eth0");
            loop {
                let outcome = invoke(plugin, &env, conf);
                if outcome.success {
                    break;
                }
                if cut_short(&outcome) {
                    interrupted.dels.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        };
        match &slots[i] {
            Slot::Abandoned(_) => continue,
            Slot::Added(cid) => {
                del_until_done(cid);
                slots[i] = Slot::Free;
            }
            Slot::Free => {
                n += 1;
                let cid = format!("{tag}-{n}");
                let outcome = invoke(
                    plugin,
                    &Env::attachment("ADD", &cid, &pods[i].path(), "eth0"),
                    conf,
                );
                if cut_short(&outcome) {
                    interrupted.adds.fetch_add(1, Ordering::Relaxed);
                }
                slots[i] = if outcome.success {
                    Slot::Added(cid)
                } else if outcome.stdout.contains("not running") {
                    del_until_done(&cid);
                    std::thread::sleep(Duration::from_millis(10));
                    Slot::Free
                } else {
                    Slot::Abandoned(cid)
                };
            }
        }
    }
}

/// The IPv4 addresses on a pod's interfaces.
fn pod_addresses(pod: &TestNetns) -> Vec<String> {
    ip_json(pod, &["-4", "addr", "show"])
        .iter()
        .filter(|l| l["ifname"] != "lo")
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .filter_map(|a| a["local"].as_str().map(String::from))
        .collect()
}

#[test]
fn killing_the_agent_mid_burst_assigns_nothing_twice_and_gc_leaves_no_leak() {
    let mut node = Node::start(NodeSpec::default());
    node.warm_up();
    let plugin = bin("strait");
    let conf = node.conf("1.1.0");

    // Pods that run through every crash: their traffic must never stop.
    let steady: Vec<TestNetns> = (0..2).map(|_| TestNetns::new("st")).collect();
    let steady_ips: Vec<String> = steady
        .iter()
        .enumerate()
        .map(|(i, p)| address(&node.add(&format!("steady-{i}"), p)))
        .collect();

    const RUNTIMES: usize = 4;
    const SLOTS: usize = 8;
    let pods: Vec<TestNetns> = (0..RUNTIMES * SLOTS).map(|_| TestNetns::new("b")).collect();
    let mut slots = vec![Slot::Free; pods.len()];
    let interrupted = Interrupted::default();
    // Crash rounds until the kills have cut short both an ADD and a DEL (at least three rounds,
    // at most ten).
    let mut round = 0u64;
    while round < 3
        || interrupted.adds.load(Ordering::Relaxed) == 0
        || interrupted.dels.load(Ordering::Relaxed) == 0
    {
        assert!(
            round < 10,
            "ten kills never landed inside both an ADD and a DEL: {interrupted:?}"
        );
        let stop = AtomicBool::new(false);
        std::thread::scope(|s| {
            for (r, (pods, slots)) in pods.chunks(SLOTS).zip(slots.chunks_mut(SLOTS)).enumerate() {
                let (plugin, conf, stop, interrupted) = (&plugin, &conf, &stop, &interrupted);
                s.spawn(move || {
                    let tag = format!("r{round}-rt{r}");
                    runtime(plugin, conf, pods, slots, &tag, stop, interrupted)
                });
            }
            // Kill at a different point of the burst each round.
            std::thread::sleep(Duration::from_millis(40 + 70 * (round % 3)));
            node.kill_agent();
            assert!(
                ping(&steady[0], &steady_ips[1]),
                "pods keep talking while the agent is dead"
            );
            std::thread::sleep(Duration::from_millis(100));
            if let Err(log) = node.try_start_agent() {
                panic!("restart failed:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(150));
            stop.store(true, Ordering::Relaxed);
        });
        let held = node.held_addresses();
        let distinct: HashSet<&String> = held.iter().collect();
        assert_eq!(
            distinct.len(),
            held.len(),
            "round {round}: an address is held twice: {held:?}"
        );
        assert!(ping(&steady[0], &steady_ips[1]));
        // And in the kernel: no two pods carry one address, no address is routed to two veths.
        let mut carried: Vec<String> = pods.iter().chain(&steady).flat_map(pod_addresses).collect();
        let count = carried.len();
        carried.sort();
        carried.dedup();
        assert_eq!(
            carried.len(),
            count,
            "round {round}: a pod address is doubled"
        );
        let routed: Vec<String> = node
            .snapshot()
            .routes
            .iter()
            .map(|r| r.split(' ').next().unwrap_or_default().to_string())
            .collect();
        let distinct: HashSet<&String> = routed.iter().collect();
        assert_eq!(distinct.len(), routed.len(), "round {round}: {routed:?}");
        round += 1;
    }
    eprintln!("{round} crashes cut short {interrupted:?}");
    let added: Vec<&String> = slots
        .iter()
        .filter_map(|s| match s {
            Slot::Added(c) => Some(c),
            _ => None,
        })
        .collect();
    let abandoned = slots
        .iter()
        .filter(|s| matches!(s, Slot::Abandoned(_)))
        .count();
    assert!(!added.is_empty(), "the burst added pods: {slots:?}");
    eprintln!(
        "after {round} crashes: {} pods running, {abandoned} abandoned by their runtime",
        added.len()
    );

    // GC with what the runtimes still hold; everything else must go.
    let mut valid: Vec<Value> = added
        .iter()
        .map(|cid| serde_json::json!({"containerID": cid, "ifname": "eth0"}))
        .collect();
    for i in 0..2 {
        valid.push(serde_json::json!({"containerID": format!("steady-{i}"), "ifname": "eth0"}));
    }
    let mut gc_conf: Value = serde_json::from_str(&conf).unwrap();
    gc_conf["cni.dev/valid-attachments"] = Value::Array(valid.clone());
    let gc = Env::default()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", "/opt/cni/bin");
    invoke(&plugin, &gc, &gc_conf.to_string()).ok();
    let snapshot = node.snapshot();
    assert_eq!(
        snapshot.records.len(),
        valid.len(),
        "GC leaves exactly the valid attachments"
    );
    assert_eq!(
        snapshot.allocated as usize,
        valid.len(),
        "and no address leaks"
    );
    let veths = snapshot
        .links
        .iter()
        .filter(|l| l.starts_with("st") && !l.starts_with("strait."))
        .count();
    assert_eq!(veths, valid.len(), "no host veth without an attachment");
    for (pod, slot) in pods.iter().zip(&slots) {
        let expected: &[&str] = if matches!(slot, Slot::Added(_)) {
            &["eth0", "lo"]
        } else {
            &["lo"]
        };
        assert_eq!(link_names(pod), expected, "{slot:?}");
    }

    // Every attachment the runtimes hold is intact and reachable.
    let pods_now = node.ctl(&["pods"]);
    for p in pods_now.as_array().unwrap() {
        let cid = p["container_id"].as_str().unwrap();
        let env = Env::attachment("CHECK", cid, p["netns"].as_str().unwrap(), "eth0");
        invoke(&plugin, &env, &conf).ok();
        let ip = address(p);
        assert!(
            ping(&node.ns, &ip),
            "{cid} at {ip} reachable after the crashes"
        );
    }

    // New pods never get an address that is still held.
    let held: HashSet<String> = node.held_addresses().into_iter().collect();
    let fresh: Vec<TestNetns> = (0..10).map(|_| TestNetns::new("f")).collect();
    for (i, pod) in fresh.iter().enumerate() {
        let ip = address(&node.add(&format!("fresh-{i}"), pod));
        assert!(!held.contains(&ip), "{ip} handed out twice");
    }
}
