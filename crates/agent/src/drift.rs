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
use crate::tasks::Running;
use crate::wake::{Reason, Wake};

/// Does this kernel event touch something the reconciler owns? `exists` tells whether a link is
/// still there.
fn concerns_us(event: &Event, owned: &OwnedLinks, exists: &mut impl FnMut(u32) -> bool) -> bool {
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
        // Deleting a pod's veth deletes its neighbours too: that is its DEL, not drift.
        RouteNetlinkMessage::NewNeighbour(n) | RouteNetlinkMessage::DelNeighbour(n) => {
            Neighbour::from_message(n)
                .is_some_and(|n| owned.is_pod_neighbour(n.index, n.ip) && exists(n.index))
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

/// Starts the thread that turns kernel events into wake-ups.
pub fn watch_kernel(
    running: Running,
    owned: Arc<OwnedLinks>,
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
    // When in doubt (the lookup failed), the link counts as there: a pass too many, not a
    // repair missed.
    let mut exists = move |index| !matches!(nl.link_by_index(index), Ok(None));
    std::thread::Builder::new()
        .name("strait-kernel-events".into())
        .spawn(move || {
            let _running = running;
            loop {
                match monitor.events() {
                    Ok(events) => {
                        if events.iter().any(|e| concerns_us(e, &owned, &mut exists)) {
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
