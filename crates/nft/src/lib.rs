//! Strait's nftables state: one table of family `inet` per concern (today one, `strait-snat`,
//! masquerading pods' traffic that leaves the cluster), each a typed [`Table`] rendered into a
//! script that replaces it whole in one `nft` transaction and read back from `nft -j` to be
//! compared object by object ([`ensure`]). We never list, match and append: the kernel swaps the
//! old table for the new one atomically, so no packet sees half a ruleset, and one concern's
//! change never rebuilds another's table. Everything goes through the [`Nftables`] trait: the
//! `nft` command ([`Nft`]) or, for unit tests, an in-memory ruleset ([`fake`], feature `fake`).

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::process::{Command, Stdio};

use ipnet::IpNet;

#[cfg(any(test, feature = "fake"))]
pub mod fake;
mod model;
mod monitor;
pub use model::{Chain, Hook, Rule, Set, Table};
pub use monitor::Monitor;

/// The masquerade table.
pub const SNAT_TABLE: &str = "strait-snat";
/// The table an older agent kept everything in; removed when found.
const LEGACY_TABLE: &str = "strait";
/// Every `inet` table Strait writes or once wrote. Other tables, whatever their name, are not
/// touched.
const TABLES: [&str; 2] = [SNAT_TABLE, LEGACY_TABLE];

/// Whether a table of family `inet` is one of Strait's.
pub fn is_ours(table: &str) -> bool {
    TABLES.contains(&table)
}

/// What masquerading must do.
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
    #[error("nft's listing of table {table} could not be read: {reason}")]
    Unreadable { table: String, reason: String },
}

fn of_family(nets: &[IpNet], ipv6: bool) -> Vec<IpNet> {
    nets.iter()
        .filter(|n| n.addr().is_ipv6() == ipv6)
        .copied()
        .collect()
}

impl Ruleset {
    /// The masquerade table: per family with sources, a set of them, a set of the cluster's
    /// ranges, and one rule in the postrouting chain.
    pub fn table(&self) -> Table {
        let mut sets = Vec::new();
        let mut rules = Vec::new();
        for ipv6 in [false, true] {
            let tag = if ipv6 { "v6" } else { "v4" };
            let sources = of_family(&self.snat_sources, ipv6);
            if sources.is_empty() {
                continue;
            }
            let (from, unless_to) = (format!("snat_sources_{tag}"), format!("cluster_{tag}"));
            sets.push(Set {
                name: from.clone(),
                ipv6,
                elements: sources,
            });
            sets.push(Set {
                name: unless_to.clone(),
                ipv6,
                elements: of_family(&self.cluster, ipv6),
            });
            rules.push(Rule::Masquerade {
                ipv6,
                from,
                unless_to,
            });
        }
        Table {
            name: SNAT_TABLE.to_string(),
            sets,
            chains: vec![Chain {
                name: "postrouting".into(),
                hook: Some(Hook::NatPostrouting),
                rules,
            }],
            foreign: Vec::new(),
        }
    }
}

/// Strait's tables in the kernel: what the data plane reads and writes of nftables.
pub trait Nftables {
    /// The table of family `inet` called `name`, as the kernel holds it.
    fn read(&mut self, name: &str) -> Result<Held, NftError>;
    /// Replaces `table` whole, in one transaction.
    fn replace(&mut self, table: &Table) -> Result<(), NftError>;
    /// Removes the table called `name`; absent is fine.
    fn delete(&mut self, name: &str) -> Result<(), NftError>;
    /// The names of those of Strait's tables the kernel holds.
    fn ours(&mut self) -> Result<Vec<String>, NftError>;
}

/// The kernel's nftables, through the `nft` command.
#[derive(Debug, Clone, Copy, Default)]
pub struct Nft;

impl Nftables for Nft {
    fn read(&mut self, name: &str) -> Result<Held, NftError> {
        match run(&["-j", "list", "table", "inet", name], None) {
            Ok(out) => Ok(match Table::from_json(name, &out) {
                Ok(table) => Held::Table(table.normalized()),
                Err(reason) => Held::Unreadable(reason),
            }),
            Err(NftError::Refused(msg)) if msg.contains("No such file or directory") => {
                Ok(Held::Missing)
            }
            Err(e) => Err(e),
        }
    }

    fn replace(&mut self, table: &Table) -> Result<(), NftError> {
        run_script(&table.script())
    }

    fn delete(&mut self, name: &str) -> Result<(), NftError> {
        run_script(&format!(
            "table inet {name} {{}}\ndelete table inet {name}\n"
        ))
    }

    fn ours(&mut self) -> Result<Vec<String>, NftError> {
        let out = run(&["-j", "list", "tables", "inet"], None)?;
        let doc: serde_json::Value =
            serde_json::from_str(&out).map_err(|e| NftError::Unreadable {
                table: "(all)".into(),
                reason: e.to_string(),
            })?;
        Ok(doc["nftables"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["table"]["name"].as_str())
            .filter(|name| is_ours(name))
            .map(String::from)
            .collect())
    }
}

/// Removes every table of Strait's (the known names, whether or not they exist: nothing is
/// listed first, so nothing can stop the removal).
pub fn delete_all(nft: &mut (impl Nftables + ?Sized)) -> Result<(), NftError> {
    let mut first_error = None;
    for table in TABLES {
        if let Err(e) = nft.delete(table) {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// A table as the kernel holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Held {
    Missing,
    /// nft printed it in a form that cannot be read (nft 1.0.6 cuts a dormant table's listing
    /// short, for one).
    Unreadable(String),
    /// As read, normalized.
    Table(Table),
}

/// What each of Strait's tables read back as right after Strait last wrote it. A table that
/// reads back so again is taken as written (an nft version may print what it was given in
/// another form): a write is never repeated for nothing, and its own event never starts
/// another.
#[derive(Debug, Clone, Default)]
pub struct Written(BTreeMap<String, Held>);

/// Makes the kernel hold exactly `wanted` of Strait's tables: each one that differs (missing,
/// unreadable, or read back otherwise than after Strait's last write) replaced whole, any other
/// of Strait's (an older agent's) removed. Answers whether anything had to change.
pub fn ensure(
    nft: &mut (impl Nftables + ?Sized),
    wanted: &[Table],
    written: &mut Written,
) -> Result<bool, NftError> {
    let mut changed = false;
    for table in wanted {
        let held = nft.read(&table.name)?;
        let want = Held::Table(table.normalized());
        let as_written = held != Held::Missing && written.0.get(&table.name) == Some(&held);
        if held == want || as_written {
            continue;
        }
        nft.replace(table)?;
        changed = true;
        written.0.insert(table.name.clone(), nft.read(&table.name)?);
    }
    for stray in nft.ours()? {
        if !wanted.iter().any(|t| t.name == stray) {
            nft.delete(&stray)?;
            written.0.remove(&stray);
            changed = true;
        }
    }
    Ok(changed)
}

/// Runs `script` through `nft -f -` as one transaction.
fn run_script(script: &str) -> Result<(), NftError> {
    run(&["-f", "-"], Some(script)).map(drop)
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
        let script = Ruleset {
            snat_sources: nets(&["10.244.0.0/16"]),
            cluster: nets(&["10.244.0.0/16", "10.96.0.0/12"]),
        }
        .table()
        .script();
        assert!(script.starts_with("table inet strait-snat {}\ndelete table inet strait-snat\n"));
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
        let script = Ruleset::default().table().script();
        assert!(!script.contains("masquerade"));
        assert!(script.contains("hook postrouting"));
    }

    #[test]
    fn each_family_gets_its_own_sets() {
        let script = Ruleset {
            snat_sources: nets(&["10.1.0.0/16", "fd00:1::/64"]),
            cluster: nets(&["10.1.0.0/16", "fd00:1::/64"]),
        }
        .table()
        .script();
        assert!(script.contains("set snat_sources_v6"));
        assert!(script.contains("ip6 saddr @snat_sources_v6 ip6 daddr != @cluster_v6"));
    }

    #[test]
    fn strait_owns_its_tables_and_the_older_one_only() {
        assert!(is_ours("strait") && is_ours("strait-snat"));
        assert!(!is_ours("strait-other") && !is_ours("straits") && !is_ours("kube-proxy"));
    }
    fn snat(sources: &[&str]) -> Table {
        Ruleset {
            snat_sources: nets(sources),
            cluster: nets(sources),
        }
        .table()
    }

    #[test]
    fn ensure_writes_what_differs_once_and_removes_strays() {
        let mut nft = fake::FakeNft::default();
        let mut written = Written::default();
        let table = snat(&["10.1.0.0/16"]);
        // Missing: written; then settled: nothing more.
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.get(SNAT_TABLE), Held::Table(table.normalized()));
        assert!(!ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.writes(), 1);
        // A flushed chain, an unreadable listing: replaced.
        let mut flushed = table.normalized();
        flushed.chains[0].rules.clear();
        nft.put(SNAT_TABLE, Held::Table(flushed));
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        nft.put(SNAT_TABLE, Held::Unreadable("cut short".into()));
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.get(SNAT_TABLE), Held::Table(table.normalized()));
        // An older agent's table goes, another tool's stays.
        nft.put(LEGACY_TABLE, Held::Table(snat(&[]).normalized()));
        nft.put("kube-proxy", Held::Unreadable("not ours".into()));
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.names(), ["kube-proxy", SNAT_TABLE]);
        // Towards nothing: every table of Strait's goes.
        assert!(ensure(&mut nft, &[], &mut written).unwrap());
        assert_eq!(nft.names(), ["kube-proxy"]);
    }

    #[test]
    fn a_table_read_back_as_after_the_last_write_counts_as_written() {
        let mut nft = fake::FakeNft::default();
        let mut written = Written::default();
        let table = snat(&["10.1.0.0/16"]);
        // An nft that prints what it was given in another form: the form read right after the
        // write is the one to compare with, so nothing is written again.
        let mut printed = table.normalized();
        printed
            .foreign
            .push("something this nft prints of its own".into());
        nft.reprint(SNAT_TABLE, Held::Table(printed.clone()));
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.get(SNAT_TABLE), Held::Table(printed.clone()));
        assert!(!ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.writes(), 1);
        // Changed by someone else since (its chain flushed): written again.
        let mut flushed = printed;
        flushed.chains[0].rules.clear();
        nft.put(SNAT_TABLE, Held::Table(flushed));
        assert!(ensure(&mut nft, std::slice::from_ref(&table), &mut written).unwrap());
        assert_eq!(nft.writes(), 2);
    }

    #[test]
    fn refused_writes_and_reads_are_errors_and_delete_all_goes_by_name() {
        let mut nft = fake::FakeNft::default();
        nft.refuse_writes(true);
        let e = ensure(&mut nft, &[snat(&["10.1.0.0/16"])], &mut Written::default());
        assert!(matches!(e, Err(NftError::Refused(_))), "{e:?}");
        nft.refuse_writes(false);
        nft.refuse_reads(true);
        let e = ensure(&mut nft, &[snat(&["10.1.0.0/16"])], &mut Written::default());
        assert!(matches!(e, Err(NftError::Refused(_))), "{e:?}");
        // Nothing can be listed: the tables still go, by name.
        nft.put(SNAT_TABLE, Held::Unreadable("x".into()));
        nft.put(LEGACY_TABLE, Held::Unreadable("x".into()));
        nft.put("other", Held::Unreadable("x".into()));
        delete_all(&mut nft).unwrap();
        assert_eq!(nft.names(), ["other"]);
    }
}
