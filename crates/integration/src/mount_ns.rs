//! A mount namespace that outlives the commands run in it: bound to a file in a test directory
//! and entered with nsenter, together with a network namespace and a UTS namespace of its own (a
//! node's processes see the node's name as the hostname, as on a machine of its own). Its
//! propagation is "slave": the host's mounts reach it, its own never reach the host, and they
//! vanish with it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::TestNetns;
use crate::{run, run_ok};

#[derive(Debug)]
pub struct MountNs {
    /// A private mount point holding the namespace's file.
    dir: PathBuf,
}

impl MountNs {
    /// Creates the namespace under `dir` with `hostname`, and runs `setup` (a shell script, e.g.
    /// bind mounts) in it.
    pub fn new(dir: &Path, hostname: &str, setup: &str) -> MountNs {
        let dir = dir.join("mntns");
        fs::create_dir_all(&dir).expect("mount namespace dir");
        let path = dir.to_str().expect("utf-8");
        run_ok("mount", &["--bind", path, path]);
        run_ok("mount", &["--make-private", path]);
        let ns = MountNs { dir };
        fs::write(ns.file(), b"").expect("mount namespace file");
        fs::write(ns.uts_file(), b"").expect("UTS namespace file");
        run_ok(
            "unshare",
            &[
                &format!("--mount={}", ns.file().display()),
                &format!("--uts={}", ns.uts_file().display()),
                "--propagation",
                "slave",
                "sh",
                "-ec",
                &format!("hostname {hostname}\n{setup}"),
            ],
        );
        ns
    }

    pub fn file(&self) -> PathBuf {
        self.dir.join("mnt")
    }

    fn uts_file(&self) -> PathBuf {
        self.dir.join("uts")
    }

    /// `program` to run inside this mount namespace and `net`.
    pub fn command(&self, net: &TestNetns, program: &str) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--mount={}", self.file().display()))
            .arg(format!("--uts={}", self.uts_file().display()))
            .arg(format!("--net={}", net.path()))
            .arg(program);
        c
    }

    /// The processes living in this namespace.
    pub fn processes(&self) -> Vec<i32> {
        let Ok(ours) = fs::metadata(self.file()).map(|m| std::os::unix::fs::MetadataExt::ino(&m))
        else {
            return Vec::new();
        };
        let Ok(entries) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| {
                fs::metadata(format!("/proc/{pid}/ns/mnt"))
                    .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == ours)
            })
            .collect()
    }
}

impl Drop for MountNs {
    fn drop(&mut self) {
        let _ = run("umount", &[self.file().to_str().unwrap_or_default()]);
        let _ = run("umount", &[self.uts_file().to_str().unwrap_or_default()]);
        let _ = run("umount", &[self.dir.to_str().unwrap_or_default()]);
    }
}
