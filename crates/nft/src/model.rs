//! nftables as data: a table of family `inet` with its address sets and chains, rendered into
//! the script that replaces it whole ([`Table::script`]) and read back from `nft -j`
//! ([`Table::from_json`]), so that what the kernel holds is compared with what it must hold
//! object by object, not as text.

use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Subnets, Ipv6Subnets};
use serde_json::Value;

/// One of Strait's tables, all of family `inet`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub name: String,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
    /// Read back only: what the table holds that Strait never writes (table flags, maps, sets
    /// of other types, elements with comments or counters, other objects), described, so that
    /// the table differs from any Strait wants and is replaced.
    pub foreign: Vec<String>,
}

/// A set of address ranges of one family (`flags interval`, merged as they are added).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: String,
    pub ipv6: bool,
    pub elements: Vec<IpNet>,
}

/// A chain, attached to a hook or not, with its rules in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: String,
    pub hook: Option<Hook>,
    pub rules: Vec<Rule>,
}

/// Where a base chain is attached (policy accept).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `type nat hook postrouting priority srcnat` (100).
    NatPostrouting,
}

/// A rule Strait writes, or (read back) one it does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// `ip[6] saddr @from ip[6] daddr != @unless_to masquerade fully-random`.
    Masquerade {
        ipv6: bool,
        from: String,
        unless_to: String,
    },
    /// A rule of another shape, as nft's JSON describes it: never in a table Strait wants.
    Foreign(String),
}

impl Hook {
    fn script(self) -> &'static str {
        match self {
            Hook::NatPostrouting => "type nat hook postrouting priority srcnat; policy accept;",
        }
    }
}

fn protocol(ipv6: bool) -> &'static str {
    if ipv6 { "ip6" } else { "ip" }
}

impl Rule {
    fn script(&self) -> String {
        match self {
            Rule::Masquerade {
                ipv6,
                from,
                unless_to,
            } => {
                let ip = protocol(*ipv6);
                format!("{ip} saddr @{from} {ip} daddr != @{unless_to} masquerade fully-random")
            }
            Rule::Foreign(description) => format!("# {description}"),
        }
    }
}

/// Ranges as the kernel keeps them in an interval set: host bits cleared, overlapping and
/// adjacent ranges merged, in order.
fn merged(elements: &[IpNet]) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&elements.iter().map(IpNet::trunc).collect());
    out.sort();
    out
}

impl Table {
    /// The same table as the kernel keeps it: each set's elements merged, sets and chains by
    /// name.
    pub fn normalized(&self) -> Table {
        let mut t = self.clone();
        for set in &mut t.sets {
            set.elements = merged(&set.elements);
        }
        t.sets.sort_by(|a, b| a.name.cmp(&b.name));
        t.chains.sort_by(|a, b| a.name.cmp(&b.name));
        t.foreign.sort();
        t
    }

    /// The nft script that replaces the table with this one in one transaction (creating it
    /// first, so that the delete never fails).
    pub fn script(&self) -> String {
        let name = &self.name;
        let mut s =
            format!("table inet {name} {{}}\ndelete table inet {name}\ntable inet {name} {{\n");
        for set in &self.sets {
            let kind = if set.ipv6 { "ipv6_addr" } else { "ipv4_addr" };
            s.push_str(&format!(
                "  set {} {{\n    type {kind}\n    flags interval\n    auto-merge\n",
                set.name
            ));
            if !set.elements.is_empty() {
                let elements: Vec<String> =
                    set.elements.iter().map(|e| e.trunc().to_string()).collect();
                s.push_str(&format!("    elements = {{ {} }}\n", elements.join(", ")));
            }
            s.push_str("  }\n");
        }
        for chain in &self.chains {
            s.push_str(&format!("  chain {} {{\n", chain.name));
            if let Some(hook) = chain.hook {
                s.push_str(&format!("    {}\n", hook.script()));
            }
            for rule in &chain.rules {
                s.push_str(&format!("    {}\n", rule.script()));
            }
            s.push_str("  }\n");
        }
        s.push_str("}\n");
        s
    }

    /// The table as `nft -j list table inet NAME` prints it. Whatever Strait does not write (a
    /// hook, rule, set, element or object of another kind) is kept as a description, so that
    /// the table differs from any Strait wants; only a listing that is not JSON is an error.
    pub fn from_json(name: &str, json: &str) -> Result<Table, String> {
        let doc: Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
        let objects = doc["nftables"]
            .as_array()
            .ok_or("no \"nftables\" array in nft's answer")?;
        let mut table = Table {
            name: name.to_string(),
            sets: Vec::new(),
            chains: Vec::new(),
            foreign: Vec::new(),
        };
        for object in objects {
            let described = || object.to_string();
            if let Some(t) = object.get("table") {
                if t.get("flags").is_some() {
                    table.foreign.push(described());
                }
            } else if let Some(set) = object.get("set") {
                match set_from_json(set) {
                    Some(s) => table.sets.push(s),
                    None => table.foreign.push(described()),
                }
            } else if let Some(chain) = object.get("chain") {
                match chain["name"].as_str() {
                    Some(name) => table.chains.push(Chain {
                        name: name.to_string(),
                        hook: hook_from_json(chain),
                        rules: Vec::new(),
                    }),
                    None => table.foreign.push(described()),
                }
            } else if let Some(rule) = object.get("rule") {
                let chain = rule["chain"].as_str().unwrap_or_default();
                match table.chains.iter_mut().find(|c| c.name == chain) {
                    Some(c) => c.rules.push(rule_from_json(rule)),
                    None => table.foreign.push(described()),
                }
            } else if object.get("metainfo").is_none() {
                table.foreign.push(described());
            }
        }
        Ok(table)
    }
}

/// An address set as Strait writes them (interval flag only, addresses, prefixes and ranges
/// without comments or counters), or `None`.
fn set_from_json(set: &Value) -> Option<Set> {
    let ipv6 = match set["type"].as_str()? {
        "ipv4_addr" => false,
        "ipv6_addr" => true,
        _ => return None,
    };
    if set["flags"] != serde_json::json!(["interval"]) {
        return None;
    }
    let mut elements = Vec::new();
    for e in set["elem"].as_array().into_iter().flatten() {
        elements.extend(element_from_json(e)?);
    }
    Some(Set {
        name: set["name"].as_str()?.to_string(),
        ipv6,
        elements,
    })
}

/// One element of an address set as prefixes: an address, a prefix, or a range (what merged
/// prefixes become when no single prefix covers them).
fn element_from_json(e: &Value) -> Option<Vec<IpNet>> {
    let addr = |v: &Value| v.as_str()?.parse::<IpAddr>().ok();
    if let Some(a) = addr(e) {
        return Some(vec![IpNet::from(a)]);
    }
    if let Some(prefix) = e.get("prefix") {
        let (a, len) = (addr(&prefix["addr"])?, prefix["len"].as_u64()?);
        return IpNet::new(a, u8::try_from(len).ok()?).ok().map(|n| vec![n]);
    }
    let range = e.get("range")?.as_array()?;
    match (addr(range.first()?)?, addr(range.get(1)?)?) {
        (IpAddr::V4(start), IpAddr::V4(end)) => {
            Some(Ipv4Subnets::new(start, end, 0).map(IpNet::V4).collect())
        }
        (IpAddr::V6(start), IpAddr::V6(end)) => {
            Some(Ipv6Subnets::new(start, end, 0).map(IpNet::V6).collect())
        }
        _ => None,
    }
}

fn hook_from_json(chain: &Value) -> Option<Hook> {
    let nat_postrouting = chain["type"] == "nat"
        && chain["hook"] == "postrouting"
        && chain["prio"] == 100
        && chain["policy"] == "accept";
    nat_postrouting.then_some(Hook::NatPostrouting)
}

/// A rule read back: one Strait writes, or a foreign one.
fn rule_from_json(rule: &Value) -> Rule {
    let expr = rule["expr"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    let matched = |e: &Value, op: &str, field: &str| -> Option<(bool, String)> {
        let m = e.get("match")?;
        let payload = &m["left"]["payload"];
        let ipv6 = match payload["protocol"].as_str()? {
            "ip" => false,
            "ip6" => true,
            _ => return None,
        };
        let set = m["right"].as_str()?.strip_prefix('@')?;
        (m["op"] == op && payload["field"] == field).then(|| (ipv6, set.to_string()))
    };
    if let [from, to, masquerade] = expr
        && let (Some((ipv6, from)), Some((ipv6_to, unless_to))) =
            (matched(from, "==", "saddr"), matched(to, "!=", "daddr"))
        && ipv6 == ipv6_to
        && masquerade["masquerade"]["flags"] == "fully-random"
    {
        return Rule::Masquerade {
            ipv6,
            from,
            unless_to,
        };
    }
    Rule::Foreign(rule["expr"].to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    fn table() -> Table {
        Table {
            name: "strait-snat".into(),
            sets: vec![Set {
                name: "snat_sources_v4".into(),
                ipv6: false,
                elements: nets(&["10.244.0.0/16", "10.1.2.3/32"]),
            }],
            chains: vec![Chain {
                name: "postrouting".into(),
                hook: Some(Hook::NatPostrouting),
                rules: vec![Rule::Masquerade {
                    ipv6: false,
                    from: "snat_sources_v4".into(),
                    unless_to: "cluster_v4".into(),
                }],
            }],
            foreign: Vec::new(),
        }
    }

    /// What nft 1.0.6 prints for [`table`] (metainfo and handles included).
    const LISTED: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
        {"table": {"family": "inet", "name": "strait-snat", "handle": 2}},
        {"set": {"family": "inet", "name": "snat_sources_v4", "table": "strait-snat", "type": "ipv4_addr", "handle": 2, "flags": ["interval"],
                 "elem": ["10.1.2.3", {"prefix": {"addr": "10.244.0.0", "len": 16}}]}},
        {"chain": {"family": "inet", "table": "strait-snat", "name": "postrouting", "handle": 1, "type": "nat", "hook": "postrouting", "prio": 100, "policy": "accept"}},
        {"rule": {"family": "inet", "table": "strait-snat", "chain": "postrouting", "handle": 6, "expr": [
            {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@snat_sources_v4"}},
            {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "@cluster_v4"}},
            {"masquerade": {"flags": "fully-random"}}]}}]}"#;

    #[test]
    fn a_table_reads_back_as_the_one_written() {
        let read = Table::from_json("strait-snat", LISTED).unwrap();
        assert_eq!(read.normalized(), table().normalized());
    }

    #[test]
    fn what_differs_reads_back_as_different() {
        let cases = [
            ("\"prio\": 100", "\"prio\": 0"),
            ("\"op\": \"!=\"", "\"op\": \"==\""),
            ("\"len\": 16", "\"len\": 17"),
            ("\"fully-random\"", "\"persistent\""),
        ];
        for (from, to) in cases {
            let read = Table::from_json("strait-snat", &LISTED.replace(from, to)).unwrap();
            assert_ne!(read.normalized(), table().normalized(), "{to}");
        }
        assert!(Table::from_json("strait-snat", "{}").is_err());
        // What Strait never writes reads back as foreign, never as an error: a dormant table,
        // an element with a comment, a set of another type, a map.
        let foreign = [
            (
                r#"{"table": {"family": "inet", "name": "strait-snat", "handle": 2}}"#,
                r#"{"table": {"family": "inet", "name": "strait-snat", "handle": 2, "flags": "dormant"}}"#,
            ),
            (
                r#""10.1.2.3""#,
                r#"{"elem": {"val": "10.1.2.3", "comment": "x"}}"#,
            ),
            (r#""type": "ipv4_addr""#, r#""type": "inet_service""#),
            (
                r#"{"metainfo""#,
                r#"{"map": {"family": "inet", "name": "m", "table": "strait-snat"}}, {"metainfo""#,
            ),
        ];
        for (from, to) in foreign {
            let read = Table::from_json("strait-snat", &LISTED.replace(from, to)).unwrap();
            assert_eq!(read.foreign.len(), 1, "{to}");
            assert_ne!(read.normalized(), table().normalized(), "{to}");
        }
    }

    #[test]
    fn the_script_replaces_the_table_whole() {
        let script = table().script();
        assert!(script.starts_with("table inet strait-snat {}\ndelete table inet strait-snat\n"));
        assert!(script.contains("elements = { 10.244.0.0/16, 10.1.2.3/32 }"));
        assert!(script.contains("type nat hook postrouting priority srcnat; policy accept;"));
        assert!(
            script.contains(
                "ip saddr @snat_sources_v4 ip daddr != @cluster_v4 masquerade fully-random"
            )
        );
    }

    #[test]
    fn adjacent_ranges_merged_into_a_range_read_back_as_the_same_set() {
        let mut t = table();
        t.sets[0].elements = nets(&[
            "10.244.0.0/16",
            "10.245.0.0/16",
            "10.246.0.0/16",
            "10.1.2.3/32",
        ]);
        let listed = LISTED.replace(
            r#"{"prefix": {"addr": "10.244.0.0", "len": 16}}"#,
            r#"{"range": ["10.244.0.0", "10.246.255.255"]}"#,
        );
        let read = Table::from_json("strait-snat", &listed).unwrap();
        assert_eq!(read.normalized(), t.normalized());
    }

    #[test]
    fn overlapping_elements_compare_as_the_kernel_merges_them() {
        let mut t = table();
        t.sets[0].elements = nets(&["10.244.0.0/16", "10.244.1.0/24", "10.1.2.3/32"]);
        assert_eq!(t.normalized(), table().normalized());
    }
}
