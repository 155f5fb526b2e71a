//! The Kubernetes backend against a real kube-apiserver: the contract every backend meets, node
//! records as StraitNodes owned by their Nodes, and watches that survive an apiserver restart and
//! a 410 Gone.

use std::time::Duration;

use serde_json::json;
use strait_integration::control_plane::ControlPlane;
use strait_store::{Kind, KubeStore, Store, StoreError, Watch, WatchEvent};

/// A well-formed block record.
fn block(n: u32) -> serde_json::Value {
    json!({"pool": "p", "cidr": format!("10.1.{n}.0/26"), "node": "n"})
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap()
}

fn control_plane() -> ControlPlane {
    strait_integration::require_root();
    let cp = ControlPlane::start();
    cp.apply_crds();
    cp
}

/// The next event about `name`, skipping others.
async fn next_about(watch: &mut Watch, name: &str) -> WatchEvent {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(60), watch.recv())
            .await
            .unwrap_or_else(|_| panic!("no event about {name}"))
            .expect("the watch stays open");
        let about = match &event {
            WatchEvent::Put(v) => v.name == name,
            WatchEvent::Delete(n) => n == name,
            WatchEvent::Reset(all) => all.iter().any(|v| v.name == name),
        };
        if about {
            return event;
        }
    }
}

#[test]
fn kube_store_meets_the_contract() {
    let cp = control_plane();
    for node in strait_store::contract::NODES {
        cp.register_node(node);
    }
    runtime().block_on(async {
        let store = KubeStore::connect(Some(&cp.kubeconfig)).await.unwrap();
        strait_store::contract::run_all(&store).await;
    });
    // Records are custom resources an operator can read with kubectl.
    let blocks = cp.kubectl_ok(&["get", "ipblocks.strait.io", "-o", "name"]);
    assert!(
        blocks.contains("ipblock.strait.io/contract-list-a"),
        "{blocks}"
    );
    let record = cp.kubectl_ok(&[
        "get",
        "straitnode",
        "contract-live",
        "-o",
        "jsonpath={.spec}",
    ]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&record).unwrap(),
        json!({"address": "192.168.0.2", "networks": {}})
    );
}

/// A pool's address space survives the custom resources' schema (which drops fields it does not
/// declare): one range claimed in two spaces is two blocks, and the space's pools still refuse
/// an overlap.
#[test]
fn address_spaces_survive_the_custom_resources() {
    use strait_ipam::{IpamError, Pool, claim_block, ensure_pool};
    let cp = control_plane();
    runtime().block_on(async {
        let store = KubeStore::connect(Some(&cp.kubeconfig)).await.unwrap();
        let default = Pool::new("main", "10.60.0.0/26".parse().unwrap(), 26).unwrap();
        let blue = |name: &str, cidr: &str| {
            Pool::new(name, cidr.parse().unwrap(), 26)
                .unwrap()
                .in_space("blue")
                .unwrap()
        };
        for (pool, node) in [(&default, "a"), (&blue("blue", "10.60.0.0/26"), "b")] {
            ensure_pool(&store, pool).await.unwrap();
            claim_block(&store, pool, node).await.unwrap();
        }
        assert!(matches!(
            ensure_pool(&store, &blue("blue-2", "10.60.0.0/24")).await,
            Err(IpamError::OverlappingPools { .. })
        ));
        assert!(matches!(
            claim_block(&store, &blue("blue", "10.60.0.0/26"), "c").await,
            Err(IpamError::PoolExhausted { .. })
        ));
    });
    let spec = |kind: &str, name: &str| {
        let out = cp.kubectl_ok(&["get", kind, name, "-o", "jsonpath={.spec}"]);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    assert_eq!(
        spec("ipblocks.strait.io", "blue.10-60-0-0-26"),
        json!({"pool": "blue", "cidr": "10.60.0.0/26", "node": "b", "space": "blue"})
    );
    assert_eq!(
        spec("ipblocks.strait.io", "10-60-0-0-26"),
        json!({"pool": "main", "cidr": "10.60.0.0/26", "node": "a"})
    );
    assert_eq!(spec("ippools.strait.io", "blue")["space"], "blue");
}

#[test]
fn watches_survive_an_apiserver_restart_and_a_410_gone() {
    let mut cp = control_plane();
    let rt = runtime();
    let store = rt
        .block_on(KubeStore::connect(Some(&cp.kubeconfig)))
        .unwrap();
    let mut watch = rt.block_on(store.watch(Kind::IpBlock)).unwrap();
    rt.block_on(async {
        assert!(matches!(watch.recv().await, Some(WatchEvent::Reset(_))));
        store
            .create(Kind::IpBlock, "before", block(1))
            .await
            .unwrap();
        assert!(matches!(
            next_about(&mut watch, "before").await,
            WatchEvent::Put(_)
        ));
    });

    // A restart: the watch picks up again and sees what is created afterwards.
    cp.restart_apiserver();
    rt.block_on(async {
        store
            .create(Kind::IpBlock, "after-restart", block(2))
            .await
            .unwrap();
        next_about(&mut watch, "after-restart").await;
    });

    // A 410 Gone: while the apiserver is down, etcd moves on and compacts past where the watch
    // stood; on reconnecting it must list again, and it says so with a Reset.
    cp.stop_apiserver();
    let etcdctl = |args: &[&str]| {
        let out = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", cp.etcd.endpoint))
            .args(args)
            .output()
            .expect("etcdctl is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for i in 0..5 {
        etcdctl(&["put", &format!("/strait-test/filler/{i}"), "x"]);
    }
    let status: serde_json::Value =
        serde_json::from_str(&etcdctl(&["endpoint", "status", "-w", "json"])).unwrap();
    let revision = status[0]["Status"]["header"]["revision"].as_u64().unwrap();
    etcdctl(&["compact", &revision.to_string()]);
    cp.restart_apiserver();
    rt.block_on(async {
        store
            .create(Kind::IpBlock, "after-gone", block(3))
            .await
            .unwrap();
        let mut relisted = false;
        loop {
            match tokio::time::timeout(Duration::from_secs(60), watch.recv())
                .await
                .unwrap()
            {
                Some(WatchEvent::Reset(all)) => {
                    relisted = true;
                    if all.iter().any(|v| v.name == "after-gone") {
                        break;
                    }
                }
                Some(WatchEvent::Put(v)) if v.name == "after-gone" => break,
                Some(_) => {}
                None => panic!("the watch ended"),
            }
        }
        assert!(relisted, "a 410 Gone makes the watch list again");
    });
}

#[test]
fn a_node_record_is_a_straitnode_owned_by_its_node_and_leaves_with_it() {
    let mut cp = control_plane();
    cp.start_garbage_collector();
    let rt = runtime();
    let store = rt
        .block_on(KubeStore::connect(Some(&cp.kubeconfig)))
        .unwrap();
    // No Node, no record: the store never records a node the kubelet has not registered.
    let unregistered = rt.block_on(store.put_live(
        Kind::Node,
        "worker-1",
        json!({"address": "192.168.100.1", "networks": {}}),
    ));
    assert!(
        matches!(unregistered, Err(StoreError::NotFound { .. })),
        "{unregistered:?}"
    );
    assert!(!cp.kubectl(&["get", "node", "worker-1"]).status.success());
    assert!(
        !cp.kubectl(&["get", "straitnode", "worker-1"])
            .status
            .success(),
        "nothing was created"
    );
    cp.register_node("worker-1");
    rt.block_on(async {
        let mut watch = store.watch(Kind::Node).await.unwrap();
        assert!(matches!(watch.recv().await, Some(WatchEvent::Reset(_))));
        store
            .put_live(
                Kind::Node,
                "worker-1",
                json!({"address": "192.168.100.1", "networks": {}}),
            )
            .await
            .unwrap();
        assert!(matches!(
            next_about(&mut watch, "worker-1").await,
            WatchEvent::Put(_)
        ));
    });
    // The Node itself is untouched and owns the record.
    let annotations = cp.kubectl_ok(&[
        "get",
        "node",
        "worker-1",
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(!annotations.contains("strait.io"), "{annotations}");
    let node_uid = cp.kubectl_ok(&["get", "node", "worker-1", "-o", "jsonpath={.metadata.uid}"]);
    let owner = cp.kubectl_ok(&[
        "get",
        "straitnode",
        "worker-1",
        "-o",
        "jsonpath={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].uid}",
    ]);
    assert_eq!(owner, format!("Node/{node_uid}"));
    // Deleting the Node deletes the record (Kubernetes' garbage collector).
    rt.block_on(async {
        let mut watch = store.watch(Kind::Node).await.unwrap();
        let _ = watch.recv().await;
        cp.kubectl_ok(&["delete", "node", "worker-1"]);
        assert_eq!(
            next_about(&mut watch, "worker-1").await,
            WatchEvent::Delete("worker-1".into())
        );
    });
}
