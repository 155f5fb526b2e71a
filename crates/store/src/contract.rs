//! The behaviour every [`Store`] backend must show, as one suite each backend's tests run against a
//! real instance (a directory, a real etcd, a real kube-apiserver). Each check uses its own names,
//! so the suite can share one store.

use serde_json::{Value, json};

use crate::{Kind, Store, StoreError, Watch, WatchEvent};

/// A well-formed record of each kind, told apart by `n` (backends with schemas refuse others).
fn record(kind: Kind, n: u32) -> Value {
    match kind {
        Kind::IpPool => json!({"cidr": format!("10.{n}.0.0/16"), "blockPrefix": 26}),
        Kind::IpBlock => {
            json!({"pool": "contract", "cidr": format!("10.0.{n}.0/26"), "node": format!("node-{n}")})
        }
        Kind::Node => json!({"address": format!("192.168.0.{n}"), "networks": {}}),
    }
}

/// The nodes the suite writes records for. Where a node's record lives on an object of its own
/// (a Kubernetes Node), those objects must exist before the suite runs.
pub const NODES: [&str; 4] = [
    "contract-live",
    "contract-watch-old",
    "contract-watch",
    "contract-watch-live",
];

/// Runs every check; panics with the failing one.
pub async fn run_all(store: &impl Store) {
    create_is_create_if_absent(store).await;
    update_needs_the_current_revision(store).await;
    delete_needs_the_current_revision(store).await;
    list_returns_one_kind(store).await;
    racing_creates_have_one_winner(store).await;
    names_are_validated(store).await;
    live_records_are_plain_records_to_readers(store).await;
    watch_reports_everything_then_each_change(store).await;
}

async fn live_records_are_plain_records_to_readers(store: &impl Store) {
    let r1 = store
        .put_live(Kind::Node, "contract-live", record(Kind::Node, 1))
        .await
        .unwrap();
    let r2 = store
        .put_live(Kind::Node, "contract-live", record(Kind::Node, 2))
        .await
        .unwrap();
    assert!(r2 > r1);
    let got = store
        .get(Kind::Node, "contract-live")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.revision, got.value), (r2, record(Kind::Node, 2)));
}

/// The next event naming `name`, skipping events about other objects.
async fn next_about(watch: &mut Watch, name: &str) -> WatchEvent {
    let deadline = std::time::Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout(deadline, watch.recv())
            .await
            .unwrap_or_else(|_| panic!("no event about {name} within {deadline:?}"))
            .expect("the watch stays open");
        let about = match &event {
            WatchEvent::Put(v) => v.name == name,
            WatchEvent::Delete(n) => n == name,
            WatchEvent::Reset(_) => false,
        };
        if about {
            return event;
        }
    }
}

async fn watch_reports_everything_then_each_change(store: &impl Store) {
    store
        .create(Kind::Node, "contract-watch-old", record(Kind::Node, 0))
        .await
        .unwrap();
    let mut watch = store.watch(Kind::Node).await.unwrap();
    match watch.recv().await {
        Some(WatchEvent::Reset(all)) => {
            assert!(
                all.iter().any(|v| v.name == "contract-watch-old"),
                "{all:?}"
            );
        }
        other => panic!("a watch starts with everything, got {other:?}"),
    }
    let r1 = store
        .create(Kind::Node, "contract-watch", record(Kind::Node, 1))
        .await
        .unwrap();
    match next_about(&mut watch, "contract-watch").await {
        WatchEvent::Put(v) => assert_eq!((v.revision, v.value), (r1, record(Kind::Node, 1))),
        other => panic!("{other:?}"),
    }
    let r2 = store
        .update(Kind::Node, "contract-watch", record(Kind::Node, 2), r1)
        .await
        .unwrap();
    match next_about(&mut watch, "contract-watch").await {
        WatchEvent::Put(v) => assert_eq!((v.revision, v.value), (r2, record(Kind::Node, 2))),
        other => panic!("{other:?}"),
    }
    // Another kind does not show up in this watch.
    store
        .create(
            Kind::IpPool,
            "contract-watch-other",
            record(Kind::IpPool, 5),
        )
        .await
        .unwrap();
    store
        .delete(Kind::Node, "contract-watch", None)
        .await
        .unwrap();
    assert_eq!(
        next_about(&mut watch, "contract-watch").await,
        WatchEvent::Delete("contract-watch".into())
    );
    let deleted_pool = store
        .delete(Kind::IpPool, "contract-watch-other", None)
        .await;
    assert!(deleted_pool.is_ok());
    store
        .put_live(Kind::Node, "contract-watch-live", record(Kind::Node, 3))
        .await
        .unwrap();
    assert!(matches!(
        next_about(&mut watch, "contract-watch-live").await,
        WatchEvent::Put(_)
    ));
}

async fn create_is_create_if_absent(store: &impl Store) {
    let r1 = store
        .create(Kind::IpPool, "contract-create", record(Kind::IpPool, 1))
        .await
        .unwrap();
    let got = store
        .get(Kind::IpPool, "contract-create")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((got.revision, got.value), (r1, record(Kind::IpPool, 1)));
    let again = store
        .create(Kind::IpPool, "contract-create", record(Kind::IpPool, 2))
        .await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );
    assert!(
        store
            .get(Kind::IpPool, "contract-absent")
            .await
            .unwrap()
            .is_none()
    );
}

async fn update_needs_the_current_revision(store: &impl Store) {
    let r1 = store
        .create(Kind::IpPool, "contract-update", record(Kind::IpPool, 1))
        .await
        .unwrap();
    let r2 = store
        .update(Kind::IpPool, "contract-update", record(Kind::IpPool, 2), r1)
        .await
        .unwrap();
    assert!(r2 > r1);
    let stale = store
        .update(Kind::IpPool, "contract-update", record(Kind::IpPool, 3), r1)
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    let got = store
        .get(Kind::IpPool, "contract-update")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.value, record(Kind::IpPool, 2));
    let missing = store
        .update(
            Kind::IpPool,
            "contract-update-missing",
            record(Kind::IpPool, 1),
            1,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound { .. })),
        "{missing:?}"
    );
}

async fn delete_needs_the_current_revision(store: &impl Store) {
    let r1 = store
        .create(Kind::IpBlock, "contract-delete", record(Kind::IpBlock, 1))
        .await
        .unwrap();
    let r2 = store
        .update(
            Kind::IpBlock,
            "contract-delete",
            record(Kind::IpBlock, 2),
            r1,
        )
        .await
        .unwrap();
    let stale = store
        .delete(Kind::IpBlock, "contract-delete", Some(r1))
        .await;
    assert!(
        matches!(stale, Err(StoreError::Conflict { .. })),
        "{stale:?}"
    );
    store
        .delete(Kind::IpBlock, "contract-delete", Some(r2))
        .await
        .unwrap();
    assert!(
        store
            .get(Kind::IpBlock, "contract-delete")
            .await
            .unwrap()
            .is_none()
    );
    let again = store.delete(Kind::IpBlock, "contract-delete", None).await;
    assert!(
        matches!(again, Err(StoreError::NotFound { .. })),
        "{again:?}"
    );
}

async fn list_returns_one_kind(store: &impl Store) {
    for name in ["contract-list-a", "contract-list-b"] {
        store
            .create(Kind::IpBlock, name, record(Kind::IpBlock, 3))
            .await
            .unwrap();
    }
    store
        .create(Kind::IpPool, "contract-list-pool", record(Kind::IpPool, 4))
        .await
        .unwrap();
    let names: Vec<String> = store
        .list(Kind::IpBlock)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.name)
        .filter(|n| n.starts_with("contract-list"))
        .collect();
    assert_eq!(names, ["contract-list-a", "contract-list-b"]);
}

async fn racing_creates_have_one_winner(store: &impl Store) {
    let attempts =
        (0..16).map(|i| store.create(Kind::IpBlock, "contract-race", record(Kind::IpBlock, i)));
    let results = futures_join_all(attempts).await;
    let winners = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        results
            .iter()
            .all(|r| r.is_ok() || matches!(r, Err(StoreError::AlreadyExists { .. })))
    );
}

async fn names_are_validated(store: &impl Store) {
    let bad = store
        .create(Kind::IpPool, "Not/Valid", record(Kind::IpPool, 0))
        .await;
    assert!(
        matches!(bad, Err(StoreError::InvalidName { .. })),
        "{bad:?}"
    );
}

/// Polls all futures concurrently (on one task, so they really interleave on the backend).
async fn futures_join_all<F: std::future::Future>(
    futures: impl Iterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("all ready")).collect()
}
