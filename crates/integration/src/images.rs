//! Container images for tests, made offline: a busybox-static root filesystem (as a tar to import,
//! or as an image archive for containerd), and Strait's own image built by scripts/build-image.

use std::fs;
use std::path::{Path, PathBuf};

use crate::run_ok;

/// A root filesystem of busybox-static with `applets`, tarred as `dir/rootfs.tar`.
pub fn busybox_rootfs_tar(dir: &Path, applets: &[&str]) -> PathBuf {
    let root = dir.join("rootfs");
    for sub in ["bin", "etc", "tmp"] {
        fs::create_dir_all(root.join(sub)).expect("rootfs");
    }
    fs::copy("/bin/busybox", root.join("bin/busybox"))
        .expect("busybox-static is installed (scripts/install-deps test)");
    for applet in applets {
        let _ = std::os::unix::fs::symlink("busybox", root.join("bin").join(applet));
    }
    fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").expect("passwd");
    let tar = dir.join("rootfs.tar");
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

/// What the Kubernetes tests and benchmarks import into each node: Strait's image (as deploy/
/// runs it, from the release or the debug build) and a busybox image that serves as pod sandbox
/// and workload. Built into `dir`; returns the two image archives.
pub fn kubernetes_images(dir: &Path, release: bool) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("image dir");
    let strait = dir.join("strait.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/build-image");
    let mut args = vec!["--output", strait.to_str().expect("utf-8")];
    if !release {
        args.push("--debug");
    }
    run_ok(script.to_str().expect("utf-8"), &args);
    let applets = [
        "sh", "sleep", "ping", "ip", "cat", "hostname", "nc", "httpd", "wget", "echo", "ls",
        "mkdir", "timeout",
    ];
    let rootfs = busybox_rootfs_tar(dir, &applets);
    let busybox = dir.join("busybox.tar");
    // A throwaway image store: nothing goes into the machine's own.
    let (store, run) = (dir.join("podman"), dir.join("podman-run"));
    let podman = |args: &[&str]| {
        let mut all = vec![
            "--root",
            store.to_str().expect("utf-8"),
            "--runroot",
            run.to_str().expect("utf-8"),
            "--storage-driver",
            "vfs",
        ];
        all.extend_from_slice(args);
        run_ok("podman", &all)
    };
    podman(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/bin/sleep", "100000000"]"#,
        rootfs.to_str().expect("utf-8"),
        crate::kube_node::PAUSE_IMAGE,
    ]);
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        busybox.to_str().expect("utf-8"),
        crate::kube_node::PAUSE_IMAGE,
    ]);
    vec![strait, busybox]
}
