//! A Kubernetes node for tests: a network namespace on the fabric (its default route points at the
//! fabric's router address) and a mount namespace in which /var/lib, /var/log, /run, /etc/cni and
//! /opt are directories of the test, so the node's containerd, kubelet and kube-proxy see a
//! machine of their own and leave nothing on the host. Dropping it ends every process in it and
//! every container it started, and removes their cgroups.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::control_plane::{CLUSTER_DNS_IP, ControlPlane, kube_binary};
use crate::fabric::Fabric;
use crate::mount_ns::MountNs;
use crate::netns::TestNetns;
use crate::unique;

/// The image every pod sandbox runs (the tests import it into each node).
pub const PAUSE_IMAGE: &str = "strait.test/busybox:1";
/// The host directories each node has a private copy of.
const PRIVATE_DIRS: [&str; 5] = ["/var/lib", "/var/log", "/run", "/etc/cni", "/opt"];
const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";

#[derive(Debug)]
pub struct KubeNode {
    /// The node's name in Kubernetes (its network namespace's name).
    pub name: String,
    pub ns: TestNetns,
    /// Its address on the fabric: the node IP.
    pub address: String,
    pub dir: PathBuf,
    /// containerd, the kubelet and kube-proxy, by name.
    daemons: Vec<(&'static str, Child)>,
    /// Taken when the node is dropped, before its directory is removed.
    mount_ns: Option<MountNs>,
    _fabric: Arc<Fabric>,
}

impl KubeNode {
    /// Starts a node that registers with `cp`: containerd (with `images` imported), the kubelet,
    /// kube-proxy. `cni_plugins` are copied from Debian's reference plugins into the node's
    /// /opt/cni/bin (containerd itself needs `loopback`).
    pub fn start(
        fabric: &Arc<Fabric>,
        router: &str,
        cp: &ControlPlane,
        images: &[PathBuf],
        cni_plugins: &[&str],
    ) -> KubeNode {
        // containerd's shims leave their parent: they come to this process instead of init,
        // which reaps them when the node goes.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
        let ns = TestNetns::new("kn");
        let address = fabric.attach(&ns);
        ns.ip(&["route", "add", "default", "via", router]);
        let dir = std::env::temp_dir().join(unique("knode"));
        let mut setup = String::new();
        for host in PRIVATE_DIRS {
            assert!(
                Path::new(host).is_dir(),
                "{host} is missing (scripts/install-deps test)"
            );
            let private = dir.join(host.trim_start_matches('/'));
            fs::create_dir_all(&private).expect("node dir");
            setup.push_str(&format!("mount --bind {} {host}\n", private.display()));
        }
        let mount_ns = MountNs::new(&dir, &ns.name, &setup);
        let mut node = KubeNode {
            name: ns.name.clone(),
            ns,
            address,
            dir,
            daemons: Vec::new(),
            mount_ns: Some(mount_ns),
            _fabric: Arc::clone(fabric),
        };
        let cni_bin = node.host_path("/opt/cni/bin");
        fs::create_dir_all(&cni_bin).expect("cni bin dir");
        fs::create_dir_all(node.host_path("/etc/cni/net.d")).expect("cni conf dir");
        for plugin in cni_plugins.iter().chain(&["loopback"]) {
            fs::copy(Path::new("/usr/lib/cni").join(plugin), cni_bin.join(plugin))
                .expect("Debian's containernetworking-plugins are installed");
        }
        node.start_containerd();
        for image in images {
            node.ok(
                "ctr",
                &["-a", CONTAINERD_SOCKET, "-n", "k8s.io", "images", "import"],
                Some(image),
            );
        }
        // containerd's CRI plugin learns of an image imported while it starts through an event;
        // once, such an image stayed in the store but out of what the kubelet sees. Started
        // again, the plugin reads every image from the store before it serves the kubelet.
        node.stop("containerd");
        node.start_containerd();
        node.start_kubelet(cp, router);
        node.start_kube_proxy(cp);
        node
    }

    /// Where the node's `path` (in one of its private directories) is on the host.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// `program` run on the node (its network and mount namespaces).
    pub fn command(&self, program: &str) -> Command {
        self.mount_ns
            .as_ref()
            .expect("the node runs")
            .command(&self.ns, program)
    }

    /// Runs `program args [file]` on the node; it must succeed.
    fn ok(&self, program: &str, args: &[&str], file: Option<&Path>) -> Output {
        let mut c = self.command(program);
        c.args(args);
        if let Some(f) = file {
            c.arg(f);
        }
        let out = c.output().unwrap_or_else(|e| panic!("{program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} on {}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn spawn(&mut self, name: &'static str, program: &Path, args: &[String]) {
        // Appended to: a daemon started again keeps its first run's log.
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .expect("log file");
        let child = self
            .command(program.to_str().expect("utf-8"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        self.daemons.push((name, child));
    }

    /// A daemon's log.
    pub fn log(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    fn start_containerd(&mut self) {
        let config = self.dir.join("containerd.toml");
        fs::write(
            &config,
            format!(
                r#"version = 2
root = "/var/lib/containerd"
state = "/run/containerd"
[grpc]
  address = "{CONTAINERD_SOCKET}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "native"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/opt/cni/bin"
    conf_dir = "/etc/cni/net.d"
"#
            ),
        )
        .expect("containerd config");
        let args = vec!["--config".to_string(), config.display().to_string()];
        self.spawn("containerd", Path::new("/usr/bin/containerd"), &args);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let up = self
                .command("ctr")
                .args(["-a", CONTAINERD_SOCKET, "version"])
                .output()
                .is_ok_and(|o| o.status.success());
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "containerd did not start:\n{}",
                self.log("containerd")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The kubelet; the node's own resolver configuration (what pods with the Default DNS
    /// policy and host-network pods get, and what the kubelet adds to the others') names the
    /// cluster's DNS on the router and no search domain of this machine's.
    fn start_kubelet(&mut self, cp: &ControlPlane, router: &str) {
        let resolv_conf = self.dir.join("resolv.conf");
        fs::write(&resolv_conf, format!("nameserver {router}\n")).expect("resolv.conf");
        let resolv_conf = resolv_conf.display();
        let config = self.dir.join("kubelet.yaml");
        // No QoS cgroups or node allocatable (a test machine), anonymous access for exec/logs,
        // and no image GC or disk eviction on a crowded disk.
        fs::write(
            &config,
            format!(
                "apiVersion: kubelet.config.k8s.io/v1beta1\n\
             kind: KubeletConfiguration\n\
             cgroupDriver: cgroupfs\n\
             cgroupsPerQOS: false\n\
             enforceNodeAllocatable: []\n\
             failSwapOn: false\n\
             oomScoreAdj: 0\n\
             readOnlyPort: 0\n\
             authentication: {{anonymous: {{enabled: true}}, webhook: {{enabled: false}}}}\n\
             authorization: {{mode: AlwaysAllow}}\n\
             clusterDomain: cluster.local\n\
             clusterDNS: [{CLUSTER_DNS_IP}]\n\
             resolvConf: {resolv_conf}\n\
             imageGCHighThresholdPercent: 100\n\
             imageGCLowThresholdPercent: 99\n\
             evictionHard: {{memory.available: 1Mi, nodefs.available: 1%, imagefs.available: 1%}}\n"
            ),
        )
        .expect("kubelet config");
        let mut args = vec![
            format!("--config={}", config.display()),
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            "--container-runtime=remote".into(),
            format!("--container-runtime-endpoint=unix://{CONTAINERD_SOCKET}"),
            format!("--hostname-override={}", self.name),
            format!("--node-ip={}", self.address),
            "--root-dir=/var/lib/kubelet".into(),
        ];
        if !cp.feature_gates.is_empty() {
            args.push(format!("--feature-gates={}", cp.feature_gates));
        }
        self.spawn("kubelet", &kube_binary("kubelet"), &args);
    }

    fn start_kube_proxy(&mut self, cp: &ControlPlane) {
        // Its node IP is given, so it need not wait for the Node. It leaves the machine-wide
        // conntrack table size alone; its TCP timeouts are the node namespace's own.
        let args = vec![
            format!("--kubeconfig={}", cp.kubeconfig.display()),
            format!("--hostname-override={}", self.name),
            format!("--bind-address={}", self.address),
            "--cluster-cidr=10.244.0.0/16".into(),
            "--proxy-mode=iptables".into(),
            "--conntrack-max-per-core=0".into(),
            "--metrics-bind-address=127.0.0.1:10249".into(),
        ];
        self.spawn("kube-proxy", &kube_binary("kube-proxy"), &args);
    }

    /// Kills the kubelet (as a crash would); its containers keep running.
    pub fn kill_kubelet(&mut self) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| *n == "kubelet") {
            let (_, mut child) = self.daemons.remove(i);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the daemon `name` as its service manager would: SIGTERM, and SIGKILL if it has not
    /// ended 10 s later.
    fn stop(&mut self, name: &str) {
        if let Some(i) = self.daemons.iter().position(|(n, _)| *n == name) {
            let (_, mut child) = self.daemons.remove(i);
            let pid = child.id() as i32;
            // SAFETY: kill(2) on a process this node started and has not yet reaped.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().is_ok_and(|ended| ended.is_none()) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `straitctl -o json ARGS` against the node's agent.
    pub fn straitctl(&self, args: &[&str]) -> Value {
        crate::node::straitctl_json(&self.host_path("/run/strait/strait.sock"), args)
    }

    /// The containers this node's containerd runs (asked while it still runs).
    fn container_ids(&self) -> Vec<String> {
        let out = self
            .command("ctr")
            .args([
                "-a",
                CONTAINERD_SOCKET,
                "-n",
                "k8s.io",
                "containers",
                "ls",
                "-q",
            ])
            .output();
        match out {
            Ok(o) => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// The cgroup directories of `container` in every hierarchy.
fn container_cgroups(container: &str) -> Vec<PathBuf> {
    let Ok(hierarchies) = fs::read_dir("/sys/fs/cgroup") else {
        return Vec::new();
    };
    hierarchies
        .filter_map(|h| Some(h.ok()?.path().join("k8s.io").join(container)))
        .filter(|p| p.is_dir())
        .collect()
}

/// Waits for the exited containerd shims that were handed to this process (its child subreaper).
fn reap_orphaned_shims() {
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() };
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let Some((comm, rest)) = stat.split_once(" (").and_then(|(_, r)| r.rsplit_once(") "))
        else {
            continue;
        };
        let mut fields = rest.split(' ');
        let (state, ppid) = (
            fields.next(),
            fields.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if comm == "containerd-shim" && state == Some("Z") && ppid == Some(me) {
            // SAFETY: waitpid on an exited child of this process that nothing else waits for.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        }
    }
}

fn kill(pid: i32) {
    // SAFETY: kill(2) on a process this node started (directly or through containerd).
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

impl Drop for KubeNode {
    fn drop(&mut self) {
        // The kubelet first, so nothing is restarted; then the containers (their shims clean
        // up after them while still alive); then every process in the node.
        self.kill_kubelet();
        let containers = self.container_ids();
        for cgroup in containers.iter().flat_map(|c| container_cgroups(c)) {
            for pid in fs::read_to_string(cgroup.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
            {
                pid.parse().map(kill).unwrap_or_default();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while containers.iter().any(|c| !container_cgroups(c).is_empty())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        for (_, child) in &mut self.daemons {
            let _ = child.kill();
        }
        for (_, mut child) in self.daemons.drain(..) {
            let _ = child.wait();
        }
        if let Some(mount_ns) = self.mount_ns.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let left = mount_ns.processes();
                if left.is_empty() || Instant::now() > deadline {
                    break;
                }
                left.into_iter().for_each(kill);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        reap_orphaned_shims();
        for cgroup in containers.iter().flat_map(|c| container_cgroups(c)) {
            let _ = fs::remove_dir(cgroup);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
