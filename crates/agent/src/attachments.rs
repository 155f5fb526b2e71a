//! The pods attached on this node, one service: their durable records ([`crate::attachments::registry`]),
//! one lock per attachment so that the commands on one run one at a time, the host veths a
//! restart found carrying addresses without a record ([`crate::recovery`]), and the addresses
//! freed lately, by namespace ([`crate::freed`]). It decides nothing about addresses or the
//! kernel: the CNI commands ([`crate::cni`]) combine it with IPAM and the kernel.

use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tokio::sync::OwnedMutexGuard;

use crate::error::AgentError;
use crate::freed::Freed;
use crate::locks::KeyedLocks;
use crate::recovery::Recovery;
use crate::tasks::blocking;
use registry::{Attachment, AttachmentKey, Registry};

pub mod registry;

#[derive(Debug)]
pub struct Attachments {
    registry: Arc<Registry>,
    locks: KeyedLocks<AttachmentKey>,
    recovery: Recovery,
    freed: Freed,
}

impl Attachments {
    pub fn new(registry: Registry, recovery: Recovery, freed: Freed) -> Attachments {
        Attachments {
            registry: Arc::new(registry),
            locks: KeyedLocks::default(),
            recovery,
            freed,
        }
    }

    /// The records, shared with whoever keeps the pods' host sides (the reconciler).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    pub fn get(&self, key: &AttachmentKey) -> Option<Attachment> {
        self.registry.get(key)
    }

    pub fn all(&self) -> Vec<Attachment> {
        self.registry.all()
    }

    /// Waits until no other command works on `key`; it is this one's until the guard drops.
    pub async fn lock(&self, key: &AttachmentKey) -> OwnedMutexGuard<()> {
        self.locks.lock(key).await
    }

    /// Refuses a host veth name another record holds.
    pub fn check_name(&self, a: &Attachment) -> Result<(), AgentError> {
        self.registry.check_name(a)
    }

    /// Writes `a`'s record durably.
    pub async fn persist(&self, a: &Attachment) -> Result<(), AgentError> {
        let (registry, a) = (Arc::clone(&self.registry), a.clone());
        blocking(move || {
            strait_dataplane::fault::inject("persist")?;
            registry.put(&a)
        })
        .await
    }

    /// Drops `key`'s record durably; the record it was, if any.
    pub async fn remove(&self, key: &AttachmentKey) -> Result<Option<Attachment>, AgentError> {
        let (registry, key) = (Arc::clone(&self.registry), key.clone());
        blocking(move || registry.remove(&key)).await
    }

    /// What a restart found without a record, and what it could not take back.
    pub fn recovery(&self) -> &Recovery {
        &self.recovery
    }

    /// The pod of `a` freed its addresses now.
    pub fn note_freed(&self, a: &Attachment) {
        if let Some(pod) = &a.pod {
            self.freed
                .record(&pod.namespace, a.addresses.iter().map(IpNet::addr));
        }
    }

    /// Why a pod of `namespace` may not take `ip` (another namespace freed it lately), if so.
    pub fn freed_refusal(&self, ip: IpAddr, namespace: &str) -> Option<String> {
        self.freed.refusal(ip, namespace)
    }
}
