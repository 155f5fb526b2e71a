//! The agent's one error type, and the one place where each error becomes a CNI error code with
//! a message that says what to do. Its variants come in four groups: what a CNI request can
//! meet; what preparing the node can meet (the underlay, sysctls, nftables); what ends a start
//! or an installation of the plugins; and straitctl requests the node refuses. Only the first
//! group reaches a CNI caller (a pod's sysctl that cannot be written does, as the data plane's
//! failure); the others are mapped all the same, to "internal", so that no error can escape the
//! mapping. Nothing converts into it implicitly but the errors of IPAM and the data plane, whose
//! codes are mapped kind by kind below: a store or netlink error must say where it came from.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use strait_cni::{CniError, ErrorCode};
use strait_dataplane::DataplaneError;
use strait_ipam::IpamError;
use strait_netlink::NetlinkError;
use strait_netns::NetnsError;
use strait_nft::NftError;
use strait_store::StoreError;

use crate::attachments::registry::AttachmentKey;
use crate::findings::CheckFinding;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("network {name:?} is not configured on this node (straitd serves: {known})")]
    UnknownNetwork { name: String, known: String },
    #[error("network {network} has no free address: every block of its pools ({pools}) is taken")]
    Exhausted { network: String, pools: String },
    #[error("no attachment of container {} on interface {} in network {} is known on this node", key.container_id, key.ifname, key.network)]
    UnknownAttachment { key: AttachmentKey },
    #[error("the container's network differs from what was set up: {}", problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    CheckFailed { problems: Vec<CheckFinding> },
    #[error("network {network} has no pool {pool:?} (it has: {known})")]
    UnknownPool {
        network: String,
        pool: String,
        known: String,
    },
    #[error("the requested address {address:?} cannot be used: {reason}")]
    AddressInvalid { address: String, reason: String },
    #[error("the requested address {address} is not available: {reason}")]
    AddressUnavailable {
        address: std::net::IpAddr,
        reason: String,
    },
    #[error("asking the Kubernetes API about the pod failed: {0}")]
    Kubernetes(Box<kube::Error>),
    #[error("the Kubernetes API denied straitd access: {0}")]
    KubernetesDenied(String),
    #[error("GC needs the list of valid attachments (cni.dev/valid-attachments)")]
    GcWithoutList,
    #[error("the request carried no network namespace, or no netlink socket opened inside it")]
    NoNetns,
    #[error(transparent)]
    Ipam(#[from] IpamError),
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("pod registry {}: {source}", path.display())]
    RegistryIo {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pod registry: {key:?} and {other:?} map to the same record {name}")]
    RecordCollision {
        key: Box<AttachmentKey>,
        other: Box<AttachmentKey>,
        name: String,
    },
    #[error("an agent task failed: {0}")]
    Task(tokio::task::JoinError),
    #[error("{reason}")]
    NotAllowed { reason: String },
    #[error("the caller left before the answer")]
    CallerGone,
    #[error("the request took longer than straitd's budget of {budget:?}")]
    OutOfTime { budget: std::time::Duration },
    #[error("{reason}")]
    NotReady { reason: String },
    #[error("{reason}")]
    Unavailable { reason: String },

    // Preparing the node.
    #[error(
        "writing {}: {source}{}",
        path.display(),
        if source.raw_os_error() == Some(libc::EROFS) {
            " (in a container without privileges /proc/sys is read-only: mount the host's \
             /proc/sys/net at SYSCTL_DIR/net and set sysctl_dir to SYSCTL_DIR, as deploy/ does)"
        } else {
            ""
        }
    )]
    Sysctl {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("preparing the node: {0}")]
    Prepare(#[source] Box<AgentError>),
    #[error("nftables: {0}")]
    Nft(#[source] NftError),
    #[error("finding this node's underlay: {0}")]
    Underlay(#[source] Box<AgentError>),
    #[error("reading this node's interfaces: {0}")]
    Interfaces(#[source] NetlinkError),
    #[error("reading the pods' host interfaces: {0}")]
    HostInterfaces(#[source] DataplaneError),
    #[error("node_address {0} is not on any interface of this node")]
    NodeAddressNotLocal(Ipv4Addr),
    #[error(
        "node_address6 {0} is not a global address of the underlay device {1}: set one of that \
         device's addresses, or none to take its first settled one"
    )]
    NodeAddress6NotOnUnderlay(Ipv6Addr, String),
    #[error(
        "node_address6 {0} is not a global address of any interface of this node (and no IPv4 \
         default route leaves through a device with an IPv4 address to find the underlay by)"
    )]
    NodeAddress6NotLocal(Ipv6Addr),
    #[error(
        "cannot tell this node's address: no IPv4 default route leaves through a device with an \
         IPv4 address, and there is no IPv6 default route; set node_address or node_address6 in \
         straitd's configuration"
    )]
    NodeAddressUnknown,
    #[error(
        "the underlay device {0} (found through the IPv6 default route) has no IPv4 address and \
         no settled global IPv6 address yet (duplicate address detection may still run): set \
         node_address6, which is taken while still tentative, or start once it has settled"
    )]
    NoSettledAddress6(String),

    // Starting.
    #[error("{path}: {reason}")]
    Config { path: String, reason: String },
    #[error("the configuration does not fit this node: {0}")]
    Unfit(String),
    #[error("network {network}: {source}")]
    Network {
        network: String,
        source: Box<AgentError>,
    },
    #[error("taking back the addresses of this node's pods: {0}")]
    Restore(#[source] Box<AgentError>),
    #[error("announcing this node in the cluster store: {0}")]
    Announce(#[source] StoreError),
    #[error("the cluster store: {0}")]
    Store(#[source] StoreError),
    #[error("watching for changes: {0}")]
    Watch(#[source] std::io::Error),
    #[error(
        "the CNI binary directory {} does not exist: mount the node's (usually /opt/cni/bin) there",
        .0.display()
    )]
    NoCniBinDir(PathBuf),
    #[error("{} names no plugin file", .0.display())]
    NotAPlugin(PathBuf),
    #[error("{what}: {source}")]
    Install {
        what: String,
        source: std::io::Error,
    },

    // Refusing a straitd request.
    #[error("{reason}")]
    Refused { reason: String },
}

impl From<AgentError> for CniError {
    fn from(e: AgentError) -> CniError {
        let msg = e.to_string();
        let (code, details) = match &e {
            AgentError::UnknownNetwork { .. } => (
                ErrorCode::InvalidConfig,
                "set \"network\" (or the configuration's \"name\") to a network from straitd's configuration",
            ),
            AgentError::Exhausted { .. } | AgentError::Ipam(IpamError::PoolExhausted { .. }) => (
                ErrorCode::PoolExhausted,
                "delete pods that are no longer needed, or add a pool to the network in straitd's configuration",
            ),
            AgentError::UnknownAttachment { .. } => (
                ErrorCode::UnknownContainer,
                "the container was never added to this network on this node, or was already deleted",
            ),
            AgentError::CheckFailed { .. } => (
                ErrorCode::CheckFailed,
                "something other than strait changed the container's network; delete and re-add the container",
            ),
            AgentError::GcWithoutList => (
                ErrorCode::InvalidConfig,
                "the runtime must pass cni.dev/valid-attachments (an empty list releases everything)",
            ),
            AgentError::UnknownPool { .. } => (
                ErrorCode::InvalidConfig,
                "name one of the network's pools in the strait.io/pool annotation, or remove it",
            ),
            AgentError::AddressInvalid { .. } => (
                ErrorCode::InvalidConfig,
                "set strait.io/ip-address to an address of one of the network's pools",
            ),
            AgentError::AddressUnavailable { .. } => (
                ErrorCode::AddressUnavailable,
                "choose another address, free this one, or remove strait.io/ip-address",
            ),
            AgentError::Kubernetes(_) => (
                ErrorCode::TryAgainLater,
                "the Kubernetes API is unreachable; the runtime should retry",
            ),
            AgentError::NoNetns => (
                ErrorCode::InvalidEnvironment,
                "send CNI requests through the strait plugin of straitd's version: it opens CNI_NETNS, and a netlink socket inside it, and passes both on",
            ),
            AgentError::KubernetesDenied(_)
            | AgentError::Ipam(IpamError::Store(StoreError::Denied(_)))
            | AgentError::Store(StoreError::Denied(_)) => (
                ErrorCode::Internal,
                "straitd's credentials may not do this: check its service account and RBAC (deploy/rbac.yaml)",
            ),
            AgentError::Ipam(IpamError::Store(StoreError::Unavailable(_)))
            | AgentError::Store(StoreError::Unavailable(_)) => (
                ErrorCode::TryAgainLater,
                "the cluster store is unreachable; the runtime should retry",
            ),
            AgentError::Ipam(IpamError::Store(StoreError::Io(_)))
            | AgentError::Store(StoreError::Io(_)) => (
                ErrorCode::IoFailure,
                "straitd could not read or write the embedded store's directory (full or read-only disk?)",
            ),
            AgentError::Ipam(_) => (
                ErrorCode::Internal,
                "the cluster store holds something unexpected; see straitd's log",
            ),
            AgentError::Dataplane(DataplaneError::Netns(NetnsError::NotFound { .. })) => (
                ErrorCode::UnknownContainer,
                "the container's network namespace is gone; nothing was changed",
            ),
            AgentError::Dataplane(DataplaneError::Netns(NetnsError::NotNetns { .. })) => (
                ErrorCode::InvalidEnvironment,
                "set CNI_NETNS to the path of a network namespace (e.g. /var/run/netns/NAME or /proc/PID/ns/net)",
            ),
            AgentError::Dataplane(DataplaneError::IfnameTaken { .. }) => (
                ErrorCode::InvalidEnvironment,
                "choose another CNI_IFNAME, or DEL the attachment that created this interface",
            ),
            AgentError::Dataplane(DataplaneError::KernelFeatureMissing { .. }) => (
                ErrorCode::KernelFeatureMissing,
                "load the kernel module or run on a kernel built with this feature",
            ),
            AgentError::Dataplane(_) => (
                ErrorCode::DataplaneFailed,
                "the kernel refused a change; see straitd's log. Nothing was left half-built",
            ),
            AgentError::RegistryIo { .. } => (
                ErrorCode::IoFailure,
                "straitd could not write its state directory (full or read-only disk?)",
            ),
            AgentError::RecordCollision { .. } => (
                ErrorCode::IoFailure,
                "two attachments map to the same host interface name: DEL the other one, or use another CNI_IFNAME",
            ),
            AgentError::Task(_)
            | AgentError::Sysctl { .. }
            | AgentError::Prepare(_)
            | AgentError::Nft(_)
            | AgentError::Underlay(_)
            | AgentError::Interfaces(_)
            | AgentError::HostInterfaces(_)
            | AgentError::NodeAddressNotLocal(_)
            | AgentError::NodeAddress6NotOnUnderlay(..)
            | AgentError::NodeAddress6NotLocal(_)
            | AgentError::NoSettledAddress6(_)
            | AgentError::NodeAddressUnknown
            | AgentError::Config { .. }
            | AgentError::Unfit(_)
            | AgentError::Network { .. }
            | AgentError::Restore(_)
            | AgentError::Announce(_)
            | AgentError::Store(_)
            | AgentError::Watch(_)
            | AgentError::NoCniBinDir(_)
            | AgentError::NotAPlugin(_)
            | AgentError::Install { .. }
            | AgentError::Refused { .. } => (ErrorCode::Internal, "see straitd's log"),
            AgentError::NotAllowed { .. } => (
                ErrorCode::NotAllowed,
                "remove the annotation, or ask the cluster admin to allow it for the namespace",
            ),
            AgentError::CallerGone => (
                ErrorCode::TryAgainLater,
                "nothing was left behind; the runtime should retry",
            ),
            AgentError::OutOfTime { .. } => (
                ErrorCode::TryAgainLater,
                "nothing was left behind (is the cluster store slow? see straitd's log); the runtime should retry",
            ),
            AgentError::NotReady { .. } => (
                ErrorCode::TryAgainLater,
                "this node takes no new pod now (the message says why; `straitctl status` shows its state)",
            ),
            AgentError::Unavailable { .. } => (
                ErrorCode::PluginNotAvailable,
                "the node cannot take a new pod now; `straitctl status` shows its state",
            ),
        };
        CniError::new(code, msg, details)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_gets_the_code_that_tells_the_runtime_what_to_do() {
        let key = |cid: &str| AttachmentKey {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        };
        let store = |e: StoreError| AgentError::Ipam(IpamError::Store(e));
        let cases = [
            (
                AgentError::Kubernetes(Box::new(kube::Error::LinesCodecMaxLineLengthExceeded)),
                11,
            ),
            (AgentError::KubernetesDenied("forbidden".into()), 104),
            (store(StoreError::Unavailable("timeout".into())), 11),
            (store(StoreError::Denied("forbidden".into())), 104),
            (
                store(StoreError::Io(std::io::Error::from_raw_os_error(
                    libc::ENOSPC,
                ))),
                5,
            ),
            (AgentError::CallerGone, 11),
            (AgentError::NotAllowed { reason: "x".into() }, 106),
            (
                AgentError::OutOfTime {
                    budget: std::time::Duration::from_secs(30),
                },
                11,
            ),
            (AgentError::NotReady { reason: "x".into() }, 11),
            (AgentError::Unavailable { reason: "x".into() }, 50),
            (
                AgentError::RegistryIo {
                    path: "/var/lib/strait/attachments".into(),
                    source: std::io::Error::from_raw_os_error(libc::EROFS),
                },
                5,
            ),
            (
                AgentError::RecordCollision {
                    key: Box::new(key("a")),
                    other: Box::new(key("b")),
                    name: "st000000000001".into(),
                },
                5,
            ),
            (
                AgentError::Store(StoreError::Unavailable("timeout".into())),
                11,
            ),
            (
                AgentError::Sysctl {
                    path: "/proc/sys/net/ipv4/ip_forward".into(),
                    source: std::io::Error::from_raw_os_error(libc::EROFS),
                },
                104,
            ),
        ];
        for (error, code) in cases {
            let text = error.to_string();
            let cni = CniError::from(error);
            assert_eq!(u32::from(cni.code), code, "{text}");
        }
    }
}
