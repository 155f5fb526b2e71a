//! Network namespaces: open one by path or take one received as a descriptor (checking it really
//! is one), run a closure inside it on a dedicated OS thread that switches back when the closure
//! ends, even by panic, and open an rtnetlink socket inside it. The plugin opens the runtime's
//! CNI_NETNS and hands the descriptor, and such a socket, to the agent, which may live in another
//! mount namespace and has no right to enter namespaces.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sched::{CloneFlags, setns};

/// `NS_GET_NSTYPE` from linux/nsfs.h: `_IO(0xb7, 0x3)`.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("network namespace {} does not exist", path.display())]
    NotFound { path: PathBuf },
    #[error("{} is not a network namespace", path.display())]
    NotNetns { path: PathBuf },
    #[error("network namespace {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("the work inside network namespace {} panicked", path.display())]
    Panicked { path: PathBuf },
}

/// An open handle on a network namespace; it stays valid even if its path is unmounted.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
    path: PathBuf,
}

impl Netns {
    pub fn open(path: impl AsRef<Path>) -> Result<Netns, NetnsError> {
        let path = path.as_ref().to_path_buf();
        match File::open(&path) {
            Ok(f) => Netns::from_fd(f.into(), path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(NetnsError::NotFound { path }),
            Err(source) => Err(NetnsError::Io { path, source }),
        }
    }

    /// Takes a descriptor (received from the plugin) known by `path` to whoever sent it.
    pub fn from_fd(fd: OwnedFd, path: impl Into<PathBuf>) -> Result<Netns, NetnsError> {
        let path = path.into();
        // SAFETY: NS_GET_NSTYPE takes no argument and only reads the descriptor's namespace type.
        let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) };
        if kind != libc::CLONE_NEWNET {
            return Err(NetnsError::NotNetns { path });
        }
        Ok(Netns { fd, path })
    }

    /// The calling thread's own network namespace.
    pub fn current() -> Result<Netns, NetnsError> {
        Netns::open("/proc/thread-self/ns/net")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Runs `f` inside this namespace on a fresh thread and returns its result.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let _inside = Entered::enter(self)?;
                    Ok(f())
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(NetnsError::Panicked {
                        path: self.path.clone(),
                    })
                })
        })
    }
}

impl Netns {
    /// An rtnetlink socket opened inside this namespace. It acts on this namespace wherever it
    /// is used: the plugin opens one and hands it to the agent, which then changes a pod's
    /// namespace without ever entering it (and so without CAP_SYS_ADMIN).
    pub fn route_socket(&self) -> Result<OwnedFd, NetnsError> {
        self.run(|| {
            // SAFETY: socket(2) with constant arguments; the result is checked before use.
            let fd = unsafe {
                libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                )
            };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: a descriptor socket(2) just returned, owned by nothing else.
            Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        })?
        .map_err(|source| NetnsError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Runs `f` inside this namespace on a new thread that lives as long as `f` does (for
    /// long-running work such as a client that must connect from inside).
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<T, NetnsError>>, NetnsError> {
        let io_err = |source| NetnsError::Io {
            path: self.path.clone(),
            source,
        };
        let target = Netns {
            fd: self.fd.try_clone().map_err(io_err)?,
            path: self.path.clone(),
        };
        std::thread::Builder::new()
            .name("strait-netns".into())
            .spawn(move || {
                let _inside = Entered::enter(&target)?;
                Ok(f())
            })
            .map_err(io_err)
    }
}

/// The current thread is inside another namespace until this is dropped.
struct Entered {
    home: OwnedFd,
}

impl Entered {
    fn enter(target: &Netns) -> Result<Entered, NetnsError> {
        let io_err = |source| NetnsError::Io {
            path: target.path.clone(),
            source,
        };
        let home: OwnedFd = File::open("/proc/thread-self/ns/net")
            .map_err(io_err)?
            .into();
        setns(target.fd(), CloneFlags::CLONE_NEWNET).map_err(|e| io_err(e.into()))?;
        Ok(Entered { home })
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        // The thread ends right after; switching back keeps the guard honest should it not.
        let _ = setns(self.home.as_fd(), CloneFlags::CLONE_NEWNET);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_network_namespace() {
        assert!(matches!(
            Netns::open("/nonexistent/ns"),
            Err(NetnsError::NotFound { .. })
        ));
        assert!(matches!(
            Netns::open("/proc/self/status"),
            Err(NetnsError::NotNetns { .. })
        ));
    }

    #[test]
    fn the_current_namespace_opens() {
        // Readable without privileges: our own namespace handle.
        let ns = Netns::current().unwrap();
        assert!(ns.path().ends_with("net"));
    }
}
