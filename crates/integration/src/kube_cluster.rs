//! A Kubernetes cluster on this machine for end-to-end tests: the control plane (etcd,
//! kube-apiserver, scheduler, controller manager) and the cluster's DNS inside the fabric's
//! namespace on its router address, outside the pod network (the apiserver reaches kubelets and
//! pods through a proxy on the first node), and nodes on the fabric, each with containerd, a
//! kubelet and kube-proxy. Dropping it stops everything, writes back the kernel settings the kubelets changed
//! and removes the cgroups their containerds made.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::control_plane::ControlPlane;
use crate::fabric::{Fabric, PREFIX};
use crate::kube_node::KubeNode;
use crate::machine::MachineState;

/// The label selector of Strait's agent pods.
pub const STRAIT_SELECTOR: &str = "app.kubernetes.io/name=strait";

/// A pod as the API reports it.
#[derive(Debug, Clone)]
pub struct PodView {
    pub name: String,
    pub node: String,
    pub ip: String,
    pub ready: bool,
}

/// A condition's status and message.
fn condition(status: &Value, kind: &str) -> (String, String) {
    let found = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind);
    match found {
        Some(c) => (
            c["status"].as_str().unwrap_or_default().into(),
            c["message"].as_str().unwrap_or_default().into(),
        ),
        None => (String::new(), String::new()),
    }
}

#[derive(Debug)]
pub struct KubeCluster {
    /// Declared first: nodes stop before the control plane.
    pub nodes: Vec<KubeNode>,
    pub control_plane: ControlPlane,
    pub fabric: Arc<Fabric>,
    before: MachineState,
}

impl KubeCluster {
    /// Starts the control plane and `nodes` nodes with `images` imported and Debian's
    /// `cni_plugins` installed (besides `loopback`). No CNI network is configured yet.
    pub fn start(nodes: usize, images: &[PathBuf], cni_plugins: &[&str]) -> KubeCluster {
        KubeCluster::start_with_feature_gates(nodes, images, cni_plugins, "")
    }

    /// As [`KubeCluster::start`], the apiserver and the kubelets with `feature_gates` (as
    /// `--feature-gates` takes them).
    pub fn start_with_feature_gates(
        nodes: usize,
        images: &[PathBuf],
        cni_plugins: &[&str],
        feature_gates: &str,
    ) -> KubeCluster {
        crate::require_root();
        let before = MachineState::capture();
        let fabric = Arc::new(Fabric::new());
        let router = format!("{PREFIX}.254");
        fabric
            .ns
            .ip(&["addr", "add", &format!("{router}/24"), "dev", "br0"]);
        let mut control_plane =
            ControlPlane::start_outside_pod_network(&fabric.ns, &router, feature_gates);
        control_plane.start_controllers();
        control_plane.start_cluster_dns(&router);
        let nodes: Vec<KubeNode> = (0..nodes)
            .map(|_| KubeNode::start(&fabric, &router, &control_plane, images, cni_plugins))
            .collect();
        control_plane.start_cluster_proxy(&nodes[0].ns);
        KubeCluster {
            nodes,
            control_plane,
            fabric,
            before,
        }
    }

    /// `kubectl ARGS`, which must succeed; returns its output.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.control_plane.kubectl_ok(args)
    }

    /// `kubectl get ARGS -o json`.
    pub fn get(&self, args: &[&str]) -> Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all)).expect("kubectl prints JSON")
    }

    /// The pods of `namespace` matching `selector` (not those being deleted).
    pub fn pods(&self, namespace: &str, selector: &str) -> Vec<PodView> {
        let list = self.get(&["pods", "-n", namespace, "-l", selector]);
        list["items"]
            .as_array()
            .expect("items")
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| PodView {
                name: p["metadata"]["name"].as_str().unwrap_or_default().into(),
                node: p["spec"]["nodeName"].as_str().unwrap_or_default().into(),
                ip: p["status"]["podIP"].as_str().unwrap_or_default().into(),
                ready: condition(&p["status"], "Ready").0 == "True",
            })
            .collect()
    }

    /// Whether node `name` is Ready, and its Ready condition's message; `None` while it is not
    /// registered.
    pub fn node_ready(&self, name: &str) -> Option<(bool, String)> {
        let out = self
            .control_plane
            .kubectl(&["get", "node", name, "-o", "json"]);
        if !out.status.success() {
            return None;
        }
        let node: Value = serde_json::from_slice(&out.stdout).ok()?;
        let (status, message) = condition(&node["status"], "Ready");
        Some((status == "True", message))
    }

    /// `kubectl apply -k deploy/`: Strait as users install it.
    pub fn apply_strait(&self) {
        let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
        self.kubectl(&["apply", "-k", deploy.to_str().expect("utf-8")]);
    }

    /// Waits until Strait's agent pod is Ready on every node.
    pub fn wait_strait_ready(&self) {
        self.wait_until(
            "Strait's pods Ready",
            Duration::from_secs(120),
            || {
                let agents = self.pods("kube-system", STRAIT_SELECTOR);
                agents.len() == self.nodes.len() && agents.iter().all(|p| p.ready)
            },
            || self.agent_pods_detail(),
        );
    }

    /// What explains agent pods that do not start: `kubectl describe` of kube-system's pods and
    /// what each node's containerd said of images and errors.
    pub fn agent_pods_detail(&self) -> String {
        let mut detail = self.kubectl(&["-n", "kube-system", "describe", "pods"]);
        for node in &self.nodes {
            let log = node.log("containerd");
            let said: Vec<&str> = log
                .lines()
                .filter(|l| l.contains("level=error") || l.to_ascii_lowercase().contains("image"))
                .collect();
            detail.push_str(&format!(
                "\ncontainerd on {}, of images and errors (last 40 lines):\n{}\n",
                node.name,
                said[said.len().saturating_sub(40)..].join("\n")
            ));
        }
        detail
    }

    /// The node named `name`.
    pub fn node(&self, name: &str) -> &KubeNode {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node {name}"))
    }

    /// Waits (up to `limit`) until `done` holds; panics naming `what` and with `detail()`.
    pub fn wait_until(
        &self,
        what: &str,
        limit: Duration,
        mut done: impl FnMut() -> bool,
        detail: impl Fn() -> String,
    ) {
        let deadline = Instant::now() + limit;
        while !done() {
            assert!(
                Instant::now() < deadline,
                "{what}: not after {limit:?}\n{}",
                detail()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for KubeCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        self.before.restore_kubelet_sysctls();
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let parent = hierarchy.path().join("k8s.io");
            if !self.before.cgroups.contains(&parent.display().to_string()) {
                let _ = std::fs::remove_dir(parent);
            }
        }
    }
}
