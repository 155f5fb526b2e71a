//! Listening for changes made outside Strait: kernel events on the links we own (our VXLAN
//! devices, the underlay), the neighbours and addresses of our devices (not the underlay's: they
//! follow its network's traffic), any of our routes deleted (a pod's host
//! route included) while its device stays, in either family, a pod's permanent neighbour
//! changed or deleted, or its IPv6 gateway address deleted, on a veth that stays, any of our
//! policy routing rules deleted, and any change to the nftables ruleset. Each wakes the reconciler, which repairs within its next pass rather
//! than on a timer.

use std::sync::Arc;

use strait_dataplane::overlay::is_device;
use strait_dataplane::{GATEWAY_V6, ROUTE_PROTOCOL, is_host_veth};
use strait_netlink::{Event, Monitor, Neighbour, Netlink, NetlinkError, groups};

use crate::attachments::registry::Registry;
use crate::reconciler::OwnedLinks;
use crate::tasks::Running;
use crate::wake::{Reason, Wake};

/// Does this kernel event touch something the reconciler owns? `name_of` tells the name of a
/// link that is still there.
fn concerns_us(
    event: &Event,
    owned: &OwnedLinks,
    registry: &Registry,
    name_of: &mut impl FnMut(u32) -> Result<Option<String>, NetlinkError>,
) -> bool {
    match event {
        Event::Nexthop(nh) => nh.protocol == ROUTE_PROTOCOL,
        Event::Link { index, name } => {
            owned.contains(*index) || name.as_deref().is_some_and(is_device)
        }
        Event::Neighbour { index, .. } if owned.holds_entries(*index) => true,
        Event::Neighbour {
            deleted,
            neighbour: Some(n),
            ..
        } => is_pod_neighbour_drift(n, *deleted, registry, name_of),
        Event::Neighbour { .. } => false,
        Event::Address { index, .. } if owned.holds_entries(*index) => true,
        // A pod's IPv6 gateway deleted from a host veth that stays.
        Event::Address {
            deleted: true,
            index,
            address: Some(ip),
        } => {
            *ip == GATEWAY_V6
                && match name_of(*index) {
                    Ok(name) => name.is_some_and(|n| is_host_veth(&n)),
                    Err(_) => true,
                }
        }
        Event::Address { .. } => false,
        // Any of ours deleted, wherever it led (pods' host routes come and go with their veths,
        // so only their deletion is news), unless its device went with it: IPv6 reports the
        // routes of a deleted link, and the link's own event says whatever matters.
        Event::Route {
            deleted: true,
            protocol,
            oif,
        } => *protocol == ROUTE_PROTOCOL && !oif.is_some_and(|i| matches!(name_of(i), Ok(None))),
        Event::Route {
            deleted: false,
            protocol,
            oif,
        } => *protocol == ROUTE_PROTOCOL && oif.is_some_and(|i| owned.contains(i)),
        // Rules name their links, so deleting a link leaves them: a deletion is someone's hand.
        Event::Rule { deleted, rule } => *deleted && rule.protocol == ROUTE_PROTOCOL,
    }
}

/// Is this change to a neighbour one to a pod's permanent neighbour the reconciler keeps, on a
/// veth that is still there? Writing it as recorded (an ADD, a repair) is not; deleting the
/// veth (a DEL), which deletes its neighbours too, is not either.
fn is_pod_neighbour_drift(
    n: &Neighbour,
    deleted: bool,
    registry: &Registry,
    name_of: &mut impl FnMut(u32) -> Result<Option<String>, NetlinkError>,
) -> bool {
    let kept = registry.kept_neighbours(n.ip);
    let mut changed = kept
        .iter()
        .filter(|(_, mac)| deleted || !n.permanent || n.mac != Some(*mac))
        .peekable();
    if changed.peek().is_none() {
        return false;
    }
    match name_of(n.index) {
        Ok(Some(name)) => changed.any(|(veth, _)| *veth == name),
        Ok(None) => false,
        // When in doubt, a pass too many rather than a repair missed.
        Err(e) => {
            tracing::debug!(error = %e, index = n.index, "cannot look up a link");
            true
        }
    }
}

/// Starts the thread that turns kernel events into wake-ups.
pub fn watch_kernel(
    running: Running,
    owned: Arc<OwnedLinks>,
    registry: Arc<Registry>,
    wake: Arc<Wake>,
) -> std::io::Result<()> {
    let mut monitor = Monitor::new(&[
        groups::LINK,
        groups::NEIGH,
        groups::IPV4_IFADDR,
        groups::IPV4_ROUTE,
        groups::IPV4_RULE,
        groups::IPV6_IFADDR,
        groups::IPV6_ROUTE,
        groups::IPV6_RULE,
        groups::NEXTHOP,
    ])
    .map_err(std::io::Error::other)?;
    let mut nl = Netlink::new().map_err(std::io::Error::other)?;
    let mut name_of = move |index| Ok(nl.link_by_index(index)?.map(|l| l.name));
    std::thread::Builder::new()
        .name("strait-kernel-events".into())
        .spawn(move || {
            let _running = running;
            loop {
                match monitor.events() {
                    Ok(events) => {
                        if events
                            .iter()
                            .any(|e| concerns_us(e, &owned, &registry, &mut name_of))
                        {
                            wake.signal(Reason::Kernel);
                        }
                    }
                    // Events were lost (ENOBUFS) or the socket hiccupped: look at everything.
                    Err(e) => {
                        tracing::debug!(error = %e, "kernel events lost; resynchronising");
                        wake.signal(Reason::Kernel);
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
            }
        })?;
    Ok(())
}

/// Starts the thread that turns nftables ruleset changes into wake-ups.
pub fn watch_nft(running: Running, wake: Arc<Wake>) -> std::io::Result<()> {
    let mut monitor = strait_nft::Monitor::new()?;
    std::thread::Builder::new()
        .name("strait-nft-events".into())
        .spawn(move || {
            let _running = running;
            loop {
                if monitor.wait().is_err() {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                wake.signal(Reason::Nft);
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strait_netlink::MacAddr;

    use super::*;
    use crate::attachments::registry::test_record;

    fn event(index: u32, ip: &str, mac: Option<u8>, permanent: bool) -> Neighbour {
        Neighbour {
            index,
            ip: ip.parse().unwrap(),
            mac: mac.map(|m| MacAddr([2, 0, 0, 0, 0, m])),
            permanent,
        }
    }

    #[test]
    fn only_changes_to_kept_pod_neighbours_on_veths_still_there_wake_the_reconciler() {
        let dir = std::env::temp_dir().join(format!("strait-drift-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (registry, _) = Registry::open(&dir).unwrap();
        registry.put_for_test(&test_record("a", "st00000000000a", "10.0.0.1", Some(1)));
        // Two records claiming one address (a conflict): both veths' neighbours are kept.
        registry.put_for_test(&test_record("b", "st00000000000b", "10.0.0.2", Some(2)));
        registry.put_for_test(&test_record("c", "st00000000000c", "10.0.0.2", Some(3)));
        // Recorded before Strait chose pod MACs: its neighbour is not the reconciler's.
        registry.put_for_test(&test_record("d", "st00000000000d", "10.0.0.4", None));
        let mut links = |index: u32| match index {
            1 => Ok(Some("st00000000000a".to_string())),
            2 => Ok(Some("st00000000000b".to_string())),
            3 => Ok(Some("st00000000000c".to_string())),
            4 => Ok(Some("st00000000000d".to_string())),
            9 => Err(NetlinkError::Decode("lookup failed".into())),
            _ => Ok(None),
        };
        let cases = [
            (
                "deleted by hand",
                event(1, "10.0.0.1", None, false),
                true,
                true,
            ),
            (
                "written as kept (an ADD, a repair)",
                event(1, "10.0.0.1", Some(1), true),
                false,
                false,
            ),
            (
                "another MAC",
                event(1, "10.0.0.1", Some(7), true),
                false,
                true,
            ),
            (
                "no longer permanent",
                event(1, "10.0.0.1", Some(1), false),
                false,
                true,
            ),
            (
                "its veth is gone (a DEL)",
                event(5, "10.0.0.1", Some(1), true),
                true,
                false,
            ),
            (
                "the second record of a shared address",
                event(3, "10.0.0.2", None, false),
                true,
                true,
            ),
            (
                "not a pod's address",
                event(1, "10.9.9.9", None, false),
                true,
                false,
            ),
            (
                "a pod's address on another veth",
                event(4, "10.0.0.1", None, false),
                true,
                false,
            ),
            (
                "a MAC Strait did not choose",
                event(4, "10.0.0.4", None, false),
                true,
                false,
            ),
            (
                "the link cannot be looked up",
                event(9, "10.0.0.1", None, false),
                true,
                true,
            ),
        ];
        for (what, n, deleted, wakes) in cases {
            assert_eq!(
                is_pod_neighbour_drift(&n, deleted, &registry, &mut links),
                wakes,
                "{what}"
            );
        }
        registry.remove_for_test(&test_record("a", "", "10.0.0.1", None).key);
        assert!(
            !is_pod_neighbour_drift(
                &event(1, "10.0.0.1", None, false),
                true,
                &registry,
                &mut links
            ),
            "an attachment gone"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_underlays_neighbours_and_addresses_wake_nothing_its_link_and_our_devices_do() {
        let dir = std::env::temp_dir().join(format!("strait-drift-owned-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (registry, _) = Registry::open(&dir).unwrap();
        let owned = OwnedLinks::default();
        // Device 3 is ours, 2 the underlay.
        owned.set(&BTreeSet::from([2, 3]), Some(2));
        let neighbour = |index: u32| Event::Neighbour {
            deleted: false,
            index,
            neighbour: None,
        };
        let address = |index: u32| Event::Address {
            deleted: false,
            index,
            address: None,
        };
        let link = |index: u32| Event::Link { index, name: None };
        let mut links = |_: u32| Ok(None);
        let cases = [
            ("a neighbour of our device", neighbour(3), true),
            ("a neighbour of the underlay's network", neighbour(2), false),
            ("an address of our device", address(3), true),
            ("an address of the underlay", address(2), false),
            ("the underlay's link", link(2), true),
            ("our device's link", link(3), true),
            ("another link", link(4), false),
        ];
        for (what, event, wakes) in cases {
            assert_eq!(
                concerns_us(&event, &owned, &registry, &mut links),
                wakes,
                "{what}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_deleted_route_or_rule_of_ours_wakes_the_reconciler_unless_its_device_went_with_it() {
        let dir = std::env::temp_dir().join(format!("strait-drift-routes-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (registry, _) = Registry::open(&dir).unwrap();
        let deleted = |protocol: u8, oif: Option<u32>| Event::Route {
            deleted: true,
            protocol,
            oif,
        };
        let mut links = |index: u32| match index {
            1 => Ok(Some("st00000000000a".to_string())),
            9 => Err(NetlinkError::Decode("lookup failed".into())),
            _ => Ok(None),
        };
        let owned = OwnedLinks::default();
        let cases = [
            (
                "a pod's host route deleted by hand",
                deleted(83, Some(1)),
                true,
            ),
            (
                "a route gone with its device (a DEL, IPv6)",
                deleted(83, Some(5)),
                false,
            ),
            ("through a nexthop object", deleted(83, None), true),
            ("the device cannot be looked up", deleted(83, Some(9)), true),
            ("not ours", deleted(2, Some(1)), false),
        ];
        let rule = |deleted: bool, protocol: u8| Event::Rule {
            deleted,
            rule: strait_netlink::Rule {
                ipv6: false,
                priority: 1000,
                iif: Some("st00000000000a".into()),
                source: None,
                table: 1001,
                protocol,
            },
        };
        let cases = cases.into_iter().chain([
            ("a rule of ours deleted by hand", rule(true, 83), true),
            ("a rule of ours added by a pass", rule(false, 83), false),
            ("someone else's rule deleted", rule(true, 4), false),
        ]);
        for (what, event, wakes) in cases {
            assert_eq!(
                concerns_us(&event, &owned, &registry, &mut links),
                wakes,
                "{what}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
