//! Kubernetes pods on this node. What a pod asks of its network, read from its annotations and
//! its namespace's (and decided by [`crate::tenancy`]); which pods exist here, kept current by a
//! watch, so that the address of a pod deleted without a CNI DEL is still freed; and whether
//! another node is gone for good, Node and pods, so that its address blocks can be taken back.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Api, ListParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use crate::attachments::registry::PodRef;
use crate::error::AgentError;
use crate::tenancy::{self, PodIntent};

/// A pod, by namespace and name.
pub type PodName = (String, String);

/// The pods on a node: their UIDs by name.
#[derive(Debug, Clone, Default)]
pub struct LivePods(HashMap<PodName, String>);

impl LivePods {
    /// Whether `pod` is among them (the same pod, when the reference knows its UID).
    pub fn contains(&self, pod: &PodRef) -> bool {
        match self.0.get(&(pod.namespace.clone(), pod.name.clone())) {
            Some(uid) => pod.uid.as_ref().is_none_or(|u| u == uid),
            None => false,
        }
    }
}

/// A failed API request: denied (RBAC) is not worth retrying, anything else may be.
fn kube_failure(e: kube::Error) -> AgentError {
    match &e {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            AgentError::KubernetesDenied(status.message.clone())
        }
        _ => AgentError::Kubernetes(Box::new(e)),
    }
}

pub struct Pods {
    /// For requests (they time out).
    client: Client,
    /// For the watch of this node's pods.
    watch_client: Client,
    node: String,
    /// How long a pod must have been gone before its address is released.
    pub orphan_grace: Duration,
    /// How long a node must have been gone before its blocks are taken back.
    pub node_grace: Duration,
    /// The pods on this node; `None` until the watch has listed them once.
    live: RwLock<Option<LivePods>>,
    changed: Notify,
}

impl std::fmt::Debug for Pods {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pods")
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Pods {
    pub fn new(
        client: Client,
        watch_client: Client,
        node: &str,
        orphan_grace: Duration,
        node_grace: Duration,
    ) -> Pods {
        Pods {
            client,
            watch_client,
            node: node.to_string(),
            orphan_grace,
            node_grace,
            live: RwLock::new(None),
            changed: Notify::new(),
        }
    }

    /// What the pod `namespace/name` gets, within what its namespace allows; `default_network`
    /// is the network the runtime's configuration names. A pod the API does not know (yet) gets
    /// its namespace's defaults.
    pub async fn intent(
        &self,
        namespace: &str,
        name: &str,
        default_network: &str,
    ) -> Result<PodIntent, AgentError> {
        let pod = Api::<Pod>::namespaced(self.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(kube_failure)?;
        let ns = Api::<Namespace>::all(self.client.clone())
            .get_opt(namespace)
            .await
            .map_err(kube_failure)?;
        let annotations =
            |o: Option<std::collections::BTreeMap<String, String>>| o.unwrap_or_default();
        tenancy::decide(
            namespace,
            &annotations(pod.map(|p| p.metadata.annotations.unwrap_or_default())),
            &annotations(ns.map(|n| n.metadata.annotations.unwrap_or_default())),
            default_network,
        )
        .map_err(|reason| AgentError::NotAllowed { reason })
    }

    /// Whether the API no longer has `pod`: there is no pod of its name, or (when the reference
    /// knows the UID) the one there is a later pod.
    pub async fn gone(&self, pod: &PodRef) -> Result<bool, AgentError> {
        let found = Api::<Pod>::namespaced(self.client.clone(), &pod.namespace)
            .get_opt(&pod.name)
            .await
            .map_err(kube_failure)?;
        Ok(match found {
            None => true,
            Some(p) => pod
                .uid
                .as_ref()
                .is_some_and(|u| p.metadata.uid.as_ref() != Some(u)),
        })
    }

    /// Whether `node` is gone for good: the API has no Node of that name and no pod bound to it
    /// (a deleted Node's pods are deleted after it, and their addresses are in its blocks).
    pub async fn node_gone(&self, node: &str) -> Result<bool, AgentError> {
        let failed = kube_failure;
        let found = Api::<Node>::all(self.client.clone())
            .get_opt(node)
            .await
            .map_err(failed)?;
        if found.is_some() {
            return Ok(false);
        }
        let bound = ListParams::default()
            .fields(&format!("spec.nodeName={node}"))
            .limit(1);
        let pods = Api::<Pod>::all(self.client.clone())
            .list_metadata(&bound)
            .await
            .map_err(failed)?;
        Ok(pods.items.is_empty())
    }

    /// The pods on this node, once the watch has listed them.
    pub fn live(&self) -> Option<LivePods> {
        self.live.read().expect("not poisoned").clone()
    }

    /// Completes when the set of pods changes.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Keeps the set of this node's pods current (runs until the process ends).
    pub async fn watch(&self) {
        let api = Api::<Pod>::all(self.watch_client.clone());
        let selector = watcher::Config::default().fields(&format!("spec.nodeName={}", self.node));
        let stream = watcher::watcher(api, selector).default_backoff();
        futures::pin_mut!(stream);
        let mut listing: Option<LivePods> = None;
        while let Some(event) = stream.next().await {
            let name = |p: &Pod| (p.namespace().unwrap_or_default(), p.name_any());
            let uid = |p: &Pod| p.metadata.uid.clone().unwrap_or_default();
            match event {
                Ok(Event::Init) => listing = Some(LivePods::default()),
                Ok(Event::InitApply(p)) => {
                    if let Some(l) = listing.as_mut() {
                        l.0.insert(name(&p), uid(&p));
                    }
                }
                Ok(Event::InitDone) => {
                    *self.live.write().expect("not poisoned") = listing.take();
                    self.changed.notify_one();
                }
                Ok(Event::Apply(p)) => {
                    if let Some(live) = self.live.write().expect("not poisoned").as_mut() {
                        live.0.insert(name(&p), uid(&p));
                    }
                }
                Ok(Event::Delete(p)) => {
                    if let Some(live) = self.live.write().expect("not poisoned").as_mut() {
                        live.0.remove(&name(&p));
                    }
                    self.changed.notify_one();
                }
                Err(e) => tracing::debug!(error = %e, "pod watch interrupted; it retries"),
            }
        }
    }
}
