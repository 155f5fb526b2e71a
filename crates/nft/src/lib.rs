//! Strait's nftables state: one table, `inet strait`, rendered from plain data by [`render`] and
//! replaced whole in a single `nft` transaction by [`apply`]. We never list, match and append:
//! the kernel swaps the old table for the new one atomically, so no packet sees half a ruleset.

use std::fmt::Write as _;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use ipnet::IpNet;

mod monitor;
pub use monitor::Monitor;

pub const TABLE: &str = "strait";

/// What the table must do.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    /// Pod ranges whose traffic is masqueraded when it leaves the cluster.
    pub snat_sources: Vec<IpNet>,
    /// Everything inside the cluster (pod pools, service ranges): never masqueraded to.
    pub cluster: Vec<IpNet>,
}

#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("the nft command is not installed (install the nftables package): {0}")]
    Missing(io::Error),
    #[error("running nft: {0}")]
    Io(io::Error),
    #[error("nft refused the ruleset: {0}")]
    Refused(String),
}

fn family_sets(nets: &[IpNet], v6: bool) -> Vec<String> {
    nets.iter()
        .filter(|n| n.addr().is_ipv6() == v6)
        .map(|n| n.trunc().to_string())
        .collect()
}

/// The nft script that replaces the table with `rules` (creating it first so the delete never
/// fails, all in one transaction).
pub fn render(rules: &Ruleset) -> String {
    let mut s =
        format!("table inet {TABLE} {{}}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n");
    let mut chain = String::new();
    for (v6, ip, addr_type) in [(false, "ip", "ipv4_addr"), (true, "ip6", "ipv6_addr")] {
        let tag = if v6 { "v6" } else { "v4" };
        let sources = family_sets(&rules.snat_sources, v6);
        if sources.is_empty() {
            continue;
        }
        let cluster = family_sets(&rules.cluster, v6);
        for (name, elements) in [("snat_sources", &sources), ("cluster", &cluster)] {
            let _ = write!(
                s,
                "  set {name}_{tag} {{\n    type {addr_type}\n    flags interval\n    auto-merge\n"
            );
            if !elements.is_empty() {
                let _ = writeln!(s, "    elements = {{ {} }}", elements.join(", "));
            }
            s.push_str("  }\n");
        }
        let _ = writeln!(
            chain,
            "    {ip} saddr @snat_sources_{tag} {ip} daddr != @cluster_{tag} masquerade fully-random"
        );
    }
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    s.push_str(&chain);
    s.push_str("  }\n}\n");
    s
}

/// Runs `script` through `nft -f -` as one transaction.
pub fn apply(script: &str) -> Result<(), NftError> {
    run(&["-f", "-"], Some(script)).map(drop)
}

/// Removes the table; absent is fine.
pub fn delete() -> Result<(), NftError> {
    apply(&format!(
        "table inet {TABLE} {{}}\ndelete table inet {TABLE}\n"
    ))
}

/// The table as `nft list` prints it, or `None` when it does not exist.
pub fn list() -> Result<Option<String>, NftError> {
    match run(&["list", "table", "inet", TABLE], None) {
        Ok(out) => Ok(Some(out)),
        Err(NftError::Refused(msg)) if msg.contains("No such file or directory") => Ok(None),
        Err(e) => Err(e),
    }
}

fn run(args: &[&str], stdin: Option<&str>) -> Result<String, NftError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                NftError::Missing(e)
            } else {
                NftError::Io(e)
            }
        })?;
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("piped");
        pipe.write_all(input.as_bytes()).map_err(NftError::Io)?;
    }
    let out = child.wait_with_output().map_err(NftError::Io)?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(NftError::Refused(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn masquerades_pods_leaving_the_cluster() {
        let script = render(&Ruleset {
            snat_sources: nets(&["10.244.0.0/16"]),
            cluster: nets(&["10.244.0.0/16", "10.96.0.0/12"]),
        });
        assert!(script.starts_with("table inet strait {}\ndelete table inet strait\n"));
        assert!(script.contains("elements = { 10.244.0.0/16, 10.96.0.0/12 }"));
        assert!(
            script.contains(
                "ip saddr @snat_sources_v4 ip daddr != @cluster_v4 masquerade fully-random"
            )
        );
        assert!(!script.contains("ip6"));
    }

    #[test]
    fn no_sources_means_an_empty_chain() {
        let script = render(&Ruleset::default());
        assert!(!script.contains("masquerade"));
        assert!(script.contains("hook postrouting"));
    }

    #[test]
    fn each_family_gets_its_own_sets() {
        let script = render(&Ruleset {
            snat_sources: nets(&["10.1.0.0/16", "fd00:1::/64"]),
            cluster: nets(&["10.1.0.0/16", "fd00:1::/64"]),
        });
        assert!(script.contains("set snat_sources_v6"));
        assert!(script.contains("ip6 saddr @snat_sources_v6 ip6 daddr != @cluster_v6"));
    }
}
