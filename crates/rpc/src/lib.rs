//! The agent's socket protocol. One request per connection: the client writes a one-byte header
//! (carrying the container's network namespace as an SCM_RIGHTS descriptor when there is one),
//! then one JSON request, and half-closes; the agent writes one JSON response and closes. Passing
//! the namespace itself, not its path, means the agent never has to see the runtime's mount
//! namespace. The plugin and straitctl use the blocking [`call`]; the agent reads the header with
//! [`recv_header`] and decodes with [`Request::decode`].

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::net::{IpAddr, Shutdown};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use strait_cni::{CniError, CniRequest};

/// Where straitd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/strait/strait.sock";

/// A request larger than this is refused unread: no CNI configuration comes near it.
pub const MAX_MESSAGE_BYTES: u64 = 4 << 20;

/// The header byte when a network-namespace descriptor rides along with it.
const WITH_NETNS: u8 = b'F';
/// The header byte when a network namespace and an rtnetlink socket opened inside it do.
const WITH_NETNS_AND_SOCKET: u8 = b'S';
/// The header byte when nothing does.
const WITHOUT_NETNS: u8 = b'N';

/// The descriptors that ride along with a request: the container's network namespace, and an
/// rtnetlink socket opened inside it (the agent changes the namespace through it, never entering
/// it; a socket without a namespace is not sent).
#[derive(Debug, Clone, Copy, Default)]
pub struct Passed<'a> {
    pub netns: Option<BorrowedFd<'a>>,
    pub socket: Option<BorrowedFd<'a>>,
}

/// The descriptors as received.
#[derive(Debug, Default)]
pub struct Received {
    pub netns: Option<OwnedFd>,
    pub socket: Option<OwnedFd>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Request {
    /// A CNI invocation forwarded by the plugin.
    Cni(Box<CniRequest>),
    /// The node's state, for `straitctl status`.
    Status,
    /// The attachments on this node, for `straitctl pods`.
    Pods,
    /// The other nodes, for `straitctl peers`.
    Peers,
    /// The routes to other nodes' blocks, for `straitctl routes`.
    Routes,
    /// The node leaves the cluster: it gives up its blocks and record, removes its overlay and
    /// stops. Refused while pods are attached.
    Leave,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// The JSON to print on stdout (ADD's result), or nothing (DEL, CHECK, STATUS, GC).
    CniOk(Option<serde_json::Value>),
    CniError(CniError),
    Status(Box<NodeStatus>),
    Pods(Vec<PodInfo>),
    Peers(Vec<PeerInfo>),
    Routes(Vec<RouteInfo>),
    /// The node has left the cluster; the agent stops.
    Left,
    /// The request was understood and refused, with the reason.
    Refused(String),
    /// The request could not be read.
    BadRequest(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub ready: bool,
    pub version: String,
    pub store: StoreInfo,
    /// The node's underlay address (IPv4, or IPv6 on a node without IPv4) and device.
    pub address: IpAddr,
    /// The underlay's IPv6 address, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<IpAddr>,
    pub underlay: String,
    pub peers: usize,
    pub networks: Vec<NetworkStatus>,
    pub reconcile: Option<ReconcileStatus>,
    /// Host veths carrying addresses that no readable attachment record accounts for: the
    /// addresses are held (never handed out) until the runtime deletes the pod.
    #[serde(default)]
    pub quarantined: Vec<QuarantinedInfo>,
    /// Addresses the node holds but could not take back at start; while any is listed the node
    /// is not ready and takes no new pod.
    #[serde(default)]
    pub conflicts: Vec<ConflictInfo>,
}

/// Where the cluster state lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "lowercase")]
pub enum StoreInfo {
    Embedded { path: PathBuf },
    Etcd { endpoints: Vec<String> },
    Kubernetes,
}

impl std::fmt::Display for StoreInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreInfo::Embedded { path } => write!(f, "embedded ({})", path.display()),
            StoreInfo::Etcd { endpoints } => write!(f, "etcd ({})", endpoints.join(",")),
            StoreInfo::Kubernetes => f.write_str("kubernetes"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuarantinedInfo {
    pub host_veth: String,
    pub network: Option<String>,
    pub addresses: Vec<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConflictInfo {
    pub host_veth: String,
    pub address: IpAddr,
    pub holder: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub last_duration_ms: f64,
    pub last_operations: usize,
    pub last_errors: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub name: String,
    pub address: IpAddr,
    /// Its IPv6 underlay address, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address6: Option<IpAddr>,
    /// Its VTEP per network with VXLAN pools.
    pub vteps: Vec<VtepInfo>,
    pub blocks: Vec<IpNet>,
    /// Its blocks this node cannot route, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreachable: Vec<UnreachableInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreachableInfo {
    pub network: String,
    pub block: IpNet,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VtepInfo {
    pub network: String,
    pub ip: IpAddr,
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub dst: IpNet,
    /// The routing table holding it.
    pub table: u32,
    pub via: IpAddr,
    pub device: String,
    /// The node holding the block.
    pub node: String,
    /// Present in the kernel right now.
    pub programmed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
    pub vni: u32,
    /// This node's VTEP address, when the network uses VXLAN.
    pub vtep: Option<IpAddr>,
    pub pools: Vec<IpNet>,
    /// Blocks this node holds.
    pub blocks: Vec<IpNet>,
    pub allocated: u64,
    pub capacity: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PodInfo {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
    pub netns: Option<String>,
    /// `namespace/name` when the runtime is Kubernetes.
    pub pod: Option<String>,
    pub addresses: Vec<IpNet>,
    pub host_veth: String,
    /// Deleted by the runtime; its data plane is being removed, then its addresses are freed.
    #[serde(default)]
    pub releasing: bool,
}

impl RouteInfo {
    /// The table as `ip route` names it.
    pub fn table_name(&self) -> String {
        match self.table {
            254 => "main".to_string(),
            n => n.to_string(),
        }
    }
}

impl Request {
    pub fn decode(bytes: &[u8]) -> Result<Request, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("malformed request: {e}"))
    }
}

impl Response {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("responses always serialize")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Nothing listens on the socket: the agent is not running (or not yet).
    #[error("the strait agent is not running: nothing listens on {socket}: {source}")]
    AgentDown { socket: PathBuf, source: io::Error },
    #[error("talking to the strait agent on {socket} failed: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("the strait agent on {socket} answered something unreadable: {reason}")]
    Protocol { socket: PathBuf, reason: String },
    /// The request is larger than the agent reads; it was not sent.
    #[error(
        "the request is {bytes} bytes, more than the {MAX_MESSAGE_BYTES} the strait agent reads"
    )]
    TooLarge { bytes: usize },
}

fn send_header(stream: &UnixStream, passed: Passed<'_>) -> io::Result<()> {
    let (byte, fds): (u8, Vec<RawFd>) = match (passed.netns, passed.socket) {
        (None, _) => (WITHOUT_NETNS, vec![]),
        (Some(ns), None) => (WITH_NETNS, vec![ns.as_raw_fd()]),
        (Some(ns), Some(socket)) => (
            WITH_NETNS_AND_SOCKET,
            vec![ns.as_raw_fd(), socket.as_raw_fd()],
        ),
    };
    let rights = [ControlMessage::ScmRights(&fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(&[byte])],
        cmsgs,
        MsgFlags::empty(),
        None,
    )?;
    Ok(())
}

/// Reads a connection's header from a socket `fd` (blocking or not: `WouldBlock` is passed on)
/// and returns the descriptors it carried.
pub fn recv_header(fd: RawFd) -> io::Result<Received> {
    let mut byte = [0u8; 1];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let mut iov = [IoSliceMut::new(&mut byte)];
    let msg = recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut received = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            // SAFETY: SCM_RIGHTS hands us new descriptors that nothing else owns.
            received.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let bad = |what: &str| Err(io::Error::new(io::ErrorKind::InvalidData, what.to_string()));
    let mut fds = received.into_iter();
    match (msg.bytes, byte[0], fds.len()) {
        (0, _, _) => bad("the connection closed before its header"),
        (_, WITHOUT_NETNS, 0) => Ok(Received::default()),
        (_, WITH_NETNS, 1) => Ok(Received {
            netns: fds.next(),
            socket: None,
        }),
        (_, WITH_NETNS_AND_SOCKET, 2) => Ok(Received {
            netns: fds.next(),
            socket: fds.next(),
        }),
        _ => bad("malformed header"),
    }
}

/// Sends one request (with the descriptors `passed`) and waits for its response, for at most
/// `timeout` in all.
pub fn call(
    socket: &Path,
    request: &Request,
    passed: Passed<'_>,
    timeout: Duration,
) -> Result<Response, CallError> {
    let io_err = |source| CallError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let body = serde_json::to_vec(request).expect("requests always serialize");
    if body.len() as u64 > MAX_MESSAGE_BYTES {
        return Err(CallError::TooLarge { bytes: body.len() });
    }
    let mut stream = UnixStream::connect(socket).map_err(|source| {
        if matches!(
            source.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
        ) {
            CallError::AgentDown {
                socket: socket.to_path_buf(),
                source,
            }
        } else {
            io_err(source)
        }
    })?;
    let deadline = Instant::now() + timeout;
    // Each read or write may wait only for what is left of the whole call's time.
    let left = |stream: &UnixStream| -> io::Result<()> {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer in time"))?;
        stream.set_read_timeout(Some(left))?;
        stream.set_write_timeout(Some(left))
    };
    left(&stream).map_err(io_err)?;
    send_header(&stream, passed).map_err(io_err)?;
    stream.write_all(&body).map_err(io_err)?;
    stream.shutdown(Shutdown::Write).map_err(io_err)?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        left(&stream).map_err(io_err)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) if reply.len() + n > MAX_MESSAGE_BYTES as usize => {
                return Err(CallError::Protocol {
                    socket: socket.to_path_buf(),
                    reason: format!("the answer is larger than {MAX_MESSAGE_BYTES} bytes"),
                });
            }
            Ok(n) => reply.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        }
    }
    serde_json::from_slice(&reply).map_err(|e| CallError::Protocol {
        socket: socket.to_path_buf(),
        reason: if reply.is_empty() {
            "the connection closed without an answer".to_string()
        } else {
            e.to_string()
        },
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn answers_carry_values_not_text() {
        let routes = Response::Routes(vec![RouteInfo {
            dst: "10.244.0.64/26".parse().unwrap(),
            table: 254,
            via: "10.244.0.64".parse().unwrap(),
            device: "strait.4096".into(),
            node: "b".into(),
            programmed: true,
        }]);
        let json: serde_json::Value = serde_json::from_slice(&routes.encode()).unwrap();
        assert_eq!(json["body"][0]["table"], 254);
        assert_eq!(json["body"][0]["via"], "10.244.0.64");
        let back: Response = serde_json::from_value(json).unwrap();
        assert_eq!(back, routes);
        let Response::Routes(r) = back else {
            unreachable!("decoded above")
        };
        assert_eq!(r[0].table_name(), "main");

        let store = StoreInfo::Etcd {
            endpoints: vec!["http://10.0.0.1:2379".into()],
        };
        let json = serde_json::to_value(&store).unwrap();
        assert_eq!(json["backend"], "etcd");
        assert_eq!(store.to_string(), "etcd (http://10.0.0.1:2379)");
        assert_eq!(serde_json::from_value::<StoreInfo>(json).unwrap(), store);
    }

    #[test]
    fn a_request_and_its_response_cross_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("strait-rpc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            for expect in [0, 1, 2] {
                let (mut conn, _) = listener.accept().unwrap();
                let got = recv_header(conn.as_raw_fd()).unwrap();
                let count = usize::from(got.netns.is_some()) + usize::from(got.socket.is_some());
                assert_eq!(count, expect);
                let mut buf = Vec::new();
                conn.read_to_end(&mut buf).unwrap();
                assert_eq!(Request::decode(&buf).unwrap(), Request::Status);
                conn.write_all(&Response::Pods(vec![]).encode()).unwrap();
            }
        });
        let timeout = Duration::from_secs(5);
        let reply = call(&path, &Request::Status, Passed::default(), timeout).unwrap();
        assert_eq!(reply, Response::Pods(vec![]));
        let file = std::fs::File::open("/proc/self/status").unwrap();
        let netns = Passed {
            netns: Some(file.as_fd()),
            socket: None,
        };
        let reply = call(&path, &Request::Status, netns, timeout);
        assert_eq!(reply.unwrap(), Response::Pods(vec![]));
        let both = Passed {
            socket: Some(file.as_fd()),
            ..netns
        };
        let reply = call(&path, &Request::Status, both, timeout);
        assert_eq!(reply.unwrap(), Response::Pods(vec![]));
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_header_without_its_descriptor_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        (&a).write_all(&[WITH_NETNS]).unwrap();
        assert!(recv_header(b.as_raw_fd()).is_err());
        (&a).write_all(&[WITH_NETNS_AND_SOCKET]).unwrap();
        assert!(recv_header(b.as_raw_fd()).is_err());
        (&a).write_all(b"X").unwrap();
        assert!(recv_header(b.as_raw_fd()).is_err());
        drop(a);
        assert!(recv_header(b.as_raw_fd()).is_err());
    }

    #[test]
    fn a_missing_socket_means_the_agent_is_down() {
        let err = call(
            Path::new("/nonexistent/strait.sock"),
            &Request::Status,
            Passed::default(),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, CallError::AgentDown { .. }), "{err}");
    }
}
