//! Looking at what the kernel and the agent hold, from outside: `ip -j`, `nft`, the state
//! directory and straitctl.

use std::fs;

use serde_json::Value;

use crate::netns::TestNetns;
use crate::node::Node;

/// The one capability straitd runs with, as a bit of `CapEff` (`CAP_NET_ADMIN`, 12, from
/// linux/capability.h).
pub const ONLY_NET_ADMIN: u64 = 1 << 12;

/// The effective capabilities of process `pid` (its `CapEff` in /proc), if it still runs.
pub fn effective_capabilities(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// `ip -j -n NS ARGS...` parsed.
pub fn ip_json(ns: &TestNetns, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["-j"];
    all.extend_from_slice(args);
    let out = ns.ip(&all);
    if out.trim().is_empty() {
        return Vec::new();
    }
    serde_json::from_str::<Vec<Value>>(&out)
        .unwrap_or_else(|e| panic!("ip -j {args:?}: {e}: {out}"))
}

pub fn link_names(ns: &TestNetns) -> Vec<String> {
    let mut names: Vec<String> = ip_json(ns, &["link", "show"])
        .iter()
        .filter_map(|l| l["ifname"].as_str().map(String::from))
        .collect();
    names.sort();
    names
}

/// Routes Strait installed (protocol 83), as "DST dev DEV".
pub fn strait_routes(ns: &TestNetns) -> Vec<String> {
    let mut routes: Vec<String> = ip_json(ns, &["route", "show", "proto", "83"])
        .iter()
        .map(|r| {
            format!(
                "{} dev {}",
                r["dst"].as_str().unwrap_or("?"),
                r["dev"].as_str().unwrap_or("?")
            )
        })
        .collect();
    routes.sort();
    routes
}

fn dir_names(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The JSON lines of `ip -j ARGS` in `ns`, each with the fields that change without anyone
/// touching the object (counters, ages, the kernel's own flags) removed, sorted.
fn stable(ns: &TestNetns, args: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = ip_json(ns, args)
        .into_iter()
        // The kernel's own routes follow addresses (already compared), some only once duplicate
        // address detection is done.
        .filter(|v| v["protocol"] != "kernel")
        .map(|mut v| {
            if let Some(o) = v.as_object_mut() {
                for volatile in ["stats", "stats64", "used", "updated", "probes", "state"] {
                    o.remove(volatile);
                }
                if let Some(Value::Array(infos)) = o.get_mut("addr_info") {
                    for i in infos.iter_mut().filter_map(Value::as_object_mut) {
                        // Lifetimes count down; duplicate address detection ends by itself.
                        for volatile in ["valid_life_time", "preferred_life_time", "tentative"] {
                            i.remove(volatile);
                        }
                    }
                }
            }
            v.to_string()
        })
        .collect();
    lines.sort();
    lines
}

/// Everything Strait could have left in a namespace: its addresses, its routes in every table and
/// family, its rules in both families, its nexthop objects and its permanent neighbours.
pub fn netns_state(ns: &TestNetns) -> Vec<String> {
    let mut all = Vec::new();
    for args in [
        &["addr", "show"][..],
        &["route", "show", "table", "all"],
        &["-6", "route", "show", "table", "all"],
        &["rule", "show"],
        &["-6", "rule", "show"],
        &["nexthop", "show"],
        &["neigh", "show", "nud", "permanent"],
    ] {
        all.extend(
            stable(ns, args)
                .into_iter()
                .map(|l| format!("{args:?} {l}")),
        );
    }
    all
}

/// What a node holds that Strait could leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<String>,
    pub routes: Vec<String>,
    /// The node's namespace in full ([`netns_state`]) and its forwarding entries.
    pub kernel: Vec<String>,
    pub records: Vec<String>,
    /// The blocks the node holds, as the agent reports them (every store backend), and the
    /// embedded store's block objects (that backend only).
    pub blocks: Vec<String>,
    pub allocated: u64,
    pub nft: String,
}

impl Snapshot {
    /// What `node` holds once the releases its DELs started are done.
    pub fn of(node: &Node) -> Snapshot {
        node.wait_released(|p| p["releasing"] == true);
        let nft = node
            .ns
            .exec("nft", &["list", "table", "inet", "strait-snat"]);
        let fdb = node.ns.exec("bridge", &["fdb", "show"]);
        let status = node.ctl(&["status"]);
        let networks = status["networks"].as_array().cloned().unwrap_or_default();
        let mut blocks: Vec<String> = networks
            .iter()
            .flat_map(|n| n["blocks"].as_array().cloned().unwrap_or_default())
            .filter_map(|b| b.as_str().map(|b| format!("held {b}")))
            .chain(dir_names(&node.store_dir().join("ipblocks")))
            .collect();
        blocks.sort();
        let mut kernel = netns_state(&node.ns);
        kernel.extend(
            String::from_utf8_lossy(&fdb.stdout)
                .lines()
                .map(|l| format!("fdb {l}")),
        );
        Snapshot {
            links: link_names(&node.ns),
            routes: strait_routes(&node.ns),
            kernel,
            records: dir_names(&node.state_dir().join("attachments")),
            blocks,
            allocated: networks
                .iter()
                .map(|n| n["allocated"].as_u64().unwrap_or(0))
                .sum(),
            nft: String::from_utf8_lossy(&nft.stdout).into_owned(),
        }
    }
}
