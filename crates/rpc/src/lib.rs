//! The agent's socket protocol. One request per connection: the client writes one JSON request
//! and half-closes; the agent writes one JSON response and closes. The plugin and straitctl use
//! the blocking [`call`]; the agent decodes with [`Request::decode`].

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_cni::{CniError, CniRequest};

/// Where straitd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/strait/strait.sock";

/// A request larger than this is refused unread: no CNI configuration comes near it.
pub const MAX_MESSAGE_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Request {
    /// A CNI invocation forwarded by the plugin.
    Cni(Box<CniRequest>),
    /// The node's state, for `straitctl status`.
    Status,
    /// The attachments on this node, for `straitctl pods`.
    Pods,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// The JSON to print on stdout (ADD's result), or nothing (DEL, CHECK, STATUS, GC).
    CniOk(Option<serde_json::Value>),
    CniError(CniError),
    Status(NodeStatus),
    Pods(Vec<PodInfo>),
    /// The request could not be read.
    BadRequest(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node: String,
    pub ready: bool,
    pub version: String,
    pub store: String,
    pub networks: Vec<NetworkStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkStatus {
    pub name: String,
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
}

/// Sends one request and waits for its response, for at most `timeout` per read or write.
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Response, CallError> {
    let io_err = |source| CallError::Io {
        socket: socket.to_path_buf(),
        source,
    };
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
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let body = serde_json::to_vec(request).expect("requests always serialize");
    stream.write_all(&body).map_err(io_err)?;
    stream.shutdown(Shutdown::Write).map_err(io_err)?;
    let mut reply = Vec::new();
    stream
        .take(MAX_MESSAGE_BYTES)
        .read_to_end(&mut reply)
        .map_err(io_err)?;
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
    use std::os::unix::net::UnixListener;

    use super::*;

    #[test]
    fn a_request_and_its_response_cross_a_real_socket() {
        let dir = std::env::temp_dir().join(format!("strait-rpc-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            conn.read_to_end(&mut buf).unwrap();
            assert_eq!(Request::decode(&buf).unwrap(), Request::Status);
            conn.write_all(&Response::Pods(vec![]).encode()).unwrap();
        });
        let reply = call(&path, &Request::Status, Duration::from_secs(5)).unwrap();
        assert_eq!(reply, Response::Pods(vec![]));
        server.join().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_missing_socket_means_the_agent_is_down() {
        let err = call(
            Path::new("/nonexistent/strait.sock"),
            &Request::Status,
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert!(matches!(err, CallError::AgentDown { .. }), "{err}");
    }
}
