//! What a test must leave on the machine as it found it: the kernel settings a kubelet changes,
//! the host's mounts, links and network namespaces, containers' cgroups, and the processes of
//! Kubernetes, containerd and Strait.

use std::collections::BTreeMap;
use std::fs;

use crate::run_ok;

/// Settings the kubelet writes at start (it "protects kernel defaults" by setting them).
pub const KUBELET_SYSCTLS: [&str; 6] = [
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
];
/// Global settings kube-proxy could change.
const PROXY_SYSCTLS: [&str; 1] = ["net/netfilter/nf_conntrack_max"];
/// Mount points `ip netns add` makes the first time on a machine and keeps by design (the
/// namespaces' own mounts under them are the tests' to remove).
const IPROUTE_KEEPS: [&str; 2] = ["/run/netns", "/var/run/netns"];
/// Process names (as /proc shows them, 15 characters at most) that only our tests start.
const OUR_PROCESSES: [&str; 12] = [
    "containerd",
    "containerd-shim",
    "kubelet",
    "kube-proxy",
    "kube-apiserver",
    "kube-scheduler",
    "kube-controller",
    "etcd",
    "straitd",
    "cluster-dns",
    "connect-proxy",
    "httpd",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MachineState {
    pub sysctls: BTreeMap<String, String>,
    pub mounts: Vec<String>,
    pub links: Vec<String>,
    pub netns: Vec<String>,
    pub cgroups: Vec<String>,
    pub processes: Vec<String>,
}

impl MachineState {
    pub fn capture() -> MachineState {
        let sysctls = KUBELET_SYSCTLS
            .iter()
            .chain(&PROXY_SYSCTLS)
            .filter_map(|k| {
                let v = fs::read_to_string(format!("/proc/sys/{k}")).ok()?;
                Some((k.to_string(), v.trim().to_string()))
            })
            .collect();
        let mounts = sorted(
            fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
                .filter(|m| !IPROUTE_KEEPS.contains(&m.as_str())),
        );
        let links = sorted(
            run_ok("ip", &["-o", "link", "show"])
                .lines()
                .filter_map(|l| {
                    l.split(": ")
                        .nth(1)
                        .map(|n| n.split('@').next().unwrap_or(n).to_string())
                }),
        );
        let netns = sorted(run_ok("ip", &["netns", "list"]).lines().map(str::to_string));
        MachineState {
            sysctls,
            mounts,
            links,
            netns,
            cgroups: sorted(container_cgroups().into_iter()),
            processes: sorted(our_processes().into_iter()),
        }
    }

    /// Writes back the kubelet's kernel settings as they are in `self`.
    pub fn restore_kubelet_sysctls(&self) {
        for key in KUBELET_SYSCTLS {
            if let Some(value) = self.sysctls.get(key) {
                let _ = fs::write(format!("/proc/sys/{key}"), value);
            }
        }
    }
}

fn sorted(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = items.collect();
    v.sort();
    v
}

/// The cgroups containerd's CRI makes (`k8s.io` and one per container) in every hierarchy.
fn container_cgroups() -> Vec<String> {
    let mut out = Vec::new();
    for hierarchy in fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        let parent = hierarchy.path().join("k8s.io");
        if !parent.is_dir() {
            continue;
        }
        out.push(parent.display().to_string());
        for child in fs::read_dir(&parent).into_iter().flatten().flatten() {
            if child.path().is_dir() {
                out.push(child.path().display().to_string());
            }
        }
    }
    out
}

/// Our kinds of processes that run (zombies, which hold nothing, are not counted).
fn our_processes() -> Vec<String> {
    let mut out = Vec::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let state = stat[close + 1..].trim_start().chars().next();
        if state != Some('Z') && OUR_PROCESSES.contains(&comm) {
            out.push(comm.to_string());
        }
    }
    out
}
