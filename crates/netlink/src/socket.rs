//! The netlink socket itself: send one request, collect its answer (ACK, error or dump), and turn
//! kernel errors into [`NetlinkError`]s carrying the operation and the kernel's own words.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::NetlinkError;
use strait_netns::Netns;

const RECV_BUFFER: usize = 1 << 16;
const SOCKET_BUFFER: usize = 4 << 20;
/// `NLMSGERR_ATTR_MSG`: the extended ack's human-readable error.
const NLMSGERR_ATTR_MSG: u16 = 1;
const NETLINK_HEADER_LEN: usize = 16;

/// One rtnetlink socket, bound to the network namespace it was opened in.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Netlink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netlink").field("seq", &self.seq).finish()
    }
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn new() -> Result<Netlink, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(NetlinkError::Socket)?;
        socket.set_ext_ack(true).map_err(NetlinkError::Socket)?;
        socket.set_cap_ack(true).map_err(NetlinkError::Socket)?;
        // Best effort: a larger buffer only matters for big dumps.
        let _ = socket.set_rx_buf_sz(SOCKET_BUFFER);
        Ok(Netlink {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Opens a socket inside `ns`. The namespace is entered only on a short-lived dedicated
    /// thread; the socket stays bound to `ns` and is used from the caller's thread.
    pub fn in_netns(ns: &Netns) -> Result<Netlink, NetlinkError> {
        ns.run(Netlink::new)?
    }

    /// Sends a request that changes something and waits for the kernel's ACK.
    pub(crate) fn ack(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.exchange(message, flags | NLM_F_ACK, op).map(drop)
    }

    /// Sends a GET for one object and returns the kernel's answer.
    pub(crate) fn get(
        &mut self,
        message: RouteNetlinkMessage,
        op: impl FnOnce() -> String,
    ) -> Result<Option<RouteNetlinkMessage>, NetlinkError> {
        Ok(self.exchange(message, NLM_F_ACK, op)?.into_iter().next())
    }

    /// Dumps a whole table (links, routes, ...).
    pub(crate) fn dump(
        &mut self,
        message: RouteNetlinkMessage,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.exchange(message, NLM_F_DUMP, op)
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | flags;
        header.sequence_number = seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;
        self.collect(seq, op)
    }

    /// Reads until the answer to `seq` is complete: an ACK, an error, or the end of a dump.
    fn collect(
        &mut self,
        seq: u32,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let mut answers = Vec::new();
        loop {
            self.buf.clear();
            self.buf.reserve(RECV_BUFFER);
            self.socket
                .recv(&mut self.buf, 0)
                .map_err(NetlinkError::Socket)?;
            let mut offset = 0;
            while offset < self.buf.len() {
                let bytes = &self.buf[offset..];
                let len = NetlinkBuffer::new_checked(bytes)
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?
                    .length() as usize;
                let message = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                offset += align4(len.max(NETLINK_HEADER_LEN));
                if message.header.sequence_number != seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => {
                                let detail = ext_ack_message(&e.header);
                                Err(kernel_error(op(), e.to_io(), detail))
                            }
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn kernel_error(op: String, source: io::Error, detail: Option<String>) -> NetlinkError {
    NetlinkError::Kernel { op, source, detail }
}

/// With NETLINK_CAP_ACK, an error carries the request's header followed by TLVs; the
/// `NLMSGERR_ATTR_MSG` one is the kernel's explanation.
fn ext_ack_message(after_code: &[u8]) -> Option<String> {
    let mut tlvs = after_code.get(NETLINK_HEADER_LEN..)?;
    while tlvs.len() >= 4 {
        let len = u16::from_ne_bytes([tlvs[0], tlvs[1]]) as usize;
        let kind = u16::from_ne_bytes([tlvs[2], tlvs[3]]);
        if len < 4 || len > tlvs.len() {
            return None;
        }
        if kind == NLMSGERR_ATTR_MSG {
            let text = &tlvs[4..len];
            let text = text.split(|b| *b == 0).next().unwrap_or_default();
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        tlvs = &tlvs[align4(len).min(tlvs.len())..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_kernel_explanation_from_an_extended_ack() {
        let mut raw = vec![0u8; NETLINK_HEADER_LEN];
        let text = b"Unknown device type\0";
        let len = (4 + text.len()) as u16;
        raw.extend_from_slice(&len.to_ne_bytes());
        raw.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        raw.extend_from_slice(text);
        assert_eq!(
            ext_ack_message(&raw).as_deref(),
            Some("Unknown device type")
        );
        assert_eq!(ext_ack_message(&raw[..NETLINK_HEADER_LEN]), None);
        assert_eq!(ext_ack_message(&[1, 2]), None);
    }
}
