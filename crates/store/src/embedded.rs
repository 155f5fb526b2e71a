//! The embedded backend: the cluster store as files in one directory, for a single machine (the
//! quickstart, the demo, podman hosts). Each object is `<dir>/<kind>/<name>.json`; every write
//! holds an exclusive `flock` on `<dir>/.lock` and takes the next store-wide revision from
//! `<dir>/.revision`, so several agents on one machine share it safely. One machine only: a lock
//! file does not span hosts.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::file::{remove_durable, remove_stale_temporaries, write_atomic};
use crate::records::{Kind, validate_name};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::{Store, StoreError, Versioned, Watch, WatchEvent};

#[derive(Debug, Clone)]
pub struct EmbeddedStore {
    root: Arc<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    revision: u64,
    value: Value,
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<EmbeddedStore, StoreError> {
        let root = root.into();
        for kind in Kind::ALL {
            let dir = root.join(kind.plural());
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            remove_stale_temporaries(&dir)?;
        }
        remove_stale_temporaries(&root)?;
        Ok(EmbeddedStore {
            root: Arc::new(root),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Path) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let root = Arc::clone(&self.root);
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| StoreError::Io(io::Error::other(e)))?
    }
}

/// How long a store call waits for the directory's lock before the store counts as unavailable
/// (another process holds it: a stalled agent, or an operator's tool).
const LOCK_TIMEOUT: Duration = Duration::from_secs(10);
const LOCK_POLL: Duration = Duration::from_millis(5);

fn lock(root: &Path, exclusive: bool) -> Result<Flock<File>, StoreError> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(root.join(".lock"))?;
    let arg = if exclusive {
        FlockArg::LockExclusiveNonblock
    } else {
        FlockArg::LockSharedNonblock
    };
    let deadline = Instant::now() + LOCK_TIMEOUT;
    loop {
        match Flock::lock(file, arg) {
            Ok(locked) => return Ok(locked),
            Err((back, Errno::EWOULDBLOCK)) if Instant::now() < deadline => {
                file = back;
                std::thread::sleep(LOCK_POLL);
            }
            Err((_, Errno::EWOULDBLOCK)) => {
                return Err(StoreError::Unavailable(format!(
                    "the embedded store's lock {} is held by another process for more than {LOCK_TIMEOUT:?}",
                    root.join(".lock").display()
                )));
            }
            Err((_, errno)) => return Err(StoreError::Io(errno.into())),
        }
    }
}

fn list(root: &Path, kind: Kind) -> Result<Vec<Versioned<Value>>, StoreError> {
    let _shared = lock(root, false)?;
    let mut out = Vec::new();
    for entry in fs::read_dir(root.join(kind.plural()))? {
        let file_name = entry?.file_name();
        if let Some(name) = object_name(&file_name)
            && let Some(v) = read(root, kind, name)?
        {
            out.push(v);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The object a directory entry holds, if it is one (not a temporary).
fn object_name(file_name: &std::ffi::OsStr) -> Option<&str> {
    let name = file_name.to_str()?.strip_suffix(".json")?;
    (!name.starts_with('.')).then_some(name)
}

const WATCH_BUFFER: usize = 4096;

struct InotifyFd(Inotify);

impl AsRawFd for InotifyFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Waits for the next batch of changes in a kind's directory; `None` if watching broke.
async fn next_events(
    inotify: &AsyncFd<InotifyFd>,
    root: &Arc<PathBuf>,
    kind: Kind,
) -> Option<Vec<WatchEvent>> {
    let raw = loop {
        let mut ready = inotify.readable().await.ok()?;
        match ready.try_io(|fd| fd.get_ref().0.read_events().map_err(io::Error::from)) {
            Ok(Ok(events)) => break events,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(Err(_)) => return None,
            Err(_would_block) => continue,
        }
    };
    let root = Arc::clone(root);
    tokio::task::spawn_blocking(move || {
        if raw
            .iter()
            .any(|e| e.mask.contains(AddWatchFlags::IN_Q_OVERFLOW))
        {
            return list(&root, kind)
                .ok()
                .map(|all| vec![WatchEvent::Reset(all)]);
        }
        let mut out = Vec::new();
        for event in raw {
            let Some(name) = event.name.as_deref().and_then(object_name) else {
                continue;
            };
            if event.mask.contains(AddWatchFlags::IN_DELETE) {
                out.push(WatchEvent::Delete(name.to_string()));
            } else if let Ok(Some(v)) = read(&root, kind, name) {
                out.push(WatchEvent::Put(v));
            }
        }
        Some(out)
    })
    .await
    .ok()
    .flatten()
}

fn object_path(root: &Path, kind: Kind, name: &str) -> PathBuf {
    root.join(kind.plural()).join(format!("{name}.json"))
}

fn read(root: &Path, kind: Kind, name: &str) -> Result<Option<Versioned<Value>>, StoreError> {
    let bytes = match fs::read(object_path(root, kind, name)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let stored: Stored = serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
        what: format!("{kind} {name}"),
        reason: e.to_string(),
    })?;
    Ok(Some(Versioned {
        name: name.to_string(),
        revision: stored.revision,
        value: stored.value,
    }))
}

/// Takes the next store-wide revision. Call with the exclusive lock held.
fn next_revision(root: &Path) -> Result<u64, StoreError> {
    let path = root.join(".revision");
    let current = match fs::read_to_string(&path) {
        Ok(s) => s.trim().parse::<u64>().map_err(|e| StoreError::Corrupt {
            what: path.display().to_string(),
            reason: e.to_string(),
        })?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
        Err(e) => return Err(e.into()),
    };
    let next = current + 1;
    write_atomic(&path, next.to_string().as_bytes(), 0o600)?;
    Ok(next)
}

fn write(root: &Path, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
    let revision = next_revision(root)?;
    let bytes = serde_json::to_vec(&Stored { revision, value }).expect("values serialize");
    write_atomic(&object_path(root, kind, name), &bytes, 0o600)?;
    Ok(revision)
}

fn check_revision(
    current: &Option<Versioned<Value>>,
    kind: Kind,
    name: &str,
    expected: u64,
) -> Result<(), StoreError> {
    match current {
        None => Err(StoreError::NotFound {
            kind,
            name: name.to_string(),
        }),
        Some(c) if c.revision != expected => Err(StoreError::Conflict {
            kind,
            name: name.to_string(),
            expected,
            actual: Some(c.revision),
        }),
        Some(_) => Ok(()),
    }
}

impl Store for EmbeddedStore {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned<Value>>, StoreError> {
        validate_name(name)?;
        let name = name.to_string();
        self.blocking(move |root| read(root, kind, &name)).await
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Value>>, StoreError> {
        self.blocking(move |root| list(root, kind)).await
    }

    async fn put_live(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        let name = name.to_string();
        self.blocking(move |root| {
            let _exclusive = lock(root, true)?;
            write(root, kind, &name, value)
        })
        .await
    }

    async fn watch(&self, kind: Kind) -> Result<Watch, StoreError> {
        let root = Arc::clone(&self.root);
        let dir = root.join(kind.plural());
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(io::Error::from)?;
        inotify
            .add_watch(&dir, AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_DELETE)
            .map_err(io::Error::from)?;
        // SAFETY: InotifyFd owns the inotify descriptor and always returns that same one.
        let inotify =
            unsafe { AsyncFd::register_with_interest(InotifyFd(inotify), Interest::READABLE) }
                .map_err(|e| StoreError::Io(e.into()))?;
        // Armed before listing: a change racing the list shows up again as an event.
        let items = self.list(kind).await?;
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let _ = tx.send(WatchEvent::Reset(items)).await;
        tokio::spawn(async move {
            while let Some(events) = next_events(&inotify, &root, kind).await {
                for event in events {
                    if tx.send(event).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn create(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        let name = name.to_string();
        self.blocking(move |root| {
            let _exclusive = lock(root, true)?;
            if read(root, kind, &name)?.is_some() {
                return Err(StoreError::AlreadyExists { kind, name });
            }
            write(root, kind, &name, value)
        })
        .await
    }

    async fn update(
        &self,
        kind: Kind,
        name: &str,
        value: Value,
        revision: u64,
    ) -> Result<u64, StoreError> {
        validate_name(name)?;
        let name = name.to_string();
        self.blocking(move |root| {
            let _exclusive = lock(root, true)?;
            check_revision(&read(root, kind, &name)?, kind, &name, revision)?;
            write(root, kind, &name, value)
        })
        .await
    }

    async fn delete(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        let name = name.to_string();
        self.blocking(move |root| {
            let _exclusive = lock(root, true)?;
            let current = read(root, kind, &name)?;
            match revision {
                Some(expected) => check_revision(&current, kind, &name, expected)?,
                None if current.is_none() => {
                    return Err(StoreError::NotFound { kind, name });
                }
                None => {}
            }
            remove_durable(&object_path(root, kind, &name))?;
            next_revision(root).map(drop)
        })
        .await
    }
}
