//! Running real CNI clients (cnitool, podman) as a node's runtime would: inside the node's
//! network namespace, in a private mount namespace so nothing leaks onto the host's mounts.

use std::path::PathBuf;
use std::process::{Command, Output};

use crate::bin;
use crate::node::Node;

/// Where scripts/install-test-deps puts tools built from Debian's sources.
pub const TOOLS_DIR: &str = "/var/cache/strait/bin";

/// A tool built by scripts/install-test-deps; panics with instructions if it is missing.
pub fn tool(name: &str) -> PathBuf {
    let path = PathBuf::from(TOOLS_DIR).join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps",
        path.display()
    );
    path
}

/// CNI_PATH for runtimes: Strait's plugin first, then Debian's reference plugins.
pub fn cni_path() -> String {
    let ours = bin("strait");
    format!(
        "{}:/usr/lib/cni",
        ours.parent().expect("a directory").display()
    )
}

/// A command that runs `program` inside `node`'s network namespace and a private mount
/// namespace (`ip netns exec` would remount /sys, which breaks runc).
pub fn in_node(node: &Node, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "-m",
        "--propagation",
        "slave",
        "nsenter",
        &format!("--net={}", node.ns.path()),
        program,
    ])
    .args(args);
    c
}

pub fn output(mut c: Command) -> Output {
    c.output().expect("the command starts")
}

/// A PATH holding every command of /usr/sbin and /usr/bin except ip6tables: what a runtime sees
/// on a node without IPv6 netfilter. Created under `dir`.
pub fn ipv4_only_path(dir: &std::path::Path) -> String {
    let out = dir.join("ipv4-only-bin");
    std::fs::create_dir_all(&out).expect("dir");
    for source in ["/usr/sbin", "/usr/bin"] {
        for entry in std::fs::read_dir(source).expect("readable").flatten() {
            let name = entry.file_name();
            if !name.to_string_lossy().starts_with("ip6tables") {
                let _ = std::os::unix::fs::symlink(entry.path(), out.join(&name));
            }
        }
    }
    out.display().to_string()
}
