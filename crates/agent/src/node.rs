//! Node-wide preparation at start: IP forwarding on and the nftables tables in place. Host veths
//! are never swept here: one without a record belongs to a pod that may still run (see
//! [`crate::recovery`]).

use std::path::Path;

use strait_nft::{Nftables, Ruleset};

use crate::config::Config;
use crate::error::AgentError;

/// What the masquerade table must do for this configuration.
pub fn snat_ruleset(config: &Config) -> Ruleset {
    let pools = config
        .networks
        .iter()
        .flat_map(|n| n.pools.iter().map(move |p| (n, &p.pool)));
    Ruleset {
        snat_sources: pools
            .clone()
            .filter(|(n, p)| match p.cidr.addr().is_ipv6() {
                false => n.snat,
                true => n.snat6,
            })
            .map(|(_, p)| p.cidr)
            .collect(),
        cluster: pools
            .map(|(_, p)| p.cidr)
            .chain(config.service_cidrs.iter().copied())
            .collect(),
    }
}

/// Whether any network has an IPv6 pool.
pub fn uses_ipv6(config: &Config) -> bool {
    config
        .networks
        .iter()
        .flat_map(|n| &n.pools)
        .any(|p| p.pool.cidr.addr().is_ipv6())
}

/// Prepares the node: forwarding on (IPv6's too when `ipv6_underlay` names the underlay device
/// of a node with IPv6 pools), and the nftables tables (an older agent's removed).
pub fn prepare(
    nft: &mut impl Nftables,
    ruleset: &Ruleset,
    sysctl_dir: &Path,
    ipv6_underlay: Option<&str>,
) -> Result<(), AgentError> {
    enable_forwarding(sysctl_dir, ipv6_underlay)?;
    strait_nft::ensure(nft, &[ruleset.table()], &mut strait_nft::Written::default())
        .map_err(AgentError::Nft)?;
    Ok(())
}

/// Turns forwarding on, writing only what differs: a node that has it on already needs no
/// writable sysctls. For IPv6 the underlay first keeps accepting router advertisements while
/// forwarding (`accept_ra` 1 becomes 2), so the node keeps a default route learnt from them;
/// no other interface does (a pod's advertisements must never reach the node's routes).
fn enable_forwarding(sysctl_dir: &Path, ipv6_underlay: Option<&str>) -> Result<(), AgentError> {
    ensure(sysctl_dir, "net/ipv4/ip_forward", |_| Some("1"))?;
    if let Some(device) = ipv6_underlay {
        ensure(
            sysctl_dir,
            &format!("net/ipv6/conf/{device}/accept_ra"),
            |now| (now == "1").then_some("2"),
        )?;
        ensure(sysctl_dir, "net/ipv6/conf/all/forwarding", |_| Some("1"))?;
    }
    Ok(())
}

/// Makes a pod's host veth ignore router advertisements: a node whose interfaces accept them
/// while forwarding (`accept_ra` 2 by default, as some IPv6 set-ups have it) would otherwise
/// take its routes from a pod.
pub fn refuse_router_advertisements(sysctl_dir: &Path, veth: &str) -> Result<(), AgentError> {
    ensure(
        sysctl_dir,
        &format!("net/ipv6/conf/{veth}/accept_ra"),
        |_| Some("0"),
    )
}

/// Writes the setting at `relative` when `wanted(current value)` asks for another value.
fn ensure(
    sysctl_dir: &Path,
    relative: &str,
    wanted: impl Fn(&str) -> Option<&'static str>,
) -> Result<(), AgentError> {
    let path = sysctl_dir.join(relative);
    std::fs::read_to_string(&path)
        .and_then(|now| match wanted(now.trim()) {
            Some(value) if value != now.trim() => std::fs::write(&path, value),
            _ => Ok(()),
        })
        .map_err(|source| AgentError::Sysctl { path, source })
}

#[cfg(test)]
mod tests {
    use ipnet::IpNet;

    use super::*;

    #[test]
    fn only_snat_networks_are_sources_but_all_are_cluster() {
        let config = Config::parse(
            r#"
            service_cidrs = ["10.96.0.0/12"]
            [[network]]
            name = "a"
            [[network.pool]]
            cidr = "10.244.0.0/16"
            [[network]]
            name = "b"
            vni = 4097
            snat = false
            [[network.pool]]
            cidr = "10.245.0.0/16"
            "#,
            || Some("n".into()),
        )
        .unwrap();
        let r = snat_ruleset(&config);
        assert_eq!(r.snat_sources, vec!["10.244.0.0/16".parse().unwrap()]);
        assert_eq!(r.cluster.len(), 3);
    }

    #[test]
    fn ipv6_masquerade_has_its_own_switch_and_follows_snat_when_unset() {
        let ruleset = |network: &str| {
            let config = Config::parse(
                &format!(
                    "[[network]]\nname = \"a\"\n{network}\n[[network.pool]]\n\
                     cidr = \"10.244.0.0/16\"\n[[network.pool]]\ncidr = \"fd00:1::/56\""
                ),
                || Some("n".into()),
            )
            .unwrap();
            snat_ruleset(&config).snat_sources
        };
        let v4: IpNet = "10.244.0.0/16".parse().unwrap();
        let v6: IpNet = "fd00:1::/56".parse().unwrap();
        assert_eq!(ruleset(""), [v4, v6]);
        assert_eq!(ruleset("snat6 = false"), [v4]);
        assert_eq!(ruleset("snat = false"), Vec::<IpNet>::new());
        assert_eq!(ruleset("snat = false\nsnat6 = true"), [v6]);
    }

    #[test]
    fn forwarding_is_written_only_when_off_and_a_missing_setting_names_its_path() {
        let dir = std::env::temp_dir().join(format!("strait-sysctl-{}", std::process::id()));
        let file = dir.join("net/ipv4/ip_forward");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "0\n").unwrap();
        enable_forwarding(&dir, None).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
        // IPv6: the underlay keeps its router advertisements, a setting other than 1 is kept.
        let setting = |s: &str| dir.join("net/ipv6/conf").join(s);
        for (device, accept_ra) in [("eth0", "1\n"), ("all", "1\n"), ("eth1", "0\n")] {
            std::fs::create_dir_all(setting(device)).unwrap();
            std::fs::write(setting(device).join("accept_ra"), accept_ra).unwrap();
        }
        std::fs::write(setting("all/forwarding"), "0\n").unwrap();
        enable_forwarding(&dir, Some("eth0")).unwrap();
        enable_forwarding(&dir, Some("eth1")).unwrap();
        let read = |s: &str| std::fs::read_to_string(setting(s)).unwrap();
        assert_eq!(
            [
                read("eth0/accept_ra"),
                read("eth1/accept_ra"),
                read("all/accept_ra")
            ],
            ["2", "0\n", "1\n"]
        );
        assert_eq!(read("all/forwarding"), "1");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = enable_forwarding(&dir, None).unwrap_err().to_string();
        assert!(missing.contains("net/ipv4/ip_forward"), "{missing}");
        let read_only = AgentError::Sysctl {
            path: file,
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        assert!(
            read_only.to_string().contains("set sysctl_dir"),
            "{read_only}"
        );
    }
}
