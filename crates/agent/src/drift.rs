//! Listening for changes made outside Strait: kernel events on the links we own (our VXLAN
//! devices, the underlay) and on what hangs off them, any of our routes deleted (a pod's host
//! route included), a pod's permanent neighbour changed or deleted on a veth that stays, and any
//! change to the nftables ruleset. Each wakes the reconciler, which repairs within its next pass
//! rather than on a timer.

use std::sync::Arc;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::route::RouteAttribute;
use strait_dataplane::ROUTE_PROTOCOL;
use strait_dataplane::overlay::is_device;
use strait_netlink::{Event, Monitor, Neighbour, Netlink, groups};

use crate::reconciler::OwnedLinks;
use crate::registry::Registry;
use crate::tasks::Running;
use crate::wake::{Reason, Wake};

/// Does this kernel event touch something the reconciler owns? `name_of` tells the name of a
/// link that is still there.
fn concerns_us(
    event: &Event,
    owned: &OwnedLinks,
    registry: &Registry,
    name_of: &mut impl FnMut(u32) -> Option<String>,
) -> bool {
    let event = match event {
        Event::Nexthop(nh) => return nh.protocol == ROUTE_PROTOCOL,
        Event::Route(message) => message,
    };
    match event {
        RouteNetlinkMessage::NewLink(l) | RouteNetlinkMessage::DelLink(l) => {
            owned.contains(l.header.index)
                || l.attributes
                    .iter()
                    .any(|a| matches!(a, LinkAttribute::IfName(n) if is_device(n)))
        }
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n)
            if owned.contains(n.header.ifindex) =>
        {
            true
        }
        RouteNetlinkMessage::NewNeighbour(m) | RouteNetlinkMessage::DelNeighbour(m) => {
            let deleted = matches!(event, RouteNetlinkMessage::DelNeighbour(_));
            Neighbour::from_message(m)
                .is_some_and(|n| is_pod_neighbour_drift(&n, deleted, registry, name_of))
        }
        RouteNetlinkMessage::NewAddress(a) | RouteNetlinkMessage::DelAddress(a) => {
            owned.contains(a.header.index)
        }
        // Any of ours deleted, wherever it led: pods' host routes come and go with their veths,
        // so only their deletion is news.
        RouteNetlinkMessage::DelRoute(r) => u8::from(r.header.protocol) == ROUTE_PROTOCOL,
        RouteNetlinkMessage::NewRoute(r) => {
            u8::from(r.header.protocol) == ROUTE_PROTOCOL
                && r.attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if owned.contains(*i)))
        }
        _ => false,
    }
}

/// Is this change to a neighbour one to a pod's permanent neighbour the reconciler keeps, on a
/// veth that is still there? Writing it as recorded (an ADD, a repair) is not; deleting the
/// veth (a DEL), which deletes its neighbours too, is not either.
fn is_pod_neighbour_drift(
    n: &Neighbour,
    deleted: bool,
    registry: &Registry,
    name_of: &mut impl FnMut(u32) -> Option<String>,
) -> bool {
    let Some((veth, mac)) = registry.kept_neighbour(n.ip) else {
        return false;
    };
    let as_kept = !deleted && n.permanent && n.mac == Some(mac);
    !as_kept && name_of(n.index).is_some_and(|name| name == veth)
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
        groups::NEXTHOP,
    ])
    .map_err(std::io::Error::other)?;
    let mut nl = Netlink::new().map_err(std::io::Error::other)?;
    let mut name_of = move |index| match nl.link_by_index(index) {
        Ok(link) => link.map(|l| l.name),
        Err(e) => {
            tracing::debug!(error = %e, index, "cannot look up a link");
            None
        }
    };
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
