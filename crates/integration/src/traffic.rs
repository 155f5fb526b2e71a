//! Real traffic between namespaces: ping (optionally with Don't Fragment at a given size) and TCP
//! through socat, where the server answers with the peer address it saw.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::netns::TestNetns;

/// One echo request from `from` to `to`.
pub fn ping(from: &TestNetns, to: &str) -> bool {
    from.exec("ping", &["-c1", "-W2", "-n", "-q", to])
        .status
        .success()
}

/// One echo request of `payload` bytes that must not be fragmented.
pub fn ping_df(from: &TestNetns, to: &str, payload: u32) -> bool {
    from.exec(
        "ping",
        &[
            "-c1",
            "-W2",
            "-n",
            "-q",
            "-M",
            "do",
            "-s",
            &payload.to_string(),
            to,
        ],
    )
    .status
    .success()
}

/// A TCP server in a namespace that answers every connection with the address it came from.
#[derive(Debug)]
pub struct PeerEcho {
    child: Child,
}

impl PeerEcho {
    /// Listens on IPv4.
    pub fn start(ns: &TestNetns, port: u16) -> PeerEcho {
        PeerEcho::listen(ns, port, "TCP-LISTEN")
    }

    /// Listens on IPv6.
    pub fn start6(ns: &TestNetns, port: u16) -> PeerEcho {
        PeerEcho::listen(ns, port, "TCP6-LISTEN")
    }

    fn listen(ns: &TestNetns, port: u16, kind: &str) -> PeerEcho {
        let child = ns
            .command(
                "socat",
                &[
                    &format!("{kind}:{port},reuseaddr,fork"),
                    "SYSTEM:echo $SOCAT_PEERADDR",
                ],
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat is installed (scripts/test installs it)");
        let server = PeerEcho { child };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !listening(ns, port) {
            assert!(Instant::now() < deadline, "socat did not listen on {port}");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

fn listening(ns: &TestNetns, port: u16) -> bool {
    let out = ns.exec("ss", &["-Hltn", &format!("sport = :{port}")]);
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

impl Drop for PeerEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects from `from` to `addr:port` (either family) and returns what the server said (its
/// view of our address, an IPv6 one in its usual short form), or `None` if the connection
/// failed.
pub fn tcp_peer(from: &TestNetns, addr: &str, port: u16) -> Option<String> {
    let target = match addr.contains(':') {
        true => format!("TCP6:[{addr}]:{port},connect-timeout=3"),
        false => format!("TCP:{addr}:{port},connect-timeout=3"),
    };
    let out = from.exec("socat", &["-T3", "-", &target]);
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // socat spells IPv6 peers out in full, in brackets.
    let text = match text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        Some(v6) => v6
            .parse::<std::net::Ipv6Addr>()
            .map_or(text.clone(), |a| a.to_string()),
        None => text,
    };
    (out.status.success() && !text.is_empty()).then_some(text)
}
