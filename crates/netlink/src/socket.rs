//! The netlink socket itself: send one request, collect its answer (ACK, error or dump), and turn
//! kernel errors into [`NetlinkError`]s carrying the operation and the kernel's own words.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};

use netlink_packet_core::{
    ErrorMessage, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
    NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

use crate::error::NetlinkError;
use crate::event::Event;

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
        Netlink::ready(Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?)
    }

    /// Uses an rtnetlink socket opened elsewhere (in another namespace, by the plugin: see
    /// `strait_netns::Netns::route_socket`); refuses a descriptor that is not one.
    pub fn from_socket(fd: OwnedFd) -> Result<Netlink, NetlinkError> {
        let option = |name| -> io::Result<libc::c_int> {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt writes at most `len` bytes into `value`.
            let r = unsafe {
                libc::getsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            if r == 0 {
                Ok(value)
            } else {
                Err(io::Error::last_os_error())
            }
        };
        let domain = option(libc::SO_DOMAIN).map_err(NetlinkError::Socket)?;
        let protocol = option(libc::SO_PROTOCOL).map_err(NetlinkError::Socket)?;
        if domain != libc::AF_NETLINK || protocol != libc::NETLINK_ROUTE {
            return Err(NetlinkError::Socket(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the descriptor passed as a netlink socket is not an rtnetlink socket",
            )));
        }
        // SAFETY: an owned, open socket descriptor, checked above; the Socket takes it over.
        Netlink::ready(unsafe { Socket::from_raw_fd(fd.into_raw_fd()) })
    }

    /// Binds and configures a fresh socket.
    fn ready(mut socket: Socket) -> Result<Netlink, NetlinkError> {
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

    /// Sends a request that changes something and waits for the kernel's ACK.
    pub(crate) fn ack(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<(), NetlinkError> {
        self.exchange(message, flags | NLM_F_ACK, op).map(drop)
    }

    /// Sends one prepared change and waits for its ACK.
    pub fn send_request(&mut self, request: Request) -> Result<(), NetlinkError> {
        self.send_all(vec![request])
    }

    /// Sends changes that belong together, pipelined and applied in order, and returns the
    /// first failure (the kernel still tries the ones after it).
    pub fn send_all(&mut self, requests: Vec<Request>) -> Result<(), NetlinkError> {
        self.batch(requests).into_iter().collect()
    }

    /// Dumps objects netlink-packet-route does not model: sends `message_type` with `payload`
    /// and returns the payloads of the answers of type `answer_type`.
    pub(crate) fn dump_raw(
        &mut self,
        message_type: u16,
        payload: Vec<u8>,
        answer_type: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<Vec<u8>>, NetlinkError> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        encode(
            Body::Raw {
                message_type,
                payload,
            },
            NLM_F_DUMP,
            seq,
            &mut out,
        );
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;
        let mut answers = Vec::new();
        loop {
            for raw in receive_raw(&self.socket, &mut self.buf)? {
                if raw.seq != seq {
                    continue;
                }
                match raw.message_type {
                    NLMSG_DONE => return Ok(answers),
                    NLMSG_ERROR => {
                        let e = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw.bytes)
                            .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                        if let NetlinkPayload::Error(e) = e.payload
                            && e.code.is_some()
                        {
                            return Err(kernel_error(op(), &e));
                        }
                        return Ok(answers);
                    }
                    t if t == answer_type => answers.push(raw.payload().to_vec()),
                    _ => {}
                }
            }
        }
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

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn exchange(
        &mut self,
        message: RouteNetlinkMessage,
        flags: u16,
        op: impl FnOnce() -> String,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        let seq = self.next_seq();
        let mut out = Vec::new();
        encode(Body::Route(message), flags, seq, &mut out);
        self.socket.send(&out, 0).map_err(NetlinkError::Socket)?;
        let mut answers = Vec::new();
        loop {
            for message in self.receive()? {
                if message.header.sequence_number != seq {
                    continue;
                }
                match message.payload {
                    NetlinkPayload::Done(_) => return Ok(answers),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(answers),
                            Some(_) => Err(kernel_error(op(), &e)),
                        };
                    }
                    NetlinkPayload::InnerMessage(inner) => answers.push(inner),
                    _ => {}
                }
            }
        }
    }

    /// Sends many changes, pipelined: up to [`BATCH`] requests per write, then their ACKs.
    /// Returns one result per request, in order; a failed request does not stop the others.
    pub fn batch(&mut self, requests: Vec<Request>) -> Vec<Result<(), NetlinkError>> {
        let mut results = Vec::with_capacity(requests.len());
        let mut requests = requests.into_iter().peekable();
        while requests.peek().is_some() {
            let chunk: Vec<Request> = requests.by_ref().take(BATCH).collect();
            let first = self.seq.wrapping_add(1);
            let mut out = Vec::new();
            let mut ops = Vec::with_capacity(chunk.len());
            for request in chunk {
                let seq = self.next_seq();
                encode(request.body, request.flags | NLM_F_ACK, seq, &mut out);
                ops.push(request.op);
            }
            let mut outcome: Vec<Option<Result<(), NetlinkError>>> =
                ops.iter().map(|_| None).collect();
            if let Err(e) = self.socket.send(&out, 0) {
                results.extend(ops.iter().map(|_| Err(NetlinkError::Socket(copy_io(&e)))));
                continue;
            }
            let mut pending = ops.len();
            while pending > 0 {
                let messages = match self.receive() {
                    Ok(m) => m,
                    Err(e) => {
                        // ENOBUFS and the like: whatever is unanswered counts as failed.
                        let source = match &e {
                            NetlinkError::Socket(s) => copy_io(s),
                            other => io::Error::other(other.to_string()),
                        };
                        for slot in outcome.iter_mut().filter(|o| o.is_none()) {
                            *slot = Some(Err(NetlinkError::Socket(copy_io(&source))));
                        }
                        break;
                    }
                };
                for message in messages {
                    let index = message.header.sequence_number.wrapping_sub(first) as usize;
                    let NetlinkPayload::Error(e) = message.payload else {
                        continue;
                    };
                    if let Some(slot) = outcome.get_mut(index).filter(|o| o.is_none()) {
                        *slot = Some(match e.code {
                            None => Ok(()),
                            Some(_) => Err(kernel_error(ops[index].clone(), &e)),
                        });
                        pending -= 1;
                    }
                }
            }
            results.extend(
                outcome
                    .into_iter()
                    .map(|o| o.expect("every request answered")),
            );
        }
        results
    }

    /// Reads one datagram and decodes the messages in it.
    fn receive(&mut self) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
        receive(&self.socket, &mut self.buf)
    }
}

/// Requests per write in [`Netlink::batch`]; their ACKs fit easily in the socket buffer.
pub const BATCH: usize = 256;

/// A request's body: a message netlink-packet-route models, or one it does not (nexthop
/// objects) as its type and raw payload.
#[derive(Debug, Clone)]
pub enum Body {
    Route(RouteNetlinkMessage),
    Raw { message_type: u16, payload: Vec<u8> },
}

/// One change for [`Netlink::batch`]: the message, its flags, and what it does (for errors).
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Body,
    pub flags: u16,
    pub op: String,
}

impl Request {
    pub fn route(message: RouteNetlinkMessage, flags: u16, op: String) -> Request {
        Request {
            body: Body::Route(message),
            flags,
            op,
        }
    }
}

/// The same error again, errno kept (io::Error is not Clone).
fn copy_io(e: &io::Error) -> io::Error {
    e.raw_os_error()
        .map(io::Error::from_raw_os_error)
        .unwrap_or_else(|| io::Error::new(e.kind(), e.to_string()))
}

fn encode(body: Body, flags: u16, seq: u32, out: &mut Vec<u8>) {
    match body {
        Body::Route(message) => {
            let mut header = NetlinkHeader::default();
            header.flags = NLM_F_REQUEST | flags;
            header.sequence_number = seq;
            let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
            packet.finalize();
            let start = out.len();
            out.resize(start + packet.buffer_len(), 0);
            packet.serialize(&mut out[start..]);
        }
        Body::Raw {
            message_type,
            payload,
        } => {
            let len = (NETLINK_HEADER_LEN + payload.len()) as u32;
            out.extend_from_slice(&len.to_ne_bytes());
            out.extend_from_slice(&message_type.to_ne_bytes());
            out.extend_from_slice(&(NLM_F_REQUEST | flags).to_ne_bytes());
            out.extend_from_slice(&seq.to_ne_bytes());
            out.extend_from_slice(&0u32.to_ne_bytes());
            out.extend_from_slice(&payload);
        }
    }
}

/// One message as received, undecoded.
pub(crate) struct Raw {
    pub message_type: u16,
    pub seq: u32,
    pub bytes: Vec<u8>,
}

impl Raw {
    pub fn payload(&self) -> &[u8] {
        &self.bytes[NETLINK_HEADER_LEN.min(self.bytes.len())..]
    }
}

/// Reads one datagram and splits it into messages.
fn receive_raw(socket: &Socket, buf: &mut Vec<u8>) -> Result<Vec<Raw>, NetlinkError> {
    buf.clear();
    buf.reserve(RECV_BUFFER);
    socket.recv(buf, 0).map_err(NetlinkError::Socket)?;
    let mut messages = Vec::new();
    let mut offset = 0;
    while offset + NETLINK_HEADER_LEN <= buf.len() {
        let bytes = &buf[offset..];
        let checked =
            NetlinkBuffer::new_checked(bytes).map_err(|e| NetlinkError::Decode(e.to_string()))?;
        let len = checked.length() as usize;
        messages.push(Raw {
            message_type: checked.message_type(),
            seq: checked.sequence_number(),
            bytes: bytes[..len.min(bytes.len())].to_vec(),
        });
        offset += align4(len.max(NETLINK_HEADER_LEN));
    }
    Ok(messages)
}

fn receive(
    socket: &Socket,
    buf: &mut Vec<u8>,
) -> Result<Vec<NetlinkMessage<RouteNetlinkMessage>>, NetlinkError> {
    // Kernel messages we do not model (e.g. nexthop objects) are skipped, not fatal.
    Ok(receive_raw(socket, buf)?
        .iter()
        .filter_map(|raw| NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw.bytes).ok())
        .collect())
}

/// A socket subscribed to rtnetlink multicast groups: the kernel's change events.
pub struct Monitor {
    socket: Socket,
    buf: Vec<u8>,
}

impl std::fmt::Debug for Monitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Monitor").finish()
    }
}

/// rtnetlink multicast groups (linux/rtnetlink.h).
pub mod groups {
    pub const LINK: u32 = 1;
    pub const NEIGH: u32 = 3;
    pub const IPV4_IFADDR: u32 = 5;
    pub const IPV4_ROUTE: u32 = 7;
    pub const IPV4_RULE: u32 = 8;
    pub const IPV6_IFADDR: u32 = 9;
    pub const IPV6_ROUTE: u32 = 11;
    pub const IPV6_RULE: u32 = 19;
    pub const NEXTHOP: u32 = 32;
}

impl Monitor {
    /// Subscribes, in the calling thread's namespace, to `groups`.
    pub fn new(groups: &[u32]) -> Result<Monitor, NetlinkError> {
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
        socket.bind_auto().map_err(NetlinkError::Socket)?;
        for group in groups {
            socket
                .add_membership(*group)
                .map_err(NetlinkError::Socket)?;
        }
        let _ = socket.set_rx_buf_sz(SOCKET_BUFFER);
        Ok(Monitor {
            socket,
            buf: Vec::with_capacity(RECV_BUFFER),
        })
    }

    /// Blocks for the next events. `ENOBUFS` means events were lost: resynchronise.
    pub fn events(&mut self) -> Result<Vec<Event>, NetlinkError> {
        Ok(receive_raw(&self.socket, &mut self.buf)?
            .into_iter()
            .filter_map(|raw| match crate::nexthop::Nexthop::event(&raw) {
                Some(nexthop) => Some(Event::Nexthop(nexthop)),
                None => match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&raw.bytes) {
                    Ok(NetlinkMessage {
                        payload: NetlinkPayload::InnerMessage(inner),
                        ..
                    }) => Event::from_message(inner),
                    _ => None,
                },
            })
            .collect())
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn kernel_error(op: String, e: &ErrorMessage) -> NetlinkError {
    NetlinkError::Kernel {
        op,
        source: e.to_io(),
        detail: ext_ack_message(&e.header),
    }
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
