//! The CNI commands as the agent carries them out. ADD persists the attachment while it builds
//! the pod's network and undoes both if either fails; DEL and GC release even when the netns is
//! gone; CHECK reports every difference it finds.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ipnet::IpNet;

use strait_cni::{CniError, CniRequest, CniResult, Command, Interface, IpConfig, Route};
use strait_dataplane::{
    DataplaneError, Kernel, PodLinks, PodNamespace, PodPlan, Rtnetlink, add_pod, check_pod,
    delete_pod, gateway_for, gateways, host_veth_name, pod_links, pod_mac,
};
use strait_netlink::Netlink;
use strait_netns::Netns;
use strait_rpc::Received;
use strait_store::Store;
use tokio::sync::OwnedMutexGuard;

use crate::agent::Agent;
use crate::attachments::registry::{Attachment, AttachmentKey, PodRef};
use crate::caller::Caller;
use crate::error::AgentError;
use crate::findings::CheckFinding;
use crate::ipam::network::{NETWORK_TABLE, NetworkState};
use crate::node::refuse_router_advertisements;
use crate::recovery::Quarantined;
use crate::tasks::blocking;
use crate::tenancy::{PodIntent, fixed_address_refusal};

fn key_of(req: &CniRequest) -> AttachmentKey {
    AttachmentKey {
        network: req.config.network_name().to_string(),
        container_id: req.invocation.container_id.clone(),
        ifname: req.invocation.ifname.clone(),
    }
}

fn plan_of(a: &Attachment) -> PodPlan {
    PodPlan {
        host_veth: a.host_veth.clone(),
        ifname: a.key.ifname.clone(),
        netns: PathBuf::from(a.netns.clone().unwrap_or_default()),
        addresses: a.addresses.clone(),
        mtu: a.mtu,
        table: NETWORK_TABLE,
        pod_mac: a.pod_mac,
    }
}

/// The container's namespace from what the plugin passed: ADD and CHECK get it with the netlink
/// socket opened inside it, or not at all (they answer that they need it); other commands do
/// without.
fn pod_namespace(req: &CniRequest, passed: Received) -> Result<Option<PodNamespace>, AgentError> {
    let path = req.invocation.netns.clone().unwrap_or_default();
    match (passed.netns, passed.socket) {
        (Some(fd), Some(socket)) => Ok(Some(PodNamespace {
            netns: Netns::from_fd(fd, path).map_err(|e| AgentError::Dataplane(e.into()))?,
            netlink: Netlink::from_socket(socket).map_err(|e| AgentError::Dataplane(e.into()))?,
        })),
        (Some(_), None) if matches!(req.invocation.command, Command::Add | Command::Check) => {
            Err(AgentError::NoNetns)
        }
        _ => Ok(None),
    }
}

/// The node's rtnetlink endpoint.
fn host_netlink<K: Kernel>(kernel: &K) -> Result<K::Rtnl, AgentError> {
    kernel.host().map_err(|e| AgentError::Dataplane(e.into()))
}

fn result_of(a: &Attachment, links: &PodLinks) -> CniResult {
    let interface = |l: &strait_netlink::Link, sandbox: Option<String>| Interface {
        name: l.name.clone(),
        mac: l.mac.map(|m| m.to_string()),
        sandbox,
        mtu: Some(l.mtu),
    };
    CniResult {
        interfaces: vec![
            interface(&links.host, None),
            interface(&links.pod, a.netns.clone()),
        ],
        ips: a
            .addresses
            .iter()
            .map(|address| IpConfig {
                address: *address,
                gateway: Some(gateway_for(address.addr())),
                interface: Some(1),
            })
            .collect(),
        routes: gateways(&a.addresses)
            .into_iter()
            .map(|gw| {
                let default = if gw.is_ipv4() { "0.0.0.0/0" } else { "::/0" };
                Route::new(default.parse().expect("literal"), Some(gw))
            })
            .collect(),
        dns: Default::default(),
    }
}

impl<S: Store> Agent<S> {
    /// Carries out one CNI command; the answer is in the request's version. `passed` holds the
    /// container's namespace as the plugin opened it, and for ADD and CHECK a netlink socket
    /// inside it.
    pub async fn handle_cni(
        self: &Arc<Self>,
        req: CniRequest,
        passed: Received,
        caller: Caller<'_>,
    ) -> Result<Option<serde_json::Value>, CniError> {
        let ns = pod_namespace(&req, passed).map_err(CniError::from)?;
        self.carry_out(req, ns, caller).await
    }
}

/// What a fresh ADD has taken so far: its addresses, its record once written, its pod's
/// network once built.
#[derive(Debug, Default)]
struct Taken {
    addresses: Vec<IpNet>,
    record: Option<AttachmentKey>,
    veth: Option<String>,
}

/// The pod's namespace on the kernel `K`.
type PodNs<K> = PodNamespace<<K as Kernel>::Rtnl>;

impl<S: Store, K: Kernel> Agent<S, K> {
    /// Carries out one CNI command with the container's namespace `ns`, as given.
    pub(crate) async fn carry_out(
        self: &Arc<Self>,
        req: CniRequest,
        ns: Option<PodNs<K>>,
        caller: Caller<'_>,
    ) -> Result<Option<serde_json::Value>, CniError> {
        let started = Instant::now();
        let version = req.config.cni_version;
        let command = req.invocation.command;
        let outcome = match command {
            Command::Add => self.add(&req, ns, caller).await.map(Some),
            Command::Del => self.del(&req, caller).await.map(|()| None),
            Command::Check => self.check(&req, ns, caller).await.map(|()| None),
            Command::Status => self.cni_status(&req).await.map(|()| None),
            Command::Gc => self.gc(&req, caller).await.map(|()| None),
            Command::Version => {
                return Ok(Some(strait_cni::version_reply(b"")));
            }
        };
        let elapsed = started.elapsed().as_secs_f64();
        self.metrics.cni(command.as_str(), outcome.is_ok(), elapsed);
        let elapsed_ms = elapsed * 1e3;
        match &outcome {
            Ok(_) => {
                tracing::info!(command = command.as_str(), container_id = %req.invocation.container_id,
                ifname = %req.invocation.ifname, network = %req.config.network_name(), elapsed_ms, "done")
            }
            Err(e) => {
                tracing::warn!(command = command.as_str(), container_id = %req.invocation.container_id,
                ifname = %req.invocation.ifname, network = %req.config.network_name(), elapsed_ms, error = %e, "failed")
            }
        }
        outcome
            .map(|r| r.map(|r| r.to_json(version)))
            .map_err(CniError::from)
    }

    /// CNI STATUS: the network exists, the node takes new pods, and it could give one an address.
    async fn cni_status(&self, req: &CniRequest) -> Result<(), AgentError> {
        let net = self.ipam.network(req.config.network_name())?;
        if let Some(reason) = self.attachments.recovery().not_ready() {
            return Err(AgentError::Unavailable { reason });
        }
        self.ipam
            .can_allocate(net)
            .await
            .map_err(|reason| AgentError::Unavailable { reason })
    }

    /// ADD. Checks that its caller is still there, within its budget, before it persists and
    /// before it touches the kernel; a caller that left during the kernel work finds its pod
    /// undone.
    async fn add(
        &self,
        req: &CniRequest,
        ns: Option<PodNs<K>>,
        caller: Caller<'_>,
    ) -> Result<CniResult, AgentError> {
        let _admitted = self.membership.admit().await?;
        if let Some(reason) = self.attachments.recovery().not_ready() {
            return Err(AgentError::NotReady { reason });
        }
        let intent = match (self.membership.pods(), req.invocation.args.pod()) {
            (Some(pods), Some((namespace, name))) => {
                pods.intent(namespace, name, req.config.network_name())
                    .await?
            }
            _ => PodIntent::default(),
        };
        let network = intent
            .network
            .as_deref()
            .unwrap_or(req.config.network_name());
        let net = self.ipam.network(network)?;
        let ns = ns.ok_or(AgentError::NoNetns)?;
        let key = key_of(req);
        let _one_at_a_time = caller.within(self.attachments.lock(&key)).await?;
        let netns = req.invocation.netns.clone();
        // What this ADD takes, given back if it does not complete (a repeated ADD takes nothing:
        // its record and addresses stay).
        let mut taken = Taken::default();
        let (attachment, fresh) = match self.attachments.get(&key) {
            // A repeated ADD: same addresses; the data plane is kept if intact, else rebuilt.
            Some(existing) => (
                Attachment {
                    netns,
                    releasing: false,
                    ..existing
                },
                false,
            ),
            None => {
                let given = match &intent.address {
                    Some(text) => {
                        let ip = text.parse().map_err(|_| AgentError::AddressInvalid {
                            address: text.clone(),
                            reason: "it is not an IP address".into(),
                        })?;
                        if let Some(p) = net.spec.pools.iter().find(|p| p.pool.cidr.contains(&ip))
                            && let Some(reason) =
                                fixed_address_refusal(&intent, &p.pool.name, p.fixed_addresses)
                        {
                            return Err(AgentError::NotAllowed {
                                reason: format!(
                                    "the requested address {ip} cannot be used: {reason}"
                                ),
                            });
                        }
                        if let Some((namespace, _)) = req.invocation.args.pod()
                            && let Some(reason) = self.attachments.freed_refusal(ip, namespace)
                        {
                            return Err(AgentError::AddressUnavailable {
                                address: ip,
                                reason,
                            });
                        }
                        Some(self.ipam.allocate_fixed(net, ip).await?)
                    }
                    None => None,
                };
                let addresses = self
                    .ipam
                    .allocate(net, intent.pool.as_deref(), given, |p| {
                        intent.may_draw_from(p)
                    })
                    .await?;
                let a = Attachment {
                    host_veth: host_veth_name(&key.network, &key.container_id, &key.ifname),
                    pod_mac: Some(pod_mac(&key.network, &key.container_id, &key.ifname)),
                    served_by: (network != key.network).then(|| network.to_string()),
                    key: key.clone(),
                    netns,
                    pod: req.invocation.args.pod().map(|(namespace, name)| PodRef {
                        namespace: namespace.to_string(),
                        name: name.to_string(),
                        uid: req.invocation.args.pod_uid().map(str::to_string),
                    }),
                    addresses,
                    mtu: net.mtu,
                    releasing: false,
                };
                taken.addresses = a.addresses.clone();
                (a, true)
            }
        };
        // The record is written beside the kernel work: a name another record holds is refused
        // before that work deletes the other pod's veth.
        let may_build = caller
            .check()
            .and_then(|()| self.attachments.check_name(&attachment));
        if let Err(e) = may_build {
            self.roll_back(net, taken).await;
            return Err(e);
        }
        // The record is written while the veth pair is created; no address reaches the kernel
        // before the record is durable, so after a crash every address a device carries has its
        // record (a veth without one carries none, and goes with its DEL or a GC). The ADD
        // waits for the slower of the two instead of their sum.
        let (written, record_written) = std::sync::mpsc::sync_channel::<bool>(1);
        let plan = plan_of(&attachment);
        let sysctl_dir = self.config.sysctl_dir.clone();
        let node_kernel = self.kernel.clone();
        // Whether the kernel work (re)builds the pod's network: then whatever it leaves on
        // failure is this ADD's to remove. A repeated ADD whose network is intact builds nothing.
        let building = Arc::new(AtomicBool::new(fresh));
        let builds = Arc::clone(&building);
        let kernel = blocking(move || {
            let mut ns = ns;
            let mut host = host_netlink(&node_kernel)?;
            if !fresh {
                if check_pod(&mut host, &plan, Some(&mut ns.netlink))?.is_empty()
                    && let Some(links) = pod_links(&mut host, &plan, &mut ns.netlink)?
                {
                    return Ok(links);
                }
                builds.store(true, Ordering::SeqCst);
                delete_pod(&mut host, &plan.host_veth)?;
            }
            let before_addresses = || {
                if record_written.recv() != Ok(true) {
                    return Err(DataplaneError::Stopped(
                        "its record could not be written".into(),
                    ));
                }
                if plan.addresses.iter().any(|a| a.addr().is_ipv6()) {
                    refuse_router_advertisements(&sysctl_dir, &plan.host_veth)
                        .map_err(|e| DataplaneError::Stopped(e.to_string()))?;
                }
                Ok(())
            };
            Ok(add_pod(&mut host, &plan, &mut ns, before_addresses)?)
        });
        let record = async {
            let persisted = self.attachments.persist(&attachment).await;
            let _ = written.send(persisted.is_ok());
            persisted
        };
        let (persisted, built) = tokio::join!(record, kernel);
        if building.load(Ordering::SeqCst) {
            // From here on, a failure deletes the veth again (gone already is fine).
            taken.veth = Some(attachment.host_veth.clone());
        }
        let built = match persisted {
            Ok(()) => built,
            // A repeated ADD keeps its earlier record (its pod's network, when it had to be
            // rebuilt, is gone: the runtime's retry builds it again). The kernel work stopped
            // before any address; what it made goes with the rollback.
            Err(e) => {
                self.roll_back(net, taken).await;
                return Err(e);
            }
        };
        if fresh {
            taken.record = Some(key.clone());
        }
        match built {
            Ok(_) if fresh && caller.is_gone() => {
                self.roll_back(net, taken).await;
                Err(AgentError::CallerGone)
            }
            Ok(links) => {
                if fresh {
                    // A veth of this name held by a pod without a record was just replaced.
                    self.free_quarantined(&attachment.host_veth).await;
                }
                let ours = result_of(&attachment, &links);
                Ok(match req.config.prev_result.clone() {
                    Some(prev) => prev.chain(ours),
                    None => ours,
                })
            }
            // What the kernel work built goes with its veth, first: if the veth cannot be
            // deleted, the record and addresses stay rather than free addresses a device may
            // carry.
            Err(e) => {
                self.roll_back(net, taken).await;
                Err(e)
            }
        }
    }

    /// Gives back what an ADD took, kernel first (no device may carry an address once it is
    /// free), then the record, then the addresses. What cannot be given back is logged and
    /// stays held, the ADD's own error being the one to answer: a veth that cannot be deleted
    /// keeps its record and addresses, a record that cannot be dropped its addresses, until the
    /// runtime's DEL or a GC.
    async fn roll_back(&self, net: &NetworkState, taken: Taken) {
        if let Some(veth) = &taken.veth
            && let Err(e) = self.release_veth(veth).await
        {
            tracing::warn!(%veth, error = %e, "could not undo the network of a failed ADD");
            return;
        }
        match &taken.record {
            Some(key) => {
                if let Err(e) = self.forget(key).await {
                    tracing::warn!(container_id = %key.container_id, error = %e,
                        "could not drop the record of a failed ADD");
                }
            }
            None => {
                self.ipam.release(&net.spec.name, &taken.addresses).await;
            }
        }
    }

    /// DEL. With a record, it answers once the record says "releasing" (durably): removing the
    /// host veth takes the kernel 13-25 ms, and is done after the answer, holding the
    /// attachment's lock; only then do the record and its addresses go, so no address is handed
    /// out while a device still carries it. A restart finishes what a crash interrupted. A DEL
    /// of an attachment already being released answers at once.
    async fn del(self: &Arc<Self>, req: &CniRequest, caller: Caller<'_>) -> Result<(), AgentError> {
        let key = key_of(req);
        if self.attachments.get(&key).is_some_and(|a| a.releasing) {
            return Ok(());
        }
        let one_at_a_time = caller.within(self.attachments.lock(&key)).await?;
        let Some(a) = self.attachments.get(&key) else {
            return self.release(&key).await;
        };
        if !a.releasing
            && let Err(e) = self
                .attachments
                .persist(&Attachment {
                    releasing: true,
                    ..a
                })
                .await
        {
            // A full or read-only disk: release now, as DEL always must.
            tracing::warn!(container_id = %key.container_id, error = %e,
                "cannot record the release; releasing before answering");
            return self.release(&key).await;
        }
        let agent = Arc::clone(self);
        tokio::spawn(async move { agent.finish_release(&key, one_at_a_time).await });
        Ok(())
    }

    /// Finishes the releases whose DEL a previous run of the agent answered but did not complete.
    pub fn resume_releases(self: &Arc<Self>) {
        for a in self.attachments.all().into_iter().filter(|a| a.releasing) {
            let agent = Arc::clone(self);
            tokio::spawn(async move {
                let one_at_a_time = agent.attachments.lock(&a.key).await;
                agent.finish_release(&a.key, one_at_a_time).await;
            });
        }
    }

    /// Completes the release of an attachment whose DEL has answered, starting under the key's
    /// lock `held`, and trying again until it succeeds (after 0.2 s, then four times longer each
    /// time, at most a minute apart) with the lock taken for each attempt only; its addresses
    /// stay held meanwhile. Stops when the record is no longer being released (a GC, or a new
    /// ADD of the same attachment, came in between).
    pub(crate) async fn finish_release(&self, key: &AttachmentKey, held: OwnedMutexGuard<()>) {
        let mut held = Some(held);
        let mut pause = std::time::Duration::from_millis(200);
        for attempt in 1.. {
            let one_at_a_time = match held.take() {
                Some(guard) => guard,
                None => self.attachments.lock(key).await,
            };
            if !self.attachments.get(key).is_some_and(|a| a.releasing) {
                return;
            }
            let released = match strait_dataplane::fault::inject("before-release") {
                Ok(()) => self.release(key).await,
                Err(e) => Err(e.into()),
            };
            match released {
                Ok(()) => return,
                Err(e) => tracing::warn!(container_id = %key.container_id, attempt, error = %e,
                    "could not finish releasing an attachment; trying again"),
            }
            drop(one_at_a_time);
            tokio::time::sleep(pause).await;
            pause = (pause * 4).min(std::time::Duration::from_secs(60));
        }
    }

    /// Removes an attachment's data plane, then its record and addresses. The host veth name
    /// follows from the key, so even an attachment without a record is cleaned. Call with the
    /// key's lock held.
    pub(crate) async fn release(&self, key: &AttachmentKey) -> Result<(), AgentError> {
        let veth = self
            .attachments
            .get(key)
            .map(|a| a.host_veth)
            .unwrap_or_else(|| host_veth_name(&key.network, &key.container_id, &key.ifname));
        self.release_veth(&veth).await?;
        self.forget(key).await
    }

    /// Deletes a host veth (and with it the pod's end), then frees what was quarantined on it
    /// and forgets its conflicts.
    async fn release_veth(&self, veth: &str) -> Result<(), AgentError> {
        let name = veth.to_string();
        let kernel = self.kernel.clone();
        blocking(move || Ok(delete_pod(&mut host_netlink(&kernel)?, &name)?)).await?;
        self.free_quarantined(veth).await;
        Ok(())
    }

    /// Removes a quarantined veth, the very device that was read at start (an ADD of the same
    /// name since then has its own device, and its own claim on the quarantine), then frees its
    /// addresses; the quarantine stays when the device cannot be removed.
    async fn release_quarantined(&self, veth: &str) -> Result<(), AgentError> {
        let Some(q) = self.attachments.recovery().forget(veth) else {
            return Ok(()); // an ADD of that pod took it over
        };
        let (index, kernel) = (q.index, self.kernel.clone());
        let deleted = blocking(move || {
            host_netlink(&kernel)?
                .delete_link_at(index)
                .map_err(|e| AgentError::Dataplane(e.into()))
        })
        .await;
        if let Err(e) = deleted {
            self.attachments.recovery().keep(q);
            return Err(e);
        }
        self.release_quarantine(q).await;
        Ok(())
    }

    /// Frees what was quarantined on `veth`, which no longer exists or now serves a new record.
    async fn free_quarantined(&self, veth: &str) {
        if let Some(q) = self.attachments.recovery().forget(veth) {
            self.release_quarantine(q).await;
        }
    }

    /// Frees the addresses of a quarantine whose device is gone.
    async fn release_quarantine(&self, q: Quarantined) {
        if let Some(network) = q.network.as_deref() {
            let addresses: Vec<IpNet> = q.addresses.into_iter().map(IpNet::from).collect();
            if self.ipam.release(network, &addresses).await {
                tracing::info!(veth = %q.veth, ?addresses, "released quarantined addresses");
            }
        }
    }

    /// Drops the record and frees its addresses.
    async fn forget(&self, key: &AttachmentKey) -> Result<(), AgentError> {
        if let Some(a) = self.attachments.remove(key).await?
            && self.ipam.release(a.network(), &a.addresses).await
        {
            self.attachments.note_freed(&a);
        }
        Ok(())
    }

    async fn check(
        &self,
        req: &CniRequest,
        ns: Option<PodNs<K>>,
        caller: Caller<'_>,
    ) -> Result<(), AgentError> {
        self.ipam.network(req.config.network_name())?;
        let key = key_of(req);
        let _one_at_a_time = caller.within(self.attachments.lock(&key)).await?;
        let a = self
            .attachments
            .get(&key)
            .ok_or_else(|| AgentError::UnknownAttachment { key: key.clone() })?;
        let mut problems = Vec::new();
        if a.netns != req.invocation.netns {
            problems.push(CheckFinding::NetnsChanged {
                recorded: a.netns.clone(),
                named: req.invocation.netns.clone(),
            });
        }
        problems.extend(
            self.attachments
                .recovery()
                .conflicts()
                .into_iter()
                .filter(|c| c.veth == a.host_veth)
                .map(|c| CheckFinding::Conflict {
                    address: c.address,
                    reason: c.reason,
                }),
        );
        if let Some(prev) = &req.config.prev_result {
            problems.extend(prev_result_problems(prev, &a));
        }
        let (plan, kernel) = (plan_of(&a), self.kernel.clone());
        let found = blocking(move || {
            let mut ns = ns;
            let pod = ns.as_mut().map(|ns| &mut ns.netlink);
            Ok(check_pod(&mut host_netlink(&kernel)?, &plan, pod)?)
        })
        .await;
        match found {
            Ok(kernel) => problems.extend(kernel.into_iter().map(CheckFinding::Kernel)),
            Err(AgentError::Dataplane(DataplaneError::Netns(e))) => {
                problems.push(CheckFinding::Namespace(e.to_string()))
            }
            Err(e) => return Err(e),
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(AgentError::CheckFailed { problems })
        }
    }

    /// Releases every attachment of the network that the runtime no longer lists. Keeps going
    /// past failures and reports the first.
    async fn gc(&self, req: &CniRequest, caller: Caller<'_>) -> Result<(), AgentError> {
        let valid: HashSet<(&str, &str)> = req
            .config
            .valid_attachments
            .as_ref()
            .ok_or(AgentError::GcWithoutList)?
            .iter()
            .map(|v| (v.container_id.as_str(), v.ifname.as_str()))
            .collect();
        let network = req.config.network_name();
        let stale: Vec<AttachmentKey> = self
            .attachments
            .all()
            .into_iter()
            .map(|a| a.key)
            .filter(|k| {
                k.network == network
                    && !valid.contains(&(k.container_id.as_str(), k.ifname.as_str()))
            })
            .collect();
        let mut first_error = None;
        for key in stale {
            caller.check()?;
            let _one_at_a_time = caller.within(self.attachments.lock(&key)).await?;
            match self.release(&key).await {
                Ok(()) => tracing::info!(container_id = %key.container_id, ifname = %key.ifname,
                    network = %key.network, "garbage-collected attachment"),
                Err(e) => {
                    tracing::warn!(container_id = %key.container_id, error = %e, "GC could not release");
                    first_error.get_or_insert(e);
                }
            }
        }
        let listed: HashSet<String> = valid
            .iter()
            .map(|(cid, ifname)| host_veth_name(network, cid, ifname))
            .collect();
        for veth in self.attachments.recovery().quarantined_in(network) {
            if listed.contains(&veth) {
                continue;
            }
            match self.release_quarantined(&veth).await {
                Ok(()) => {
                    tracing::info!(%veth, network, "garbage-collected a quarantined host veth")
                }
                Err(e) => {
                    tracing::warn!(%veth, error = %e, "GC could not release a quarantined host veth");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// What the chain's previous result should say about our attachment but does not.
fn prev_result_problems(prev: &CniResult, a: &Attachment) -> Vec<CheckFinding> {
    let mut problems = Vec::new();
    for address in &a.addresses {
        if !prev.ips.iter().any(|ip| ip.address == *address) {
            problems.push(CheckFinding::PrevResultAddress(*address));
        }
    }
    if !prev
        .interfaces
        .iter()
        .any(|i| i.name == a.key.ifname && i.sandbox.is_some())
    {
        problems.push(CheckFinding::PrevResultInterface(a.key.ifname.clone()));
    }
    problems
}

#[cfg(test)]
mod tests;
