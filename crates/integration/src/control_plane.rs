//! A real Kubernetes control plane for tests: etcd and kube-apiserver (built from Debian's source
//! by scripts/build-kubernetes), with token authentication, RBAC, service-account keys and a
//! serving certificate from a test CA (valid for the API's address and its Service,
//! `kubernetes.default.svc` / 10.96.0.1, so pods reach it in-cluster); a kubeconfig for clients;
//! Strait's CRDs applied with kubectl; on demand the scheduler and the controller manager. It
//! runs on this namespace's loopback, or inside a test namespace on an address of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::etcd::Etcd;
use crate::netns::TestNetns;
use crate::{run_ok, unique};

/// Where scripts/build-kubernetes puts the binaries.
pub const KUBE_BIN: &str = "/var/cache/strait/k8s/bin";
/// The Kubernetes source tree they are built from.
pub const KUBE_SOURCE: &str = "/var/cache/strait/k8s/gopath/src/k8s.io/kubernetes";
const ADMIN_TOKEN: &str = "strait-test-admin-token";

pub fn kube_binary(name: &str) -> PathBuf {
    let path = Path::new(KUBE_BIN).join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-deps test",
        path.display()
    );
    path
}

/// The cluster IP of the `kube-dns` Service (in the service range, as kubeadm chooses it).
pub const CLUSTER_DNS_IP: &str = "10.96.0.10";

#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    /// `https://ADDRESS:PORT`
    pub server: String,
    pub kubeconfig: PathBuf,
    netns: Option<String>,
    apiserver: Option<Child>,
    /// The scheduler and the controller manager, once started.
    controllers: Vec<Child>,
    /// The feature gates the apiserver runs with (`--feature-gates`), for the kubelets too.
    pub feature_gates: String,
    /// Declared last: it stops after the apiserver.
    pub etcd: Etcd,
}

impl ControlPlane {
    /// A control plane on this namespace's loopback.
    pub fn start() -> ControlPlane {
        ControlPlane::launch(None, "127.0.0.1", false, "")
    }

    /// A control plane inside `ns`, serving on `address` (which `ns` must hold).
    pub fn start_in(ns: &TestNetns, address: &str) -> ControlPlane {
        ControlPlane::launch(Some(ns), address, false, "")
    }

    /// As [`ControlPlane::start_in`], for a cluster with nodes: the apiserver, outside the pod
    /// network, reaches kubelets, pods and Services (logs, exec, the proxy subresources) only
    /// through the proxy that [`ControlPlane::start_cluster_proxy`] runs on a node.
    /// `feature_gates` as `--feature-gates` takes them ("" for none).
    pub fn start_outside_pod_network(
        ns: &TestNetns,
        address: &str,
        feature_gates: &str,
    ) -> ControlPlane {
        ControlPlane::launch(Some(ns), address, true, feature_gates)
    }

    fn launch(
        ns: Option<&TestNetns>,
        address: &str,
        through_proxy: bool,
        feature_gates: &str,
    ) -> ControlPlane {
        let dir = std::env::temp_dir().join(unique("k8s"));
        std::fs::create_dir_all(&dir).unwrap();
        let etcd = match ns {
            Some(ns) => Etcd::start_in(ns, address),
            None => Etcd::start(),
        };
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin,system:masters\n"),
        )
        .unwrap();
        issue_certificates(&dir, address);
        let key = dir.join("sa.key");
        run_ok(
            "openssl",
            &["genrsa", "-out", key.to_str().unwrap(), "2048"],
        );
        run_ok(
            "openssl",
            &[
                "rsa",
                "-in",
                key.to_str().unwrap(),
                "-pubout",
                "-out",
                dir.join("sa.pub").to_str().unwrap(),
            ],
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = format!("https://{address}:{port}");
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\n\
                 users:\n- name: admin\n  user:\n    token: {ADMIN_TOKEN}\n\
                 contexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
                ca = dir.join("ca.crt").display()
            ),
        )
        .unwrap();
        let mut cp = ControlPlane {
            dir,
            server,
            kubeconfig,
            netns: ns.map(|n| n.name.clone()),
            apiserver: None,
            controllers: Vec::new(),
            feature_gates: feature_gates.to_string(),
            etcd,
        };
        if through_proxy {
            std::fs::write(
                cp.dir.join("egress.yaml"),
                format!(
                    "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\n\
                     egressSelections:\n- name: cluster\n  connection:\n    \
                     proxyProtocol: HTTPConnect\n    transport:\n      uds:\n        \
                     udsName: {}\n",
                    cp.cluster_proxy_socket().display()
                ),
            )
            .unwrap();
        }
        cp.start_apiserver(address, port);
        cp
    }

    fn cluster_proxy_socket(&self) -> PathBuf {
        self.dir.join("cluster-proxy.sock")
    }

    /// Runs the HTTP CONNECT proxy through which the apiserver (in its own namespace, outside
    /// the pod network, as a managed cluster's is) reaches the cluster, in `node`'s namespace,
    /// where pods are reachable as from any node; waits until it listens.
    pub fn start_cluster_proxy(&mut self, node: &TestNetns) {
        let socket = self.cluster_proxy_socket();
        let proxy = node.command(
            crate::bin("connect-proxy").to_str().expect("utf-8"),
            &["--listen", socket.to_str().expect("utf-8")],
        );
        self.spawn_controller(proxy, "cluster-proxy.log");
        crate::wait_until(
            "connect-proxy listens",
            Duration::from_secs(10),
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
            || self.log("cluster-proxy.log"),
        );
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// `program` run where the API is reachable (the control plane's namespace, if any).
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn start_apiserver(&mut self, address: &str, port: u16) {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let log = std::fs::File::create(self.dir.join("apiserver.log")).unwrap();
        let child = self
            .command(&kube_binary("kube-apiserver"))
            .arg(format!("--etcd-servers={}", self.etcd.endpoint))
            .arg(format!("--bind-address={address}"))
            .arg(format!("--advertise-address={address}"))
            .arg(format!("--secure-port={port}"))
            .arg("--insecure-port=0")
            .arg(format!("--tls-cert-file={}", d("server.crt")))
            .arg(format!("--tls-private-key-file={}", d("server.key")))
            .arg(format!("--client-ca-file={}", d("ca.crt")))
            .arg("--allow-privileged=true")
            .arg("--kubelet-preferred-address-types=InternalIP")
            .arg(format!("--token-auth-file={}", d("tokens.csv")))
            .arg("--authorization-mode=Node,RBAC")
            .arg(format!("--service-account-key-file={}", d("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                d("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--service-cluster-ip-range=10.96.0.0/12")
            .arg("--enable-priority-and-fairness=false")
            .args(
                (!self.feature_gates.is_empty())
                    .then(|| format!("--feature-gates={}", self.feature_gates)),
            )
            .args(
                self.dir
                    .join("egress.yaml")
                    .exists()
                    .then(|| format!("--egress-selector-config-file={}", d("egress.yaml"))),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("kube-apiserver starts");
        self.apiserver = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = self.kubectl(&["get", "--raw", "/readyz"]);
            if ready.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "kube-apiserver not ready: {}",
                std::fs::read_to_string(self.dir.join("apiserver.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Starts the scheduler and the controller manager (service-account tokens signed with the
    /// API's key, the test CA as the pods' root CA).
    pub fn start_controllers(&mut self) {
        let d = |f: &str| self.dir.join(f).display().to_string();
        let kubeconfig = format!("--kubeconfig={}", self.kubeconfig.display());
        let mut scheduler = self.command(&kube_binary("kube-scheduler"));
        scheduler.args([
            &kubeconfig,
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]);
        let mut manager = self.command(&kube_binary("kube-controller-manager"));
        manager
            .args([
                &kubeconfig,
                "--leader-elect=false",
                "--bind-address=127.0.0.1",
            ])
            .arg(format!(
                "--service-account-private-key-file={}",
                d("sa.key")
            ))
            .arg(format!("--root-ca-file={}", d("ca.crt")))
            .arg("--use-service-account-credentials=false");
        self.spawn_controller(scheduler, "scheduler.log");
        self.spawn_controller(manager, "controller-manager.log");
    }

    /// Starts only the controller manager's garbage collector (what deletes a node's StraitNode
    /// with its Node), serving no port, so that several can run beside each other.
    pub fn start_garbage_collector(&mut self) {
        let mut manager = self.command(&kube_binary("kube-controller-manager"));
        manager.args([
            &format!("--kubeconfig={}", self.kubeconfig.display()),
            "--leader-elect=false",
            "--controllers=garbagecollector",
            "--port=0",
            "--secure-port=0",
        ]);
        self.spawn_controller(manager, "garbage-collector.log");
    }

    /// Serves the cluster's DNS zone (`cluster-dns`, in place of CoreDNS) on `address`:53 and
    /// puts the `kube-dns` Service in front of it at [`CLUSTER_DNS_IP`], the nameserver the
    /// kubelets write into pods' resolv.conf.
    pub fn start_cluster_dns(&mut self, address: &str) {
        let mut dns = self.command(&crate::bin("cluster-dns"));
        dns.args([
            "--kubeconfig",
            self.kubeconfig.to_str().expect("utf-8"),
            "--listen",
            &format!("{address}:53"),
        ]);
        self.spawn_controller(dns, "cluster-dns.log");
        let ports = |key: &str| {
            format!(
                r#"[{{"name": "dns", "port": 53, "protocol": "UDP"{key}}},
                   {{"name": "dns-tcp", "port": 53, "protocol": "TCP"{key}}}]"#
            )
        };
        self.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "List", "items": [
              {{"apiVersion": "v1", "kind": "Service",
                "metadata": {{"name": "kube-dns", "namespace": "kube-system"}},
                "spec": {{"clusterIP": "{CLUSTER_DNS_IP}", "ports": {}}}}},
              {{"apiVersion": "v1", "kind": "Endpoints",
                "metadata": {{"name": "kube-dns", "namespace": "kube-system"}},
                "subsets": [{{"addresses": [{{"ip": "{address}"}}], "ports": {}}}]}}]}}"#,
            ports(r#", "targetPort": 53"#),
            ports("")
        ));
        crate::wait_until(
            "cluster-dns answers for the kube-dns Service",
            Duration::from_secs(60),
            || {
                let dig = self
                    .command(Path::new("dig"))
                    .args(["+time=1", "+tries=1", "+short", &format!("@{address}")])
                    .arg("kube-dns.kube-system.svc.cluster.local")
                    .output()
                    .expect("dig is installed (scripts/install-deps test)");
                String::from_utf8_lossy(&dig.stdout).trim() == CLUSTER_DNS_IP
            },
            || self.log("cluster-dns.log"),
        );
    }

    fn spawn_controller(&mut self, mut command: Command, log: &str) {
        let log = std::fs::File::create(self.dir.join(log)).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the Kubernetes controllers start");
        self.controllers.push(child);
    }

    /// `kubectl --kubeconfig ... ARGS` to run where the control plane is reachable.
    pub fn kubectl_command(&self, args: &[&str]) -> Command {
        let mut c = self.command(Path::new("kubectl"));
        c.arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args);
        c
    }

    /// Runs `kubectl ARGS` where the control plane is reachable.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_command(args)
            .output()
            .expect("kubectl is installed")
    }

    /// `kubectl ARGS`, which must succeed; returns its output.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `kubectl apply` of one manifest (YAML or JSON).
    pub fn apply(&self, manifest: &str) {
        let path = self.dir.join(unique("manifest"));
        std::fs::write(&path, manifest).unwrap();
        self.kubectl_ok(&["apply", "-f", path.to_str().unwrap()]);
        let _ = std::fs::remove_file(path);
    }

    /// Registers a Node object named `name`, as its kubelet would.
    pub fn register_node(&self, name: &str) {
        self.apply(&format!(
            r#"{{"apiVersion": "v1", "kind": "Node", "metadata": {{"name": "{name}"}}}}"#
        ));
    }

    /// Applies Strait's CRDs and waits until they are served.
    pub fn apply_crds(&self) {
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds.yaml");
        self.kubectl_ok(&["apply", "-f", crds.to_str().unwrap()]);
        self.kubectl_ok(&[
            "wait",
            "--for=condition=established",
            "--timeout=60s",
            "crd/straitnodes.strait.io",
            "crd/ippools.strait.io",
            "crd/ipblocks.strait.io",
        ]);
    }

    /// Stops the apiserver (etcd keeps its data) and starts it again.
    pub fn restart_apiserver(&mut self) {
        let server = self.server.trim_start_matches("https://").to_string();
        let (address, port) = server.rsplit_once(':').unwrap();
        let (address, port) = (address.to_string(), port.parse().unwrap());
        self.stop_apiserver();
        self.start_apiserver(&address, port);
    }

    pub fn stop_apiserver(&mut self) {
        if let Some(mut child) = self.apiserver.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A test CA (`ca.crt`, `ca.key`) and the API's serving certificate it signs (`server.crt`,
/// `server.key`), valid for `address`, loopback, and the API's Service inside the cluster.
fn issue_certificates(dir: &Path, address: &str) {
    let path = |f: &str| dir.join(f).display().to_string();
    let openssl = |args: &[&str]| run_ok("openssl", args);
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=strait-test-ca",
        "-keyout",
        &path("ca.key"),
        "-out",
        &path("ca.crt"),
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=kube-apiserver",
        "-keyout",
        &path("server.key"),
        "-out",
        &path("server.csr"),
    ]);
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "subjectAltName=IP:{address},IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,\
             DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
        ),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        &path("server.csr"),
        "-CA",
        &path("ca.crt"),
        "-CAkey",
        &path("ca.key"),
        "-CAcreateserial",
        "-extfile",
        &path("server.ext"),
        "-out",
        &path("server.crt"),
    ]);
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        for mut child in self.controllers.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.stop_apiserver();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
