//! Several nodes on one fabric sharing one cluster store (the embedded store in a shared
//! directory, a real etcd, or a real Kubernetes API), with helpers to place pods and check who
//! reaches whom.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cni::{address, addresses};
use crate::control_plane::ControlPlane;
use crate::etcd::Etcd;
use crate::fabric::Fabric;
use crate::netns::TestNetns;
use crate::node::{Node, NodeSpec, StoreSpec};
use crate::traffic::ping;
use crate::unique;

/// Which store the cluster shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
    Kubernetes,
}

/// A pod: its namespace, the node it is on, and its addresses.
#[derive(Debug)]
pub struct Pod {
    pub ns: TestNetns,
    pub node: usize,
    /// Its first address.
    pub ip: String,
    /// All of its addresses, IPv4's first.
    pub ips: Vec<String>,
    pub container_id: String,
}

#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub fabric: Arc<Fabric>,
    /// Declared after the nodes so they stop before their store does.
    pub etcd: Option<Etcd>,
    pub control_plane: Option<ControlPlane>,
    store_dir: PathBuf,
    /// What nodes added from now on are made from (a test may change it between additions).
    pub template: NodeSpec,
}

impl Cluster {
    pub fn start(nodes: usize, mode: &str, backend: Backend) -> Cluster {
        let template = NodeSpec {
            mode: mode.to_string(),
            ..NodeSpec::default()
        };
        Cluster::start_with(nodes, backend, template)
    }

    /// Like [`Cluster::start`], every node configured like `template` (its fabric and store are
    /// the cluster's).
    pub fn start_with(nodes: usize, backend: Backend, template: NodeSpec) -> Cluster {
        let mut cluster = Cluster {
            nodes: Vec::new(),
            fabric: Arc::new(Fabric::new()),
            etcd: None,
            control_plane: None,
            store_dir: std::env::temp_dir().join(unique("store")),
            template,
        };
        // Where nodes reach a store on the network: the fabric's own address.
        let address = format!("{}.254", crate::fabric::PREFIX);
        if backend != Backend::Embedded {
            cluster
                .fabric
                .ns
                .ip(&["addr", "add", &format!("{address}/24"), "dev", "br0"]);
        }
        match backend {
            Backend::Embedded => {}
            Backend::Etcd => cluster.etcd = Some(Etcd::start_in(&cluster.fabric.ns, &address)),
            Backend::Kubernetes => {
                let mut cp = ControlPlane::start_in(&cluster.fabric.ns, &address);
                cp.apply_crds();
                cp.start_garbage_collector();
                cluster.control_plane = Some(cp);
            }
        }
        for _ in 0..nodes {
            cluster.add_node();
        }
        cluster
    }

    fn spec(&self) -> NodeSpec {
        NodeSpec {
            fabric: Some(Arc::clone(&self.fabric)),
            store: match (&self.etcd, &self.control_plane) {
                (Some(etcd), _) => StoreSpec::Etcd(etcd.endpoint.clone()),
                (None, Some(cp)) => StoreSpec::Kubernetes(cp.kubeconfig.clone()),
                (None, None) => StoreSpec::Shared(self.store_dir.clone()),
            },
            ..self.template.clone()
        }
    }

    /// Starts one more node; returns its index.
    pub fn add_node(&mut self) -> usize {
        let n = self.create_node();
        if let Err(log) = self.nodes[n].try_start_agent() {
            panic!("straitd did not become ready:\n{log}");
        }
        n
    }

    /// Adds one more node (registered with Kubernetes, when that is the store) without starting
    /// its agent; returns its index.
    pub fn create_node(&mut self) -> usize {
        let node = Node::create(self.spec());
        if let Some(cp) = &self.control_plane {
            cp.register_node(&node.ns.name);
        }
        self.nodes.push(node);
        self.nodes.len() - 1
    }

    /// ADDs a pod on node `n`.
    pub fn pod(&self, n: usize) -> Pod {
        let ns = TestNetns::new("p");
        let container_id = unique("ctr");
        let result: Value = self.nodes[n].add(&container_id, &ns);
        Pod {
            ip: address(&result),
            ips: addresses(&result),
            ns,
            node: n,
            container_id,
        }
    }

    /// Every ordered pair of pods that cannot reach each other at the other's first address.
    pub fn unreachable(pods: &[Pod]) -> Vec<(String, String)> {
        Cluster::unreachable_at(pods, |p| p.ip.as_str())
    }

    /// Every ordered pair of pods that cannot reach each other at the address `which` picks.
    pub fn unreachable_at(pods: &[Pod], which: impl Fn(&Pod) -> &str) -> Vec<(String, String)> {
        let mut bad = Vec::new();
        for a in pods {
            for b in pods {
                if a.ns.name != b.ns.name && !ping(&a.ns, which(b)) {
                    bad.push((
                        format!("node{} {}", a.node, which(a)),
                        format!("node{} {}", b.node, which(b)),
                    ));
                }
            }
        }
        bad
    }

    /// Waits (up to `limit`) until every node knows every other as a peer.
    pub fn wait_converged(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let want = self.nodes.len() - 1;
        for node in &self.nodes {
            loop {
                let routes = node.ctl(&["routes"]);
                let peers = node.ctl(&["peers"]).as_array().map_or(0, Vec::len);
                // Every peer holds a block, so a converged node has routes, all programmed.
                let programmed = routes.as_array().is_some_and(|r| {
                    (want == 0 || !r.is_empty()) && r.iter().all(|r| r["programmed"] == true)
                });
                if peers == want && programmed {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{} did not converge: {routes}\n{}",
                    node.ns.name,
                    self.nodes
                        .iter()
                        .map(|n| n.agent_log())
                        .collect::<Vec<_>>()
                        .join("\n-----\n")
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.store_dir);
    }
}
