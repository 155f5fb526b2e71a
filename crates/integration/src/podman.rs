//! Podman with its CNI backend as a node's container runtime. All of its commands run in one
//! persistent mount namespace (bound to a file in the test directory), where its netns files
//! (over /run/netns) and libcni's cache (over /var/lib/cni) live and die with the test; storage is a vfs store in
//! the test directory, and the image is a busybox-static root filesystem imported locally.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::node::Node;
use crate::runtime::cni_path;
use crate::{run, run_ok};

#[derive(Debug)]
pub struct Podman<'n> {
    node: &'n Node,
    dir: PathBuf,
}

pub const IMAGE: &str = "localhost/strait-busybox";

impl<'n> Podman<'n> {
    pub fn new(node: &'n Node) -> Podman<'n> {
        let dir = node.dir.join("podman");
        let ns_dir = dir.join("ns");
        fs::create_dir_all(&ns_dir).expect("podman dir");
        let podman = Podman { node, dir };
        podman.write_config();
        let ns = ns_dir.to_str().expect("utf-8");
        run_ok("mount", &["--bind", ns, ns]);
        run_ok("mount", &["--make-private", ns]);
        fs::write(podman.mount_ns(), b"").expect("mount ns file");
        let (cache, netns) = (podman.dir.join("cni-cache"), podman.dir.join("netns"));
        fs::create_dir_all(&cache).expect("cache dir");
        fs::create_dir_all(&netns).expect("netns dir");
        let setup = format!(
            "mkdir -p /var/lib/cni && mount --bind {} /var/lib/cni && mount --bind {} /run/netns",
            cache.display(),
            netns.display()
        );
        run_ok(
            "unshare",
            &[
                &format!("--mount={}", podman.mount_ns().display()),
                "--propagation",
                "slave",
                "sh",
                "-c",
                &setup,
            ],
        );
        let tar = podman.rootfs_tar();
        podman.ok(&["import", tar.to_str().expect("utf-8"), IMAGE]);
        podman
    }

    fn mount_ns(&self) -> PathBuf {
        self.dir.join("ns/mnt")
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

    /// A root filesystem of busybox-static and its applets, as a tar to import.
    fn rootfs_tar(&self) -> PathBuf {
        let root = self.dir.join("rootfs");
        fs::create_dir_all(root.join("bin")).expect("rootfs");
        fs::create_dir_all(root.join("etc")).expect("rootfs");
        fs::create_dir_all(root.join("tmp")).expect("rootfs");
        fs::copy("/bin/busybox", root.join("bin/busybox"))
            .expect("busybox-static is installed (scripts/install-test-deps)");
        for applet in ["sh", "sleep", "ping", "ip", "cat", "hostname", "nc"] {
            let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
        }
        fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
        let tar = self.dir.join("rootfs.tar");
        run_ok(
            "tar",
            &[
                "-C",
                root.to_str().expect("utf-8"),
                "-cf",
                tar.to_str().expect("utf-8"),
                ".",
            ],
        );
        tar
    }

    /// `podman ARGS` as this node's runtime.
    pub fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.display().to_string();
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.mount_ns().display()))
            .arg(format!("--net={}", self.node.ns.path()))
            .args([
                "podman",
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
        let ns = self.dir.join("ns");
        let _ = run("umount", &[self.mount_ns().to_str().unwrap_or_default()]);
        let _ = run("umount", &[ns.to_str().unwrap_or_default()]);
    }
}
