//! The agent: the node's services (attachments, IPAM, membership, overlay; serving is
//! [`crate::server`], [`crate::http`] and [`crate::status`]), assembled at start and wired to the
//! jobs that run beside them. Start-up order matters: records are
//! loaded, and their addresses and those the kernel's host veths carry without a record taken
//! back, before anything can allocate (see [`recovery`]); the node is prepared (forwarding,
//! nftables) and announced to its peers; then the overlay is reconciled once before the socket
//! opens ([`Agent::start_overlay`] hands back the signal).

use std::sync::Arc;
use std::time::Duration;

use strait_dataplane::ledger::host_veths;
use strait_dataplane::model::NetId;
use strait_dataplane::overlay::{LocalNetwork, LocalNode, vxlan_overhead};
use strait_dataplane::{Kernel, SystemKernel};
use strait_netlink::Netlink;
use strait_store::{NodeRecord, Store, Vtep};
use tokio::sync::watch;

use crate::attachments::Attachments;
use crate::attachments::registry::Registry;
use crate::config::{Config, UnderlayFamily};
use crate::error::AgentError;
use crate::freed::Freed;
use crate::ipam::Ipam;
use crate::ipam::network::NETWORK_TABLE;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::overlay::{Overlay, ReconcilerLinks};
use crate::pods::Pods;
use crate::reconciler::OwnedLinks;
use crate::recovery;
use crate::tasks::{Stop, Tasks, blocking};
use crate::underlay::Underlay;
use crate::wake::Wake;
use crate::{drift, node};

/// The agent on store `S`, changing the node through `K` (the real kernel but in unit tests):
/// its services, each with one job, and what they share (the node's configuration and
/// underlay, its metrics, its supervised tasks).
pub struct Agent<S, K = SystemKernel> {
    pub(crate) config: Config,
    /// Opens the node's rtnetlink endpoint.
    pub(crate) kernel: K,
    pub(crate) underlay: Underlay,
    /// The pods attached on this node.
    pub(crate) attachments: Attachments,
    /// The networks' pools and blocks.
    pub(crate) ipam: Ipam<S>,
    /// This node's record, the cluster as seen, and whether the node still takes pods.
    pub(crate) membership: Membership<S>,
    /// The node's overlay and its reconciling.
    pub(crate) overlay: Overlay,
    pub(crate) metrics: Arc<Metrics>,
    /// When and why the agent stops.
    pub(crate) stop: Arc<Stop>,
    /// The agent's long-running work, supervised.
    pub(crate) tasks: Arc<Tasks>,
}

impl<S: Store> Agent<S> {
    pub async fn start(config: Config, store: S) -> Result<Agent<S>, AgentError> {
        let (configured, configured6) = (config.node_address, config.node_address6);
        let underlay = blocking(move || {
            let mut nl = Netlink::new().map_err(AgentError::Interfaces)?;
            crate::underlay::resolve(&mut nl, configured, configured6)
        })
        .await
        .map_err(|e| AgentError::Underlay(Box::new(e)))?;
        tracing::info!(address = ?underlay.address4.map(|(a, _)| a), address6 = ?underlay.address6.map(|(a, _)| a),
            device = %underlay.device, mtu = underlay.mtu, "underlay");
        config
            .check_underlay(&underlay.subnets(), underlay.mtu)
            .map_err(AgentError::Unfit)?;
        let agent = Agent::open(config, store, underlay, SystemKernel).await?;
        let ruleset = node::snat_ruleset(&agent.config);
        let sysctl_dir = agent.config.sysctl_dir.clone();
        let ipv6_underlay = node::uses_ipv6(&agent.config).then(|| agent.underlay.device.clone());
        let mut nft = agent.kernel.nftables();
        blocking(move || node::prepare(&mut nft, &ruleset, &sysctl_dir, ipv6_underlay.as_deref()))
            .await
            .map_err(|e| AgentError::Prepare(Box::new(e)))?;
        agent
            .membership
            .announce()
            .await
            .map_err(AgentError::Announce)?;
        Ok(agent)
    }

    /// Starts watching the store and the kernel, and the reconciler. The receiver turns true
    /// after the first pass that succeeded.
    pub fn start_overlay(&self) -> Result<watch::Receiver<bool>, AgentError> {
        let wake = Arc::new(Wake::default());
        let owned = Arc::new(OwnedLinks::default());
        let cluster = self.membership.cluster();
        let registry = self.attachments.registry();
        self.membership.watch(&self.tasks, &wake);
        drift::watch_kernel(
            self.tasks.running("kernel events"),
            Arc::clone(&owned),
            Arc::clone(registry),
            Arc::clone(&wake),
        )
        .map_err(AgentError::Watch)?;
        drift::watch_nft(self.tasks.running("nftables events"), Arc::clone(&wake))
            .map_err(AgentError::Watch)?;
        let (ready, ready_rx) = watch::channel(false);
        let around = ReconcilerLinks {
            cluster: Arc::clone(cluster),
            registry: Arc::clone(registry),
            wake,
            owned,
            metrics: Arc::clone(&self.metrics),
            left: self.membership.left(),
            record_missing: self.membership.record_missing(),
        };
        let reconciler = self.overlay.reconciler(self.kernel, around, ready);
        self.tasks.spawn("reconciler", reconciler.run());
        Ok(ready_rx)
    }

    /// Returns empty blocks to their pools, unless the configuration keeps them.
    pub fn start_block_return(self: &Arc<Self>) {
        if self.config.empty_block_grace == 0 {
            return;
        }
        let grace = Duration::from_secs(self.config.empty_block_grace.into());
        let agent = Arc::clone(self);
        self.tasks.spawn("empty block return", async move {
            agent.ipam.return_empty_blocks(grace, &agent.metrics).await
        });
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
    ) -> Result<Agent<S, K>, AgentError> {
        let (registry, warnings) = Registry::open(&config.state_dir.join("attachments"))?;
        for w in warnings {
            tracing::warn!("{w}");
        }
        let ipam = Ipam::load(
            store.clone(),
            &config.node_name,
            &config.networks,
            underlay.mtu,
        )
        .await?;
        let records = registry.all();
        let veths = {
            let kernel = kernel.clone();
            blocking(move || {
                let mut host = kernel
                    .host()
                    .map_err(|e| AgentError::HostInterfaces(e.into()))?;
                host_veths(&mut host).map_err(AgentError::HostInterfaces)
            })
            .await?
        };
        let recovery = recovery::restore(&ipam, &records, veths)
            .await
            .map_err(|e| AgentError::Restore(Box::new(e)))?;
        tracing::info!(
            attachments = records.len(),
            quarantined = recovery.quarantined().len(),
            conflicts = recovery.conflicts().len(),
            "restored pod registry"
        );
        let record = node_record(&config, &underlay, &ipam);
        let local = local_node(&config, &underlay, &ipam);
        let stop = Arc::new(Stop::default());
        let freed = Freed::new(Duration::from_secs(config.freed_address_hold.into()));
        Ok(Agent {
            membership: Membership::new(store, &config.node_name, record),
            overlay: Overlay::new(local, vec![node::snat_ruleset(&config).table()]),
            attachments: Attachments::new(registry, recovery, freed),
            ipam,
            config,
            kernel,
            underlay,
            metrics: Arc::default(),
            stop: Arc::clone(&stop),
            tasks: Tasks::new(stop),
        })
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
        self.membership.set_pods(Pods::new(
            client,
            watch_client,
            &self.config.node_name,
            orphan_grace,
            node_grace,
        ));
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
}

/// The record this node announces: its underlay addresses and its networks' VTEPs.
fn node_record<S: Store>(config: &Config, underlay: &Underlay, ipam: &Ipam<S>) -> NodeRecord {
    NodeRecord {
        address: underlay.address(),
        address6: underlay.address6.map(|(a, _)| a.into()),
        vxlan_over_ipv6: config.vxlan_underlay == UnderlayFamily::Ipv6,
        networks: ipam
            .networks()
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
    }
}

/// This node as the overlay sees it.
fn local_node<S: Store>(config: &Config, underlay: &Underlay, ipam: &Ipam<S>) -> LocalNode {
    let vxlan_over_ipv6 = config.vxlan_underlay == UnderlayFamily::Ipv6;
    LocalNode {
        name: config.node_name.clone(),
        address4: underlay.address4.map(|(a, _)| a),
        address6: underlay.address6.map(|(a, _)| a),
        vxlan_over_ipv6,
        underlay: underlay.device.clone(),
        networks: ipam
            .networks()
            .map(|(_, n)| LocalNetwork {
                id: NetId::new(&n.spec.name),
                vni: n.spec.vni,
                mtu: underlay.mtu.saturating_sub(vxlan_overhead(vxlan_over_ipv6)),
                vtep: n.vtep,
                vtep_addresses: n.vtep_addresses.clone(),
                table: NETWORK_TABLE,
                pools: n.local_pools(),
            })
            .collect(),
    }
}
