//! Fixtures for tests against the real kernel: uniquely named network namespaces, "nodes" that
//! run a real `straitd` inside their own namespace, the real `strait` plugin invoked exactly as a
//! runtime does, and observation from outside with `ip -j`, `nft`, `ping` and `socat`.
//! Every fixture removes what it created when dropped, also when the test panics.

pub mod cluster;
pub mod cluster_dns;
pub mod cni;
pub mod control_plane;
pub mod dns_wire;
pub mod etcd;
pub mod fabric;
pub mod images;
pub mod inspect;
pub mod kube_cluster;
pub mod kube_node;
pub mod machine;
pub mod mount_ns;
pub mod netns;
pub mod node;
pub mod podman;
pub mod runtime;
pub mod traffic;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Panics with instructions unless running as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!("the integration tests create network namespaces and need root: run scripts/test");
    }
}

/// A workspace binary built next to the running test or benchmark
/// (target/<profile>/<name>, tests running from target/<profile>/deps).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>");
    let dir = if dir.ends_with("deps") {
        dir.parent().expect("target/<profile>")
    } else {
        dir
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run `cargo build --workspace` first (scripts/test does)",
        path.display()
    );
    path
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses: `stt<pid>x<n><tag>`.
pub fn unique(tag: &str) -> String {
    format!(
        "stt{}x{}{tag}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh directory under the temp dir, named by [`unique`], removed when dropped, so a
/// failing test or benchmark leaves nothing behind either.
#[derive(Debug)]
pub struct ScratchDir(PathBuf);

impl ScratchDir {
    pub fn new(tag: &str) -> ScratchDir {
        let dir = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&dir).expect("scratch directory");
        ScratchDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `check` (every 10 ms) until it holds and returns how long that took; panics, saying
/// what was awaited and what `detail` tells then, after `limit`.
pub fn wait_until(
    what: &str,
    limit: std::time::Duration,
    mut check: impl FnMut() -> bool,
    detail: impl Fn() -> String,
) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}\n{}",
            detail()
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    started.elapsed()
}

/// Runs a command and returns its output; panics if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// Runs a command that must succeed and returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
