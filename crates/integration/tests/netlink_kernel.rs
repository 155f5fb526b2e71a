//! The netlink client against the real kernel: VXLAN devices (over IPv4 and IPv6 underlays) read
//! back as created, thousands of FDB, neighbour and route entries in one pipelined batch with
//! per-request results, policy routing rules as `ip rule` sees them, and the change events a
//! monitor sees.

use std::net::{IpAddr, Ipv4Addr};

use strait_integration::netns::TestNetns;
use strait_netlink::{
    Event, FdbEntry, MacAddr, Monitor, Neighbour, Netlink, Nexthop, Route, Rule, Scope, TABLE_MAIN,
    Vxlan, VxlanSpec, groups,
};
use strait_netns::Netns;

fn in_ns(ns: &TestNetns) -> Netlink {
    let socket = Netns::open(ns.path()).unwrap().route_socket().unwrap();
    Netlink::from_socket(socket).unwrap()
}

fn vxlan(nl: &mut Netlink, ns: &TestNetns) -> u32 {
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["addr", "add", "192.168.50.1/24", "dev", "up0"]);
    let underlay = nl.link_by_name("up0").unwrap().unwrap().index;
    let spec = VxlanSpec {
        name: "strait.4096".into(),
        mac: MacAddr([0x02, 1, 2, 3, 4, 5]),
        mtu: 1450,
        vxlan: Vxlan {
            vni: 4096,
            local: Some(Ipv4Addr::new(192, 168, 50, 1).into()),
            port: 4789,
            underlay: Some(underlay),
            learning: false,
        },
    };
    nl.add_vxlan(&spec).unwrap();
    let link = nl.link_by_name("strait.4096").unwrap().unwrap();
    assert_eq!(link.kind.as_deref(), Some("vxlan"));
    assert_eq!(link.mac, Some(spec.mac));
    assert_eq!(link.mtu, 1450);
    assert_eq!(link.vxlan.as_ref(), Some(&spec.vxlan));
    nl.set_link_up(link.index).unwrap();
    link.index
}

#[test]
fn a_vxlan_device_reads_back_as_created_and_takes_a_batch_of_thousands() {
    let ns = TestNetns::new("nl");
    let mut nl = in_ns(&ns);
    let dev = vxlan(&mut nl, &ns);
    const PEERS: u32 = 2000;
    let mut requests = Vec::new();
    for i in 0..PEERS {
        let [_, _, b, c] = (0x0a64_0000u32 + i).to_be_bytes();
        let mac = MacAddr([0x02, 0, 0, 0, b, c]);
        let underlay = IpAddr::V4(Ipv4Addr::new(192, 168, b, c));
        let vtep = IpAddr::V4(Ipv4Addr::new(10, 200, b, c));
        requests.push(
            FdbEntry {
                index: dev,
                mac,
                dst: underlay,
            }
            .replace_request(),
        );
        requests.push(Neighbour::set_request(dev, vtep, mac));
        requests.push(
            Route {
                dst: format!("10.{}.{}.0/26", 100 + u32::from(b), c)
                    .parse()
                    .unwrap(),
                gateway: Some(vtep),
                oif: Some(dev),
                table: TABLE_MAIN,
                protocol: 83,
                scope: Scope::Universe,
                onlink: true,
                nexthop: None,
            }
            .replace_request(),
        );
    }
    // One request that must fail on its own without spoiling the rest.
    requests.push(Neighbour::set_request(
        9999,
        "10.1.1.1".parse().unwrap(),
        MacAddr([2; 6]),
    ));
    let results = nl.batch(requests);
    let failed: Vec<_> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.is_err())
        .map(|(i, _)| i)
        .collect();
    assert_eq!(failed, [results.len() - 1], "only the bad request fails");
    assert_eq!(nl.fdb(dev).unwrap().len(), PEERS as usize);
    let neighbours = nl.neighbours(dev).unwrap();
    assert_eq!(
        neighbours.iter().filter(|n| n.permanent).count(),
        PEERS as usize
    );
    let ours = nl
        .routes(false, TABLE_MAIN)
        .unwrap()
        .into_iter()
        .filter(|r| r.protocol == 83)
        .count();
    assert_eq!(ours, PEERS as usize);
    // Deleting is batched the same way.
    let fdb = nl.fdb(dev).unwrap();
    let results = nl.batch(fdb.iter().map(FdbEntry::delete_request).collect());
    assert!(results.iter().all(Result::is_ok));
    assert!(nl.fdb(dev).unwrap().is_empty());
}

#[test]
fn a_vxlan_device_over_an_ipv6_underlay_reads_back_as_created() {
    let ns = TestNetns::new("nl6");
    let mut nl = in_ns(&ns);
    ns.ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"]);
    ns.ip(&["-6", "addr", "add", "fd00:50::1/64", "dev", "up0", "nodad"]);
    let underlay = nl.link_by_name("up0").unwrap().unwrap().index;
    let spec = VxlanSpec {
        name: "strait.4097".into(),
        mac: MacAddr([0x02, 1, 2, 3, 4, 6]),
        mtu: 1430,
        vxlan: Vxlan {
            vni: 4097,
            local: Some("fd00:50::1".parse().unwrap()),
            port: 4789,
            underlay: Some(underlay),
            learning: false,
        },
    };
    nl.add_vxlan(&spec).unwrap();
    let link = nl.link_by_name("strait.4097").unwrap().unwrap();
    assert_eq!(link.vxlan.as_ref(), Some(&spec.vxlan));
    // An FDB entry towards an IPv6 peer reads back as written.
    let entry = FdbEntry {
        index: link.index,
        mac: MacAddr([0x02, 0, 0, 0, 0, 9]),
        dst: "fd00:50::9".parse().unwrap(),
    };
    nl.send_request(entry.replace_request()).unwrap();
    assert_eq!(nl.fdb(link.index).unwrap(), [entry]);
}

#[test]
fn the_monitor_sees_routes_and_links_change() {
    let ns = TestNetns::new("mon");
    let netns = Netns::open(ns.path()).unwrap();
    let monitor = netns
        .run(|| Monitor::new(&[groups::LINK, groups::IPV4_ROUTE]))
        .unwrap()
        .unwrap();
    let mut nl = in_ns(&ns);
    let dev = vxlan(&mut nl, &ns);
    let route = Route {
        dst: "10.7.0.0/26".parse().unwrap(),
        gateway: Some("10.200.0.1".parse().unwrap()),
        oif: Some(dev),
        table: TABLE_MAIN,
        protocol: 83,
        scope: Scope::Universe,
        onlink: true,
        nexthop: None,
    };
    nl.send_request(route.replace_request()).unwrap();
    ns.ip(&["route", "del", "10.7.0.0/26"]);
    until_seen(monitor, move |events| {
        events.iter().any(|e| {
            *e == Event::Route {
                deleted: true,
                protocol: 83,
                oif: Some(dev),
            }
        })
    });
}

#[test]
fn rules_read_back_as_written_outlive_their_link_and_their_deletion_is_seen() {
    let ns = TestNetns::new("rule");
    let netns = Netns::open(ns.path()).unwrap();
    let monitor = netns
        .run(|| Monitor::new(&[groups::IPV4_RULE, groups::IPV6_RULE]))
        .unwrap()
        .unwrap();
    let mut nl = in_ns(&ns);
    vxlan(&mut nl, &ns);
    let by_link = Rule {
        ipv6: false,
        priority: 1000,
        iif: Some("strait.4096".into()),
        source: None,
        table: 1001,
        protocol: 83,
    };
    let by_source = Rule {
        ipv6: true,
        priority: 1001,
        iif: None,
        source: Some("fd00:10::/64".parse().unwrap()),
        table: 1002,
        protocol: 83,
    };
    for rule in [&by_link, &by_source] {
        nl.send_request(rule.add_request()).unwrap();
        // The very same rule again is refused, not doubled.
        assert!(nl.send_request(rule.add_request()).unwrap_err().is_exists());
    }
    let ours = |nl: &mut Netlink, ipv6| -> Vec<Rule> {
        let mut rules = nl.rules(ipv6).unwrap();
        rules.retain(|r| r.protocol == 83);
        rules
    };
    assert_eq!(ours(&mut nl, false), std::slice::from_ref(&by_link));
    assert_eq!(ours(&mut nl, true), std::slice::from_ref(&by_source));
    // `ip rule` shows what was written; the kernel's own rules read as someone else's.
    let shown = ns.ip(&["rule", "show"]);
    assert!(
        shown.contains("1000:\tfrom all iif strait.4096 lookup 1001 proto 83"),
        "{shown}"
    );
    assert!(
        nl.rules(false)
            .unwrap()
            .iter()
            .any(|r| r.table == TABLE_MAIN && r.protocol != 83)
    );
    // A rule names its link: deleting the link leaves it.
    ns.ip(&["link", "del", "strait.4096"]);
    assert_eq!(ours(&mut nl, false), std::slice::from_ref(&by_link));
    nl.send_request(by_link.delete_request()).unwrap();
    assert_eq!(ours(&mut nl, false), []);
    ns.ip(&["-6", "rule", "del", "priority", "1001"]);
    assert_eq!(ours(&mut nl, true), []);
    until_seen(monitor, move |events| {
        events.iter().any(|e| {
            *e == Event::Rule {
                deleted: true,
                rule: by_source.clone(),
            }
        })
    });
}

#[test]
fn routes_through_a_nexthop_object_read_back_and_go_with_it() {
    let ns = TestNetns::new("nh");
    let netns = Netns::open(ns.path()).unwrap();
    let monitor = netns
        .run(|| Monitor::new(&[groups::NEXTHOP]))
        .unwrap()
        .unwrap();
    let mut nl = in_ns(&ns);
    let dev = vxlan(&mut nl, &ns);
    let gateway: IpAddr = "10.200.0.9".parse().unwrap();
    nl.send_request(Nexthop::create_request(0x5354_0001, gateway, dev, true, 83))
        .unwrap();
    // The id is taken now: creating it again fails instead of replacing.
    let again = nl.send_request(Nexthop::create_request(0x5354_0001, gateway, dev, true, 83));
    assert!(again.unwrap_err().is_exists());
    let listed = nl.nexthops().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (
            listed[0].id,
            listed[0].gateway,
            listed[0].oif,
            listed[0].onlink,
            listed[0].protocol
        ),
        (0x5354_0001, Some(gateway), Some(dev), true, 83)
    );
    let route = Route {
        dst: "10.7.0.0/26".parse().unwrap(),
        gateway: None,
        oif: None,
        table: TABLE_MAIN,
        protocol: 83,
        scope: Scope::Universe,
        onlink: false,
        nexthop: Some(0x5354_0001),
    };
    nl.send_request(route.replace_request()).unwrap();
    let read = nl
        .routes(false, TABLE_MAIN)
        .unwrap()
        .into_iter()
        .find(|r| r.protocol == 83)
        .unwrap();
    assert_eq!(
        (read.nexthop, read.gateway, read.oif),
        (Some(0x5354_0001), Some(gateway), Some(dev))
    );
    assert_eq!(
        nl.route_to("10.7.0.5".parse().unwrap())
            .unwrap()
            .unwrap()
            .gateway,
        Some(gateway)
    );
    nl.send_request(Nexthop::delete_request(0x5354_0001))
        .unwrap();
    assert!(
        nl.routes(false, TABLE_MAIN)
            .unwrap()
            .iter()
            .all(|r| r.protocol != 83),
        "the route went with it"
    );
    until_seen(monitor, |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::Nexthop(n) if n.deleted))
    });
}

/// Reads `monitor` until `seen` holds for a batch of events; fails after ten seconds instead of
/// waiting for ever (the monitor's reads block).
fn until_seen(mut monitor: Monitor, seen: impl Fn(&[Event]) -> bool + Send + 'static) {
    let reader = std::thread::spawn(move || while !seen(&monitor.events().unwrap()) {});
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !reader.is_finished() {
        assert!(std::time::Instant::now() < deadline, "the event never came");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    reader.join().unwrap();
}
