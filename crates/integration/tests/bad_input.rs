//! Wrong input of every kind: each is answered with the right CNI code, a message and advice,
//! and leaves the node exactly as it was (links, routes, records, blocks, allocations, nftables)
//! and the pod's namespace untouched.

use serde_json::{Value, json};
use strait_integration::cni::Env;
use strait_integration::inspect::{link_names, netns_state};
use strait_integration::netns::TestNetns;
use strait_integration::node::{Node, NodeSpec, StoreSpec};

fn with(conf: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(conf).unwrap();
    edit(&mut v);
    v.to_string()
}

#[test]
fn wrong_invocations_get_the_right_code_and_change_nothing() {
    let node = Node::start(NodeSpec::default());
    node.warm_up();
    let live = TestNetns::new("live");
    node.add("ctr-live", &live);
    let pod = TestNetns::new("bad");
    let busy = TestNetns::new("busy");
    busy.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let not_a_netns = node.dir.join("not-a-netns");
    std::fs::write(&not_a_netns, b"").unwrap();

    let conf = node.conf("1.0.0");
    let conf11 = node.conf("1.1.0");
    let add = Env::attachment("ADD", "ctr-bad", &pod.path(), "eth0");
    let gc = Env::default()
        .set("CNI_COMMAND", "GC")
        .set("CNI_PATH", "/opt/cni/bin");
    let status = Env::default()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", "/opt/cni/bin");
    let cases: Vec<(&str, Env, String, u64)> = vec![
        (
            "malformed JSON",
            add.clone(),
            r#"{"cniVersion": "1.0.0", name"#.into(),
            6,
        ),
        (
            "truncated JSON",
            add.clone(),
            conf[..conf.len() / 2].into(),
            6,
        ),
        ("empty stdin", add.clone(), String::new(), 6),
        ("a JSON array", add.clone(), "[]".into(), 6),
        (
            "no cniVersion",
            add.clone(),
            with(&conf, |c| {
                c.as_object_mut().unwrap().remove("cniVersion");
            }),
            1,
        ),
        (
            "unknown cniVersion",
            add.clone(),
            with(&conf, |c| c["cniVersion"] = json!("9.9.9")),
            1,
        ),
        (
            "cniVersion not a string",
            add.clone(),
            with(&conf, |c| c["cniVersion"] = json!(1.0)),
            6,
        ),
        (
            "no name",
            add.clone(),
            with(&conf, |c| {
                c.as_object_mut().unwrap().remove("name");
            }),
            7,
        ),
        (
            "invalid name",
            add.clone(),
            with(&conf, |c| c["name"] = json!("no spaces please")),
            7,
        ),
        (
            "an ipam section",
            add.clone(),
            with(&conf, |c| c["ipam"] = json!({"type": "host-local"})),
            2,
        ),
        (
            "unknown network",
            add.clone(),
            with(&conf, |c| c["network"] = json!("nope")),
            7,
        ),
        (
            "relative socket path",
            add.clone(),
            with(&conf, |c| c["socket"] = json!("strait.sock")),
            7,
        ),
        (
            "malformed prevResult",
            add.clone(),
            with(&conf, |c| {
                c["prevResult"] = json!({"ips": [{"address": "x"}]})
            }),
            6,
        ),
        (
            "no CNI_COMMAND",
            add.clone().unset("CNI_COMMAND"),
            conf.clone(),
            4,
        ),
        (
            "unknown CNI_COMMAND",
            add.clone().set("CNI_COMMAND", "ATTACH"),
            conf.clone(),
            4,
        ),
        (
            "no CNI_CONTAINERID",
            add.clone().unset("CNI_CONTAINERID"),
            conf.clone(),
            4,
        ),
        (
            "invalid CNI_CONTAINERID",
            add.clone().set("CNI_CONTAINERID", "../etc"),
            conf.clone(),
            4,
        ),
        (
            "no CNI_IFNAME",
            add.clone().unset("CNI_IFNAME"),
            conf.clone(),
            4,
        ),
        (
            "CNI_IFNAME too long",
            add.clone().set("CNI_IFNAME", "sixteen-chars-xx"),
            conf.clone(),
            4,
        ),
        (
            "CNI_IFNAME with a slash",
            add.clone().set("CNI_IFNAME", "eth/0"),
            conf.clone(),
            4,
        ),
        (
            "no CNI_NETNS",
            add.clone().unset("CNI_NETNS"),
            conf.clone(),
            4,
        ),
        (
            "relative CNI_NETNS",
            add.clone().set("CNI_NETNS", "var/run/netns/x"),
            conf.clone(),
            4,
        ),
        (
            "no CNI_PATH",
            add.clone().unset("CNI_PATH"),
            conf.clone(),
            4,
        ),
        (
            "malformed CNI_ARGS",
            add.clone().set("CNI_ARGS", "K8S_POD_NAME"),
            conf.clone(),
            4,
        ),
        (
            "netns that does not exist",
            add.clone().set("CNI_NETNS", "/var/run/netns/stt-never"),
            conf.clone(),
            3,
        ),
        (
            "netns path that is a plain file",
            add.clone().set("CNI_NETNS", not_a_netns.to_str().unwrap()),
            conf.clone(),
            4,
        ),
        (
            "interface name taken in the pod",
            add.clone().set("CNI_NETNS", &busy.path()),
            conf.clone(),
            4,
        ),
        (
            "CHECK in 0.3.1",
            add.clone().set("CNI_COMMAND", "CHECK"),
            node.conf("0.3.1"),
            1,
        ),
        (
            "CHECK of an unknown container",
            add.clone().set("CNI_COMMAND", "CHECK"),
            conf.clone(),
            3,
        ),
        (
            "GC in 1.0.0",
            gc.clone(),
            with(&conf, |c| c["cni.dev/valid-attachments"] = json!([])),
            1,
        ),
        ("GC without the valid list", gc.clone(), conf11.clone(), 7),
        (
            "GC with a malformed valid list",
            gc.clone(),
            with(&conf11, |c| c["cni.dev/valid-attachments"] = json!("all")),
            6,
        ),
        (
            "STATUS of an unknown network",
            status.clone(),
            with(&conf11, |c| c["network"] = json!("nope")),
            7,
        ),
        ("STATUS in 1.0.0", status.clone(), conf.clone(), 1),
        (
            "a pod namespace that climbs out of a path",
            add.clone()
                .set("CNI_ARGS", "K8S_POD_NAMESPACE=../../etc;K8S_POD_NAME=web"),
            conf.clone(),
            4,
        ),
        (
            "a pod name with a terminal escape",
            add.clone().set(
                "CNI_ARGS",
                "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web\u{1b}[31m",
            ),
            conf.clone(),
            4,
        ),
        (
            "a request larger than the agent reads (GC listing 100,000 attachments)",
            gc.clone(),
            with(&conf11, |c| {
                c["cni.dev/valid-attachments"] = (0..100_000)
                    .map(|i| json!({"containerID": format!("{i:064}"), "ifname": "eth0"}))
                    .collect();
            }),
            7,
        ),
    ];
    assert_eq!(cases.len(), 37, "every row of the table runs");
    let node_before = node.snapshot();
    let pods_before = [netns_state(&pod), netns_state(&busy), netns_state(&live)];
    for (what, env, stdin, code) in &cases {
        let outcome = node.cni(env, stdin);
        let err = std::panic::catch_unwind(|| outcome.err(*code))
            .unwrap_or_else(|_| panic!("{what}: expected code {code}, got {outcome:?}"));
        assert!(
            !outcome.stdout.contains('\n'),
            "{what}: stdout carries only the JSON"
        );
        assert_eq!(
            node.snapshot(),
            node_before,
            "{what} left something behind: {err}"
        );
        assert_eq!(
            [netns_state(&pod), netns_state(&busy), netns_state(&live)],
            pods_before,
            "{what}"
        );
    }
    // The live attachment was never disturbed.
    node.cni(
        &Env::attachment("CHECK", "ctr-live", &live.path(), "eth0"),
        &conf,
    )
    .ok();
}

#[test]
fn an_agent_that_is_down_means_try_again_and_changes_nothing() {
    let mut node = Node::start(NodeSpec::default());
    let pod = TestNetns::new("down");
    let conf = node.conf("1.1.0");
    let status = Env::default()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", "/opt/cni/bin");
    // Killed: the socket file stays but nobody answers. Then: no socket at all.
    node.kill_agent();
    assert!(node.socket().exists());
    for stage in ["stale socket", "no socket"] {
        for command in ["ADD", "DEL", "CHECK"] {
            let err = node
                .cni(
                    &Env::attachment(command, "ctr-x", &pod.path(), "eth0"),
                    &conf,
                )
                .err(11);
            assert!(
                err["msg"].as_str().unwrap().contains("not running"),
                "{stage} {command}: {err}"
            );
        }
        node.cni(&status, &conf).err(50);
        assert_eq!(link_names(&pod), ["lo"], "{stage}");
        let _ = std::fs::remove_file(node.socket());
    }
    let elsewhere = with(&conf, |c| c["socket"] = json!("/nonexistent/strait.sock"));
    node.cni(
        &Env::attachment("ADD", "ctr-x", &pod.path(), "eth0"),
        &elsewhere,
    )
    .err(11);
}

/// An ADD that fails at any step of its work, once it has an address, undoes all of it: the
/// record, the address, and whatever it built in the kernel on both ends.
#[test]
fn an_add_failing_at_any_step_leaves_nothing_behind() {
    for step in strait_dataplane::fault::STEPS {
        let node = Node::start(NodeSpec {
            agent_env: vec![("STRAIT_FAULT".into(), step.into())],
            ..NodeSpec::default()
        });
        let pod = TestNetns::new("ft");
        let (node_before, pod_before) = (node.snapshot(), netns_state(&pod));
        let err = node
            .cni(
                &Env::attachment("ADD", "ctr-fault", &pod.path(), "eth0"),
                &node.conf("1.0.0"),
            )
            .err(102);
        assert!(err["msg"].as_str().unwrap().contains(step), "{err}");
        assert_eq!(
            node.snapshot(),
            node_before,
            "{step} left something on the node"
        );
        assert_eq!(
            netns_state(&pod),
            pod_before,
            "{step} left something in the pod"
        );
        assert!(
            node.agent_log().contains("fault injection is on"),
            "{step}: the agent says so"
        );
    }
}

/// A request the agent cannot read still gets an answer, not a reset connection.
#[test]
fn a_garbled_request_is_answered() {
    use std::io::{Read, Write};
    let node = Node::start(NodeSpec::default());
    let mut conn = std::os::unix::net::UnixStream::connect(node.socket()).unwrap();
    conn.write_all(b"xgarbage that is no request").unwrap();
    conn.shutdown(std::net::Shutdown::Write).unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer)
        .expect("the agent answers instead of resetting the connection");
    assert!(
        answer.contains("bad_request") && answer.contains("header"),
        "{answer}"
    );
}

#[test]
fn an_add_without_a_socket_inside_the_namespace_is_refused_and_changes_nothing() {
    // What a plugin of an earlier version sends: the namespace alone.
    let node = Node::start(NodeSpec::default());
    let pod = TestNetns::new("ol");
    let before = node.snapshot();
    let path = pod.path();
    let env = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "ctr-old"),
        ("CNI_NETNS", path.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin"),
    ];
    let invocation = strait_cni::Invocation::from_env(|k| {
        env.iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| v.to_string())
    })
    .unwrap();
    let request = strait_cni::parse_request(invocation, node.conf("1.0.0").as_bytes()).unwrap();
    let netns = strait_netns::Netns::open(pod.path()).unwrap();
    let passed = strait_rpc::Passed {
        netns: Some(netns.fd()),
        socket: None,
    };
    let reply = strait_rpc::call(
        &node.socket(),
        &strait_rpc::Request::Cni(Box::new(request)),
        passed,
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    let strait_rpc::Response::CniError(e) = reply else {
        panic!("{reply:?}");
    };
    assert_eq!(e.code, strait_cni::ErrorCode::InvalidEnvironment, "{e}");
    assert!(e.details.contains("netlink socket"), "{e}");
    assert_eq!(node.snapshot(), before);
    assert_eq!(link_names(&pod), ["lo"]);
}

#[test]
fn an_exhausted_pool_is_refused_and_recovers() {
    // Two /30 blocks of a /29: three pod addresses each.
    let node = Node::start(NodeSpec {
        pools: vec![("10.77.0.0/29".into(), 30)],
        ..NodeSpec::default()
    });
    let pods: Vec<TestNetns> = (0..7).map(|_| TestNetns::new("ex")).collect();
    for (i, pod) in pods.iter().take(6).enumerate() {
        node.add(&format!("ctr-{i}"), pod);
    }
    let before = node.snapshot();
    assert_eq!(before.allocated, 6);
    let err = node
        .cni(
            &Env::attachment("ADD", "ctr-6", &pods[6].path(), "eth0"),
            &node.conf("1.0.0"),
        )
        .err(100);
    assert!(
        err["msg"].as_str().unwrap().contains("10.77.0.0/29"),
        "{err}"
    );
    assert_eq!(node.snapshot(), before);
    assert_eq!(link_names(&pods[6]), ["lo"]);
    // STATUS tells the runtime the node cannot take a pod now, and again that it can.
    let status = Env::default()
        .set("CNI_COMMAND", "STATUS")
        .set("CNI_PATH", "/opt/cni/bin");
    let unavailable = node.cni(&status, &node.conf("1.1.0")).err(50);
    assert!(
        unavailable["msg"].as_str().unwrap().contains("full"),
        "{unavailable}"
    );
    node.del("ctr-0", &pods[0]);
    assert!(node.cni(&status, &node.conf("1.1.0")).ok().is_null());
    let result = node.add("ctr-6", &pods[6]);
    assert!(
        result["ips"][0]["address"]
            .as_str()
            .unwrap()
            .starts_with("10.77.0.")
    );
}

#[test]
fn conflicting_pools_keep_the_agent_from_starting() {
    let overlapping = NodeSpec {
        extra: String::new(),
        pools: vec![("10.60.0.0/16".into(), 26), ("10.60.128.0/17".into(), 26)],
        ..NodeSpec::default()
    };
    let mut node = Node::create(overlapping);
    let log = node.try_start_agent().unwrap_err();
    assert!(log.contains("overlap"), "{log}");
    assert!(
        !node.socket().exists() && !node.conf_dir().exists(),
        "no socket, no conflist"
    );

    // Another agent on the same store defines the pool differently, or overlaps it.
    let first = Node::start(NodeSpec {
        pools: vec![("10.61.0.0/16".into(), 26)],
        ..NodeSpec::default()
    });
    for (cidr, needle) in [
        ("10.62.0.0/16", "cluster store"),
        ("10.61.64.0/18", "overlap"),
    ] {
        let mut second = Node::create(NodeSpec {
            pools: vec![(cidr.into(), 26)],
            store: StoreSpec::Shared(first.store_dir()),
            ..NodeSpec::default()
        });
        if needle == "overlap" {
            let text = second
                .config_text()
                .replace("[[network.pool]]\n", "[[network.pool]]\nname = \"other\"\n");
            std::fs::write(second.config_path(), text).unwrap();
        }
        let log = second.try_start_agent().unwrap_err();
        assert!(log.contains(needle), "{cidr}: {log}");
    }
}

#[test]
fn a_state_directory_that_cannot_be_written_is_an_io_error_and_changes_nothing() {
    let node = Node::start(NodeSpec::default());
    node.warm_up();
    let before = node.snapshot();
    // The records directory turns into a plain file: every write into it fails.
    let records = node.state_dir().join("attachments");
    let aside = node.state_dir().join("attachments.aside");
    std::fs::rename(&records, &aside).unwrap();
    std::fs::write(&records, b"").unwrap();
    let pod = TestNetns::new("io");
    let env = Env::attachment("ADD", "ctr-io", &pod.path(), "eth0");
    let err = node.cni(&env, &node.conf("1.0.0")).err(5);
    assert!(
        err["msg"].as_str().unwrap().contains("attachments"),
        "{err}"
    );
    let after = node.snapshot();
    assert_eq!(
        (&after.links, &after.routes, after.allocated),
        (&before.links, &before.routes, before.allocated)
    );
    assert_eq!(link_names(&pod), ["lo"]);
    // Once the disk is fine again, so is ADD.
    std::fs::remove_file(&records).unwrap();
    std::fs::rename(&aside, &records).unwrap();
    node.cni(&env, &node.conf("1.0.0")).ok();
}
