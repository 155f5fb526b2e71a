//! The data plane's errors, kept apart so the agent can give each its CNI code.

use strait_netlink::NetlinkError;
use strait_netns::NetnsError;

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error(transparent)]
    Netns(NetnsError),
    #[error("interface {ifname} already exists in {netns}")]
    IfnameTaken { ifname: String, netns: String },
    #[error("the kernel does not support {what}: {source}")]
    KernelFeatureMissing {
        what: &'static str,
        source: NetlinkError,
    },
    #[error(transparent)]
    Netlink(NetlinkError),
    #[error("the pod's network was not finished: {0}")]
    Stopped(String),
    #[error("a fault was injected {0} (STRAIT_FAULT)")]
    Injected(&'static str),
}

impl From<NetlinkError> for DataplaneError {
    fn from(e: NetlinkError) -> Self {
        match e {
            NetlinkError::Netns(ns) => DataplaneError::Netns(ns),
            other => DataplaneError::Netlink(other),
        }
    }
}

impl From<NetnsError> for DataplaneError {
    fn from(e: NetnsError) -> Self {
        DataplaneError::Netns(e)
    }
}
