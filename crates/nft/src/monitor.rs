//! Watching the ruleset: a netfilter socket subscribed to nftables changes, of which only those
//! that touch one of Strait's own tables (`inet strait-snat`, or an older agent's `inet strait`)
//! end a wait. Other programs' changes (kube-proxy
//! rewrites its rules on every Service change) wake nobody.

use std::io;

use crate::is_ours;

/// `NFNLGRP_NFTABLES` from linux/netfilter/nfnetlink.h.
const NFNLGRP_NFTABLES: u32 = 7;
/// `NFNL_SUBSYS_NFTABLES`: the high byte of an nftables message's type.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
/// `NFT_MSG_NEWGEN`: ends every transaction, names no table.
const NFT_MSG_NEWGEN: u16 = 15;
/// `NFPROTO_INET`.
const FAMILY_INET: u8 = 1;
/// Attribute 1 of every table, chain, rule, set, element, object and flowtable message is the
/// table's name (`NFTA_TABLE_NAME`, `NFTA_CHAIN_TABLE`, `NFTA_RULE_TABLE`, ...).
const ATTR_TABLE: u16 = 1;
const NLMSG_HEADER: usize = 16;
const NFGENMSG: usize = 4;

pub struct Monitor {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish()
    }
}

impl Monitor {
    pub fn new() -> io::Result<Monitor> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.add_membership(NFNLGRP_NFTABLES)?;
        Ok(Monitor {
            socket,
            buf: Vec::with_capacity(1 << 16),
        })
    }

    /// Blocks until a change touches Strait's table. An error (events were lost) may hide one:
    /// the caller counts it as a change.
    pub fn wait(&mut self) -> io::Result<()> {
        loop {
            self.buf.clear();
            self.buf.reserve(1 << 16);
            self.socket.recv(&mut self.buf, 0)?;
            if touches_our_table(&self.buf) {
                return Ok(());
            }
        }
    }
}

/// Whether any message in `buf` (one or more netlink messages) names one of Strait's `inet`
/// tables. What cannot
/// be read counts as touching it.
fn touches_our_table(mut buf: &[u8]) -> bool {
    while buf.len() >= NLMSG_HEADER {
        let len = u32::from_ne_bytes(buf[0..4].try_into().expect("4 bytes")) as usize;
        let kind = u16::from_ne_bytes(buf[4..6].try_into().expect("2 bytes"));
        if len < NLMSG_HEADER || len > buf.len() {
            return true;
        }
        let (message, rest) = buf.split_at(len);
        buf = &rest[align(len).saturating_sub(len).min(rest.len())..];
        if kind >> 8 != NFNL_SUBSYS_NFTABLES || kind & 0xff == NFT_MSG_NEWGEN {
            continue;
        }
        let payload = &message[NLMSG_HEADER..];
        if payload.len() < NFGENMSG {
            return true;
        }
        if payload[0] == FAMILY_INET
            && table_name(&payload[NFGENMSG..])
                .is_some_and(|name| std::str::from_utf8(name).is_ok_and(is_ours))
        {
            return true;
        }
    }
    false
}

/// The table name attribute among `attrs`, without its terminating NUL.
fn table_name(mut attrs: &[u8]) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & 0x3fff;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == ATTR_TABLE {
            let value = &attrs[4..len];
            return Some(value.strip_suffix(&[0]).unwrap_or(value));
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    None
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One nftables notification: message `msg` for table `name` of `family`.
    fn message(msg: u16, family: u8, name: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        let value_len = name.len() + 1;
        attr.extend_from_slice(&((4 + value_len) as u16).to_ne_bytes());
        attr.extend_from_slice(&ATTR_TABLE.to_ne_bytes());
        attr.extend_from_slice(name.as_bytes());
        attr.push(0);
        attr.resize(align(attr.len()), 0);
        let len = NLMSG_HEADER + NFGENMSG + attr.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&((NFNL_SUBSYS_NFTABLES << 8) | msg).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[family, 0, 0, 0]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn only_changes_to_our_table_count() {
        const NEWRULE: u16 = 6;
        const NEWCHAIN: u16 = 3;
        const DELTABLE: u16 = 2;
        assert!(touches_our_table(&message(NEWRULE, FAMILY_INET, "strait")));
        assert!(touches_our_table(&message(
            NEWRULE,
            FAMILY_INET,
            "strait-snat"
        )));
        assert!(!touches_our_table(&message(
            NEWRULE,
            FAMILY_INET,
            "strait-other"
        )));
        assert!(
            !touches_our_table(&message(NEWRULE, 2, "strait")),
            "ip strait is not ours"
        );
        assert!(!touches_our_table(&message(
            DELTABLE,
            FAMILY_INET,
            "kube-proxy"
        )));
        assert!(!touches_our_table(&message(
            NEWCHAIN,
            FAMILY_INET,
            "straits"
        )));
        assert!(!touches_our_table(&message(
            NFT_MSG_NEWGEN,
            FAMILY_INET,
            "strait"
        )));
        let mut batch = message(NEWCHAIN, 2, "filter");
        batch.extend(message(DELTABLE, FAMILY_INET, "strait"));
        assert!(touches_our_table(&batch));
        assert!(touches_our_table(&[0xff; 20]), "what cannot be read counts");
        assert!(!touches_our_table(&[]));
    }
}
