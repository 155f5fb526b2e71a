//! CNI ADD and DEL latency: Strait against the reference `bridge` + `host-local` plugins, in the
//! same run, from the same node namespace, each plugin executed the same way a runtime does.
//! 200 pods one after another, then 200 pods from two parallel callers. Prints p50/p99 and the
//! ratio Strait / reference (lower is better).
//!
//! Run as root after `cargo build --release --workspace`: `bench/run cni-latency`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_bench::{ms, percentile};
use strait_integration::bin;
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_netns::Netns;

const PODS: usize = 200;

/// One plugin under test: how to run it and with what configuration.
struct Subject {
    name: &'static str,
    plugin: PathBuf,
    conf: String,
    cni_path: String,
}

/// Runs one CNI command of `subject` from inside `node` and returns how long it took.
fn call(subject: &Subject, node: &Netns, command: &str, id: &str, pod: &TestNetns) -> Duration {
    let node_fd = node.fd().as_raw_fd();
    let mut c = Command::new(&subject.plugin);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", pod.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", &subject.cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setns is async-signal-safe; the child enters the node's namespace before exec.
    unsafe {
        c.pre_exec(move || {
            if libc::setns(node_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let started = Instant::now();
    let mut child = c.spawn().expect("plugin starts");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(subject.conf.as_bytes())
        .expect("stdin");
    let out = child.wait_with_output().expect("plugin runs");
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{} {command} failed: {}{}",
        subject.name,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

struct Run {
    add: Vec<Duration>,
    del: Vec<Duration>,
}

/// ADDs then DELs `pods` with `callers` parallel callers, timing every call.
fn measure(subject: &Subject, node: &Netns, pods: &[TestNetns], callers: usize, tag: &str) -> Run {
    let timed = |command: &str| -> Vec<Duration> {
        std::thread::scope(|s| {
            let workers: Vec<_> = pods
                .chunks(pods.len().div_ceil(callers))
                .enumerate()
                .map(|(w, chunk)| {
                    s.spawn(move || {
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, pod)| {
                                call(subject, node, command, &format!("{tag}-{w}-{i}"), pod)
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|w| w.join().expect("caller"))
                .collect()
        })
    };
    let add = timed("ADD");
    let del = timed("DEL");
    Run { add, del }
}

fn main() {
    strait_integration::require_root();
    let node = Node::start(NodeSpec::default());
    let node_ns = Netns::open(node.ns.path()).expect("node namespace");
    let ipam_dir = node.dir.join("host-local");
    let strait = Subject {
        name: "strait",
        plugin: bin("strait"),
        conf: node.conf("1.0.0"),
        cni_path: format!("{}:/usr/lib/cni", bin("strait").parent().unwrap().display()),
    };
    let reference = Subject {
        name: "bridge+host-local",
        plugin: PathBuf::from("/usr/lib/cni/bridge"),
        conf: serde_json::json!({
            "cniVersion": "1.0.0", "name": "reference", "type": "bridge",
            "bridge": "cniref0", "isGateway": true, "ipMasq": true,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.99.0.0/16"}]],
                     "dataDir": ipam_dir},
        })
        .to_string(),
        cni_path: "/usr/lib/cni".into(),
    };
    assert!(
        Path::new(&reference.plugin).exists(),
        "install containernetworking-plugins"
    );
    let pods: Vec<TestNetns> = (0..PODS).map(|_| TestNetns::new("bn")).collect();

    // Warm both up (page cache, first block claim, bridge creation), then measure, interleaved.
    for s in [&strait, &reference] {
        measure(s, &node_ns, &pods[..4], 1, "warm");
    }
    println!(
        "CNI latency, {PODS} pods per run (ms; ratio = strait / reference, lower is better)\n"
    );
    println!(
        "{:<22}{:>10}{:>10}{:>10}{:>10}",
        "run", "ADD p50", "ADD p99", "DEL p50", "DEL p99"
    );
    for callers in [1, 2] {
        let ours = measure(&strait, &node_ns, &pods, callers, &format!("s{callers}"));
        let theirs = measure(&reference, &node_ns, &pods, callers, &format!("r{callers}"));
        let figures = |r: &Run| {
            [
                percentile(&r.add, 50.0),
                percentile(&r.add, 99.0),
                percentile(&r.del, 50.0),
                percentile(&r.del, 99.0),
            ]
        };
        let (o, t) = (figures(&ours), figures(&theirs));
        let mode = if callers == 1 {
            "sequential"
        } else {
            "2 parallel callers"
        };
        let row = |label: String, f: [Duration; 4]| {
            println!(
                "{label:<22}{:>10.2}{:>10.2}{:>10.2}{:>10.2}",
                ms(f[0]),
                ms(f[1]),
                ms(f[2]),
                ms(f[3])
            );
        };
        println!("{mode}:");
        row("  strait".into(), o);
        row(format!("  {}", reference.name), t);
        println!(
            "{:<22}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
            "  ratio",
            ms(o[0]) / ms(t[0]),
            ms(o[1]) / ms(t[1]),
            ms(o[2]) / ms(t[2]),
            ms(o[3]) / ms(t[3])
        );
    }
    // The reference leaves its bridge behind by design; the node namespace goes with the node.
}
