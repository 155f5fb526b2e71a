//! straitd's configuration file (TOML), and its validation into the networks the agent serves.
//! Every refusal names the field and says what would be right.

use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use strait_ipam::Pool;

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// This node's name in the cluster store; the hostname when absent.
    pub node_name: Option<String>,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub cni: CniConfig,
    /// Service ranges: never masqueraded to.
    #[serde(default)]
    pub service_cidrs: Vec<IpNet>,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// Files in a directory: one machine only.
    Embedded { path: PathBuf },
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
    /// The pods' MTU: the underlay's minus 50 for VXLAN.
    #[serde(default = "default_mtu")]
    pub mtu: u32,
    /// Masquerade traffic from this network's pods that leaves the cluster.
    #[serde(default = "yes")]
    pub snat: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// The pool's name in the cluster store; `<network>-v4`/`-v6` when absent.
    pub name: Option<String>,
    pub cidr: IpNet,
    #[serde(default = "default_block_prefix")]
    pub block_prefix: u8,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/strait")
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
fn default_mtu() -> u32 {
    1450
}
fn default_block_prefix() -> u8 {
    26
}
fn yes() -> bool {
    true
}

/// A network as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Network {
    pub name: String,
    pub pools: Vec<Pool>,
    pub mtu: u32,
    pub snat: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub node_name: String,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub store: StoreConfig,
    pub cni: CniConfig,
    pub service_cidrs: Vec<IpNet>,
    pub networks: Vec<Network>,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ConfigError {
    pub path: String,
    pub reason: String,
}

const MIN_MTU: u32 = 576;
const MAX_MTU: u32 = 65_535;

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let err = |reason: String| ConfigError {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        Config::parse(&text, read_hostname).map_err(err)
    }

    /// Parses and validates a configuration; `hostname` supplies the default node name.
    pub fn parse(text: &str, hostname: impl Fn() -> Option<String>) -> Result<Config, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let node_name = match file.node_name {
            Some(n) => n,
            None => hostname().ok_or("node_name is not set and the hostname is unreadable")?,
        };
        strait_store::validate_name(&node_name).map_err(|e| format!("node_name: {e}"))?;
        if file.networks.is_empty() {
            return Err(
                "no [[network]] is configured; add one with at least one [[network.pool]]".into(),
            );
        }
        let mut networks = Vec::new();
        for n in &file.networks {
            networks.push(validate_network(n)?);
        }
        let mut names: Vec<&str> = networks.iter().map(|n| n.name.as_str()).collect();
        names.sort();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(format!("network {:?} is configured twice", w[0]));
        }
        Pool::check_disjoint(networks.iter().flat_map(|n| &n.pools)).map_err(|e| e.to_string())?;
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
            state_dir: file.state_dir,
            socket: file.socket,
            store: file.store,
            cni: file.cni,
            service_cidrs: file.service_cidrs,
            networks,
        })
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

fn validate_network(n: &NetworkConfig) -> Result<Network, String> {
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
    if !(MIN_MTU..=MAX_MTU).contains(&n.mtu) {
        return Err(format!(
            "{at}: mtu {} must be between {MIN_MTU} and {MAX_MTU}",
            n.mtu
        ));
    }
    if n.pools.is_empty() {
        return Err(format!(
            "{at}: add at least one [[network.pool]] with a cidr"
        ));
    }
    let mut pools = Vec::new();
    for p in &n.pools {
        if p.cidr.addr().is_ipv6() {
            return Err(format!(
                "{at}: pool {}: IPv6 pools are not supported by the data plane yet",
                p.cidr
            ));
        }
        let name = p
            .name
            .clone()
            .unwrap_or_else(|| format!("{}-v4", n.name.to_lowercase()));
        strait_store::validate_name(&name).map_err(|e| format!("{at}: pool name: {e}"))?;
        pools.push(Pool::new(&name, p.cidr, p.block_prefix).map_err(|e| format!("{at}: {e}"))?);
    }
    Ok(Network {
        name: n.name.clone(),
        pools,
        mtu: n.mtu,
        snat: n.snat,
    })
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
        assert_eq!(c.networks[0].pools[0].name, "strait-v4");
        assert_eq!(c.networks[0].pools[0].block_prefix, 26);
        assert_eq!(c.networks[0].mtu, 1450);
        assert!(c.networks[0].snat);
        assert_eq!(c.conflist_network().name, "strait");
    }

    #[test]
    fn the_documented_example_is_valid() {
        let c = parse(include_str!("../../../docs/straitd.toml")).unwrap();
        assert_eq!(c.networks[0].name, "pods");
        assert_eq!(c.cni.chain.len(), 1);
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
                "[[network]]\nname = \"n\"\n[[network.pool]]\ncidr = \"fd00::/64\"",
                "IPv6",
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
        for (text, needle) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }
}
