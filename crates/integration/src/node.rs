//! A Strait node for tests: its own network namespace, state directory, socket and conflist
//! directory, and a real `straitd` running inside the namespace. Dropping it kills the agent (by
//! PID) and removes the namespace and directory.

use std::fs;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cni::{Env, Outcome, invoke};
use crate::fabric::Fabric;
use crate::inspect::Snapshot;
use crate::netns::TestNetns;
use crate::{bin, unique};

/// How a test node is configured.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub network: String,
    /// (CIDR, block prefix) of each pool; several are named `<network>-<index>`.
    pub pools: Vec<(String, u8)>,
    /// `vxlan` or `routed`.
    pub mode: String,
    /// Extra TOML right after the top-level keys: more of them, a `[cni]` section, another
    /// `[[network]]`.
    pub extra: String,
    pub store: StoreSpec,
    /// The fabric to plug into; a private one when absent.
    pub fabric: Option<Arc<Fabric>>,
    /// Extra environment for straitd (e.g. `STRAIT_FAULT`).
    pub agent_env: Vec<(String, String)>,
    /// Extra TOML for every pool (e.g. `fixed_addresses = true`).
    pub pool_extra: String,
    /// The node's underlay has its IPv6 address alone (configured as `node_address6`).
    pub ipv6_only: bool,
}

/// Which cluster store a test node uses.
#[derive(Debug, Clone, Default)]
pub enum StoreSpec {
    /// Its own embedded store.
    #[default]
    Own,
    /// The embedded store in this directory, shared with other nodes on the machine.
    Shared(PathBuf),
    /// etcd at this endpoint.
    Etcd(String),
    /// The Kubernetes API this kubeconfig names.
    Kubernetes(PathBuf),
}

impl Default for NodeSpec {
    fn default() -> Self {
        NodeSpec {
            network: "strait".into(),
            pools: vec![("10.244.0.0/16".into(), 26)],
            mode: "vxlan".into(),
            extra: String::new(),
            store: StoreSpec::Own,
            fabric: None,
            agent_env: Vec::new(),
            pool_extra: String::new(),
            ipv6_only: false,
        }
    }
}

#[derive(Debug)]
pub struct Node {
    pub ns: TestNetns,
    pub dir: PathBuf,
    pub spec: NodeSpec,
    /// The node's underlay address on the fabric: IPv4, or IPv6 on an IPv6-only node.
    pub address: String,
    agent: Option<Child>,
    /// Keeps the fabric alive as long as a node is plugged into it.
    _fabric: Arc<Fabric>,
}

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a node on the Kubernetes store waits before releasing the address of a pod the API
/// no longer has, or taking back the blocks of a Node the API no longer has.
pub const ORPHAN_GRACE_SECONDS: u64 = 2;

impl Node {
    /// Creates the node and starts its agent; panics (with the agent's log) if it does not
    /// become ready.
    pub fn start(spec: NodeSpec) -> Node {
        let mut node = Node::create(spec);
        if let Err(log) = node.try_start_agent() {
            panic!("straitd did not become ready:\n{log}");
        }
        node
    }

    /// Creates the node (plugged into its fabric) without starting its agent.
    pub fn create(spec: NodeSpec) -> Node {
        let ns = TestNetns::new("node");
        let fabric = spec.fabric.clone().unwrap_or_default();
        let mut address = fabric.attach(&ns);
        if spec.ipv6_only {
            ns.ip(&["-4", "addr", "flush", "dev", "eth0"]);
            address = crate::fabric::ipv6_of(&address);
        }
        let dir = std::env::temp_dir().join(unique("dir"));
        fs::create_dir_all(&dir).expect("test dir");
        let node = Node {
            ns,
            dir,
            spec,
            address,
            agent: None,
            _fabric: fabric,
        };
        fs::write(node.config_path(), node.config_text()).expect("write config");
        node
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("straitd.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/strait.sock")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// The embedded store's directory (empty when the node uses etcd or Kubernetes).
    pub fn store_dir(&self) -> PathBuf {
        match &self.spec.store {
            StoreSpec::Shared(dir) => dir.clone(),
            _ => self.dir.join("store"),
        }
    }

    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("net.d")
    }

    fn store_toml(&self) -> String {
        match &self.spec.store {
            StoreSpec::Etcd(endpoint) => format!(
                "[store]\nbackend = \"etcd\"\nendpoints = [\"{endpoint}\"]\nlease_ttl = 3\n"
            ),
            StoreSpec::Kubernetes(kubeconfig) => format!(
                "[store]\nbackend = \"kubernetes\"\nkubeconfig = \"{}\"\norphan_grace = {ORPHAN_GRACE_SECONDS}\nnode_grace = {ORPHAN_GRACE_SECONDS}\n",
                kubeconfig.display()
            ),
            _ => format!(
                "[store]\nbackend = \"embedded\"\npath = \"{}\"\n",
                self.store_dir().display()
            ),
        }
    }

    pub fn config_text(&self) -> String {
        // One pool takes the default name; several are named `<network>-<index>`.
        let mut pools = String::new();
        for (i, (cidr, prefix)) in self.spec.pools.iter().enumerate() {
            let name = match self.spec.pools.len() {
                1 => String::new(),
                _ => format!("name = \"{}-{i}\"\n", self.spec.network),
            };
            pools.push_str(&format!(
                "[[network.pool]]\n{name}cidr = \"{cidr}\"\nblock_prefix = {prefix}\n{}",
                self.spec.pool_extra
            ));
        }
        // `extra` follows the top-level keys, so it may add some; the store's table comes after.
        let conf_dir = format!("conf_dir = \"{}\"", self.conf_dir().display());
        let (extra, cni) = if self.spec.extra.contains("[cni]") {
            let with_dir = self
                .spec
                .extra
                .replace("[cni]", &format!("[cni]\n{conf_dir}"));
            (with_dir, String::new())
        } else {
            (self.spec.extra.clone(), format!("[cni]\n{conf_dir}\n"))
        };
        format!(
            "node_name = \"{node}\"\n{address_key} = \"{address}\"\n\
             state_dir = \"{state}\"\nsocket = \"{socket}\"\n\
             service_cidrs = [\"10.96.0.0/12\"]\n\
             {extra}\n{store}{cni}\n\
             [[network]]\nname = \"{network}\"\nmode = \"{mode}\"\n{pools}",
            node = self.ns.name,
            address_key = if self.spec.ipv6_only {
                "node_address6"
            } else {
                "node_address"
            },
            address = self.address,
            state = self.state_dir().display(),
            socket = self.socket().display(),
            store = self.store_toml(),
            network = self.spec.network,
            mode = self.spec.mode,
        )
    }

    /// Starts straitd in the node's namespace and waits until its socket answers. On failure
    /// returns the agent's log.
    pub fn try_start_agent(&mut self) -> Result<(), String> {
        self.spawn_agent();
        self.wait_ready(READY_TIMEOUT)
    }

    /// Starts straitd in the node's namespace without waiting for it.
    pub fn spawn_agent(&mut self) {
        assert!(self.agent.is_none(), "agent already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("agent.log"))
            .expect("agent log");
        // With CAP_NET_ADMIN alone, as the DaemonSet runs it: root, but no other capability.
        let child = self
            .ns
            .command(
                "setpriv",
                &[
                    "--bounding-set=-all,+net_admin",
                    "--inh-caps=-all",
                    bin("straitd").to_str().expect("utf-8 path"),
                    "--config",
                    self.config_path().to_str().expect("utf-8 path"),
                ],
            )
            .env(
                "STRAIT_LOG",
                std::env::var("STRAIT_TEST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .envs(self.spec.agent_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn straitd");
        self.agent = Some(child);
    }

    /// Waits (up to `limit`) until the running agent's socket answers. On failure returns the
    /// agent's log.
    pub fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            let child = self.agent.as_mut().expect("just set");
            if let Ok(Some(status)) = child.try_wait() {
                self.agent = None;
                return Err(format!("straitd exited ({status}):\n{}", self.agent_log()));
            }
            if Instant::now() > deadline {
                self.kill_agent();
                return Err(format!(
                    "straitd not ready after {limit:?}:\n{}",
                    self.agent_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent exits by itself; false if it still runs after `limit`.
    pub fn wait_agent_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while let Some(child) = self.agent.as_mut() {
            if let Ok(Some(_)) = child.try_wait() {
                self.agent = None;
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// The agent's PID, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Kills the agent with SIGKILL, as a crash would.
    pub fn kill_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the agent with SIGTERM and waits for it.
    pub fn stop_agent(&mut self) {
        if let Some(mut child) = self.agent.take() {
            // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    pub fn agent_log(&self) -> String {
        fs::read_to_string(self.dir.join("agent.log")).unwrap_or_default()
    }

    /// The plugin configuration for this node's network.
    pub fn conf(&self, version: &str) -> String {
        serde_json::json!({
            "cniVersion": version,
            "name": self.spec.network,
            "type": "strait",
            "socket": self.socket(),
        })
        .to_string()
    }

    pub fn cni(&self, env: &Env, stdin: &str) -> Outcome {
        invoke(&bin("strait"), env, stdin)
    }

    /// CNI GC (version 1.1.0) keeping the eth0 attachments of `valid` container ids.
    pub fn gc(&self, valid: &[&str]) -> Outcome {
        let mut conf: Value = serde_json::from_str(&self.conf("1.1.0")).expect("JSON");
        conf["cni.dev/valid-attachments"] = valid
            .iter()
            .map(|id| serde_json::json!({"containerID": id, "ifname": "eth0"}))
            .collect();
        let gc = Env::default()
            .set("CNI_COMMAND", "GC")
            .set("CNI_PATH", "/opt/cni/bin");
        self.cni(&gc, &conf.to_string())
    }

    /// ADD `container_id` to `pod` as eth0 and return the result.
    pub fn add(&self, container_id: &str, pod: &TestNetns) -> Value {
        self.cni(
            &Env::attachment("ADD", container_id, &pod.path(), "eth0"),
            &self.conf("1.0.0"),
        )
        .ok()
    }

    /// DEL `container_id`, and wait until the agent has finished releasing it (DEL answers
    /// first; the data plane goes right after).
    pub fn del(&self, container_id: &str, pod: &TestNetns) {
        self.cni(
            &Env::attachment("DEL", container_id, &pod.path(), "eth0"),
            &self.conf("1.0.0"),
        )
        .ok();
        self.wait_released(|p| p["container_id"] == container_id);
    }

    /// Waits (at most 10 s) until no attachment `which` picks is listed any more.
    pub fn wait_released(&self, which: impl Fn(&Value) -> bool) {
        let listed = || self.ctl(&["pods"]);
        crate::wait_until(
            "the release",
            Duration::from_secs(10),
            || {
                !listed()
                    .as_array()
                    .is_some_and(|all| all.iter().any(&which))
            },
            || listed().to_string(),
        );
    }

    /// ADDs and DELs a throwaway pod so the node holds its first block: block claims are node
    /// state that outlives pods, so "nothing left behind" is measured after this.
    pub fn warm_up(&self) {
        let pod = TestNetns::new("warm");
        self.add("warm-up", &pod);
        self.del("warm-up", &pod);
    }

    /// An "outside" namespace the node reaches over 192.0.2.0/24 (the node is 192.0.2.1 on
    /// `up0`, its default route points there); the outside holds 198.51.100.1 and has no route
    /// to pods, so pod traffic only comes back if it was masqueraded.
    pub fn outside(&self) -> TestNetns {
        let outside = TestNetns::new("out");
        crate::netns::link(
            &self.ns,
            "up0",
            "192.0.2.1/24",
            &outside,
            "eth0",
            "192.0.2.2/24",
        );
        self.ns.ip(&["route", "add", "default", "via", "192.0.2.2"]);
        outside.ip(&["addr", "add", "198.51.100.1/32", "dev", "lo"]);
        outside
    }

    /// The addresses the agent holds for its attachments.
    pub fn held_addresses(&self) -> Vec<String> {
        self.ctl(&["pods"])
            .as_array()
            .expect("a list")
            .iter()
            .map(crate::cni::address)
            .collect()
    }

    /// `straitctl -o json ARGS` against this node's agent.
    pub fn ctl(&self, args: &[&str]) -> Value {
        straitctl_json(&self.socket(), args)
    }

    /// `straitctl ARGS` against this node's agent, which must succeed; returns what it printed.
    pub fn ctl_ok(&self, args: &[&str]) -> String {
        straitctl(&self.socket(), args)
    }

    /// GET `path` from the agent's HTTP endpoint: the status code and the body.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        let url = format!("http://127.0.0.1:9462{path}");
        let out = self.ns.exec("curl", &["-s", "-w", "\n%{http_code}", &url]);
        let text = String::from_utf8_lossy(&out.stdout);
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The value of an unlabelled metric on /metrics, 0 when the agent has not reported it.
    pub fn metric(&self, name: &str) -> u64 {
        let (_, text) = self.http_get("/metrics");
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// How many reconcile passes the agent has run, whatever their outcome.
    pub fn reconcile_passes(&self) -> u64 {
        let (_, text) = self.http_get("/metrics");
        text.lines()
            .filter(|l| l.starts_with("strait_reconcile_passes_total{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    }

    /// Everything Strait could leave behind on this node.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::of(self)
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill_agent();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// `straitctl ARGS` against the agent on `socket`, which must succeed; returns what it printed.
pub fn straitctl(socket: &Path, args: &[&str]) -> String {
    let out = Command::new(bin("straitctl"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .expect("straitctl");
    assert!(
        out.status.success(),
        "straitctl {args:?} on {}: {}",
        socket.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `straitctl -o json ARGS` against the agent on `socket`.
pub fn straitctl_json(socket: &Path, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&straitctl(socket, &all)).expect("straitctl prints JSON")
}
