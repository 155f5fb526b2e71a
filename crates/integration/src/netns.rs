//! A network namespace owned by a test: created with a unique name, deleted on drop.

use std::process::{Command, Output};

use crate::{run, run_ok, unique};

#[derive(Debug)]
pub struct TestNetns {
    pub name: String,
}

impl TestNetns {
    pub fn new(tag: &str) -> TestNetns {
        crate::require_root();
        let name = unique(tag);
        run_ok("ip", &["netns", "add", &name]);
        let ns = TestNetns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn path(&self) -> String {
        format!("/var/run/netns/{}", self.name)
    }

    /// `ip -n NAME ARGS...`, which must succeed.
    pub fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run_ok("ip", &all)
    }

    /// A command inside the namespace.
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).args(args);
        c
    }

    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {program} in {}: {e}", self.name))
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.name]);
    }
}

/// Joins two namespaces with a veth pair and addresses them `a_addr` / `b_addr` (CIDR form).
pub fn link(a: &TestNetns, a_if: &str, a_addr: &str, b: &TestNetns, b_if: &str, b_addr: &str) {
    let temp = format!("t{}", &b.name[b.name.len().saturating_sub(12)..]);
    run_ok(
        "ip",
        &[
            "-n", &a.name, "link", "add", a_if, "type", "veth", "peer", "name", &temp,
        ],
    );
    run_ok(
        "ip",
        &["-n", &a.name, "link", "set", &temp, "netns", &b.name],
    );
    b.ip(&["link", "set", &temp, "name", b_if]);
    a.ip(&["addr", "add", a_addr, "dev", a_if]);
    b.ip(&["addr", "add", b_addr, "dev", b_if]);
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}
