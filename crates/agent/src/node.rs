//! Node-wide preparation at start: IP forwarding on and the nftables table in place. Host veths
//! are never swept here: one without a record belongs to a pod that may still run (see
//! [`crate::recovery`]).

use std::path::{Path, PathBuf};

use strait_netlink::NetlinkError;
use strait_nft::{NftError, Ruleset};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(
        "enabling IPv4 forwarding in {}: {source}{}",
        path.display(),
        if source.raw_os_error() == Some(libc::EROFS) {
            " (in a container without privileges /proc/sys is read-only: mount the host's \
             /proc/sys/net at SYSCTL_DIR/net and set sysctl_dir to SYSCTL_DIR, as deploy/ does)"
        } else {
            ""
        }
    )]
    Forwarding {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("installing the nftables table: {0}")]
    Nft(#[from] NftError),
    #[error("reading the pods' host interfaces: {0}")]
    Netlink(#[from] NetlinkError),
    #[error("reading the pods' host interfaces: {0}")]
    Dataplane(#[from] strait_dataplane::DataplaneError),
}

/// What the nftables table must do for this configuration.
pub fn snat_ruleset(config: &Config) -> Ruleset {
    let pools = config
        .networks
        .iter()
        .flat_map(|n| n.pools.iter().map(move |p| (n, &p.pool)));
    Ruleset {
        snat_sources: pools
            .clone()
            .filter(|(n, _)| n.snat)
            .map(|(_, p)| p.cidr)
            .collect(),
        cluster: pools
            .map(|(_, p)| p.cidr)
            .chain(config.service_cidrs.iter().copied())
            .collect(),
    }
}

/// Prepares the node: forwarding on, and the nftables table.
pub fn prepare(ruleset: &Ruleset, sysctl_dir: &Path) -> Result<(), NodeError> {
    enable_forwarding(sysctl_dir)?;
    strait_nft::apply(&strait_nft::render(ruleset))?;
    Ok(())
}

/// Turns IPv4 forwarding on, writing only when it is off: a node that has it on already needs no
/// writable sysctls.
fn enable_forwarding(sysctl_dir: &Path) -> Result<(), NodeError> {
    let path = sysctl_dir.join("net/ipv4/ip_forward");
    std::fs::read_to_string(&path)
        .and_then(|on| match on.trim() {
            "1" => Ok(()),
            _ => std::fs::write(&path, b"1"),
        })
        .map_err(|source| NodeError::Forwarding { path, source })
}

#[cfg(test)]
mod tests {
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
    fn forwarding_is_written_only_when_off_and_a_missing_setting_names_its_path() {
        let dir = std::env::temp_dir().join(format!("strait-sysctl-{}", std::process::id()));
        let file = dir.join("net/ipv4/ip_forward");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, "0\n").unwrap();
        enable_forwarding(&dir).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = enable_forwarding(&dir).unwrap_err().to_string();
        assert!(missing.contains("net/ipv4/ip_forward"), "{missing}");
        let read_only = NodeError::Forwarding {
            path: file,
            source: std::io::Error::from_raw_os_error(libc::EROFS),
        };
        assert!(
            read_only.to_string().contains("set sysctl_dir"),
            "{read_only}"
        );
    }
}
