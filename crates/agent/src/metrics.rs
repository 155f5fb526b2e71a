//! The agent's Prometheus metrics (`strait_` prefix, `_total` counters, `_seconds` histograms,
//! never a pod name or address as a label) and their text encoding for /metrics.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 100 µs to ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    cni_requests: Family<Labels, Counter>,
    cni_duration: Family<Labels, Histogram, fn() -> Histogram>,
    reconcile_passes: Family<Labels, Counter>,
    reconcile_duration: Histogram,
    reconcile_operations: Counter,
    drift_repairs: Counter,
    orphan_releases: Counter,
    blocks_reclaimed: Counter,
    blocks_returned: Counter,
    peers: Gauge,
    unreachable_blocks: Gauge,
    quarantined_addresses: Gauge,
    address_conflicts: Gauge,
    ipam_allocated: Family<Labels, Gauge>,
    ipam_capacity: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strait");
        let m = Metrics {
            cni_requests: Family::default(),
            cni_duration: Family::new_with_constructor(latency_histogram),
            reconcile_passes: Family::default(),
            reconcile_duration: latency_histogram(),
            reconcile_operations: Counter::default(),
            drift_repairs: Counter::default(),
            orphan_releases: Counter::default(),
            blocks_reclaimed: Counter::default(),
            blocks_returned: Counter::default(),
            peers: Gauge::default(),
            unreachable_blocks: Gauge::default(),
            quarantined_addresses: Gauge::default(),
            address_conflicts: Gauge::default(),
            ipam_allocated: Family::default(),
            ipam_capacity: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "cni_requests",
            "CNI requests by command and result",
            m.cni_requests.clone(),
        );
        registry.register(
            "cni_request_duration_seconds",
            "Time to answer a CNI request",
            m.cni_duration.clone(),
        );
        registry.register(
            "reconcile_passes",
            "Reconcile passes by result",
            m.reconcile_passes.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time of one reconcile pass",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_operations",
            "Kernel changes made by the reconciler",
            m.reconcile_operations.clone(),
        );
        registry.register(
            "drift_repairs",
            "Passes that repaired a change made outside Strait",
            m.drift_repairs.clone(),
        );
        registry.register(
            "orphan_releases",
            "Attachments released because their pod left the Kubernetes API without a CNI DEL",
            m.orphan_releases.clone(),
        );
        registry.register(
            "blocks_reclaimed",
            "Address blocks taken back from nodes deleted from the Kubernetes API",
            m.blocks_reclaimed.clone(),
        );
        registry.register(
            "blocks_returned",
            "Empty address blocks this node gave back to their pools",
            m.blocks_returned.clone(),
        );
        registry.register("peers", "Other nodes this node knows", m.peers.clone());
        registry.register(
            "peer_blocks_unreachable",
            "Other nodes' address blocks this node cannot route (straitctl peers says why)",
            m.unreachable_blocks.clone(),
        );
        registry.register(
            "quarantined_addresses",
            "Addresses held for host veths that no readable attachment record accounts for",
            m.quarantined_addresses.clone(),
        );
        registry.register(
            "address_conflicts",
            "Addresses this node holds but could not take back at start (the node is not ready)",
            m.address_conflicts.clone(),
        );
        registry.register(
            "ipam_addresses_allocated",
            "Addresses given to pods, per network",
            m.ipam_allocated.clone(),
        );
        registry.register(
            "ipam_addresses_capacity",
            "Addresses this node's blocks hold, per network",
            m.ipam_capacity.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn cni(&self, command: &str, ok: bool, seconds: f64) {
        let result = if ok { "ok" } else { "error" };
        self.cni_requests
            .get_or_create(&vec![
                ("command".into(), command.into()),
                ("result".into(), result.into()),
            ])
            .inc();
        self.cni_duration
            .get_or_create(&vec![("command".into(), command.into())])
            .observe(seconds);
    }

    pub fn pass(&self, ok: bool, seconds: f64, operations: usize, repaired_drift: bool) {
        let result = if ok { "ok" } else { "error" };
        self.reconcile_passes
            .get_or_create(&vec![("result".into(), result.into())])
            .inc();
        self.reconcile_duration.observe(seconds);
        self.reconcile_operations.inc_by(operations as u64);
        if repaired_drift {
            self.drift_repairs.inc();
        }
    }

    pub fn orphan_released(&self) {
        self.orphan_releases.inc();
    }

    pub fn block_reclaimed(&self) {
        self.blocks_reclaimed.inc();
    }

    pub fn block_returned(&self) {
        self.blocks_returned.inc();
    }

    pub fn set_peers(&self, peers: usize) {
        self.peers.set(peers as i64);
    }

    pub fn set_unreachable_blocks(&self, blocks: usize) {
        self.unreachable_blocks.set(blocks as i64);
    }

    pub fn set_recovery(&self, quarantined: usize, conflicts: usize) {
        self.quarantined_addresses.set(quarantined as i64);
        self.address_conflicts.set(conflicts as i64);
    }

    pub fn set_ipam(&self, network: &str, ipv6: bool, allocated: u64, capacity: u64) {
        let family = if ipv6 { "ipv6" } else { "ipv4" };
        let labels = vec![
            ("network".to_string(), network.to_string()),
            ("family".to_string(), family.to_string()),
        ];
        self.ipam_allocated
            .get_or_create(&labels)
            .set(allocated as i64);
        self.ipam_capacity
            .get_or_create(&labels)
            .set(capacity as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = Metrics::new();
        m.cni("ADD", true, 0.002);
        m.pass(true, 0.01, 3, true);
        m.set_ipam("pods", false, 2, 63);
        m.orphan_released();
        m.set_recovery(1, 0);
        let text = m.encode();
        for needle in [
            "strait_cni_requests_total{command=\"ADD\",result=\"ok\"} 1",
            "strait_cni_request_duration_seconds_bucket{",
            "strait_reconcile_operations_total 3",
            "strait_drift_repairs_total 1",
            "strait_orphan_releases_total 1",
            "strait_quarantined_addresses 1",
            "strait_address_conflicts 0",
            "strait_ipam_addresses_allocated{network=\"pods\",family=\"ipv4\"} 2",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
