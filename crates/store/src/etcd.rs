//! The etcd v3 backend, for clusters without Kubernetes. Objects are JSON values under
//! `<prefix>/<kind>/<name>`; a revision is etcd's mod revision. Create and update are
//! transactions comparing create/mod revisions, so racing writers get exactly one winner. Live
//! records share one lease per store handle, kept alive by a background task that re-grants it
//! and writes the records again if it ever lapses (etcd was away longer than the TTL). Watches
//! list, then watch from the listed revision, and list again whenever they cannot resume.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    PutOptions, Txn, TxnOp, WatchOptions,
};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::records::Kind;
use crate::{Store, StoreError, Versioned, Watch, WatchEvent, validate_name};

/// How long one request may take before the store counts as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
    live: Arc<Live>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// The records this handle keeps alive and the lease they hang on.
#[derive(Debug)]
struct Live {
    ttl: i64,
    state: Mutex<LiveState>,
}

#[derive(Debug, Default)]
struct LiveState {
    lease: Option<i64>,
    records: BTreeMap<String, Vec<u8>>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

/// Runs one etcd request with the request timeout.
async fn timed<T>(
    request: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(REQUEST_TIMEOUT, request).await {
        Ok(result) => result.map_err(unavailable),
        Err(_) => Err(unavailable(format!("no answer within {REQUEST_TIMEOUT:?}"))),
    }
}

fn revision(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// Where an object lives in etcd: `<prefix>/<kind>/<name>`.
pub fn key(prefix: &str, kind: Kind, name: &str) -> String {
    format!("{}/{}/{name}", prefix.trim_end_matches('/'), kind.plural())
}

impl EtcdStore {
    /// Connects to `endpoints` (e.g. `http://127.0.0.1:2379`); live records expire `lease_ttl`
    /// seconds after this handle stops keeping them alive.
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        lease_ttl: u32,
    ) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
        let client = timed(Client::connect(endpoints, Some(options))).await?;
        Ok(EtcdStore {
            client,
            prefix: prefix.trim_end_matches('/').to_string(),
            live: Arc::new(Live {
                ttl: i64::from(lease_ttl.max(2)),
                state: Mutex::default(),
            }),
        })
    }

    fn kind_prefix(&self, kind: Kind) -> String {
        format!("{}/{}/", self.prefix, kind.plural())
    }

    fn key(&self, kind: Kind, name: &str) -> String {
        key(&self.prefix, kind, name)
    }

    fn decode(&self, kind: Kind, kv: &KeyValue) -> Result<Versioned<Value>, StoreError> {
        let name = kv
            .key_str()
            .ok()
            .and_then(|k| k.strip_prefix(&self.kind_prefix(kind)))
            .unwrap_or_default()
            .to_string();
        let value = serde_json::from_slice(kv.value()).map_err(|e| StoreError::Corrupt {
            what: format!("{kind} {name}"),
            reason: e.to_string(),
        })?;
        Ok(Versioned {
            name,
            revision: revision(kv.mod_revision()),
            value,
        })
    }

    /// Every value that reads as JSON; one that does not is skipped and reported, so that a
    /// stray key under the prefix cannot freeze every agent's view of the cluster.
    fn decode_all(&self, kind: Kind, kvs: &[KeyValue]) -> Vec<Versioned<Value>> {
        kvs.iter()
            .filter_map(|kv| match self.decode(kind, kv) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::warn!(error = %e, key = %String::from_utf8_lossy(kv.key()),
                        "skipping a value under the etcd prefix that is not a record");
                    None
                }
            })
            .collect()
    }

    /// The lease live records hang on, granted (and kept alive) on first use.
    async fn lease(&self) -> Result<i64, StoreError> {
        if let Some(id) = self.live.state.lock().expect("not poisoned").lease {
            return Ok(id);
        }
        let grant = timed(self.client.clone().lease_grant(self.live.ttl, None)).await?;
        let id = grant.id();
        let mut state = self.live.state.lock().expect("not poisoned");
        if let Some(existing) = state.lease {
            return Ok(existing);
        }
        state.lease = Some(id);
        tokio::spawn(keep_alive(self.client.clone(), Arc::downgrade(&self.live)));
        Ok(id)
    }

    /// Puts `key` on the current lease.
    async fn put_on_lease(&self, key: &str, bytes: Vec<u8>) -> Result<u64, StoreError> {
        let lease = self.lease().await?;
        let options = PutOptions::new().with_lease(lease);
        let put = timed(self.client.clone().put(key, bytes, Some(options))).await?;
        Ok(revision(put.header().map_or(0, |h| h.revision())))
    }
}

/// Keeps the handle's lease alive for as long as the handle exists. If the lease lapsed (etcd
/// was away longer than the TTL, so it deleted the records), grants a new one and writes every
/// live record again.
async fn keep_alive(client: Client, live: Weak<Live>) {
    let mut backoff = RETRY_MIN;
    loop {
        let Some(strong) = live.upgrade() else {
            return;
        };
        let interval = Duration::from_secs(u64::try_from(strong.ttl / 3).unwrap_or(1).max(1));
        let lease = strong.state.lock().expect("not poisoned").lease;
        let healthy = match lease {
            Some(id) => match refresh(&client, id).await {
                Ok(true) => true,
                Ok(false) => regrant(&client, &strong).await.is_ok(),
                Err(_) => false,
            },
            None => regrant(&client, &strong).await.is_ok(),
        };
        drop(strong);
        let pause = if healthy {
            backoff = RETRY_MIN;
            interval
        } else {
            let pause = backoff;
            backoff = (backoff * 2).min(RETRY_MAX);
            pause
        };
        tokio::time::sleep(pause).await;
    }
}

/// One keep-alive round trip: `Ok(false)` when etcd says the lease no longer exists.
async fn refresh(client: &Client, id: i64) -> Result<bool, StoreError> {
    match timed(client.clone().lease_keep_alive(id)).await {
        Ok(_) => Ok(true),
        Err(StoreError::Unavailable(e)) if e.contains("lease not found") => Ok(false),
        Err(e) => Err(e),
    }
}

async fn regrant(client: &Client, live: &Live) -> Result<(), StoreError> {
    let grant = timed(client.clone().lease_grant(live.ttl, None)).await?;
    let records = {
        let mut state = live.state.lock().expect("not poisoned");
        state.lease = Some(grant.id());
        state.records.clone()
    };
    for (key, bytes) in records {
        let options = PutOptions::new().with_lease(grant.id());
        timed(client.clone().put(key, bytes, Some(options))).await?;
    }
    Ok(())
}

impl Store for EtcdStore {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned<Value>>, StoreError> {
        validate_name(name)?;
        let answer = timed(self.client.clone().get(self.key(kind, name), None)).await?;
        answer
            .kvs()
            .first()
            .map(|kv| self.decode(kind, kv))
            .transpose()
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Value>>, StoreError> {
        let options = GetOptions::new().with_prefix();
        let answer = timed(
            self.client
                .clone()
                .get(self.kind_prefix(kind), Some(options)),
        )
        .await?;
        Ok(self.decode_all(kind, answer.kvs()))
    }

    async fn create(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        let key = self.key(kind, name);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), value.to_string(), None)]);
        let answer = timed(self.client.clone().txn(txn)).await?;
        if !answer.succeeded() {
            return Err(StoreError::AlreadyExists {
                kind,
                name: name.to_string(),
            });
        }
        Ok(revision(answer.header().map_or(0, |h| h.revision())))
    }

    async fn update(
        &self,
        kind: Kind,
        name: &str,
        value: Value,
        expected: u64,
    ) -> Result<u64, StoreError> {
        validate_name(name)?;
        let key = self.key(kind, name);
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                i64::try_from(expected).unwrap_or(i64::MAX),
            )])
            .and_then([TxnOp::put(key.as_str(), value.to_string(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = timed(self.client.clone().txn(txn)).await?;
        if answer.succeeded() {
            return Ok(revision(answer.header().map_or(0, |h| h.revision())));
        }
        Err(self.refusal(kind, name, expected, &answer))
    }

    async fn put_live(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        let key = self.key(kind, name);
        let bytes = value.to_string().into_bytes();
        self.live
            .state
            .lock()
            .expect("not poisoned")
            .records
            .insert(key.clone(), bytes.clone());
        self.put_on_lease(&key, bytes).await
    }

    async fn watch(&self, kind: Kind) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        // The first listing happens here so that an unreachable store is reported at once.
        let first = self.list_with_revision(kind).await?;
        let store = self.clone();
        tokio::spawn(async move { store.watch_loop(kind, first, tx).await });
        Ok(rx)
    }

    async fn delete(
        &self,
        kind: Kind,
        name: &str,
        expected: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        let key = self.key(kind, name);
        let guard = match expected {
            Some(rev) => Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                i64::try_from(rev).unwrap_or(i64::MAX),
            ),
            None => Compare::create_revision(key.as_str(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::delete(key.as_str(), None::<DeleteOptions>)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let answer = timed(self.client.clone().txn(txn)).await?;
        if answer.succeeded() {
            self.live
                .state
                .lock()
                .expect("not poisoned")
                .records
                .remove(&key);
            return Ok(());
        }
        Err(self.refusal(kind, name, expected.unwrap_or(0), &answer))
    }
}

const WATCH_BUFFER: usize = 4096;

impl EtcdStore {
    /// Why a guarded transaction did not run: the object is gone, or it changed.
    fn refusal(
        &self,
        kind: Kind,
        name: &str,
        expected: u64,
        answer: &etcd_client::TxnResponse,
    ) -> StoreError {
        let current = answer.op_responses().into_iter().find_map(|op| match op {
            etcd_client::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match current {
            None => StoreError::NotFound {
                kind,
                name: name.to_string(),
            },
            Some(actual) => StoreError::Conflict {
                kind,
                name: name.to_string(),
                expected,
                actual: Some(revision(actual)),
            },
        }
    }

    async fn list_with_revision(
        &self,
        kind: Kind,
    ) -> Result<(i64, Vec<Versioned<Value>>), StoreError> {
        let options = GetOptions::new().with_prefix();
        let answer = timed(
            self.client
                .clone()
                .get(self.kind_prefix(kind), Some(options)),
        )
        .await?;
        let at = answer.header().map_or(0, |h| h.revision());
        Ok((at, self.decode_all(kind, answer.kvs())))
    }

    /// Reports a listing, then every change after it; lists again after any break.
    async fn watch_loop(
        &self,
        kind: Kind,
        first: (i64, Vec<Versioned<Value>>),
        tx: mpsc::Sender<WatchEvent>,
    ) {
        let mut listing = Some(first);
        let mut backoff = RETRY_MIN;
        loop {
            let (at, items) = match listing.take() {
                Some(l) => l,
                None => match self.list_with_revision(kind).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(%kind, error = %e, "cannot list the etcd store; retrying");
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(RETRY_MAX);
                        continue;
                    }
                },
            };
            if tx.send(WatchEvent::Reset(items)).await.is_err() {
                return;
            }
            backoff = RETRY_MIN;
            let options = WatchOptions::new()
                .with_prefix()
                .with_start_revision(at + 1)
                .with_progress_notify();
            let Ok(mut stream) = timed(
                self.client
                    .clone()
                    .watch(self.kind_prefix(kind), Some(options)),
            )
            .await
            else {
                tokio::time::sleep(backoff).await;
                continue;
            };
            while let Ok(Some(answer)) = stream.message().await {
                if answer.canceled() {
                    break;
                }
                for event in answer.events() {
                    let Some(kv) = event.kv() else { continue };
                    let out = match event.event_type() {
                        EventType::Put => match self.decode(kind, kv) {
                            Ok(v) => WatchEvent::Put(v),
                            Err(e) => {
                                tracing::warn!(error = %e, "skipping a value that is not a record");
                                continue;
                            }
                        },
                        EventType::Delete => match self.decode_name(kind, kv) {
                            Some(name) => WatchEvent::Delete(name),
                            None => continue,
                        },
                    };
                    if tx.send(out).await.is_err() {
                        return;
                    }
                }
            }
            if tx.is_closed() {
                return;
            }
        }
    }

    fn decode_name(&self, kind: Kind, kv: &KeyValue) -> Option<String> {
        kv.key_str()
            .ok()?
            .strip_prefix(&self.kind_prefix(kind))
            .map(String::from)
    }
}
