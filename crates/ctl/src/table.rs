//! Plain-text tables for humans: columns padded to their widest cell.

use strait_rpc::{NodeStatus, PeerInfo, PodInfo, RouteInfo};

/// Renders rows (the first is the header) with two spaces between columns.
fn render(rows: &[Vec<String>]) -> String {
    let columns = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(T::to_string).collect::<Vec<_>>().join(",")
}

pub fn status(s: &NodeStatus) -> String {
    let mut out = format!(
        "node {}  ready {}  version {}\nunderlay {}{} on {}  peers {}  store {}\n",
        s.node,
        s.ready,
        s.version,
        s.address,
        s.address6
            .filter(|a| *a != s.address)
            .map(|a| format!(", {a}"))
            .unwrap_or_default(),
        s.underlay,
        s.peers,
        s.store
    );
    if let Some(r) = &s.reconcile {
        out.push_str(&format!(
            "last reconcile: {:.1} ms, {} change(s){}\n",
            r.last_duration_ms,
            r.last_operations,
            if r.last_errors.is_empty() {
                String::new()
            } else {
                format!(", errors: {}", r.last_errors.join("; "))
            }
        ));
    }
    out.push('\n');
    let mut rows = vec![
        ["NETWORK", "VNI", "VTEP", "POOLS", "BLOCKS", "ADDRESSES"]
            .map(String::from)
            .to_vec(),
    ];
    for n in &s.networks {
        rows.push(vec![
            n.name.clone(),
            n.vni.to_string(),
            n.vtep.map_or_else(|| "-".into(), |v| v.to_string()),
            join(&n.pools),
            join(&n.blocks),
            format!("{}/{}", n.allocated, n.capacity),
        ]);
    }
    out.push_str(&render(&rows));
    if !s.conflicts.is_empty() {
        out.push_str("\nCONFLICTS (the node takes no new pod until their pods are deleted)\n");
        let mut rows = vec![
            ["ADDRESS", "HOLDER", "HOST VETH", "WHY"]
                .map(String::from)
                .to_vec(),
        ];
        for c in &s.conflicts {
            rows.push(vec![
                c.address.to_string(),
                c.holder.clone(),
                c.host_veth.clone(),
                c.reason.clone(),
            ]);
        }
        out.push_str(&render(&rows));
    }
    if !s.quarantined.is_empty() {
        out.push_str(
            "\nQUARANTINED (no readable record; held until the runtime deletes the pod)\n",
        );
        let mut rows = vec![
            ["HOST VETH", "NETWORK", "ADDRESSES"]
                .map(String::from)
                .to_vec(),
        ];
        for q in &s.quarantined {
            rows.push(vec![
                q.host_veth.clone(),
                q.network.clone().unwrap_or_else(|| "-".into()),
                join(&q.addresses),
            ]);
        }
        out.push_str(&render(&rows));
    }
    out
}

pub fn peers(peers: &[PeerInfo]) -> String {
    let mut rows = vec![
        ["NODE", "ADDRESS", "VTEPS", "BLOCKS", "UNREACHABLE"]
            .map(String::from)
            .to_vec(),
    ];
    for p in peers {
        rows.push(vec![
            p.name.clone(),
            std::iter::once(p.address)
                .chain(p.address6.filter(|a| *a != p.address))
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            p.vteps
                .iter()
                .map(|v| format!("{}: {} {}", v.network, v.ip, v.mac))
                .collect::<Vec<_>>()
                .join(", "),
            join(&p.blocks),
            p.unreachable
                .iter()
                .map(|u| u.block.to_string())
                .collect::<Vec<_>>()
                .join(","),
        ]);
    }
    let mut out = render(&rows);
    for p in peers {
        for u in &p.unreachable {
            out.push_str(&format!(
                "{} {} (network {}) cannot be routed: {}\n",
                p.name, u.block, u.network, u.reason
            ));
        }
    }
    out
}

pub fn routes(routes: &[RouteInfo]) -> String {
    let mut rows = vec![
        ["DESTINATION", "TABLE", "VIA", "DEVICE", "NODE", "IN KERNEL"]
            .map(String::from)
            .to_vec(),
    ];
    for r in routes {
        rows.push(vec![
            r.dst.to_string(),
            r.table_name(),
            r.via.to_string(),
            r.device.clone(),
            r.node.clone(),
            if r.programmed { "yes" } else { "MISSING" }.to_string(),
        ]);
    }
    render(&rows)
}

/// Runtime ids (64 hex digits) are shown by their first 12, as runtimes do; others whole.
fn short_id(id: &str) -> String {
    if id.len() > 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_string()
    } else {
        id.to_string()
    }
}

pub fn pods(pods: &[PodInfo]) -> String {
    let mut rows = vec![
        [
            "NETWORK",
            "POD",
            "CONTAINER",
            "IFNAME",
            "ADDRESSES",
            "HOST VETH",
            "NETNS",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in pods {
        rows.push(vec![
            p.network.clone(),
            p.pod.clone().unwrap_or_else(|| "-".into()),
            short_id(&p.container_id),
            p.ifname.clone(),
            join(&p.addresses),
            p.host_veth.clone(),
            p.netns.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    render(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let t = render(&[
            vec!["A".into(), "BB".into()],
            vec!["long".into(), "x".into()],
        ]);
        assert_eq!(t, "A     BB\nlong  x\n");
    }

    #[test]
    fn a_peers_unroutable_block_is_named_with_its_reason() {
        let peer = PeerInfo {
            name: "b".into(),
            address: "192.168.0.2".parse().unwrap(),
            address6: None,
            vteps: Vec::new(),
            blocks: vec!["fd00::40/122".parse().unwrap()],
            unreachable: vec![strait_rpc::UnreachableInfo {
                network: "pods".into(),
                block: "fd00::40/122".parse().unwrap(),
                reason: "no IPv6 address".into(),
            }],
        };
        let out = peers(&[peer]);
        assert!(
            out.lines().next().unwrap().ends_with("UNREACHABLE"),
            "{out}"
        );
        assert!(
            out.contains("b fd00::40/122 (network pods) cannot be routed: no IPv6 address"),
            "{out}"
        );
    }

    #[test]
    fn a_node_known_by_its_ipv6_address_shows_it_once() {
        let v6: std::net::IpAddr = "fd00:fab::2".parse().unwrap();
        let peer = PeerInfo {
            name: "b".into(),
            address: v6,
            address6: Some(v6),
            vteps: Vec::new(),
            blocks: Vec::new(),
            unreachable: Vec::new(),
        };
        let out = peers(&[peer]);
        assert_eq!(out.matches("fd00:fab::2").count(), 1, "{out}");
    }

    #[test]
    fn only_runtime_ids_are_shortened() {
        assert_eq!(short_id(&"ab12".repeat(16)), "ab12ab12ab12");
        assert_eq!(short_id("demo-node1-pod1"), "demo-node1-pod1");
    }
}
