//! CNI ADD and DEL latency: Strait against every usual configuration of the reference plugins, in
//! the same run, from the same node namespace, each executed the way a runtime does: `bridge` +
//! `host-local` with `ipMasq` (per-pod iptables rules) and without (its fastest), `ptp` +
//! `host-local`, and the floor: the same kernel plumbing Strait does for a pod, done by two
//! `ip -batch` processes (one on the node, one in the pod; no IPAM, no neighbour entries).
//! 200 pods one after another, then 200 pods from two parallel callers. Prints p50/p99 and the
//! ratio Strait / each reference (lower is better), and against the fastest plugin reference.
//! Then dual-stack: Strait with an IPv4 and an IPv6 pool against `bridge` and `ptp` with
//! `host-local` given both ranges (they wait for duplicate address detection on the pod's IPv6
//! address; 20 pods each), and against Strait's own IPv4-only figure.
//!
//! Run as root after `cargo build --release --workspace`: `bench/run cni-latency`.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use strait_bench::{ms, percentile};
use strait_integration::bin;
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec};
use strait_netns::Netns;

const PODS: usize = 200;
/// Pods per dual-stack reference run: each of their ADDs waits about a second.
const DUAL_PODS: usize = 20;

/// One plugin under test: how to run it and with what configuration.
struct Subject {
    name: &'static str,
    plugin: PathBuf,
    conf: String,
    cni_path: String,
}

/// Runs one CNI command of `subject` and returns how long it took. The calling thread is inside
/// the node's namespace; the plugin is started the way runtimes start one (posix_spawn, a
/// vfork: nothing of the caller's memory is copied), so its start costs what it costs there.
fn call(subject: &Subject, command: &str, id: &str, pod: &TestNetns) -> Duration {
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

/// Moves the calling thread (only it: a namespace is per thread) into `node`.
fn enter(node: &Netns) {
    // SAFETY: setns on a descriptor we own, for this thread alone.
    let entered = unsafe { libc::setns(node.fd().as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        entered,
        0,
        "entering the node's namespace: {}",
        std::io::Error::last_os_error()
    );
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
                        enter(node);
                        chunk
                            .iter()
                            .enumerate()
                            .map(|(i, pod)| call(subject, command, &format!("{tag}-{w}-{i}"), pod))
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

/// The floor: what any plugin must at least spend on Strait's plumbing, as a shell script that
/// answers like a plugin (address from a hash of the container id).
const FLOOR: &str = r#"#!/bin/bash
set -e
ns=${CNI_NETNS##*/}
h=$(printf %s "$CNI_CONTAINERID" | cksum | cut -d' ' -f1)
veth=flr$(printf %08x "$h")
ip=10.95.$(( (h >> 8) & 255 )).$(( h & 255 ))
case $CNI_COMMAND in
ADD)
  ip -batch - <<EOF
link add $veth type veth peer name $CNI_IFNAME netns $ns
link set $veth up
route replace $ip/32 dev $veth scope link
EOF
  ip -n "$ns" -batch - <<EOF
addr add $ip/32 dev $CNI_IFNAME
link set $CNI_IFNAME up
route add 169.254.1.1 dev $CNI_IFNAME scope link
route add default via 169.254.1.1 dev $CNI_IFNAME
EOF
  echo '{"cniVersion":"1.0.0"}' ;;
DEL) ip link del "$veth" 2>/dev/null || true ;;
esac
"#;

/// A reference plugin of Debian's with `host-local` IPAM over `subnets` (one range each).
fn reference(
    name: &'static str,
    plugin: &str,
    extra: serde_json::Value,
    subnets: &[&str],
    dir: &Path,
) -> Subject {
    let ranges: Vec<serde_json::Value> = subnets
        .iter()
        .map(|s| serde_json::json!([{ "subnet": s }]))
        .collect();
    let mut conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": name.replace(['+', ' '], "-"), "type": plugin,
        "ipam": {"type": "host-local", "ranges": ranges, "dataDir": dir.join(name)},
    });
    for (k, v) in extra.as_object().expect("an object") {
        conf[k] = v.clone();
    }
    Subject {
        name,
        plugin: PathBuf::from("/usr/lib/cni").join(plugin),
        conf: conf.to_string(),
        cni_path: "/usr/lib/cni".into(),
    }
}

/// ADD p50, ADD p99, DEL p50, DEL p99 of one run.
fn percentiles(r: &Run) -> [Duration; 4] {
    [
        percentile(&r.add, 50.0),
        percentile(&r.add, 99.0),
        percentile(&r.del, 50.0),
        percentile(&r.del, 99.0),
    ]
}

/// Prints the header and one row per subject; the first subject is Strait, and every other row
/// gets the ratio Strait / that subject.
fn print_rows(subjects: &[Subject], runs: &[[Duration; 4]]) {
    println!(
        "  {:<22}{:>9}{:>9}{:>9}{:>9}   {:>10}{:>10}",
        "", "ADD p50", "ADD p99", "DEL p50", "DEL p99", "ADD ratio", "DEL ratio"
    );
    let ours = runs[0];
    for (i, (s, f)) in subjects.iter().zip(runs).enumerate() {
        let ratios = if i == 0 {
            String::new()
        } else {
            format!(
                "   {:>10.3}{:>10.3}",
                ms(ours[0]) / ms(f[0]),
                ms(ours[2]) / ms(f[2])
            )
        };
        println!(
            "  {:<22}{:>9.2}{:>9.2}{:>9.2}{:>9.2}{ratios}",
            s.name,
            ms(f[0]),
            ms(f[1]),
            ms(f[2]),
            ms(f[3])
        );
    }
}

fn main() {
    strait_integration::require_root();
    // A second network, dual-stack, beside the default IPv4 one.
    let node = Node::start(NodeSpec {
        extra: "[[network]]\nname = \"dual\"\nvni = 4097\n\
                [[network.pool]]\ncidr = \"10.93.0.0/16\"\n\
                [[network.pool]]\ncidr = \"fd00:93::/56\"\n"
            .into(),
        ..NodeSpec::default()
    });
    let node_ns = Netns::open(node.ns.path()).expect("node namespace");
    let floor_script = node.dir.join("floor");
    std::fs::write(&floor_script, FLOOR).expect("write the floor script");
    std::fs::set_permissions(
        &floor_script,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("make it executable");
    let subjects = [
        Subject {
            name: "strait",
            plugin: bin("strait"),
            conf: node.conf("1.0.0"),
            cni_path: format!("{}:/usr/lib/cni", bin("strait").parent().unwrap().display()),
        },
        reference(
            "bridge+ipMasq",
            "bridge",
            serde_json::json!({"bridge": "cniref0", "isGateway": true, "ipMasq": true}),
            &["10.99.0.0/16"],
            &node.dir,
        ),
        reference(
            "bridge",
            "bridge",
            serde_json::json!({"bridge": "cniref1", "isGateway": true, "ipMasq": false}),
            &["10.98.0.0/16"],
            &node.dir,
        ),
        reference(
            "ptp",
            "ptp",
            serde_json::json!({"ipMasq": false}),
            &["10.97.0.0/16"],
            &node.dir,
        ),
        Subject {
            name: "floor (2x ip -batch)",
            plugin: floor_script.clone(),
            conf: r#"{"cniVersion":"1.0.0","name":"floor","type":"floor"}"#.into(),
            cni_path: "/usr/lib/cni".into(),
        },
    ];
    assert!(
        Path::new("/usr/lib/cni/bridge").exists(),
        "install containernetworking-plugins"
    );
    let pods: Vec<TestNetns> = (0..PODS).map(|_| TestNetns::new("bn")).collect();

    // Warm every subject up (page cache, first block claim, bridge creation).
    for s in &subjects {
        measure(s, &node_ns, &pods[..4], 1, "warm");
    }
    println!(
        "CNI latency, {PODS} pods per run (ms; ratio = strait / that reference, lower is better)\n"
    );
    let mut sequential_v4_add = Duration::ZERO;
    for callers in [1, 2] {
        let runs: Vec<[Duration; 4]> = subjects
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let r = measure(s, &node_ns, &pods, callers, &format!("s{i}c{callers}"));
                // Strait's DELs finish their work after answering: let it end before the next
                // subject is measured, so that it does not slow that one down.
                node.wait_released(|p| p["releasing"] == true);
                percentiles(&r)
            })
            .collect();
        let mode = if callers == 1 {
            "sequential"
        } else {
            "2 parallel callers"
        };
        println!("{mode}:");
        print_rows(&subjects, &runs);
        let ours = runs[0];
        if callers == 1 {
            sequential_v4_add = ours[0];
        }
        // How much of Strait's time is the agent's (its log), the rest being the plugin's start
        // and the socket.
        let inside = |command: &str| {
            let needle = format!("done command=\"{command}\"");
            let log = node.agent_log();
            let mut took: Vec<Duration> = log
                .lines()
                .filter(|l| l.contains(&needle) && l.contains(&format!("s0c{callers}-")))
                .filter_map(|l| {
                    l.split("elapsed_ms=")
                        .nth(1)?
                        .split(' ')
                        .next()?
                        .parse()
                        .ok()
                })
                .map(|ms: f64| Duration::from_secs_f64(ms / 1e3))
                .collect();
            took.sort();
            took.get(took.len() / 2).copied().unwrap_or_default()
        };
        println!(
            "  strait inside the agent: ADD p50 {:.2}, DEL p50 {:.2}",
            ms(inside("ADD")),
            ms(inside("DEL"))
        );
        // The fastest plugin reference (the floor is no plugin), for ADD and for DEL.
        let plugins = &runs[1..runs.len() - 1];
        let fastest = |i: usize| plugins.iter().map(|f| f[i]).min().expect("references");
        println!(
            "  strait / fastest plugin reference: ADD p50 {:.3}, DEL p50 {:.3}\n",
            ms(ours[0]) / ms(fastest(0)),
            ms(ours[2]) / ms(fastest(2))
        );
    }
    dual_stack(&node, &node_ns, &pods, sequential_v4_add);
    // The bridges stay behind by design; the node namespace goes with the node.
}

/// Dual-stack ADD and DEL, sequential: Strait against the references given both ranges, and
/// against Strait's own IPv4-only ADD p50 (`v4_add`) measured above.
fn dual_stack(node: &Node, node_ns: &Netns, pods: &[TestNetns], v4_add: Duration) {
    let conf: serde_json::Value = serde_json::from_str(&node.conf("1.0.0")).expect("JSON");
    let mut conf = conf;
    conf["name"] = "dual".into();
    let subjects = [
        Subject {
            name: "strait dual-stack",
            plugin: bin("strait"),
            conf: conf.to_string(),
            cni_path: format!("{}:/usr/lib/cni", bin("strait").parent().unwrap().display()),
        },
        reference(
            "bridge dual-stack",
            "bridge",
            serde_json::json!({"bridge": "cniref2", "isGateway": true, "ipMasq": false}),
            &["10.91.0.0/16", "fd00:91::/64"],
            &node.dir,
        ),
        reference(
            "ptp dual-stack",
            "ptp",
            serde_json::json!({"ipMasq": false}),
            &["10.90.0.0/16", "fd00:90::/64"],
            &node.dir,
        ),
    ];
    for s in &subjects {
        measure(s, node_ns, &pods[..2], 1, "dwarm");
    }
    println!("dual-stack, sequential ({PODS} pods for strait, {DUAL_PODS} per reference):");
    let runs: Vec<[Duration; 4]> = subjects
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let count = if i == 0 { PODS } else { DUAL_PODS };
            let r = measure(s, node_ns, &pods[..count], 1, &format!("d{i}"));
            node.wait_released(|p| p["releasing"] == true);
            percentiles(&r)
        })
        .collect();
    print_rows(&subjects, &runs);
    let ours = runs[0];
    let fastest = runs[1..].iter().map(|f| f[0]).min().expect("references");
    println!(
        "  strait dual-stack / fastest dual-stack reference: ADD p50 {:.3}",
        ms(ours[0]) / ms(fastest)
    );
    println!(
        "  strait dual-stack / strait IPv4-only: ADD p50 {:.3}",
        ms(ours[0]) / ms(v4_add)
    );
}
