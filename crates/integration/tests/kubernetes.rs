//! Strait on a real Kubernetes 1.20 cluster on this machine: a control plane (etcd, apiserver,
//! scheduler, controller manager) and two nodes, each in its own network and mount namespace with
//! its own containerd, kubelet and kube-proxy; Strait installed with `kubectl apply -k deploy/`
//! from its image. One test walks through what a cluster operator relies on, step by step, and
//! finally checks that the machine is as it was.

use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use strait_integration::ScratchDir;
use strait_integration::images::kubernetes_images;
use strait_integration::inspect::{ONLY_NET_ADMIN, effective_capabilities};
use strait_integration::kube_cluster::{KubeCluster, PodView, STRAIT_SELECTOR};
use strait_integration::kube_node::PAUSE_IMAGE;
use strait_integration::machine::MachineState;

const MINUTE: Duration = Duration::from_secs(60);
const CONFLIST: &str = "/etc/cni/net.d/10-strait.conflist";

fn exec(cluster: &KubeCluster, pod: &str, script: &str) -> Output {
    cluster
        .control_plane
        .kubectl(&["exec", pod, "--", "sh", "-c", script])
}

/// Announces a step and times the previous one.
struct Steps {
    last: Instant,
    name: String,
}

impl Steps {
    fn next(&mut self, name: &str) {
        eprintln!(
            "[e2e] {} took {:.1} s",
            self.name,
            self.last.elapsed().as_secs_f64()
        );
        eprintln!("[e2e] {name}");
        self.last = Instant::now();
        self.name = name.to_string();
    }
}

/// A web server on port 8080 that answers with its pod's name, Ready once it serves.
fn web_container() -> Value {
    json!({
        "name": "web", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
        "command": ["sh", "-c",
            "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www"],
        "readinessProbe": {"httpGet": {"path": "/index.html", "port": 8080}, "periodSeconds": 1},
    })
}

fn web_deployment(replicas: u32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "automountServiceAccountToken": false,
                    "terminationGracePeriodSeconds": 1,
                    "topologySpreadConstraints": [{
                        "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                        "whenUnsatisfiable": "DoNotSchedule",
                        "labelSelector": {"matchLabels": {"app": "web"}},
                    }],
                    "containers": [web_container()],
                },
            },
        },
    })
}

#[test]
fn strait_networks_a_real_kubernetes_cluster() {
    strait_integration::require_root();
    let before = MachineState::capture();
    let mut steps = Steps {
        last: Instant::now(),
        name: "building the images".into(),
    };
    let suite = Instant::now();
    {
        let work = ScratchDir::new("e2e");
        let images = kubernetes_images(work.path(), false);
        steps.next("starting the control plane and two nodes");
        // 1.20's gate for pods with an address of each family.
        let cluster = KubeCluster::start_with_feature_gates(2, &images, &[], "IPv6DualStack=true");
        run(&cluster, &mut steps);
        steps.next("tearing the cluster down");
    }
    steps.next("done");
    eprintln!(
        "[e2e] the suite took {:.0} s",
        suite.elapsed().as_secs_f64()
    );
    assert_eq!(
        MachineState::capture(),
        before,
        "the machine is as it was before"
    );
}

fn run(cluster: &KubeCluster, steps: &mut Steps) {
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();

    steps.next("nodes register, NotReady without a network");
    cluster.wait_until(
        "both nodes registered",
        MINUTE,
        || names.iter().all(|n| cluster.node_ready(n).is_some()),
        || cluster.nodes[0].log("kubelet"),
    );
    for node in &cluster.nodes {
        let (ready, message) = cluster.node_ready(&node.name).unwrap();
        assert!(!ready, "{} is Ready without a network", node.name);
        assert!(message.contains("network"), "{}: {message}", node.name);
        assert!(!node.host_path(CONFLIST).exists());
    }

    steps.next("kubectl apply -k deploy/: nodes become Ready only once Strait is");
    cluster.apply_strait();
    cluster.wait_until(
        "both nodes Ready",
        2 * MINUTE,
        || {
            names.iter().all(|n| {
                let ready = cluster.node_ready(n).is_some_and(|(r, _)| r);
                // Ready implies the agent finished its start-up (it writes the conflist last).
                assert!(
                    !ready || cluster.node(n).host_path(CONFLIST).exists(),
                    "{n} is Ready before Strait wrote its conflist"
                );
                ready
            })
        },
        || cluster.agent_pods_detail(),
    );
    cluster.wait_strait_ready();
    for node in &cluster.nodes {
        for plugin in ["strait", "strait-portmap"] {
            let path = node.host_path(&format!("/opt/cni/bin/{plugin}"));
            assert!(path.exists(), "the init container installed {plugin}");
        }
    }
    least_privilege(cluster, &names);

    steps.next("a 6-replica Deployment over both nodes, readiness probes passing");
    apply_json(
        cluster,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
        }),
    );
    let web = web_ready(cluster, 6);
    for name in &names {
        assert_eq!(
            web.iter().filter(|p| &p.node == name).count(),
            3,
            "spread: {web:?}"
        );
    }
    for p in &web {
        assert!(p.ip.starts_with("10.244."), "{p:?}");
    }

    steps.next("every pod reaches every other pod");
    let ips: Vec<&str> = web.iter().map(|p| p.ip.as_str()).collect();
    let script = format!(
        "for ip in {}; do ping -c1 -W2 $ip >/dev/null && echo ok $ip || echo FAIL $ip; done",
        ips.join(" ")
    );
    for p in &web {
        let out = exec(cluster, &p.name, &script);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("FAIL") && text.lines().count() == 6,
            "from {} on {}: {text}{}",
            p.name,
            p.node,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    steps.next("the ClusterIP Service answers, from pods on both nodes");
    let service = cluster.get(&["service", "web"]);
    let cluster_ip = service["spec"]["clusterIP"].as_str().unwrap().to_string();
    // (busybox wget crashes with -T; timeout bounds it instead)
    let fetch = format!("timeout 5 wget -q -O - http://{cluster_ip}/index.html");
    // kube-proxy programs the Service once its endpoints are ready.
    cluster.wait_until(
        "the Service answers",
        MINUTE,
        || exec(cluster, &web[0].name, &fetch).status.success(),
        || String::from_utf8_lossy(&exec(cluster, &web[0].name, &fetch).stderr).into_owned(),
    );
    let mut answered_by = std::collections::BTreeSet::new();
    for p in &web {
        let out = exec(
            cluster,
            &p.name,
            &format!("for i in 1 2 3 4 5 6 7 8; do {fetch}; done"),
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            text.lines().count(),
            8,
            "from {}: {text}{}",
            p.name,
            String::from_utf8_lossy(&out.stderr)
        );
        answered_by.extend(text.lines().map(str::to_string));
    }
    let nodes_answering: std::collections::BTreeSet<&str> = web
        .iter()
        .filter(|p| answered_by.contains(&p.name))
        .map(|p| p.node.as_str())
        .collect();
    assert_eq!(nodes_answering.len(), 2, "answered by {answered_by:?}");

    steps.next("a hostPort answers the other node and pods on both, and closes with its pod");
    host_port(cluster, &web);

    steps.next("kubectl logs");
    let agents = cluster.pods("kube-system", STRAIT_SELECTOR);
    let logs = cluster.kubectl(&[
        "-n",
        "kube-system",
        "logs",
        &agents[0].name,
        "-c",
        "straitd",
    ]);
    assert!(logs.contains(r#""message":"ready""#), "{logs}");

    steps.next("deleting pods frees their addresses");
    apply_json(cluster, &web_deployment(2));
    cluster.wait_until(
        "2 web pods left",
        MINUTE,
        || {
            let all = cluster.get(&["pods", "-l", "app=web"]);
            all["items"].as_array().map_or(0, Vec::len) == 2
        },
        || cluster.kubectl(&["get", "pods", "-o", "wide"]),
    );
    // A DEL answers before its release is done; wait for those to finish.
    cluster.wait_until(
        "every release done",
        MINUTE,
        || {
            cluster.nodes.iter().all(|n| {
                n.straitctl(&["pods"])
                    .as_array()
                    .is_some_and(|all| all.iter().all(|p| p["releasing"] != true))
            })
        },
        || cluster.kubectl(&["get", "pods", "-o", "wide"]),
    );
    let kept = cluster.pods("default", "app=web");
    let freed: Vec<&PodView> = web
        .iter()
        .filter(|p| kept.iter().all(|k| k.name != p.name))
        .collect();
    for node in &cluster.nodes {
        let mut held: Vec<String> = node
            .straitctl(&["pods"])
            .as_array()
            .unwrap()
            .iter()
            .map(strait_integration::cni::address)
            .collect();
        let mut expected: Vec<String> = kept
            .iter()
            .filter(|p| p.node == node.name)
            .map(|p| p.ip.clone())
            .collect();
        held.sort();
        expected.sort();
        assert_eq!(
            held, expected,
            "{} holds only its running pods' addresses",
            node.name
        );
        let allocated = node.straitctl(&["status"])["networks"][0]["allocated"].clone();
        assert_eq!(allocated, json!(expected.len()), "{}", node.name);
        for p in &freed {
            assert!(!held.contains(&p.ip), "{} still holds {}", node.name, p.ip);
        }
    }

    steps.next("restarting an agent loses no packet of a cross-node ping");
    // Scaling down may have kept both pods on one node; the spread puts the next two on the
    // other.
    let kept = web_ready(cluster, 4);
    let (a, b) = (
        kept.iter()
            .find(|p| p.node == names[0])
            .expect("a pod on node 0"),
        kept.iter()
            .find(|p| p.node == names[1])
            .expect("a pod on node 1"),
    );
    let pinger = cluster
        .control_plane
        .kubectl_command(&[
            "exec", &a.name, "--", "ping", "-i", "0.2", "-c", "100", &b.ip,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl exec ping");
    std::thread::sleep(Duration::from_secs(2));
    let agent0 = agents
        .iter()
        .find(|p| p.node == names[0])
        .expect("agent on node 0");
    cluster.kubectl(&[
        "-n",
        "kube-system",
        "delete",
        "pod",
        &agent0.name,
        "--wait=true",
    ]);
    cluster.wait_until(
        "a new agent Ready on node 0",
        MINUTE,
        || {
            cluster
                .pods("kube-system", STRAIT_SELECTOR)
                .iter()
                .any(|p| p.node == names[0] && p.name != agent0.name && p.ready)
        },
        || cluster.kubectl(&["-n", "kube-system", "get", "pods", "-o", "wide"]),
    );
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("100 packets transmitted, 100 packets received, 0% packet loss"),
        "{summary}"
    );
    let held = cluster.nodes[0].straitctl(&["pods"]);
    assert_eq!(
        held.as_array().unwrap().len(),
        kept.iter().filter(|p| p.node == names[0]).count(),
        "the new agent kept its pods: {held}"
    );

    steps.next("an IPv6 pool added: pods report both addresses and reach each other over both");
    dual_stack(cluster, &names);

    steps.next("a node deleted from the API leaves the other node's routes");
    let routes = cluster.nodes[0].straitctl(&["routes"]);
    let blocks: Vec<String> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["node"] == names[1].as_str())
        .map(|r| r["dst"].as_str().unwrap().to_string())
        .collect();
    assert!(
        !blocks.is_empty(),
        "node 0 routes to node 1's blocks: {routes}"
    );
    cluster.kubectl(&["delete", "node", &names[1]]);
    cluster.wait_until(
        "node 1's blocks unrouted on node 0",
        MINUTE,
        || {
            blocks.iter().all(|b| {
                let family = if b.contains(':') { "-6" } else { "-4" };
                cluster.nodes[0]
                    .ns
                    .ip(&[family, "route", "show", b])
                    .is_empty()
            })
        },
        || cluster.nodes[0].ns.ip(&["route"]),
    );
    assert_eq!(cluster.nodes[0].straitctl(&["peers"]), json!([]));
    cluster.wait_until(
        "node 1's StraitNode deleted with its Node",
        MINUTE,
        || {
            let left = cluster.get(&["straitnodes"]);
            left["items"].as_array().unwrap().len() == 1
        },
        || cluster.kubectl(&["get", "straitnodes", "-o", "yaml"]),
    );
}

/// Adds an IPv6 pool to Strait's configuration (`kubectl apply -k` of a copy of deploy/ with the
/// pool appended: the ConfigMap's new name rolls the DaemonSet), then checks that a pod on each
/// node reports an address of each family and that they reach each other over both.
fn dual_stack(cluster: &KubeCluster, names: &[String]) {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let copy = ScratchDir::new("deploy6");
    for entry in std::fs::read_dir(&deploy).unwrap().flatten() {
        std::fs::copy(entry.path(), copy.path().join(entry.file_name())).unwrap();
    }
    let config = copy.path().join("straitd.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[[network.pool]]\ncidr = \"fd00:10:244::/56\"\n");
    std::fs::write(&config, text).unwrap();
    cluster.kubectl(&["apply", "-k", copy.path().to_str().unwrap()]);
    cluster.kubectl(&[
        "-n",
        "kube-system",
        "rollout",
        "status",
        "daemonset/strait",
        "--timeout=120s",
    ]);
    cluster.wait_strait_ready();
    for (i, node) in names.iter().enumerate() {
        apply_json(
            cluster,
            &json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("dual-{i}"), "namespace": "default",
                             "labels": {"app": "dual"}},
                "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                         "automountServiceAccountToken": false,
                         "containers": [web_container()]},
            }),
        );
    }
    cluster.wait_until(
        "both dual-stack pods Ready",
        2 * MINUTE,
        || {
            let pods = cluster.pods("default", "app=dual");
            pods.len() == 2 && pods.iter().all(|p| p.ready)
        },
        || cluster.kubectl(&["describe", "pods", "-l", "app=dual"]),
    );
    let listed = cluster.get(&["pods", "-l", "app=dual"]);
    let ips: Vec<Vec<String>> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            p["status"]["podIPs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|ip| ip["ip"].as_str().unwrap().to_string())
                .collect()
        })
        .collect();
    for pod_ips in &ips {
        assert!(
            pod_ips.len() == 2
                && pod_ips[0].starts_with("10.244.")
                && pod_ips[1].starts_with("fd00:10:244:"),
            "{listed}"
        );
    }
    // Readiness is probed over IPv4; the other node may learn the new IPv6 blocks a moment later.
    for (from, to) in [(0, 1), (1, 0)] {
        for ip in &ips[to] {
            let ping = || {
                exec(
                    cluster,
                    &format!("dual-{from}"),
                    &format!("ping -c1 -W2 {ip}"),
                )
            };
            cluster.wait_until(
                &format!("dual-{from} reaches {ip}"),
                MINUTE,
                || ping().status.success(),
                || {
                    let out = ping();
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&out.stdout),
                        String::from_utf8_lossy(&out.stderr)
                    )
                },
            );
        }
    }
}

/// Strait runs unprivileged with CAP_NET_ADMIN alone, may write no core object, and keeps each
/// node's record in a StraitNode its Node owns.
fn least_privilege(cluster: &KubeCluster, names: &[String]) {
    let pods = cluster.get(&["pods", "-n", "kube-system", "-l", STRAIT_SELECTOR]);
    for pod in pods["items"].as_array().unwrap() {
        let spec = &pod["spec"];
        for container in spec["containers"]
            .as_array()
            .unwrap()
            .iter()
            .chain(spec["initContainers"].as_array().unwrap())
        {
            let context = &container["securityContext"];
            assert_ne!(context["privileged"], true, "{context}");
            assert_eq!(context["allowPrivilegeEscalation"], false, "{context}");
            assert_eq!(context["capabilities"]["drop"], json!(["ALL"]), "{context}");
        }
        assert_eq!(
            spec["containers"][0]["securityContext"]["capabilities"]["add"],
            json!(["NET_ADMIN"])
        );
    }
    // The running agents (in containerd's cgroups, k8s.io/<container>) hold exactly that.
    let mut agents = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let dir = entry.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let cgroup = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        if comm.trim() != "straitd" || !cgroup.contains("/k8s.io/") {
            continue;
        }
        assert_eq!(
            effective_capabilities(pid),
            Some(ONLY_NET_ADMIN),
            "{}",
            dir.display()
        );
        agents += 1;
    }
    assert_eq!(agents, names.len(), "one agent per node, each found");
    let may = |verb: &str, resource: &str| {
        let out = cluster.control_plane.kubectl(&[
            "auth",
            "can-i",
            verb,
            resource,
            "--as=system:serviceaccount:kube-system:strait",
        ]);
        String::from_utf8_lossy(&out.stdout).trim() == "yes"
    };
    for verb in ["patch", "update", "create", "delete"] {
        assert!(!may(verb, "nodes"), "the agent may {verb} Nodes");
    }
    assert!(may("create", "straitnodes.strait.io"));
    let records = cluster.get(&["straitnodes"]);
    let mut owners: Vec<String> = records["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let owner = &r["metadata"]["ownerReferences"][0];
            assert_eq!(owner["kind"], "Node", "{r}");
            let node = cluster.get(&["node", owner["name"].as_str().unwrap()]);
            assert_eq!(owner["uid"], node["metadata"]["uid"], "{r}");
            owner["name"].as_str().unwrap().to_string()
        })
        .collect();
    owners.sort();
    let mut expected = names.to_vec();
    expected.sort();
    assert_eq!(owners, expected, "one StraitNode per Node, owned by it");
}

/// A pod on node 0 publishing port 8080 as the node's port 18080: node 1, and `web` pods on both
/// nodes, reach it at node 0's address; deleting the pod closes the port and frees its address.
fn host_port(cluster: &KubeCluster, web: &[PodView]) {
    let (node0, node1) = (&cluster.nodes[0], &cluster.nodes[1]);
    let mut container = web_container();
    container["ports"] = json!([{"containerPort": 8080, "hostPort": 18080}]);
    apply_json(
        cluster,
        &json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hostport", "namespace": "default", "labels": {"app": "hostport"}},
            "spec": {
                "nodeName": node0.name,
                "automountServiceAccountToken": false,
                "terminationGracePeriodSeconds": 1,
                "containers": [container],
            },
        }),
    );
    cluster.wait_until(
        "the hostPort pod Ready",
        MINUTE,
        || {
            cluster
                .pods("default", "app=hostport")
                .first()
                .is_some_and(|p| p.ready)
        },
        || cluster.kubectl(&["describe", "pod", "hostport"]),
    );
    let ip = cluster.pods("default", "app=hostport")[0].ip.clone();
    let url = format!("http://{}:18080/index.html", node0.address);
    let fetch = || {
        node1
            .command("curl")
            .args(["-sf", "-m", "3", &url])
            .output()
            .expect("curl")
    };
    let out = fetch();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hostport",
        "{url} from {}: {}",
        node1.name,
        String::from_utf8_lossy(&out.stderr)
    );
    // Pods too: across the fabric from node 1, and from node 0 through its own node's address,
    // sent back into the pod beside them.
    for node in [node0, node1] {
        let pod = web.iter().find(|p| p.node == node.name).expect("a web pod");
        let out = exec(cluster, &pod.name, &format!("timeout 5 wget -q -O - {url}"));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "hostport",
            "{url} from pod {} on {}: {}",
            pod.name,
            node.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    cluster.kubectl(&["delete", "pod", "hostport"]);
    cluster.wait_until(
        "the host port closed and the pod's address freed",
        MINUTE,
        || {
            let held = node0.straitctl(&["pods"]);
            !fetch().status.success()
                && held
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|p| strait_integration::cni::address(p) != ip)
        },
        || node0.straitctl(&["pods"]).to_string(),
    );
}

/// Scales the web Deployment to `replicas` (creating it first) and waits until all are Ready.
fn web_ready(cluster: &KubeCluster, replicas: u32) -> Vec<PodView> {
    apply_json(cluster, &web_deployment(replicas));
    cluster.wait_until(
        &format!("{replicas} web pods Ready"),
        2 * MINUTE,
        || {
            let web = cluster.pods("default", "app=web");
            web.len() == replicas as usize && web.iter().all(|p| p.ready)
        },
        || cluster.kubectl(&["describe", "pods", "-l", "app=web"]),
    );
    cluster.pods("default", "app=web")
}

fn apply_json(cluster: &KubeCluster, manifest: &Value) {
    cluster.control_plane.apply(&manifest.to_string());
}
