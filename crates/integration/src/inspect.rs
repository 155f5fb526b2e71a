//! Looking at what the kernel and the agent hold, from outside: `ip -j`, `nft`, the state
//! directory and straitctl.

use std::fs;

use serde_json::Value;

use crate::netns::TestNetns;
use crate::node::Node;

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

/// What a node holds that Strait could leak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    pub links: Vec<String>,
    pub routes: Vec<String>,
    pub records: Vec<String>,
    pub blocks: Vec<String>,
    pub allocated: u64,
    pub nft: String,
}

impl Snapshot {
    pub fn of(node: &Node) -> Snapshot {
        let nft = node.ns.exec("nft", &["list", "table", "inet", "strait"]);
        let status = node.ctl(&["status"]);
        Snapshot {
            links: link_names(&node.ns),
            routes: strait_routes(&node.ns),
            records: dir_names(&node.state_dir().join("attachments")),
            blocks: dir_names(&node.store_dir().join("ipblocks")),
            allocated: status["networks"]
                .as_array()
                .map(|n| n.iter().map(|n| n["allocated"].as_u64().unwrap_or(0)).sum())
                .unwrap_or(0),
            nft: String::from_utf8_lossy(&nft.stdout).into_owned(),
        }
    }
}
