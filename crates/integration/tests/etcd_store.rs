//! The etcd backend against a real etcd: the same contract every backend meets, and what only a
//! distributed store does: live records expire with their owner, and come back after an outage.

use std::time::Duration;

use serde_json::json;
use strait_integration::etcd::Etcd;
use strait_store::{EtcdStore, Kind, Store, StoreError, WatchEvent};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_meets_the_contract() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/strait-test", 10)
        .await
        .unwrap();
    strait_store::contract::run_all(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_live_record_vanishes_when_its_owner_is_gone_and_watchers_hear_it() {
    let etcd = Etcd::start();
    let watcher = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 10)
        .await
        .unwrap();
    let mut watch = watcher.watch(Kind::Node).await.unwrap();
    assert_eq!(watch.recv().await, Some(WatchEvent::Reset(vec![])));
    {
        let owner = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 2)
            .await
            .unwrap();
        owner
            .put_live(Kind::Node, "leaving", json!({"a": 1}))
            .await
            .unwrap();
        assert!(matches!(watch.recv().await, Some(WatchEvent::Put(v)) if v.name == "leaving"));
        // Kept alive past its TTL while the owner lives.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(watcher.get(Kind::Node, "leaving").await.unwrap().is_some());
    }
    // The owner is gone: within the TTL (and etcd's expiry sweep) the record goes.
    let gone = tokio::time::timeout(Duration::from_secs(15), watch.recv())
        .await
        .expect("expired");
    assert_eq!(gone, Some(WatchEvent::Delete("leaving".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outage_is_unavailable_then_watches_and_live_records_recover() {
    let mut etcd = Etcd::start();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 2)
        .await
        .unwrap();
    store.put_live(Kind::Node, "me", json!(1)).await.unwrap();
    let mut watch = store.watch(Kind::IpBlock).await.unwrap();
    assert_eq!(watch.recv().await, Some(WatchEvent::Reset(vec![])));
    etcd.stop();
    let down = store.create(Kind::IpBlock, "b1", json!(1)).await;
    assert!(matches!(down, Err(StoreError::Unavailable(_))), "{down:?}");
    // Down for longer than the lease: whether etcd expires "me" when it returns or not, the
    // record must be there afterwards.
    tokio::time::sleep(Duration::from_secs(4)).await;
    etcd.resume();
    let other = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 10)
        .await
        .unwrap();
    other.create(Kind::IpBlock, "b2", json!(2)).await.unwrap();
    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match watch.recv().await {
                Some(WatchEvent::Put(v)) if v.name == "b2" => return true,
                Some(WatchEvent::Reset(all)) if all.iter().any(|v| v.name == "b2") => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await;
    assert_eq!(seen, Ok(true), "the watch picked up again after the outage");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if other.get(Kind::Node, "me").await.unwrap().is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the live record was not restored"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_racing_for_the_last_free_block_get_it_once() {
    use strait_ipam::{IpamError, Pool, claim_block, ensure_pool};
    let etcd = Etcd::start();
    let pool = Pool::new("race", "10.50.0.0/25".parse().unwrap(), 26).unwrap();
    let first = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 10)
        .await
        .unwrap();
    ensure_pool(&first, &pool).await.unwrap();
    claim_block(&first, &pool, "node-0").await.unwrap();
    // One block left; eight agents (each with its own connection) want it at once.
    let mut racers = Vec::new();
    for i in 1..=8 {
        let endpoint = etcd.endpoint.clone();
        let pool = pool.clone();
        racers.push(tokio::spawn(async move {
            let store = EtcdStore::connect(&[endpoint], "/s", 10).await.unwrap();
            claim_block(&store, &pool, &format!("node-{i}")).await
        }));
    }
    let mut won = Vec::new();
    let mut refused = 0;
    for r in racers {
        match r.await.unwrap() {
            Ok(block) => won.push(block),
            Err(IpamError::PoolExhausted { .. }) => refused += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(won, vec!["10.50.0.64/26".parse::<ipnet::IpNet>().unwrap()]);
    assert_eq!(refused, 7, "the others are told the pool is exhausted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stray_value_under_the_prefix_is_skipped_not_fatal() {
    let etcd = Etcd::start();
    let store = EtcdStore::connect(std::slice::from_ref(&etcd.endpoint), "/s", 10)
        .await
        .unwrap();
    store
        .create(Kind::IpBlock, "b1", json!({"a": 1}))
        .await
        .unwrap();
    let mut raw = etcd_client::Client::connect([etcd.endpoint.as_str()], None)
        .await
        .unwrap();
    raw.put(
        strait_store::etcd_key("/s", Kind::IpBlock, "junk"),
        "not json",
        None,
    )
    .await
    .unwrap();
    let listed = store
        .list(Kind::IpBlock)
        .await
        .expect("the listing goes on");
    assert_eq!(
        listed.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(),
        ["b1"]
    );
    let mut watch = store.watch(Kind::IpBlock).await.unwrap();
    assert!(matches!(watch.recv().await, Some(WatchEvent::Reset(all)) if all.len() == 1));
    store
        .create(Kind::IpBlock, "b2", json!({"a": 2}))
        .await
        .unwrap();
    assert!(matches!(watch.recv().await, Some(WatchEvent::Put(v)) if v.name == "b2"));
}
