//! Node-wide preparation at start: IP forwarding on and the nftables table in place. Host veths
//! are never swept here: one without a record belongs to a pod that may still run (see
//! [`crate::recovery`]).

use strait_netlink::NetlinkError;
use strait_nft::{NftError, Ruleset};

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
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

/// Prepares the node.
pub fn prepare(ruleset: &Ruleset) -> Result<(), NodeError> {
    std::fs::write("/proc/sys/net/ipv4/ip_forward", b"1").map_err(NodeError::Forwarding)?;
    strait_nft::apply(&strait_nft::render(ruleset))?;
    Ok(())
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
}
