//! straitd's configuration file (TOML), and its validation into the networks the agent serves.
//! Every refusal names the field and says what would be right.

use std::path::{Path, PathBuf};

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;
use strait_dataplane::overlay::{Mode, family_name, vxlan_overhead};
use strait_ipam::Pool;

use crate::error::AgentError;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node's name in the cluster store; `$NODE_NAME`, else the hostname, when absent.
    pub node_name: Option<String>,
    /// The node's underlay address: VXLAN's outer source (over IPv4), routed IPv4 pools' next
    /// hop for peers. The address of the default route's device when absent.
    pub node_address: Option<Ipv4Addr>,
    /// The node's IPv6 address on the same device: routed IPv6 pools' next hop for peers,
    /// VXLAN's outer source over IPv6. The device's first global address that is neither
    /// temporary nor deprecated when absent.
    pub node_address6: Option<Ipv6Addr>,
    /// The underlay family VXLAN runs over: `ipv4` (the default, 50 bytes of overhead) or
    /// `ipv6` (between the nodes' IPv6 addresses, 70 bytes). Every node of a cluster must agree.
    #[serde(default)]
    pub vxlan_underlay: UnderlayFamily,
    /// Where /metrics, /healthz and /readyz are served; `""` serves none.
    #[serde(default = "default_metrics_address")]
    pub metrics_address: String,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Where the node's kernel settings are read and written (`net/ipv4/ip_forward`, and for
    /// IPv6 pools `net/ipv6/conf/all/forwarding`, the underlay's `accept_ra` and each pod's host
    /// veth's).
    #[serde(default = "default_sysctl_dir")]
    pub sysctl_dir: PathBuf,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cni: CniConfig,
    /// Service ranges: never masqueraded to.
    #[serde(default)]
    pub service_cidrs: Vec<IpNet>,
    /// Seconds a block of this node's must have been empty before it goes back to its pool (the
    /// block holding a VTEP stays); 0 keeps empty blocks.
    #[serde(default = "default_empty_block_grace")]
    pub empty_block_grace: u32,
    /// Seconds during which an address a namespace freed cannot be asked for (as a fixed
    /// address) by another namespace.
    #[serde(default = "default_freed_address_hold")]
    pub freed_address_hold: u32,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
}

/// An underlay address family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnderlayFamily {
    #[default]
    Ipv4,
    Ipv6,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// Files in a directory: one machine only.
    Embedded { path: PathBuf },
    /// The Kubernetes API: pools, blocks and node records as custom resources (a StraitNode is
    /// owned by its Node). Without `kubeconfig`, the pod's service account (or $KUBECONFIG).
    Kubernetes {
        kubeconfig: Option<PathBuf>,
        /// Seconds a pod must have been gone from the API before its address is released
        /// without a CNI DEL (after a crash, or a runtime that lost track of it).
        #[serde(default = "default_orphan_grace")]
        orphan_grace: u32,
        /// Seconds a Node must have been gone from the API, with every pod bound to it, before
        /// the other nodes take back its address blocks.
        #[serde(default = "default_node_grace")]
        node_grace: u32,
    },
    /// etcd v3: a node's record lives on a lease, so a dead node leaves by itself.
    Etcd {
        endpoints: Vec<String>,
        #[serde(default = "default_etcd_prefix")]
        prefix: String,
        /// Seconds a dead node's record outlives it.
        #[serde(default = "default_lease_ttl")]
        lease_ttl: u32,
    },
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig::Embedded {
            path: PathBuf::from("/var/lib/strait/store"),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CniConfig {
    /// Where to write the conflist once ready; `""` to not write one.
    #[serde(default = "default_conf_dir")]
    pub conf_dir: PathBuf,
    #[serde(default = "default_conf_file")]
    pub conf_file: String,
    /// The conflist's cniVersion. 1.0.0 suits runtimes and reference plugins of today.
    #[serde(default = "default_cni_version")]
    pub cni_version: String,
    /// Which network the conflist attaches pods to; the first one when absent.
    pub network: Option<String>,
    /// Plugins chained after strait in the conflist, e.g. `[{ type = "portmap", capabilities = { portMappings = true } }]`.
    #[serde(default)]
    pub chain: Vec<toml::Table>,
}

impl Default for CniConfig {
    fn default() -> Self {
        CniConfig {
            conf_dir: default_conf_dir(),
            conf_file: default_conf_file(),
            cni_version: default_cni_version(),
            network: None,
            chain: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    #[serde(rename = "pool")]
    pub pools: Vec<PoolConfig>,
    /// The pods' MTU; the underlay's (minus 50 when a pool uses VXLAN) when absent.
    pub mtu: Option<u32>,
    /// The VXLAN network identifier; one per network.
    #[serde(default = "default_vni")]
    pub vni: u32,
    /// How the pools reach other nodes unless a pool says otherwise: `vxlan` or `routed`.
    #[serde(default)]
    pub mode: Mode,
    /// Masquerade IPv4 traffic from this network's pods that leaves the cluster.
    #[serde(default = "yes")]
    pub snat: bool,
    /// Masquerade IPv6 traffic from this network's pods that leaves the cluster; as `snat`
    /// when absent. Off where the pools are globally routed.
    pub snat6: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name in the cluster store; `<network>-v4`/`-v6` when absent.
    pub name: Option<String>,
    pub cidr: IpNet,
    /// The prefix length of the pool's blocks: /26 (64 addresses) for IPv4 and /122 (64
    /// addresses) for IPv6 when absent.
    pub block_prefix: Option<u8>,
    /// Overrides the network's mode for this pool.
    pub mode: Option<Mode>,
    /// Whether pods may ask for a fixed address of this pool (`strait.io/ip-address`), where
    /// their namespace allows the pool. Off by default.
    #[serde(default)]
    pub fixed_addresses: bool,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/strait")
}

fn default_sysctl_dir() -> PathBuf {
    PathBuf::from("/proc/sys")
}
fn default_socket() -> PathBuf {
    PathBuf::from(strait_rpc::DEFAULT_SOCKET)
}
fn default_conf_dir() -> PathBuf {
    PathBuf::from("/etc/cni/net.d")
}
fn default_conf_file() -> String {
    "10-strait.conflist".to_string()
}
fn default_cni_version() -> String {
    "1.0.0".to_string()
}
fn default_vni() -> u32 {
    4096
}
fn default_metrics_address() -> String {
    "127.0.0.1:9462".to_string()
}
fn default_etcd_prefix() -> String {
    "/strait".to_string()
}
fn default_lease_ttl() -> u32 {
    15
}
fn default_empty_block_grace() -> u32 {
    600
}
fn default_freed_address_hold() -> u32 {
    300
}
/// Blocks of 64 addresses, as Calico's.
fn default_block_prefix(cidr: &IpNet) -> u8 {
    match cidr {
        IpNet::V4(_) => 26,
        IpNet::V6(_) => 122,
    }
}
fn yes() -> bool {
    true
}

/// A network as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub pools: Vec<NetworkPool>,
    /// As configured; the effective MTU also depends on the underlay.
    pub mtu: Option<u32>,
    pub vni: u32,
    /// Masquerade IPv4 traffic leaving the cluster.
    pub snat: bool,
    /// Masquerade IPv6 traffic leaving the cluster.
    pub snat6: bool,
    /// What VXLAN takes from the underlay's MTU (by the underlay family it runs over).
    pub vxlan_overhead: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPool {
    pub pool: Pool,
    pub mode: Mode,
    pub fixed_addresses: bool,
}

impl Network {
    /// Does any pool of the network encapsulate?
    pub fn uses_vxlan(&self) -> bool {
        self.pools.iter().any(|p| p.mode == Mode::Vxlan)
    }

    /// What encapsulation takes from the underlay's MTU.
    pub fn overhead(&self) -> u32 {
        if self.uses_vxlan() {
            self.vxlan_overhead
        } else {
            0
        }
    }

    /// The pods' MTU on an underlay of `underlay_mtu`.
    pub fn effective_mtu(&self, underlay_mtu: u32) -> u32 {
        self.mtu
            .unwrap_or(underlay_mtu.saturating_sub(self.overhead()))
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub node_address: Option<Ipv4Addr>,
    pub node_address6: Option<Ipv6Addr>,
    pub vxlan_underlay: UnderlayFamily,
    pub metrics_address: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub sysctl_dir: PathBuf,
    pub store: StoreConfig,
    pub cni: CniConfig,
    pub service_cidrs: Vec<IpNet>,
    pub empty_block_grace: u32,
    pub freed_address_hold: u32,
    pub networks: Vec<Network>,
}

/// The smallest MTU a link carrying IPv6 may have (RFC 8200).
const IPV6_MIN_MTU: u32 = 1280;

/// Ranges no pool may touch, and why.
const RESERVED: [(&str, &str); 9] = [
    ("0.0.0.0/8", "which means \"this network\""),
    ("127.0.0.0/8", "the loopback range"),
    (
        "169.254.0.0/16",
        "the link-local range (pods' gateway is 169.254.1.1)",
    ),
    ("224.0.0.0/4", "the multicast range"),
    ("240.0.0.0/4", "the reserved range"),
    ("::/127", "the unspecified and loopback addresses"),
    ("::ffff:0:0/96", "the IPv4-mapped range"),
    (
        "fe80::/10",
        "the link-local range (pods' gateway is fe80::1)",
    ),
    ("ff00::/8", "the multicast range"),
];

/// Whether two ranges share an address.
fn overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

const MIN_MTU: u32 = 576;
const MAX_MTU: u32 = 65_535;
const MAX_VNI: u32 = (1 << 24) - 1;

impl Config {
    pub fn load(path: &Path) -> Result<Config, AgentError> {
        let err = |reason: String| AgentError::Config {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let default_name = || std::env::var("NODE_NAME").ok().or_else(read_hostname);
        Config::parse(&text, default_name).map_err(err)
    }

    /// Parses and validates a configuration; `default_name` supplies the node name when the
    /// file does not.
    pub fn parse(text: &str, default_name: impl Fn() -> Option<String>) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let node_name = match file.node_name {
            Some(n) => n,
            None => default_name()
                .ok_or("node_name is not set, nor is $NODE_NAME, and the hostname is unreadable")?,
        };
        strait_store::validate_name(&node_name).map_err(|e| format!("node_name: {e}"))?;
        if file.networks.is_empty() {
            return Err(
                "no [[network]] is configured; add one with at least one [[network.pool]]".into(),
            );
        }
        let mut networks = Vec::new();
        let vxlan_overhead = vxlan_overhead(file.vxlan_underlay == UnderlayFamily::Ipv6);
        for n in &file.networks {
            networks.push(validate_network(n, vxlan_overhead)?);
        }
        let mut names: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("network {:?} is configured twice", w[0]));
        }
        Pool::check_disjoint(
            networks
                .iter()
                .flat_map(|n| n.pools.iter().map(|p| &p.pool)),
        )
        .map_err(|e| e.to_string())?;
        let mut pool_names: Vec<&str> = networks
            .iter()
            .flat_map(|n| n.pools.iter().map(|p| p.pool.name.as_str()))
            .collect();
        pool_names.sort();
        if let Some(w) = pool_names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "two pools are named {:?} (a pool's name defaults to <network>-v4 or -v6, in lower case): \
                 set \"name\" on one of them",
                w[0]
            ));
        }
        for service in &file.service_cidrs {
            if service.addr() != service.network() {
                return Err(format!(
                    "service_cidrs: {service} has host bits set; did you mean {}?",
                    service.trunc()
                ));
            }
            for n in &networks {
                if let Some(p) = n.pools.iter().find(|p| overlap(&p.pool.cidr, service)) {
                    return Err(format!(
                        "network {:?}: pool {} overlaps the service range {service}: pods and \
                         Services need ranges of their own",
                        n.name, p.pool.cidr
                    ));
                }
            }
        }
        if file.empty_block_grace != 0 && file.empty_block_grace < file.freed_address_hold {
            return Err(format!(
                "empty_block_grace ({} s) is shorter than freed_address_hold ({} s): a freed \
                 address would go back to the pool, where any node hands it out, before its hold \
                 ends; make empty_block_grace at least freed_address_hold (or 0)",
                file.empty_block_grace, file.freed_address_hold
            ));
        }
        if !file.metrics_address.is_empty()
            && file
                .metrics_address
                .parse::<std::net::SocketAddr>()
                .is_err()
        {
            return Err(format!(
                "metrics_address {:?} is not an address and port (e.g. \"127.0.0.1:9462\"; \"\" serves none)",
                file.metrics_address
            ));
        }
        if let StoreConfig::Etcd { endpoints, .. } = &file.store
            && endpoints.is_empty()
        {
            return Err(
                "store.endpoints is empty: list the etcd cluster's client URLs (e.g. \"http://10.0.0.10:2379\")"
                    .into(),
            );
        }
        let mut vnis: Vec<u32> = networks.iter().map(|n| n.vni).collect();
        vnis.sort();
        if let Some(w) = vnis.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!(
                "two networks use VNI {}: give each network its own \"vni\"",
                w[0]
            ));
        }
        if let Some(chosen) = &file.cni.network
            && !networks.iter().any(|n| &n.name == chosen)
        {
            return Err(format!(
                "cni.network {chosen:?} is not one of the configured networks"
            ));
        }
        if file
            .cni
            .cni_version
            .parse::<strait_cni::CniVersion>()
            .is_err()
        {
            return Err(format!(
                "cni.cni_version {:?} is not one of {}",
                file.cni.cni_version,
                strait_cni::CniVersion::supported_list()
            ));
        }
        Ok(Config {
            node_name,
            node_address: file.node_address,
            node_address6: file.node_address6,
            vxlan_underlay: file.vxlan_underlay,
            metrics_address: file.metrics_address,
            state_dir: file.state_dir,
            socket: file.socket,
            sysctl_dir: file.sysctl_dir,
            store: file.store,
            cni: file.cni,
            service_cidrs: file.service_cidrs,
            empty_block_grace: file.empty_block_grace,
            freed_address_hold: file.freed_address_hold,
            networks,
        })
    }

    /// What only the node can tell: no pool overlaps a subnet of the node's underlay addresses
    /// (its routes would shadow the node's own neighbours), a routed pool has an underlay
    /// address of its family to route through, and no network asks for a larger MTU than the
    /// underlay carries. `subnets` are those of the underlay's addresses: IPv4, IPv6 or both.
    pub fn check_underlay(&self, subnets: &[IpNet], underlay_mtu: u32) -> Result<(), String> {
        let over_ipv6 = self.vxlan_underlay == UnderlayFamily::Ipv6;
        if !subnets.iter().any(|s| s.addr().is_ipv6() == over_ipv6)
            && let Some(n) = self.networks.iter().find(|n| n.uses_vxlan())
        {
            return Err(if over_ipv6 {
                format!(
                    "network {:?} uses VXLAN and vxlan_underlay is \"ipv6\", and this node's \
                     underlay device has no IPv6 address to send it from: add one (or set \
                     node_address6), or set vxlan_underlay = \"ipv4\"",
                    n.name
                )
            } else {
                format!(
                    "network {:?} uses VXLAN and vxlan_underlay is \"ipv4\" (its default), and \
                     this node's underlay device has no IPv4 address to send it from: set \
                     node_address if the node has one on another device, give it one, or set \
                     vxlan_underlay = \"ipv6\" on every node (VXLAN over IPv6 carries both \
                     families)",
                    n.name
                )
            });
        }
        for n in &self.networks {
            for subnet in subnets {
                if let Some(p) = n.pools.iter().find(|p| overlap(&p.pool.cidr, subnet)) {
                    return Err(format!(
                        "network {:?}: pool {} overlaps this node's own subnet {subnet}: choose \
                         a range the nodes are not on",
                        n.name, p.pool.cidr
                    ));
                }
            }
            if let Some(p) = n.pools.iter().find(|p| {
                p.mode == Mode::Routed
                    && !subnets
                        .iter()
                        .any(|s| s.addr().is_ipv6() == p.pool.cidr.addr().is_ipv6())
            }) {
                let family = family_name(p.pool.cidr.addr().is_ipv6());
                return Err(format!(
                    "network {:?}: pool {} is routed, which sends its traffic to other nodes \
                     through their {family} underlay addresses, and this node's underlay \
                     device has no {family} address: add one, or set mode = \"vxlan\" on the \
                     pool (VXLAN carries either family over this underlay)",
                    n.name, p.pool.cidr
                ));
            }
            let has_ipv6 = n.pools.iter().any(|p| p.pool.cidr.addr().is_ipv6());
            if has_ipv6 && n.effective_mtu(underlay_mtu) < IPV6_MIN_MTU {
                return Err(format!(
                    "network {:?}: its pods' MTU {} is below IPv6's minimum of {IPV6_MIN_MTU}: \
                     raise the network's mtu (or the underlay's) or drop its IPv6 pools",
                    n.name,
                    n.effective_mtu(underlay_mtu)
                ));
            }
            let most = underlay_mtu.saturating_sub(n.overhead());
            if let Some(mtu) = n.mtu
                && mtu > most
            {
                return Err(format!(
                    "network {:?}: mtu {mtu} is more than the underlay carries ({most}: the \
                     underlay's {underlay_mtu}{}); lower it or leave it unset",
                    n.name,
                    if n.uses_vxlan() {
                        format!(" less VXLAN's {}", n.vxlan_overhead)
                    } else {
                        String::new()
                    }
                ));
            }
        }
        Ok(())
    }

    pub fn network(&self, name: &str) -> Option<&Network> {
        self.networks.iter().find(|n| n.name == name)
    }

    /// The network the conflist attaches pods to.
    pub fn conflist_network(&self) -> &Network {
        self.cni
            .network
            .as_deref()
            .and_then(|n| self.network(n))
            .unwrap_or(&self.networks[0])
    }
}

fn validate_network(n: &NetworkConfig, vxlan_overhead: u32) -> Result<Network, String> {
    let at = format!("network {:?}", n.name);
    if n.name.is_empty()
        || !n.name.starts_with(|c: char| c.is_ascii_alphanumeric())
        || !n
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
    {
        return Err(format!(
            "{at}: a network name starts with a letter or digit and holds only letters, digits, '_', '.' and '-'"
        ));
    }
    if let Some(mtu) = n.mtu
        && !(MIN_MTU..=MAX_MTU).contains(&mtu)
    {
        return Err(format!(
            "{at}: mtu {mtu} must be between {MIN_MTU} and {MAX_MTU}"
        ));
    }
    if !(1..=MAX_VNI).contains(&n.vni) {
        return Err(format!(
            "{at}: vni {} must be between 1 and {MAX_VNI}",
            n.vni
        ));
    }
    if n.pools.is_empty() {
        return Err(format!(
            "{at}: add at least one [[network.pool]] with a cidr"
        ));
    }
    let mut pools = Vec::new();
    for p in &n.pools {
        if let Some((reserved, why)) = RESERVED.iter().find(|(r, _)| {
            let r: IpNet = r.parse().expect("literal");
            overlap(&p.cidr, &r)
        }) {
            return Err(format!(
                "{at}: pool {} overlaps {reserved}, {why}: choose a private range such as {}",
                p.cidr,
                if p.cidr.addr().is_ipv6() {
                    "fd00:10:244::/56"
                } else {
                    "10.244.0.0/16"
                }
            ));
        }
        let name = p.name.clone().unwrap_or_else(|| {
            let family = if p.cidr.addr().is_ipv6() { "v6" } else { "v4" };
            format!("{}-{family}", n.name.to_lowercase())
        });
        strait_store::validate_name(&name).map_err(|e| format!("{at}: pool name: {e}"))?;
        pools.push(NetworkPool {
            pool: Pool::new(
                &name,
                p.cidr,
                p.block_prefix
                    .unwrap_or_else(|| default_block_prefix(&p.cidr)),
            )
            .map_err(|e| format!("{at}: {e}"))?,
            mode: p.mode.unwrap_or(n.mode),
            fixed_addresses: p.fixed_addresses,
        });
    }
    Ok(Network {
        name: n.name.clone(),
        pools,
        mtu: n.mtu,
        vni: n.vni,
        snat: n.snat,
        snat6: n.snat6.unwrap_or(n.snat),
        vxlan_overhead,
    })
}

fn default_orphan_grace() -> u32 {
    30
}

fn default_node_grace() -> u32 {
    300
}

fn read_hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_lowercase())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
        [[network]]
        name = "strait"
        [[network.pool]]
        cidr = "10.244.0.0/16"
    "#;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse(text, || Some("node-a".into()))
    }

    #[test]
    fn a_minimal_file_gets_sensible_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.node_name, "node-a");
        assert_eq!(c.socket, PathBuf::from("/run/strait/strait.sock"));
        assert_eq!(c.networks[0].pools[0].pool.name, "strait-v4");
        assert_eq!(c.networks[0].pools[0].pool.block_prefix, 26);
        assert_eq!(c.networks[0].pools[0].mode, Mode::Vxlan);
        assert_eq!(c.networks[0].effective_mtu(1500), 1450);
        assert_eq!(c.networks[0].vni, 4096);
        assert!(c.networks[0].snat);
        assert_eq!(c.conflist_network().name, "strait");
    }

    #[test]
    fn a_network_may_have_pools_of_both_families_named_and_sized_by_family() {
        let c = parse(
            "[[network]]\nname = \"Dual\"\n[[network.pool]]\ncidr = \"10.244.0.0/16\"\n\
             [[network.pool]]\ncidr = \"fd00:10:244::/56\"",
        )
        .unwrap();
        let pools: Vec<(&str, u8)> = c.networks[0]
            .pools
            .iter()
            .map(|p| (p.pool.name.as_str(), p.pool.block_prefix))
            .collect();
        assert_eq!(pools, [("dual-v4", 26), ("dual-v6", 122)]);
    }

    #[test]
    fn a_pool_may_route_while_its_network_encapsulates() {
        let c = parse(
            "[[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"\nmode = \"routed\"\n\
             [[network.pool]]\nname = \"b\"\ncidr = \"10.1.0.0/16\"",
        )
        .unwrap();
        let modes: Vec<Mode> = c.networks[0].pools.iter().map(|p| p.mode).collect();
        assert_eq!(modes, [Mode::Routed, Mode::Vxlan]);
        let routed = parse("[[network]]\nname = \"a\"\nmode = \"routed\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"").unwrap();
        assert_eq!(routed.networks[0].effective_mtu(1500), 1500);
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = parse(include_str!("../../../docs/straitd.toml")).unwrap();
        assert_eq!(c.networks[0].name, "pods");
        assert_eq!(c.cni.chain.len(), 1);
    }

    #[test]
    fn the_daemonset_configuration_is_valid_and_named_by_the_environment() {
        let text = include_str!("../../../deploy/straitd.toml");
        let c = Config::parse(text, || Some("worker-3".into())).unwrap();
        assert_eq!(c.node_name, "worker-3");
        assert!(matches!(
            c.store,
            StoreConfig::Kubernetes {
                orphan_grace: 30,
                node_grace: 300,
                ..
            }
        ));
        assert_eq!(c.metrics_address, "127.0.0.1:9462");
    }

    #[test]
    fn a_configuration_that_does_not_fit_the_node_is_refused() {
        let c = parse(MINIMAL).unwrap();
        let subnet = |s: &str| s.parse::<IpNet>().unwrap();
        assert!(c.check_underlay(&[subnet("192.168.1.0/24")], 1500).is_ok());
        let routed6 = parse(
            "[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"10.244.0.0/16\"\n\
             [[network.pool]]\ncidr = \"fd00:10:244::/56\"\nmode = \"routed\"",
        )
        .unwrap();
        let err = routed6
            .check_underlay(&[subnet("192.168.1.0/24")], 1500)
            .unwrap_err();
        assert!(
            err.contains("fd00:10:244::/56") && err.contains("vxlan"),
            "{err}"
        );
        let err = c
            .check_underlay(&[subnet("10.244.7.0/24")], 1500)
            .unwrap_err();
        assert!(err.contains("own subnet"), "{err}");
        let jumbo =
            parse(&MINIMAL.replace("name = \"strait\"", "name = \"strait\"\nmtu = 9000")).unwrap();
        let err = jumbo
            .check_underlay(&[subnet("192.168.1.0/24")], 1500)
            .unwrap_err();
        assert!(err.contains("1450"), "{err}");
        assert!(
            jumbo
                .check_underlay(&[subnet("192.168.1.0/24")], 9050)
                .is_ok()
        );
    }

    #[test]
    fn vxlan_over_an_ipv6_underlay_costs_70_bytes_and_needs_an_ipv6_address() {
        let c = parse(&format!("vxlan_underlay = \"ipv6\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.vxlan_underlay, UnderlayFamily::Ipv6);
        assert_eq!(c.networks[0].effective_mtu(1500), 1430);
        let subnet = |s: &str| s.parse::<IpNet>().unwrap();
        let err = c
            .check_underlay(&[subnet("192.168.1.0/24")], 1500)
            .unwrap_err();
        assert!(err.contains("no IPv6 address"), "{err}");
        let both = [subnet("192.168.1.0/24"), subnet("fd00:fab::/64")];
        assert!(c.check_underlay(&both, 1500).is_ok());
        // A node with IPv6 alone: VXLAN over IPv6 is fine, over IPv4 (the default) it is not.
        let v6_only = [subnet("fd00:fab::/64")];
        assert!(c.check_underlay(&v6_only, 1500).is_ok());
        let err = parse(MINIMAL)
            .unwrap()
            .check_underlay(&v6_only, 1500)
            .unwrap_err();
        assert!(
            err.contains("no IPv4 address") && err.contains("vxlan_underlay = \"ipv6\""),
            "{err}"
        );
        let jumbo = parse(&format!(
            "vxlan_underlay = \"ipv6\"\n{}",
            MINIMAL.replace("name = \"strait\"", "name = \"strait\"\nmtu = 1450")
        ))
        .unwrap();
        let err = jumbo.check_underlay(&both, 1500).unwrap_err();
        assert!(err.contains("1430") && err.contains("VXLAN's 70"), "{err}");
        assert!(parse(&format!("vxlan_underlay = \"ipx\"\n{MINIMAL}")).is_err());
        assert_eq!(
            parse(MINIMAL).unwrap().networks[0].effective_mtu(1500),
            1450
        );
    }

    #[test]
    fn wrong_files_are_refused_with_the_reason() {
        let cases = [
            ("", "no [[network]]"),
            ("bogus = 1\n", "unknown field"),
            (
                "node_name = \"Node_A\"\n[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"",
                "node_name",
            ),
            ("[[network]]\nname = \"n\"\n", "pool"),
            (
                "[[network]]\nname = \"n\"\nmtu = 100\n[[network.pool]]\ncidr = \"10.0.0.0/16\"",
                "mtu",
            ),
            (
                "[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"10.0.0.1/16\"",
                "host bits",
            ),
            (
                "[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"fe80::/64\"",
                "link-local",
            ),
            (
                "[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"fd00::/64\"\nblock_prefix = 26",
                "block size",
            ),
            (
                "[[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"\n[[network]]\nname = \"b\"\n[[network.pool]]\ncidr = \"10.0.128.0/17\"",
                "overlap",
            ),
            (
                "[[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"\n[[network]]\nname = \"a\"\n[[network.pool]]\nname = \"x\"\ncidr = \"10.1.0.0/16\"",
                "twice",
            ),
            (
                "[cni]\nnetwork = \"zzz\"\n[[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"",
                "zzz",
            ),
            (
                "[cni]\ncni_version = \"0.2.0\"\n[[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.0.0.0/16\"",
                "cni_version",
            ),
        ];
        let pool =
            |cidr: &str| format!("[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"{cidr}\"");
        let with = |before: &str| format!("{before}\n{MINIMAL}");
        let more = [
            (pool("169.254.1.0/24"), "link-local"),
            (pool("127.0.0.0/16"), "loopback"),
            (pool("224.0.0.0/16"), "multicast"),
            (pool("0.0.0.0/0"), "this network"),
            (with("service_cidrs = [\"10.244.0.0/16\"]"), "service range"),
            (with("service_cidrs = [\"10.240.0.0/12\"]"), "service range"),
            (with("service_cidrs = [\"10.96.0.1/12\"]"), "host bits"),
            (with("metrics_address = \"localhost\""), "metrics_address"),
            (
                with("empty_block_grace = 60\nfreed_address_hold = 300"),
                "shorter than freed_address_hold",
            ),
            (
                with("[store]\nbackend = \"etcd\"\nendpoints = []"),
                "store.endpoints",
            ),
            (
                "[[network]]\nname = \"A\"\nvni = 1\n[[network.pool]]\ncidr = \"10.0.0.0/16\"\n\
                 [[network]]\nname = \"a\"\n[[network.pool]]\ncidr = \"10.1.0.0/16\""
                    .to_string(),
                "two pools are named \"a-v4\"",
            ),
        ];
        let cases = cases
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .chain(more);
        for (text, needle) in cases {
            let text = text.as_str();
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
