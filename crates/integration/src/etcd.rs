//! A real etcd (Debian's etcd-server) for tests: one member on ports of its own, on loopback or on
//! an address inside a test namespace (where nodes reach it over the fabric), data in a test
//! directory; it can be stopped and started again on the same data, as an outage would.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::TestNetns;
use crate::unique;

#[derive(Debug)]
pub struct Etcd {
    pub endpoint: String,
    peer: String,
    dir: PathBuf,
    /// The namespace it runs in; the test's own when absent.
    netns: Option<String>,
    child: Option<Child>,
}

/// A port nothing listens on now (on loopback; any namespace's ports are free in a new one).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

impl Etcd {
    /// An etcd on this namespace's loopback.
    pub fn start() -> Etcd {
        Etcd::launch(None, "127.0.0.1")
    }

    /// An etcd inside `ns`, listening on `address` (which `ns` must hold).
    pub fn start_in(ns: &TestNetns, address: &str) -> Etcd {
        Etcd::launch(Some(ns.name.clone()), address)
    }

    fn launch(netns: Option<String>, address: &str) -> Etcd {
        let mut etcd = Etcd {
            endpoint: format!("http://{address}:{}", free_port()),
            peer: format!("http://{address}:{}", free_port()),
            dir: std::env::temp_dir().join(unique("etcd")),
            netns,
            child: None,
        };
        etcd.resume();
        etcd
    }

    /// A command run where etcd runs.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, program]);
                c
            }
            None => Command::new(program),
        }
    }

    /// Starts the member (again) and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd already running");
        let log = std::fs::File::create(self.dir.with_extension("log")).expect("etcd log");
        let child = self
            .command("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &self.endpoint,
                "--advertise-client-urls",
                &self.endpoint,
            ])
            .args([
                "--listen-peer-urls",
                &self.peer,
                "--initial-advertise-peer-urls",
                &self.peer,
            ])
            .args(["--initial-cluster", &format!("default={}", self.peer)])
            // Room for one transaction that adds thousands of peers (the benchmarks do).
            .args(["--max-txn-ops", "20000", "--max-request-bytes", "33554432"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("etcd is installed (scripts/install-deps test)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let health = format!("{}/health", self.endpoint);
        loop {
            let out = self
                .command("curl")
                .args(["-sf", "-m", "1", &health])
                .output();
            if out.is_ok_and(|o| {
                o.status.success() && String::from_utf8_lossy(&o.stdout).contains("true")
            }) {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the member, keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}
