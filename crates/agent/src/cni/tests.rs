use super::*;

fn attachment() -> Attachment {
    Attachment {
        key: AttachmentKey {
            network: "n".into(),
            container_id: "c".into(),
            ifname: "eth0".into(),
        },
        served_by: None,
        netns: Some("/var/run/netns/p".into()),
        pod: None,
        addresses: vec!["10.0.0.5/32".parse().unwrap()],
        host_veth: "st000000000001".into(),
        pod_mac: None,
        mtu: 1450,
        releasing: false,
    }
}

#[test]
fn a_matching_prev_result_raises_nothing_and_a_foreign_one_everything() {
    let a = attachment();
    let links = PodLinks {
        host: strait_netlink::Link {
            index: 4,
            name: a.host_veth.clone(),
            mac: None,
            mtu: 1450,
            up: true,
            kind: Some("veth".into()),
            vxlan: None,
        },
        pod: strait_netlink::Link {
            index: 2,
            name: "eth0".into(),
            mac: None,
            mtu: 1450,
            up: true,
            kind: Some("veth".into()),
            vxlan: None,
        },
    };
    let ours = result_of(&a, &links);
    assert_eq!(ours.ips[0].interface, Some(1));
    assert!(prev_result_problems(&ours, &a).is_empty());
    assert_eq!(prev_result_problems(&CniResult::default(), &a).len(), 2);
}

// The agent's CNI handling on an in-memory kernel: every step of an ADD can fail and leave
// nothing, and DEL, GC and CHECK do what they say, without a real kernel (the integration tests
// show the same against the real one).

mod on_a_fake_kernel {
    use std::path::PathBuf;
    use std::time::{Duration, Instant};

    use strait_cni::{Invocation, parse_request};
    use strait_dataplane::fake::{FakeKernel, FakeNetlink, FakeNetns, Namespace};
    use strait_dataplane::{End, Finding};
    use strait_ipam::Usage;
    use strait_store::EmbeddedStore;

    use super::*;
    use crate::config::Config;
    use crate::underlay::Underlay;

    const IPV4: &[&str] = &["10.1.0.0/16"];
    const DUAL_STACK: &[&str] = &["10.1.0.0/16", "fd00:1::/64"];

    /// An agent on a fake kernel, its state in a directory of its own.
    struct Node {
        agent: Arc<Agent<EmbeddedStore, FakeKernel>>,
        kernel: FakeKernel,
        dir: PathBuf,
    }

    impl Drop for Node {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    async fn node(test: &str, pools: &[&str]) -> Node {
        let dir = std::env::temp_dir().join(format!("strait-cni-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut text = "[[network]]\nname = \"strait\"\n".to_string();
        for cidr in pools {
            text += &format!("[[network.pool]]\ncidr = \"{cidr}\"\n");
        }
        let mut config = Config::parse(&text, || Some("node-a".into())).unwrap();
        config.state_dir = dir.join("state");
        config.sysctl_dir = dir.join("sys");
        let store = EmbeddedStore::open(dir.join("store")).unwrap();
        let underlay = Underlay {
            address4: Some((
                "192.0.2.1".parse().unwrap(),
                "192.0.2.0/24".parse().unwrap(),
            )),
            address6: None,
            device: "eth0".into(),
            mtu: 1500,
        };
        let kernel = FakeKernel::default();
        let agent = Agent::open(config, store, underlay, kernel.clone())
            .await
            .unwrap();
        Node {
            agent: Arc::new(agent),
            kernel,
            dir,
        }
    }

    /// A pod's namespace in the fake kernel, with the sysctl its host veth would have.
    struct Pod {
        id: &'static str,
        netns: FakeNetns,
        netlink: FakeNetlink,
    }

    impl Node {
        fn pod(&self, id: &'static str) -> Pod {
            let (netns, netlink) = self.kernel.namespace();
            let sysctl = self.dir.join(format!(
                "sys/net/ipv6/conf/{}",
                host_veth_name("strait", id, "eth0")
            ));
            std::fs::create_dir_all(&sysctl).unwrap();
            std::fs::write(sysctl.join("accept_ra"), "1").unwrap();
            Pod { id, netns, netlink }
        }

        async fn usage(&self) -> Vec<(bool, Usage)> {
            self.agent
                .ipam
                .network("strait")
                .unwrap()
                .usage_by_family()
                .await
        }

        async fn add(&self, pod: &Pod) -> Result<CniResult, AgentError> {
            self.agent
                .add(&request("ADD", pod.id, ""), Some(pod.namespace()), caller())
                .await
        }

        async fn check(&self, pod: &Pod, netns: &str) -> Result<(), AgentError> {
            let req = request_in("CHECK", pod.id, netns, "");
            self.agent
                .check(&req, Some(pod.namespace()), caller())
                .await
        }

        /// Waits (at most 10 s) until no record is left being released.
        async fn releases_done(&self) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.agent.attachments.all().iter().any(|a| a.releasing) {
                assert!(Instant::now() < deadline, "a release never finished");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }

        /// Nothing of any pod is left: in the kernel (the node's namespace and the pods'), the
        /// records, or the addresses taken.
        async fn assert_nothing_left(&self, pods: &[&Pod], before: &[(bool, Usage)], when: &str) {
            assert_eq!(self.kernel.node(), Namespace::default(), "{when}: node");
            for pod in pods {
                let left = self.kernel.snapshot(pod.netns);
                assert!(left.is_empty(), "{when}: pod {}: {left:?}", pod.id);
            }
            assert!(self.agent.attachments.all().is_empty(), "{when}: records");
            assert_eq!(self.usage().await, before, "{when}: addresses");
        }
    }

    impl Pod {
        fn namespace(&self) -> PodNamespace<FakeNetlink> {
            PodNamespace {
                netns: self.netns,
                netlink: self.netlink.clone(),
            }
        }
    }

    fn caller() -> Caller<'static> {
        Caller::with_budget(Duration::from_secs(30))
    }

    fn request(command: &str, cid: &str, extra: &str) -> CniRequest {
        request_in(command, cid, &format!("/var/run/netns/{cid}"), extra)
    }

    fn request_in(command: &str, cid: &str, netns: &str, extra: &str) -> CniRequest {
        let env = |k: &str| match k {
            "CNI_COMMAND" => Some(command.to_string()),
            "CNI_CONTAINERID" => Some(cid.to_string()),
            "CNI_NETNS" => Some(netns.to_string()),
            "CNI_IFNAME" => Some("eth0".into()),
            "CNI_PATH" => Some("/opt/cni/bin".into()),
            _ => None,
        };
        let conf = format!(r#"{{"cniVersion":"1.1.0","name":"strait","type":"strait"{extra}}}"#);
        parse_request(Invocation::from_env(env).unwrap(), conf.as_bytes()).unwrap()
    }

    fn host_address(result: &CniResult, ipv6: bool) -> IpNet {
        result
            .ips
            .iter()
            .map(|ip| ip.address)
            .find(|a| a.addr().is_ipv6() == ipv6)
            .expect("an address of the family")
    }

    #[tokio::test]
    async fn an_add_failing_at_any_kernel_change_leaves_nothing() {
        for (name, pools) in [("v4", IPV4), ("dual", DUAL_STACK)] {
            let node = node(&format!("steps-{name}"), pools).await;
            let before = node.usage().await;
            let mut failed = 0;
            let made = loop {
                failed += 1;
                assert!(failed < 100, "{name}: the ADD never succeeded");
                let pod = node.pod("steps");
                node.kernel.fail_changes(&[failed]);
                let start = node.kernel.changes();
                let outcome = node.add(&pod).await;
                node.kernel.fail_changes(&[]);
                match outcome {
                    Err(e) => {
                        assert!(matches!(e, AgentError::Dataplane(_)), "{name}: {e}");
                        let when = format!("{name}, change {failed} failed");
                        node.assert_nothing_left(&[&pod], &before, &when).await;
                    }
                    Ok(result) => {
                        assert_eq!(result.ips.len(), pools.len(), "{name}");
                        break node.kernel.changes() - start;
                    }
                }
            };
            // Every change a whole ADD makes was failed once, and each time undone.
            assert_eq!(failed, made + 1, "{name}");
            assert!(
                made >= 9,
                "{name}: an ADD makes at least 9 changes, made {made}"
            );
        }
    }

    #[tokio::test]
    async fn an_add_whose_veth_cannot_be_undone_keeps_its_record_and_addresses() {
        let node = node("stuck", IPV4).await;
        let before = node.usage().await;
        let pod = node.pod("stuck");
        let made = {
            let probe = node.pod("probe");
            let start = node.kernel.changes();
            node.add(&probe).await.unwrap();
            let made = node.kernel.changes() - start;
            node.agent
                .del(&request("DEL", probe.id, ""), caller())
                .await
                .unwrap();
            node.releases_done().await;
            made
        };
        // The ADD's last change fails, and so does the deletion of its veth that follows (the
        // ADD's rollback).
        node.kernel.fail_changes(&[made, made + 1]);
        let e = node.add(&pod).await.unwrap_err();
        node.kernel.fail_changes(&[]);
        assert!(matches!(e, AgentError::Dataplane(_)), "{e}");
        let veth = host_veth_name("strait", "stuck", "eth0");
        assert!(node.kernel.node().links.iter().any(|l| l.name == veth));
        assert_eq!(node.agent.attachments.all().len(), 1, "the record stays");
        assert_ne!(node.usage().await, before, "its address stays taken");
        // The runtime's DEL then removes everything.
        node.agent
            .del(&request("DEL", pod.id, ""), caller())
            .await
            .unwrap();
        node.releases_done().await;
        node.assert_nothing_left(&[&pod], &before, "after DEL")
            .await;
    }

    #[tokio::test]
    async fn an_add_whose_record_cannot_be_written_leaves_nothing() {
        let node = node("record", DUAL_STACK).await;
        let before = node.usage().await;
        let pod = node.pod("record");
        std::fs::remove_dir_all(node.agent.config.state_dir.join("attachments")).unwrap();
        let e = node.add(&pod).await.unwrap_err();
        assert!(matches!(e, AgentError::RegistryIo { .. }), "{e}");
        node.assert_nothing_left(&[&pod], &before, "record not written")
            .await;
    }

    #[tokio::test]
    async fn an_add_whose_caller_left_during_the_kernel_work_is_undone() {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;

        let node = node("gone", DUAL_STACK).await;
        let before = node.usage().await;
        let pod = node.pod("gone");
        let (agent_end, plugin_end) = UnixStream::pair().unwrap();
        // The runtime gives up while the veth pair is being made.
        node.kernel.before_change(2, move || drop(plugin_end));
        let e = node
            .agent
            .add(
                &request("ADD", pod.id, ""),
                Some(pod.namespace()),
                Caller::on(agent_end.as_fd()),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, AgentError::CallerGone), "{e}");
        node.assert_nothing_left(&[&pod], &before, "caller gone")
            .await;
    }

    #[tokio::test]
    async fn an_add_into_a_taken_interface_name_is_refused_and_leaves_nothing() {
        let node = node("taken", IPV4).await;
        let before = node.usage().await;
        let pod = node.pod("taken");
        let (other, _) = node.kernel.namespace();
        pod.netlink
            .clone()
            .add_veth("eth0", "peer", &other, 1500, None)
            .unwrap();
        let e = node.add(&pod).await.unwrap_err();
        assert!(
            matches!(e, AgentError::Dataplane(DataplaneError::IfnameTaken { .. })),
            "{e}"
        );
        assert_eq!(
            CniError::from(e).code,
            strait_cni::ErrorCode::InvalidEnvironment
        );
        node.kernel
            .edit(Some(pod.netns), |ns| *ns = Namespace::default());
        node.kernel
            .edit(Some(other), |ns| *ns = Namespace::default());
        node.assert_nothing_left(&[&pod], &before, "name taken")
            .await;
    }

    #[tokio::test]
    async fn check_reports_each_difference_as_a_finding() {
        let node = node("check", IPV4).await;
        let pod = node.pod("check");
        let added = node.add(&pod).await.unwrap();
        let address = host_address(&added, false);
        let veth = host_veth_name("strait", "check", "eth0");
        node.check(&pod, "/var/run/netns/check").await.unwrap();

        node.kernel.edit(None, |ns| ns.routes.clear());
        node.kernel.edit(Some(pod.netns), |ns| {
            ns.links.iter_mut().for_each(|l| l.up = false);
            ns.neighbours.clear();
        });
        let Err(AgentError::CheckFailed { problems }) =
            node.check(&pod, "/var/run/netns/elsewhere").await
        else {
            panic!("CHECK passed on a broken pod");
        };
        assert_eq!(
            problems,
            [
                CheckFinding::NetnsChanged {
                    recorded: Some("/var/run/netns/check".into()),
                    named: Some("/var/run/netns/elsewhere".into()),
                },
                CheckFinding::Kernel(Finding::HostRouteMissing {
                    dst: address,
                    veth: veth.clone(),
                }),
                CheckFinding::Kernel(Finding::Down {
                    end: End::Pod,
                    name: "eth0".into(),
                }),
                CheckFinding::Kernel(Finding::NeighbourMissing {
                    ip: "169.254.1.1".parse().unwrap(),
                    device: "eth0".into(),
                }),
            ]
        );

        // Without the pod's namespace, only the host side is checked, and the absence said.
        let req = request("CHECK", "check", "");
        let Err(AgentError::CheckFailed { problems }) =
            node.agent.check(&req, None, caller()).await
        else {
            panic!("CHECK passed without the namespace");
        };
        assert_eq!(
            problems[0],
            CheckFinding::Kernel(Finding::NamespaceGone {
                netns: "/var/run/netns/check".into()
            })
        );

        // A repeated ADD rebuilds the pod's network with the same address.
        let again = node.add(&pod).await.unwrap();
        assert_eq!(host_address(&again, false), address);
        node.check(&pod, "/var/run/netns/check").await.unwrap();
    }

    #[tokio::test]
    async fn a_dual_stack_add_builds_both_families_and_del_removes_them() {
        let node = node("dual", DUAL_STACK).await;
        let before = node.usage().await;
        let pod = node.pod("dual");
        let added = node.add(&pod).await.unwrap();
        let veth = host_veth_name("strait", "dual", "eth0");
        let sysctl = node.dir.join(format!("sys/net/ipv6/conf/{veth}/accept_ra"));
        assert_eq!(std::fs::read_to_string(sysctl).unwrap(), "0");
        let host = node.kernel.node();
        for ipv6 in [false, true] {
            let address = host_address(&added, ipv6).addr();
            assert!(host.routes.iter().any(|r| r.dst.addr() == address));
            assert!(
                host.neighbours
                    .iter()
                    .any(|n| n.ip == address && n.permanent)
            );
            let inside = node.kernel.snapshot(pod.netns);
            assert!(inside.addresses.iter().any(|(_, a)| a.addr() == address));
        }
        assert!(
            host.addresses
                .iter()
                .any(|(_, a)| *a == "fe80::1/64".parse::<IpNet>().unwrap())
        );
        node.check(&pod, "/var/run/netns/dual").await.unwrap();

        node.agent
            .del(&request("DEL", "dual", ""), caller())
            .await
            .unwrap();
        node.releases_done().await;
        // DEL again, and DEL of a container never added: both answer success.
        node.agent
            .del(&request("DEL", "dual", ""), caller())
            .await
            .unwrap();
        node.agent
            .del(&request("DEL", "never", ""), caller())
            .await
            .unwrap();
        node.releases_done().await;
        node.assert_nothing_left(&[&pod], &before, "after DEL")
            .await;
    }

    #[tokio::test]
    async fn gc_releases_only_what_the_runtime_no_longer_lists() {
        let node = node("gc", IPV4).await;
        let before = node.usage().await;
        let (kept, gone) = (node.pod("kept"), node.pod("gone"));
        node.add(&kept).await.unwrap();
        node.add(&gone).await.unwrap();
        let valid = r#","cni.dev/valid-attachments":[{"containerID":"kept","ifname":"eth0"}]"#;
        node.agent
            .gc(&request("GC", "", valid), caller())
            .await
            .unwrap();
        assert!(node.kernel.snapshot(gone.netns).is_empty());
        node.check(&kept, "/var/run/netns/kept").await.unwrap();
        let allocated = |u: &[(bool, Usage)]| u[0].1.allocated;
        assert_eq!(allocated(&node.usage().await), allocated(&before) + 1);
        let nothing: &str = r#","cni.dev/valid-attachments":[]"#;
        node.agent
            .gc(&request("GC", "", nothing), caller())
            .await
            .unwrap();
        node.assert_nothing_left(&[&kept, &gone], &before, "after GC")
            .await;
    }
}
