//! What can go wrong talking to the kernel, with the errno kept so callers can tell "not found"
//! and "already exists" from real failures.

use std::io;

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// The kernel refused an operation. `detail` is its extended-ack message, when it gave one.
    #[error("{op}: {source}{}", detail.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Kernel {
        op: String,
        source: io::Error,
        detail: Option<String>,
    },
    #[error("netlink socket: {0}")]
    Socket(io::Error),
    #[error("netlink answer could not be decoded: {0}")]
    Decode(String),
    #[error(transparent)]
    Netns(#[from] strait_netns::NetnsError),
}

impl NetlinkError {
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Kernel { source, .. } | NetlinkError::Socket(source) => {
                source.raw_os_error()
            }
            _ => None,
        }
    }

    /// The object was not there (a link, route, neighbour or address).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self.errno(),
            Some(libc::ENODEV | libc::ESRCH | libc::ENOENT | libc::EADDRNOTAVAIL)
        )
    }

    /// The link named by index is not there.
    pub fn is_no_device(&self) -> bool {
        self.errno() == Some(libc::ENODEV)
    }

    pub fn is_exists(&self) -> bool {
        self.errno() == Some(libc::EEXIST)
    }

    /// The kernel does not know the kind of object asked for (a link type without its module).
    pub fn is_unsupported(&self) -> bool {
        matches!(self.errno(), Some(libc::EOPNOTSUPP | libc::EAFNOSUPPORT))
    }
}
