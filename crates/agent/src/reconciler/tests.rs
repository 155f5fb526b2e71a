// The reconciler's loop on the in-memory kernel: its first pass makes the node ready, an
// object deleted by hand comes back when the kernel's event wakes it, a failed pass is retried
// on its own, a store-only pass trusts what the last pass left, the tables are kept, and
// leaving ends it. The integration tests show the same against the real kernel, woken by real
// events.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use strait_dataplane::fake::FakeKernel;
use strait_dataplane::model::{NetId, Table};
use strait_dataplane::overlay::{BlockKey, ClusterView, LocalNetwork, LocalPool, Mode, Peer, Vtep};
use strait_netlink::{Link, MacAddr};
use strait_nft::{Held, SNAT_TABLE};

use super::*;
use crate::membership::{Left, RecordMissing};

fn mac(n: u8) -> MacAddr {
    MacAddr([2, 0, 0, 0, 0, n])
}

/// Node "a" with a VXLAN network and a peer "b" holding one block.
fn node_and_cluster() -> (LocalNode, ClusterView) {
    let local = LocalNode {
        name: "a".into(),
        address4: Some("192.168.0.1".parse().unwrap()),
        address6: None,
        vxlan_over_ipv6: false,
        underlay: "eth0".into(),
        networks: vec![LocalNetwork {
            id: NetId::new("pods"),
            vni: 4096,
            mtu: 1450,
            vtep: Some(Vtep {
                ip: "10.244.0.0".parse().unwrap(),
                mac: mac(1),
            }),
            vtep_addresses: vec!["10.244.0.0".parse().unwrap()],
            table: Table::MAIN,
            pools: vec![LocalPool {
                name: "pods".into(),
                cidr: "10.244.0.0/16".parse().unwrap(),
                mode: Mode::Vxlan,
            }],
        }],
    };
    let peer = |i: u8| Peer {
        address: IpAddr::from([192, 168, 0, i]),
        address6: None,
        vxlan_over_ipv6: false,
        vteps: BTreeMap::from([(
            NetId::new("pods"),
            Vtep {
                ip: IpAddr::from([10, 244, 0, (i - 1) * 64]),
                mac: mac(i),
            },
        )]),
    };
    let block = |cidr: &str, node: &str| {
        (
            BlockKey {
                pool: "pods".into(),
                cidr: cidr.parse().unwrap(),
            },
            node.to_string(),
        )
    };
    let cluster = ClusterView {
        nodes: BTreeMap::from([("a".into(), peer(1)), ("b".into(), peer(2))]),
        blocks: BTreeMap::from([block("10.244.0.0/26", "a"), block("10.244.0.64/26", "b")]),
    };
    (local, cluster)
}

/// A running loop on a fake kernel, and what a test needs to see and poke it.
struct Running {
    kernel: FakeKernel,
    wake: Arc<Wake>,
    last: Arc<Mutex<Option<LastPass>>>,
    ready: watch::Receiver<bool>,
    left: Left,
    metrics: Arc<Metrics>,
    loop_ends: tokio::task::JoinHandle<()>,
    dir: std::path::PathBuf,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.loop_ends.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(tag: &str) -> Running {
    let dir = std::env::temp_dir().join(format!("strait-loop-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let kernel = FakeKernel::default();
    kernel.edit(None, |ns| {
        ns.links.push(Link {
            index: 1,
            name: "eth0".into(),
            mac: Some(mac(100)),
            mtu: 1500,
            up: true,
            kind: None,
            vxlan: None,
        })
    });
    let (local, cluster) = node_and_cluster();
    let (registry, _) = Registry::open(&dir).unwrap();
    let (ready, ready_rx) = watch::channel(false);
    let wake = Arc::new(Wake::default());
    let last = Arc::new(Mutex::new(None));
    let left = Left::default();
    let metrics = Arc::new(Metrics::default());
    let reconciler = Reconciler {
        kernel: kernel.clone(),
        local,
        cache: Arc::new(ClusterCache::synced_to(cluster)),
        registry: Arc::new(registry),
        wake: Arc::clone(&wake),
        metrics: Arc::clone(&metrics),
        owned: Arc::default(),
        nft_tables: vec![
            strait_nft::Ruleset {
                snat_sources: vec!["10.244.0.0/16".parse().unwrap()],
                cluster: vec!["10.244.0.0/16".parse().unwrap()],
            }
            .table(),
        ],
        last: Arc::clone(&last),
        ready,
        overlay_changes: Arc::default(),
        left: left.clone(),
        record_missing: RecordMissing::default(),
    };
    Running {
        kernel,
        wake,
        last,
        ready: ready_rx,
        left,
        metrics,
        loop_ends: tokio::spawn(reconciler.run()),
        dir,
    }
}

/// Waits, at most 20 s, for `done`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl Running {
    async fn until_ready(&mut self) {
        tokio::time::timeout(Duration::from_secs(20), self.ready.wait_for(|r| *r))
            .await
            .expect("ready in time")
            .unwrap();
    }

    fn fdb_entries(&self) -> usize {
        self.kernel.node().fdb.len()
    }

    /// How many passes ended with `result` ("ok" or "error"), as the metrics count them.
    fn passes(&self, result: &str) -> u64 {
        let line = format!("strait_reconcile_passes_total{{result=\"{result}\"}} ");
        self.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix(&line)?.parse().ok())
            .unwrap_or(0)
    }

    fn last_errors(&self) -> Option<Vec<String>> {
        self.last.lock().unwrap().as_ref().map(|p| p.errors.clone())
    }
}

#[tokio::test]
async fn the_first_pass_builds_the_node_and_makes_it_ready() {
    let mut running = start("ready");
    running.until_ready().await;
    assert_eq!(running.fdb_entries(), 1, "the peer's FDB entry");
    assert!(
        running
            .kernel
            .node()
            .links
            .iter()
            .any(|l| l.name == "strait.4096")
    );
    assert!(matches!(
        running.kernel.nftables().get(SNAT_TABLE),
        Held::Table(_)
    ));
    assert_eq!(running.last_errors(), Some(vec![]));
}

#[tokio::test]
async fn what_is_deleted_by_hand_comes_back_when_an_event_wakes_the_loop() {
    let mut running = start("repair");
    running.until_ready().await;
    running.kernel.edit(None, |ns| ns.fdb.clear());
    running.kernel.nftables().remove(SNAT_TABLE);
    // Nothing wakes the loop but the events (the timer is 30 s away).
    running.wake.signal(Reason::Kernel);
    until("the FDB entry is back", || running.fdb_entries() == 1).await;
    running.wake.signal(Reason::Nft);
    until("the masquerade table is back", || {
        matches!(running.kernel.nftables().get(SNAT_TABLE), Held::Table(_))
    })
    .await;
}

#[tokio::test]
async fn a_failed_pass_is_retried_without_another_event() {
    let mut running = start("retry");
    running.until_ready().await;
    running.kernel.edit(None, |ns| ns.fdb.clear());
    // The repair's one change fails once: the loop retries on its own (0.1 s later).
    running.kernel.fail_changes(&[1]);
    running.wake.signal(Reason::Kernel);
    until("a pass failed", || running.passes("error") == 1).await;
    until("the retry repaired it", || {
        running.fdb_entries() == 1 && running.last_errors() == Some(vec![])
    })
    .await;
}

#[tokio::test]
async fn a_store_event_alone_plans_against_what_the_last_pass_left() {
    let mut running = start("known");
    running.until_ready().await;
    // Deleted by hand, but only the store wakes the loop: the pass takes the kernel to hold
    // what the last one left and changes nothing; the kernel's own event then repairs it.
    running.kernel.edit(None, |ns| ns.fdb.clear());
    let changes = running.kernel.changes();
    let passes = running.passes("ok");
    running.wake.signal(Reason::Store);
    until("the store's pass ran", || running.passes("ok") > passes).await;
    assert_eq!(
        running.kernel.changes(),
        changes,
        "a store-only pass changed something"
    );
    assert_eq!(running.fdb_entries(), 0);
    running.wake.signal(Reason::Kernel);
    until("the FDB entry is back", || running.fdb_entries() == 1).await;
}

#[tokio::test]
async fn the_loop_ends_once_the_node_has_left() {
    let mut running = start("left");
    running.until_ready().await;
    running.left.set_for_test();
    running.wake.signal(Reason::Store);
    tokio::time::timeout(Duration::from_secs(20), &mut running.loop_ends)
        .await
        .expect("the loop ended in time")
        .unwrap();
}
