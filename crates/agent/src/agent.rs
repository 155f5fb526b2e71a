//! The agent: everything the node owns, assembled at start. Start-up order matters: records are
//! loaded and their addresses re-reserved before anything can allocate, and the node is prepared
//! (forwarding, nftables, leftovers removed) before the socket opens.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use strait_ipam::IpamError;
use strait_store::Store;

use crate::config::Config;
use crate::error::AgentError;
use crate::locks::KeyedLocks;
use crate::network::NetworkState;
use crate::node;
use crate::registry::{AttachmentKey, Registry, RegistryError};

pub struct Agent<S> {
    pub(crate) config: Config,
    pub(crate) store: S,
    pub(crate) networks: BTreeMap<String, NetworkState>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) locks: KeyedLocks<AttachmentKey>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("network {network}: {source}")]
    Network { network: String, source: IpamError },
    #[error("preparing the node: {0}")]
    Node(#[from] node::NodeError),
    #[error("start-up task failed: {0}")]
    Task(String),
}

impl<S: Store + 'static> Agent<S> {
    pub async fn start(config: Config, store: S) -> Result<Agent<S>, StartError> {
        let (registry, warnings) = Registry::open(&config.state_dir.join("attachments"))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let mut networks = BTreeMap::new();
        for spec in &config.networks {
            let state = NetworkState::load(&store, spec.clone(), &config.node_name)
                .await
                .map_err(|source| StartError::Network {
                    network: spec.name.clone(),
                    source,
                })?;
            networks.insert(spec.name.clone(), state);
        }
        let records = registry.all();
        for a in &records {
            let Some(net) = networks.get(&a.key.network) else {
                tracing::warn!(network = %a.key.network, container_id = %a.key.container_id,
                    "attachment of a network no longer configured; kept until DEL or GC");
                continue;
            };
            for address in &a.addresses {
                if let Err(e) = net.reserve(address.addr()).await {
                    tracing::error!(container_id = %a.key.container_id, %address, error = %e,
                        "cannot re-reserve a recorded address");
                }
            }
        }
        tracing::info!(attachments = records.len(), "restored pod registry");
        let known: HashSet<String> = records.into_iter().map(|a| a.host_veth).collect();
        let ruleset = node::snat_ruleset(&config);
        let removed = tokio::task::spawn_blocking(move || node::prepare(&ruleset, &known))
            .await
            .map_err(|e| StartError::Task(e.to_string()))??;
        for name in removed {
            tracing::info!(link = %name, "removed a leftover host veth with no attachment");
        }
        Ok(Agent {
            config,
            store,
            networks,
            registry: Arc::new(registry),
            locks: KeyedLocks::default(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn network(&self, name: &str) -> Result<&NetworkState, AgentError> {
        self.networks
            .get(name)
            .ok_or_else(|| AgentError::UnknownNetwork {
                name: name.to_string(),
                known: self.networks.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }
}

/// Runs blocking work (netlink, fsync) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AgentError::Task(e.to_string()))?
}
