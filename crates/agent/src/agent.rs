//! The agent: everything the node owns, assembled at start. Start-up order matters: records are
//! loaded, and their addresses and those the kernel's host veths carry without a record taken
//! back, before anything can allocate (see [`recovery`]); the node is prepared (forwarding,
//! nftables) and announced to its peers; then the overlay is reconciled once before the socket
//! opens ([`Agent::start_overlay`] hands back the signal).

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait_dataplane::ledger::host_veths;
use strait_dataplane::model::NetId;
use strait_dataplane::overlay::{LocalNetwork, LocalNode, vxlan_overhead};
use strait_dataplane::{Kernel, SystemKernel};
use strait_netlink::Netlink;
use strait_store::{Kind, NodeRecord, Store, StoreError, Vtep};
use tokio::sync::watch;

use crate::cluster::{ClusterCache, spawn_watches};
use crate::config::{Config, UnderlayFamily};
use crate::error::AgentError;
use crate::freed::Freed;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::network::{NETWORK_TABLE, NetworkState};
use crate::pods::Pods;
use crate::reconciler::{LastPass, OwnedLinks, Reconciler};
use crate::recovery::{self, Recovery};
use crate::registry::{AttachmentKey, Registry, RegistryError};
use crate::tasks::{Stop, Tasks};
use crate::underlay::{Underlay, UnderlayError};
use crate::wake::Wake;
use crate::{drift, node};

/// The agent on store `S`, changing the node through `K` (the real kernel but in unit tests).
pub struct Agent<S, K = SystemKernel> {
    pub(crate) config: Config,
    pub(crate) store: S,
    /// Opens the node's rtnetlink endpoint for pods' data planes.
    pub(crate) kernel: K,
    pub(crate) underlay: Underlay,
    pub(crate) networks: BTreeMap<String, NetworkState>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) locks: KeyedLocks<AttachmentKey>,
    pub(crate) cluster: Arc<ClusterCache>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) last_pass: Arc<Mutex<Option<LastPass>>>,
    /// Held by whoever changes the node's overlay: a reconcile pass, or leaving.
    pub(crate) overlay_changes: Arc<tokio::sync::Mutex<()>>,
    /// Set once the node has left the cluster: the reconciler stops, the agent exits.
    pub(crate) left: Arc<AtomicBool>,
    /// Held (shared) by every ADD; leaving holds it alone, so no ADD runs while the node leaves
    /// and none after.
    pub(crate) admission: tokio::sync::RwLock<()>,
    /// When and why the agent stops.
    pub(crate) stop: Arc<Stop>,
    /// The agent's long-running work, supervised.
    pub(crate) tasks: Arc<Tasks>,
    /// Signalled by the reconciler when this node's record is missing from the store.
    pub(crate) record_missing: Arc<tokio::sync::Notify>,
    /// The pods on this node, when the cluster is Kubernetes.
    pub(crate) pods: Option<Arc<Pods>>,
    /// Addresses held without a readable record, and those the node could not take back.
    pub(crate) recovery: Arc<Recovery>,
    /// Addresses freed lately, by namespace.
    pub(crate) freed: Freed,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("the configuration does not fit this node: {0}")]
    Unfit(String),
    #[error("finding this node's underlay: {0}")]
    Underlay(#[from] UnderlayError),
    #[error("network {network}: {source}")]
    Network { network: String, source: AgentError },
    #[error("preparing the node: {0}")]
    Node(#[from] node::NodeError),
    #[error("taking back the addresses of this node's pods: {0}")]
    Restore(#[source] AgentError),
    #[error("announcing this node in the cluster store: {0}")]
    Announce(#[source] StoreError),
    #[error("watching for changes: {0}")]
    Watch(std::io::Error),
    #[error("start-up task failed: {0}")]
    Task(String),
}

async fn blocking_start<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StartError> + Send + 'static,
) -> Result<T, StartError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StartError::Task(e.to_string()))?
}

impl<S: Store> Agent<S> {
    pub async fn start(config: Config, store: S) -> Result<Agent<S>, StartError> {
        let (configured, configured6) = (config.node_address, config.node_address6);
        let underlay = blocking_start(move || {
            let mut nl = Netlink::new().map_err(UnderlayError::from)?;
            Ok(crate::underlay::resolve(&mut nl, configured, configured6)?)
        })
        .await?;
        tracing::info!(address = %underlay.address, address6 = ?underlay.address6.map(|(a, _)| a),
            device = %underlay.device, mtu = underlay.mtu, "underlay");
        config
            .check_underlay(&underlay.subnets(), underlay.mtu)
            .map_err(StartError::Unfit)?;
        let agent = Agent::open(config, store, underlay, SystemKernel).await?;
        let ruleset = node::snat_ruleset(&agent.config);
        let sysctl_dir = agent.config.sysctl_dir.clone();
        let ipv6_underlay = node::uses_ipv6(&agent.config).then(|| agent.underlay.device.clone());
        blocking_start(move || {
            Ok(node::prepare(
                &ruleset,
                &sysctl_dir,
                ipv6_underlay.as_deref(),
            )?)
        })
        .await?;
        agent.announce().await?;
        Ok(agent)
    }

    /// Starts watching the store and the kernel, and the reconciler. The receiver turns true
    /// after the first pass that succeeded.
    pub fn start_overlay(&self) -> Result<watch::Receiver<bool>, StartError> {
        let wake = Arc::new(Wake::default());
        let owned = Arc::new(OwnedLinks::default());
        spawn_watches(&self.tasks, &self.store, &self.cluster, &wake);
        drift::watch_kernel(
            self.tasks.running("kernel events"),
            Arc::clone(&owned),
            Arc::clone(&self.registry),
            Arc::clone(&wake),
        )
        .map_err(StartError::Watch)?;
        drift::watch_nft(self.tasks.running("nftables events"), Arc::clone(&wake))
            .map_err(StartError::Watch)?;
        let (ready, ready_rx) = watch::channel(false);
        let reconciler = Reconciler {
            kernel: self.kernel,
            local: self.local_node(),
            cache: Arc::clone(&self.cluster),
            registry: Arc::clone(&self.registry),
            wake,
            metrics: Arc::clone(&self.metrics),
            owned,
            nft_tables: vec![node::snat_ruleset(&self.config).table()],
            last: Arc::clone(&self.last_pass),
            ready,
            overlay_changes: Arc::clone(&self.overlay_changes),
            left: Arc::clone(&self.left),
            record_missing: Arc::clone(&self.record_missing),
        };
        self.tasks.spawn("reconciler", reconciler.run());
        Ok(ready_rx)
    }
}

impl<S: Store, K: Kernel> Agent<S, K> {
    /// The agent's state on this node, before the node is prepared and announced: its records
    /// read, its networks' blocks loaded, and the addresses of its pods (recorded, or carried
    /// by host veths without a record) taken back.
    pub(crate) async fn open(
        config: Config,
        store: S,
        underlay: Underlay,
        kernel: K,
    ) -> Result<Agent<S, K>, StartError> {
        let (registry, warnings) = Registry::open(&config.state_dir.join("attachments"))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let mut networks = BTreeMap::new();
        for spec in &config.networks {
            let state = NetworkState::load(&store, spec.clone(), &config.node_name, underlay.mtu)
                .await
                .map_err(|source| StartError::Network {
                    network: spec.name.clone(),
                    source,
                })?;
            networks.insert(spec.name.clone(), state);
        }
        let records = registry.all();
        let veths = {
            let kernel = kernel.clone();
            blocking_start(move || {
                let mut host = kernel.host().map_err(node::NodeError::from)?;
                Ok(host_veths(&mut host).map_err(node::NodeError::from)?)
            })
            .await?
        };
        let recovery = recovery::restore(&store, &config.node_name, &networks, &records, veths)
            .await
            .map_err(StartError::Restore)?;
        tracing::info!(
            attachments = records.len(),
            quarantined = recovery.quarantined().len(),
            conflicts = recovery.conflicts().len(),
            "restored pod registry"
        );
        let stop = Arc::new(Stop::default());
        let freed = Freed::new(Duration::from_secs(config.freed_address_hold.into()));
        Ok(Agent {
            config,
            store,
            kernel,
            underlay,
            networks,
            registry: Arc::new(registry),
            locks: KeyedLocks::default(),
            cluster: Arc::default(),
            metrics: Arc::default(),
            last_pass: Arc::default(),
            overlay_changes: Arc::default(),
            left: Arc::default(),
            admission: tokio::sync::RwLock::default(),
            stop: Arc::clone(&stop),
            tasks: Tasks::new(stop),
            record_missing: Arc::default(),
            pods: None,
            recovery: Arc::new(recovery),
            freed,
        })
    }

    /// Writes this node's record (address and VTEPs) for its peers; it lives as long as the agent.
    pub(crate) async fn announce(&self) -> Result<(), StartError> {
        let record = NodeRecord {
            address: self.underlay.address.into(),
            address6: self.underlay.address6.map(|(a, _)| a.into()),
            vxlan_over_ipv6: self.config.vxlan_underlay == UnderlayFamily::Ipv6,
            networks: self
                .networks
                .iter()
                .filter_map(|(name, n)| {
                    n.vtep.map(|v| {
                        (
                            name.clone(),
                            Vtep {
                                ip: v.ip,
                                mac: v.mac.to_string(),
                            },
                        )
                    })
                })
                .collect(),
        };
        let value = serde_json::to_value(&record).expect("records serialize");
        self.store
            .put_live(Kind::Node, &self.config.node_name, value)
            .await
            .map_err(StartError::Announce)?;
        Ok(())
    }

    /// This node as the overlay sees it.
    pub fn local_node(&self) -> LocalNode {
        let vxlan_over_ipv6 = self.config.vxlan_underlay == UnderlayFamily::Ipv6;
        LocalNode {
            name: self.config.node_name.clone(),
            address: self.underlay.address,
            address6: self.underlay.address6.map(|(a, _)| a),
            vxlan_over_ipv6,
            underlay: self.underlay.device.clone(),
            networks: self
                .networks
                .values()
                .map(|n| LocalNetwork {
                    id: NetId::new(&n.spec.name),
                    vni: n.spec.vni,
                    mtu: self
                        .underlay
                        .mtu
                        .saturating_sub(vxlan_overhead(vxlan_over_ipv6)),
                    vtep: n.vtep,
                    vtep_addresses: n.vtep_addresses.clone(),
                    table: NETWORK_TABLE,
                    pools: n.local_pools(),
                })
                .collect(),
        }
    }

    /// Reads what pods ask of their network from the Kubernetes API, and knows which pods
    /// exist on this node; `orphan_grace` is how long a pod must have been gone before
    /// [`Agent::start_orphan_sweep`] releases its address, `node_grace` how long a node before
    /// [`Agent::start_block_reclaim`] takes back its blocks.
    pub fn with_pods(
        mut self,
        client: kube::Client,
        watch_client: kube::Client,
        orphan_grace: Duration,
        node_grace: Duration,
    ) -> Self {
        self.pods = Some(Arc::new(Pods::new(
            client,
            watch_client,
            &self.config.node_name,
            orphan_grace,
            node_grace,
        )));
        self
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Completes once the agent must stop: the node has left the cluster, or the agent failed.
    pub async fn until_stopped(&self) {
        self.stop.until().await
    }

    /// Stops the agent on an error it cannot recover from while running; the process exits
    /// non-zero, and a supervisor (the DaemonSet) starts it afresh.
    pub(crate) fn fail(&self, why: String) {
        self.stop.fail(why);
    }

    /// Why the agent stopped, when it stopped on an error.
    pub fn failure(&self) -> Option<String> {
        self.stop.failure()
    }

    /// The agent is about to end: its tasks may stop from now on.
    pub fn wind_down(&self) {
        self.tasks.wind_down();
    }

    /// The supervised tasks that stopped while they should have run.
    pub fn stopped_tasks(&self) -> Vec<&'static str> {
        self.tasks.stopped()
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
