//! Podman with its CNI backend as a node's container runtime. All of its commands run in one
//! persistent mount namespace, where its netns files (over /run/netns) and libcni's cache (over
//! /var/lib/cni) live and die with the test; storage is a vfs store in the test directory, and
//! the image is a busybox-static root filesystem imported locally.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::images::busybox_rootfs_tar;
use crate::mount_ns::MountNs;
use crate::node::Node;
use crate::runtime::cni_path;

#[derive(Debug)]
pub struct Podman<'n> {
    node: &'n Node,
    dir: PathBuf,
    mount_ns: MountNs,
}

pub const IMAGE: &str = "localhost/strait-busybox";

impl<'n> Podman<'n> {
    pub fn new(node: &'n Node) -> Podman<'n> {
        let dir = node.dir.join("podman");
        let (cache, netns) = (dir.join("cni-cache"), dir.join("netns"));
        fs::create_dir_all(&cache).expect("cache dir");
        fs::create_dir_all(&netns).expect("netns dir");
        let setup = format!(
            "mkdir -p /var/lib/cni && mount --bind {} /var/lib/cni && mount --bind {} /run/netns",
            cache.display(),
            netns.display()
        );
        let mount_ns = MountNs::new(&dir, &node.ns.name, &setup);
        let podman = Podman {
            node,
            dir,
            mount_ns,
        };
        podman.write_config();
        let tar = busybox_rootfs_tar(
            &podman.dir,
            &["sh", "sleep", "ping", "ip", "cat", "hostname", "nc"],
        );
        podman.ok(&["import", tar.to_str().expect("utf-8"), IMAGE]);
        podman
    }

    fn write_config(&self) {
        let d = self.dir.display();
        let plugin_dirs: Vec<String> = cni_path().split(':').map(|p| format!("{p:?}")).collect();
        let conf = format!(
            "[containers]\n\
             default_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
             [network]\n\
             network_backend = \"cni\"\n\
             cni_plugin_dirs = [{dirs}]\n\
             network_config_dir = \"{netd}\"\n\
             [engine]\n\
             cgroup_manager = \"cgroupfs\"\n\
             runtime = \"runc\"\n\
             events_logger = \"file\"\n\
             events_logfile_path = \"{d}/events.log\"\n\
             tmp_dir = \"{d}/tmp\"\n",
            dirs = plugin_dirs.join(", "),
            netd = self.node.conf_dir().display(),
        );
        fs::write(self.dir.join("containers.conf"), conf).expect("containers.conf");
    }

    /// `podman ARGS` as this node's runtime.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.display().to_string();
        let mut c = self.mount_ns.command(&self.node.ns, "podman");
        c.args([
            "--root",
            &format!("{d}/storage"),
            "--runroot",
            &format!("{d}/runroot"),
        ])
        .args(["--storage-driver", "vfs"])
        .args(args)
        .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("podman starts")
    }

    /// Runs podman and returns its stdout; panics with its stderr on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "podman {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
    }
}
