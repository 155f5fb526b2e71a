use super::*;

#[test]
fn each_pod_adds_its_host_routes_and_with_a_known_mac_its_neighbours() {
    let local = LocalNode {
        name: "a".into(),
        address4: Some("192.168.0.1".parse().unwrap()),
        address6: None,
        vxlan_over_ipv6: false,
        underlay: "eth0".into(),
        networks: Vec::new(),
    };
    let pod = |veth: &str, ip: &str, mac: Option<MacAddr>| PodHost {
        veth: veth.into(),
        table: Table::MAIN,
        addresses: vec![ip.parse().unwrap()],
        mac,
    };
    let mac = MacAddr([2, 0, 0, 0, 0, 1]);
    let inputs = Inputs {
        pods: vec![
            pod("st000000000001", "10.0.0.1/32", Some(mac)),
            pod("st000000000002", "10.0.0.2/32", None),
        ],
        ..Inputs::nothing(&local)
    };
    let d = desired(&inputs);
    let devices: Vec<&str> = d.host_routes.iter().map(|r| &*r.device).collect();
    assert_eq!(devices, ["st000000000001", "st000000000002"]);

    // Two records claiming one address: neither gets its route.
    let mut doubled = inputs.clone();
    doubled
        .pods
        .push(pod("st000000000003", "10.0.0.2/32", None));
    let devices: Vec<String> = desired(&doubled)
        .host_routes
        .iter()
        .map(|r| r.device.to_string())
        .collect();
    assert_eq!(devices, ["st000000000001"]);
    assert_eq!(
        d.host_neighbours,
        BTreeSet::from([Neigh {
            device: "st000000000001".into(),
            ip: "10.0.0.1".parse().unwrap(),
            mac
        }])
    );
    assert!(d.links.is_empty() && d.routes.is_empty());
}

// Whole passes on the in-memory kernel: what a pass applies, the next reads back as its own;
// every kind of object deleted by hand comes back; strays go; a failed change is reported and
// the next pass completes. The integration tests show the same against the real kernel.
mod on_a_fake_kernel {
    use std::net::IpAddr;

    use strait_netlink::{Link, Route, Scope};

    use super::*;
    use crate::fake::{FakeKernel, FakeNetlink, Namespace};
    use crate::model::NetId;
    use crate::naming::ROUTE_PROTOCOL;
    use crate::overlay::{BlockKey, LocalNetwork, LocalPool, Mode, Peer, Vtep};
    use crate::rtnetlink::{Kernel, Rtnetlink};
    use strait_nft::Held;

    const VETH: &str = "st000000000001";

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    /// Node "a" with network "pods" (IPv4 and IPv6 pools in `mode`), a peer "b" holding a
    /// block of each family, and one pod of "a" with both families.
    fn inputs(mode: Mode) -> Inputs {
        let vxlan = mode == Mode::Vxlan;
        let pools = [("pods-v4", "10.244.0.0/16"), ("pods-v6", "fd00:244::/56")];
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
                vtep: vxlan.then_some(Vtep {
                    ip: "10.244.0.0".parse().unwrap(),
                    mac: mac(1),
                }),
                vtep_addresses: if vxlan {
                    vec!["10.244.0.0".parse().unwrap(), "fd00:244::".parse().unwrap()]
                } else {
                    vec![]
                },
                table: Table::MAIN,
                pools: pools
                    .iter()
                    .map(|(name, cidr)| LocalPool {
                        name: name.to_string(),
                        cidr: cidr.parse().unwrap(),
                        mode,
                    })
                    .collect(),
            }],
        };
        let peer = |i: u8| Peer {
            address: IpAddr::from([192, 168, 0, i]),
            address6: Some(format!("fd00:fab::{i}").parse().unwrap()),
            vxlan_over_ipv6: false,
            vteps: BTreeMap::from([(
                NetId::new("pods"),
                Vtep {
                    ip: IpAddr::from([10, 244, 0, (i - 1) * 64]),
                    mac: mac(i),
                },
            )]),
        };
        let block = |pool: &str, cidr: &str, node: &str| {
            let key = BlockKey {
                pool: pool.into(),
                cidr: cidr.parse().unwrap(),
            };
            (key, node.to_string())
        };
        let cluster = ClusterView {
            nodes: BTreeMap::from([("a".into(), peer(1)), ("b".into(), peer(2))]),
            blocks: BTreeMap::from([
                block("pods-v4", "10.244.0.0/26", "a"),
                block("pods-v6", "fd00:244::/122", "a"),
                block("pods-v4", "10.244.0.64/26", "b"),
                block("pods-v6", "fd00:244::40/122", "b"),
            ]),
        };
        Inputs {
            local,
            cluster: Arc::new(cluster),
            pods: vec![PodHost {
                veth: VETH.into(),
                table: Table::MAIN,
                addresses: vec![
                    "10.244.0.5/32".parse().unwrap(),
                    "fd00:244::5/128".parse().unwrap(),
                ],
                mac: Some(mac(9)),
            }],
            nft_tables: vec![snat()],
        }
    }

    /// The masquerade table for the pods' pools.
    fn snat() -> strait_nft::Table {
        let pools: Vec<IpNet> = ["10.244.0.0/16", "fd00:244::/64"]
            .iter()
            .map(|p| p.parse().unwrap())
            .collect();
        strait_nft::Ruleset {
            snat_sources: pools.clone(),
            cluster: pools,
        }
        .table()
    }

    /// A node with its underlay device and the pod's veth pair.
    fn kernel() -> (FakeKernel, FakeNetlink) {
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
        let (pod, _) = kernel.namespace();
        let mut host = kernel.host().unwrap();
        host.add_veth(VETH, "eth0", &pod, 1450, Some(mac(9)))
            .unwrap();
        (kernel, host)
    }

    fn pass(host: &mut FakeNetlink, inputs: &Inputs, pass: Pass) -> Report {
        reconcile(host, inputs, None, pass, None).unwrap()
    }

    /// What a dry run would still do.
    fn left_to_do(host: &mut FakeNetlink, inputs: &Inputs) -> usize {
        pass(host, inputs, Pass::DryRun).planned
    }

    /// [`inputs`] with VXLAN over the nodes' IPv6 underlay addresses.
    fn over_ipv6(mut inputs: Inputs) -> Inputs {
        inputs.local.vxlan_over_ipv6 = true;
        inputs.local.address6 = Some("fd00:fab::1".parse().unwrap());
        let mut cluster = (*inputs.cluster).clone();
        cluster
            .nodes
            .values_mut()
            .for_each(|p| p.vxlan_over_ipv6 = true);
        inputs.cluster = Arc::new(cluster);
        inputs
    }

    #[test]
    fn a_pass_builds_the_node_and_reads_back_what_it_predicted() {
        let cases = [
            (Mode::Vxlan, inputs(Mode::Vxlan)),
            (Mode::Vxlan, over_ipv6(inputs(Mode::Vxlan))),
            (Mode::Routed, inputs(Mode::Routed)),
        ];
        for (mode, inputs) in cases {
            let (_kernel, mut host) = kernel();
            let first = pass(&mut host, &inputs, Pass::Apply);
            assert!(first.failed.is_empty(), "{mode:?}: {:?}", first.failed);
            assert_eq!(first.done, first.planned, "{mode:?}");
            let after = first.after.expect("a pass that applied everything");
            let second = pass(&mut host, &inputs, Pass::Apply);
            assert_eq!(second.planned, 0, "{mode:?}: {:?}", second.actual);
            assert_eq!(second.actual, after, "{mode:?}: predicted and read differ");
            // Both families of the peer's blocks, and the pod's host side.
            let routes: Vec<String> = after.routes.iter().map(|r| r.dst.to_string()).collect();
            assert_eq!(routes, ["10.244.0.64/26", "fd00:244::40/122"], "{mode:?}");
            assert_eq!(after.host_routes.len(), 2, "{mode:?}");
            assert_eq!(after.host_neighbours.len(), 2, "{mode:?}");
            assert_eq!(after.host_addresses.len(), 1, "{mode:?}");
            assert_eq!(after.links.len(), usize::from(mode == Mode::Vxlan));
        }
    }

    #[test]
    fn each_object_deleted_by_hand_is_put_back_by_the_next_pass() {
        type Edit = fn(&mut Namespace);
        let cases: [(&str, Mode, Edit); 10] = [
            ("the VXLAN device", Mode::Vxlan, |ns| {
                let i = ns.links.iter().find(|l| l.name == "strait.4096").unwrap();
                let index = i.index;
                ns.links.retain(|l| l.index != index);
                ns.fdb.retain(|f| f.index != index);
                ns.neighbours.retain(|n| n.index != index);
                ns.addresses.retain(|(i, _)| *i != index);
                let gone: Vec<u32> = ns
                    .nexthops
                    .iter()
                    .filter(|n| n.oif == Some(index))
                    .map(|n| n.id)
                    .collect();
                ns.nexthops.retain(|n| n.oif != Some(index));
                ns.routes
                    .retain(|r| r.nexthop.is_none_or(|id| !gone.contains(&id)));
            }),
            // Read back as no kind Strait makes: replaced by one that is.
            ("the VXLAN device's settings", Mode::Vxlan, |ns| {
                for l in ns.links.iter_mut().filter(|l| l.name == "strait.4096") {
                    l.vxlan.as_mut().unwrap().learning = true;
                }
            }),
            ("an FDB entry", Mode::Vxlan, |ns| {
                ns.fdb.clear();
            }),
            ("a peer's neighbour", Mode::Vxlan, |ns| {
                ns.neighbours
                    .retain(|n| n.ip != "10.244.0.64".parse::<IpAddr>().unwrap());
            }),
            ("the device's address", Mode::Vxlan, |ns| {
                ns.addresses.retain(|(_, a)| a.addr().is_ipv6());
            }),
            ("a peer route", Mode::Vxlan, |ns| {
                ns.routes.retain(|r| r.nexthop.is_none());
            }),
            ("a nexthop and its routes", Mode::Routed, |ns| {
                ns.nexthops.clear();
                ns.routes.retain(|r| r.nexthop.is_none());
            }),
            ("a pod's host route", Mode::Routed, |ns| {
                ns.routes.retain(|r| r.nexthop.is_some());
            }),
            ("a pod's host neighbour", Mode::Routed, |ns| {
                ns.neighbours.clear();
            }),
            ("a pod's gateway address", Mode::Routed, |ns| {
                ns.addresses.clear();
            }),
        ];
        for (what, mode, edit) in cases {
            let (kernel, mut host) = kernel();
            let inputs = inputs(mode);
            assert!(pass(&mut host, &inputs, Pass::Apply).failed.is_empty());
            kernel.edit(None, edit);
            assert!(left_to_do(&mut host, &inputs) > 0, "{what}: drift not seen");
            let repair = pass(&mut host, &inputs, Pass::Apply);
            assert!(repair.failed.is_empty(), "{what}: {:?}", repair.failed);
            assert_eq!(left_to_do(&mut host, &inputs), 0, "{what}: not repaired");
        }
    }

    #[test]
    fn strays_of_ours_go_and_what_others_own_stays() {
        let (kernel, mut host) = kernel();
        let inputs = inputs(Mode::Vxlan);
        assert!(pass(&mut host, &inputs, Pass::Apply).failed.is_empty());
        let device = host.link_by_name("strait.4096").unwrap().unwrap().index;
        let route = |dst: &str, protocol| Route {
            dst: dst.parse().unwrap(),
            gateway: None,
            oif: Some(device),
            table: Table::MAIN.0,
            protocol,
            scope: Scope::Link,
            onlink: false,
            nexthop: None,
        };
        kernel.edit(None, |ns| {
            // Ours (proto 83) through our device without a nexthop: a stray.
            ns.routes.push(route("10.99.0.0/24", ROUTE_PROTOCOL));
            // Someone else's (proto static) through our device: not ours to touch.
            ns.routes.push(route("10.98.0.0/24", 4));
        });
        let cleaned = pass(&mut host, &inputs, Pass::Apply);
        assert!(cleaned.failed.is_empty(), "{:?}", cleaned.failed);
        let left: Vec<String> = kernel
            .node()
            .routes
            .iter()
            .filter(|r| r.nexthop.is_none() && r.oif == Some(device))
            .map(|r| r.dst.to_string())
            .collect();
        assert_eq!(left, ["10.98.0.0/24"]);
    }

    #[test]
    fn a_peer_leaving_takes_its_objects_and_a_pass_towards_nothing_takes_the_overlay() {
        for mode in [Mode::Vxlan, Mode::Routed] {
            let (kernel, mut host) = kernel();
            let mut inputs = inputs(mode);
            assert!(pass(&mut host, &inputs, Pass::Apply).failed.is_empty());
            let mut cluster = (*inputs.cluster).clone();
            cluster.nodes.remove("b");
            cluster.blocks.retain(|_, node| node != "b");
            inputs.cluster = Arc::new(cluster);
            assert!(pass(&mut host, &inputs, Pass::Apply).failed.is_empty());
            let node = kernel.node();
            assert!(node.nexthops.is_empty() && node.fdb.is_empty(), "{mode:?}");
            assert!(node.routes.iter().all(|r| r.nexthop.is_none()), "{mode:?}");
            assert!(node.neighbours.iter().all(|n| n.mac == Some(mac(9))));

            let gone = pass(&mut host, &Inputs::nothing(&inputs.local), Pass::Apply);
            assert!(gone.failed.is_empty(), "{mode:?}: {:?}", gone.failed);
            let links: Vec<String> = kernel.node().links.into_iter().map(|l| l.name).collect();
            assert_eq!(links, ["eth0", VETH], "{mode:?}");
        }
    }

    /// [`inputs`] with the network and its pod in routing table 1001.
    fn in_own_table(mut inputs: Inputs) -> Inputs {
        inputs.local.networks[0].table = Table(1001);
        inputs.pods[0].table = Table(1001);
        inputs
    }

    /// Strait's rules in the kernel, as `ip rule` shows them: family, link, table.
    fn rules(kernel: &FakeKernel) -> Vec<(bool, String, u32)> {
        let mut rules: Vec<_> = kernel
            .node()
            .rules
            .iter()
            .filter(|r| r.protocol == ROUTE_PROTOCOL)
            .map(|r| (r.ipv6, r.iif.clone().unwrap_or_default(), r.table))
            .collect();
        rules.sort();
        rules
    }

    #[test]
    fn a_network_with_its_own_table_is_routed_there_and_steered_by_rules() {
        let (kernel, mut host) = kernel();
        let inputs = in_own_table(inputs(Mode::Vxlan));
        let first = pass(&mut host, &inputs, Pass::Apply);
        assert!(first.failed.is_empty(), "{:?}", first.failed);
        let after = first.after.expect("a pass that applied everything");
        let second = pass(&mut host, &inputs, Pass::Apply);
        assert_eq!(second.planned, 0, "{:?}", second.actual);
        assert_eq!(second.actual, after, "predicted and read differ");
        // Peer and host routes in the network's table, none in main.
        let tables: BTreeSet<u32> = kernel
            .node()
            .routes
            .iter()
            .filter(|r| r.protocol == ROUTE_PROTOCOL)
            .map(|r| r.table)
            .collect();
        assert_eq!(tables, BTreeSet::from([1001]));
        // What arrives from peers (the VXLAN device) and from the pod (its veth), both families.
        let all = [
            (false, VETH.to_string(), 1001),
            (false, "strait.4096".to_string(), 1001),
            (true, VETH.to_string(), 1001),
            (true, "strait.4096".to_string(), 1001),
        ];
        assert_eq!(rules(&kernel), all);

        // A pass that trusts a last result missing rules the kernel has: adding them again is
        // no failure.
        let mut stale = after.clone();
        stale.rules.retain(|r| r.iif.as_deref() != Some(VETH));
        let trusting = reconcile(&mut host, &inputs, Some(stale), Pass::Apply, None).unwrap();
        assert_eq!(trusting.planned, 2);
        assert!(trusting.failed.is_empty(), "{:?}", trusting.failed);
        assert_eq!(trusting.done, 2);

        // Deleted by hand: back on the next pass. Someone else's rule stays; a stray of ours
        // goes.
        let foreign = strait_netlink::Rule {
            ipv6: false,
            priority: 500,
            iif: Some("eth0".into()),
            source: None,
            table: 1001,
            protocol: 4,
        };
        kernel.edit(None, |ns| {
            ns.rules.retain(|r| r.iif.as_deref() != Some(VETH));
            ns.rules.push(foreign.clone());
            ns.rules.push(strait_netlink::Rule {
                protocol: ROUTE_PROTOCOL,
                table: 1002,
                ..foreign.clone()
            });
        });
        assert_eq!(left_to_do(&mut host, &inputs), 3);
        assert!(pass(&mut host, &inputs, Pass::Apply).failed.is_empty());
        assert_eq!(rules(&kernel), all);
        assert!(kernel.node().rules.contains(&foreign));

        // Towards nothing: the overlay's rules go, the running pod's stay with its veth; once
        // the veth has gone, a pass takes its rules too.
        let gone = pass(&mut host, &Inputs::nothing(&inputs.local), Pass::Apply);
        assert!(gone.failed.is_empty(), "{:?}", gone.failed);
        assert_eq!(rules(&kernel), [all[0].clone(), all[2].clone()]);
        host.delete_link(VETH).unwrap();
        let cleared = pass(&mut host, &Inputs::nothing(&inputs.local), Pass::Apply);
        assert!(cleared.failed.is_empty(), "{:?}", cleared.failed);
        assert_eq!(rules(&kernel), []);
        assert_eq!(kernel.node().rules, [foreign]);
    }

    #[test]
    fn a_failed_change_is_reported_and_the_next_pass_completes() {
        for mode in [Mode::Vxlan, Mode::Routed] {
            let inputs = inputs(mode);
            let planned = {
                let (_kernel, mut host) = kernel();
                left_to_do(&mut host, &inputs)
            };
            for n in 1..=planned {
                let (kernel, mut host) = kernel();
                kernel.fail_changes(&[n]);
                let broken = pass(&mut host, &inputs, Pass::Apply);
                kernel.fail_changes(&[]);
                assert!(
                    !broken.failed.is_empty(),
                    "{mode:?} change {n}: not reported"
                );
                assert!(broken.after.is_none(), "{mode:?} change {n}");
                let next = pass(&mut host, &inputs, Pass::Apply);
                assert!(
                    next.failed.is_empty(),
                    "{mode:?} change {n}: {:?}",
                    next.failed
                );
                assert_eq!(left_to_do(&mut host, &inputs), 0, "{mode:?} change {n}");
            }
        }
    }

    /// A pass that checks the nftables tables against the kernel's ruleset.
    fn pass_with_nft(
        host: &mut FakeNetlink,
        kernel: &FakeKernel,
        inputs: &Inputs,
        written: &mut Written,
    ) -> Report {
        let mut nft = kernel.nftables();
        reconcile(host, inputs, None, Pass::Apply, Some((&mut nft, written))).unwrap()
    }

    #[test]
    fn the_nftables_tables_are_part_of_the_pass() {
        let (kernel, mut host) = kernel();
        let nft = kernel.nftables();
        let inputs = inputs(Mode::Vxlan);
        let mut written = Written::default();
        let first = pass_with_nft(&mut host, &kernel, &inputs, &mut written);
        assert!(
            first.failed.is_empty() && first.nft_changed,
            "{:?}",
            first.failed
        );
        assert_eq!(
            nft.get(strait_nft::SNAT_TABLE),
            Held::Table(snat().normalized())
        );
        // Settled: nothing is written again.
        let writes = nft.writes();
        assert!(!pass_with_nft(&mut host, &kernel, &inputs, &mut written).nft_changed);
        assert_eq!(nft.writes(), writes);
        // Deleted by hand, or its chain flushed: back on the next pass; another tool's table
        // stays.
        nft.remove(strait_nft::SNAT_TABLE);
        nft.put("kube-proxy", Held::Unreadable("not ours".into()));
        assert!(pass_with_nft(&mut host, &kernel, &inputs, &mut written).nft_changed);
        let mut flushed = snat().normalized();
        flushed.chains[0].rules.clear();
        nft.put(strait_nft::SNAT_TABLE, Held::Table(flushed));
        assert!(pass_with_nft(&mut host, &kernel, &inputs, &mut written).nft_changed);
        assert_eq!(
            nft.get(strait_nft::SNAT_TABLE),
            Held::Table(snat().normalized())
        );
        // A refused write is reported; the rest of the pass is done all the same.
        nft.remove(strait_nft::SNAT_TABLE);
        nft.refuse_writes(true);
        kernel.edit(None, |ns| ns.fdb.clear());
        let refused = pass_with_nft(&mut host, &kernel, &inputs, &mut written);
        assert_eq!(refused.failed.len(), 1, "{:?}", refused.failed);
        assert!(refused.done > 0 && left_to_do(&mut host, &inputs) == 0);
        nft.refuse_writes(false);
        assert!(pass_with_nft(&mut host, &kernel, &inputs, &mut written).nft_changed);
        // Towards nothing: Strait's tables go with the overlay, others' stay.
        let gone = pass_with_nft(
            &mut host,
            &kernel,
            &Inputs::nothing(&inputs.local),
            &mut written,
        );
        assert!(
            gone.failed.is_empty() && gone.nft_changed,
            "{:?}",
            gone.failed
        );
        assert_eq!(nft.names(), ["kube-proxy"]);
    }
}
