//! Container images for tests, made offline: a busybox-static root filesystem (as a tar to import,
//! or as an image archive for containerd), Strait's own image built by scripts/build-image, and
//! the images of Kubernetes' conformance suite under the names it expects.

use std::fs;
use std::path::{Path, PathBuf};

use crate::run_ok;

/// A root filesystem of busybox-static with `applets`, tarred as `dir/rootfs.tar`.
pub fn busybox_rootfs_tar(dir: &Path, applets: &[&str]) -> PathBuf {
    busybox_rootfs(dir, applets);
    tar_rootfs(dir)
}

/// A root filesystem of busybox-static with `applets` in `dir/rootfs`; returns that directory.
fn busybox_rootfs(dir: &Path, applets: &[&str]) -> PathBuf {
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
    root
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
    let entrypoint = r#"ENTRYPOINT ["/bin/sleep", "100000000"]"#;
    image_archive(
        dir,
        &rootfs,
        &[entrypoint],
        crate::kube_node::PAUSE_IMAGE,
        &busybox,
    );
    vec![strait, busybox]
}

/// The images Kubernetes' own conformance suite runs, under the exact names it asks for, made
/// offline: agnhost (built from the Kubernetes source by scripts/build-kubernetes) with busybox's
/// tools and [`DEBIAN_TOOLS`] beside it; the DNS specs' dnsutils image (the same tools); the
/// kube-proxy specs' debian-iptables (the same, and conntrack) and regression-issue-74839 (built
/// from the same source); busybox; and a pause image. Built into `dir`; returns the image
/// archives.
pub fn conformance_images(dir: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(dir).expect("image dir");
    let applets = busybox_applets();
    let applets: Vec<&str> = applets.iter().map(String::as_str).collect();
    let busybox_dir = dir.join("busybox-all");
    fs::create_dir_all(&busybox_dir).expect("image dir");
    let busybox_tar = busybox_rootfs_tar(&busybox_dir, &applets);
    let busybox = dir.join("busybox-1.29.tar");
    image_archive(
        dir,
        &busybox_tar,
        &[r#"CMD ["sh"]"#],
        BUSYBOX_IMAGE,
        &busybox,
    );
    let pause = dir.join("pause-3.2.tar");
    let sleep = r#"ENTRYPOINT ["/bin/sleep", "100000000"]"#;
    image_archive(dir, &busybox_tar, &[sleep], CONFORMANCE_PAUSE_IMAGE, &pause);

    let agnhost = tools_image(dir, &applets, AGNHOST_IMAGE, "agnhost-2.21.tar", |root| {
        fs::copy(
            crate::control_plane::kube_binary("agnhost"),
            root.join("agnhost"),
        )
        .expect("copy agnhost");
        let _ = std::os::unix::fs::symlink("agnhost", root.join("agnhost-2"));
        // The TLS pair agnhost's porter serves with, as the real image carries it.
        let source =
            Path::new(crate::control_plane::KUBE_SOURCE).join("test/images/agnhost/porter");
        for file in ["localhost.crt", "localhost.key"] {
            fs::copy(source.join(file), root.join(file)).expect("agnhost's porter certificate");
        }
        // Where the suite's throughput spec runs it.
        fs::create_dir_all(root.join("usr/local/bin")).expect("usr/local/bin");
        let _ = std::os::unix::fs::symlink("/bin/iperf", root.join("usr/local/bin/iperf"));
        fs::create_dir_all(root.join("uploads")).expect("uploads");
        vec![r#"ENTRYPOINT ["/agnhost"]"#, r#"CMD ["pause"]"#]
    });
    // The DNS specs' second querier: the same tools.
    let dnsutils = tools_image(
        dir,
        &applets,
        DNSUTILS_IMAGE,
        "jessie-dnsutils-1.0.tar",
        |_| vec![r#"CMD ["sh"]"#],
    );
    // The kube-proxy specs' privileged reader of the node's conntrack table.
    let iptables = tools_image(
        dir,
        &applets,
        IPTABLES_IMAGE,
        "debian-iptables-buster-v1.3.0.tar",
        |root| {
            copy_with_libraries(Path::new("/usr/sbin/conntrack"), root, "conntrack");
            vec![r#"CMD ["sh"]"#]
        },
    );
    // The server of the connection-reset regression spec, built from the Kubernetes source. The
    // tree holds its version 1.2, which learns the pod's address from $POD_IP (set by later
    // suites' pod specs); version 1.0, which 1.20's spec runs, found it itself: so does the
    // entrypoint.
    let regression = tools_image(
        dir,
        &applets,
        REGRESSION_IMAGE,
        "regression-issue-74839-1.0.tar",
        |root| {
            fs::copy(
                crate::control_plane::kube_binary("regression-issue-74839"),
                root.join("regression-issue-74839"),
            )
            .expect("copy regression-issue-74839");
            vec![
                r#"ENTRYPOINT ["/bin/sh", "-c", "POD_IP=$(hostname -i) exec /regression-issue-74839"]"#,
            ]
        },
    );
    vec![agnhost, busybox, pause, dnsutils, iptables, regression]
}

/// Image `name`, saved as `dir/ARCHIVE`, from busybox's `applets` and [`DEBIAN_TOOLS`]: `finish`
/// adds what is particular to it to the root filesystem and returns its Dockerfile changes.
fn tools_image(
    dir: &Path,
    applets: &[&str],
    name: &str,
    archive: &str,
    finish: impl FnOnce(&Path) -> Vec<&'static str>,
) -> PathBuf {
    let image_dir = dir.join(archive.trim_end_matches(".tar"));
    let root = busybox_with_debian_tools(&image_dir, applets);
    let changes = finish(&root);
    let rootfs = tar_rootfs(&image_dir);
    let out = dir.join(archive);
    image_archive(dir, &rootfs, &changes, name, &out);
    out
}

/// Debian's programs the suite's commands need, where busybox's lack the options they use (its
/// wget crashes on `-T`, its nc has no `-u`) or are missing (dig), or where it would resolve
/// names without the system's resolver (static busybox's hostname and getent), iperf 2 and bash.
const DEBIAN_TOOLS: [(&str, &str); 10] = [
    // dash as /bin/sh: busybox's shell runs its own applets before anything on PATH.
    ("/bin/dash", "sh"),
    ("/usr/bin/curl", "curl"),
    ("/bin/nc.openbsd", "nc"),
    ("/usr/bin/ss", "ss"),
    ("/usr/bin/wget", "wget"),
    ("/usr/bin/dig", "dig"),
    ("/usr/bin/getent", "getent"),
    ("/bin/hostname", "hostname"),
    ("/usr/bin/iperf", "iperf"),
    ("/bin/bash", "bash"),
];

/// A root filesystem in `dir/rootfs` of busybox's `applets` with [`DEBIAN_TOOLS`] in place of
/// busybox's, each with its libraries, and a resolver configuration that reads /etc/hosts
/// before DNS (as the kubelet's /etc/hosts and resolv.conf expect).
fn busybox_with_debian_tools(dir: &Path, applets: &[&str]) -> PathBuf {
    fs::create_dir_all(dir).expect("image dir");
    let debian: Vec<&str> = DEBIAN_TOOLS.iter().map(|(_, name)| *name).collect();
    let without: Vec<&str> = applets
        .iter()
        .copied()
        .filter(|a| !debian.contains(a))
        .collect();
    let root = busybox_rootfs(dir, &without);
    for (program, name) in DEBIAN_TOOLS {
        copy_with_libraries(Path::new(program), &root, name);
    }
    fs::write(root.join("etc/nsswitch.conf"), "hosts: files dns\n").expect("nsswitch.conf");
    root
}

/// The names Kubernetes 1.20's conformance suite runs its pods with.
pub const AGNHOST_IMAGE: &str = "k8s.gcr.io/e2e-test-images/agnhost:2.21";
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:1.29";
pub const CONFORMANCE_PAUSE_IMAGE: &str = "k8s.gcr.io/pause:3.2";
pub const DNSUTILS_IMAGE: &str = "gcr.io/kubernetes-e2e-test-images/jessie-dnsutils:1.0";
pub const IPTABLES_IMAGE: &str = "k8s.gcr.io/build-image/debian-iptables:buster-v1.3.0";
pub const REGRESSION_IMAGE: &str =
    "gcr.io/kubernetes-e2e-test-images/regression-issue-74839-amd64:1.0";

/// Every applet busybox-static has.
fn busybox_applets() -> Vec<String> {
    run_ok("/bin/busybox", &["--list"])
        .lines()
        .map(str::to_string)
        .filter(|a| !a.is_empty() && a != "busybox")
        .collect()
}

/// Copies `program` into `root` as `/bin/NAME`, with every shared library it loads at the path
/// it loads it from.
fn copy_with_libraries(program: &Path, root: &Path, name: &str) {
    let into = |path: &Path| root.join(path.strip_prefix("/").expect("absolute path"));
    let target = root.join("bin").join(name);
    let _ = fs::remove_file(&target);
    fs::copy(program, &target)
        .unwrap_or_else(|e| panic!("{} (scripts/install-deps test): {e}", program.display()));
    for line in run_ok("ldd", &[program.to_str().expect("utf-8")]).lines() {
        // "libx.so.1 => /lib/.../libx.so.1 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        let Some(path) = path.filter(|p| p.starts_with('/')) else {
            continue;
        };
        let target = into(Path::new(path));
        fs::create_dir_all(target.parent().expect("a directory")).expect("library dir");
        fs::copy(path, &target).unwrap_or_else(|e| panic!("copy {path}: {e}"));
    }
}

/// Tars `dir/rootfs` as `dir/rootfs.tar`.
fn tar_rootfs(dir: &Path) -> PathBuf {
    let tar = dir.join("rootfs.tar");
    run_ok(
        "tar",
        &[
            "-C",
            dir.join("rootfs").to_str().expect("utf-8"),
            "-cf",
            tar.to_str().expect("utf-8"),
            ".",
        ],
    );
    tar
}

/// Imports the root filesystem `rootfs` as image `name` with `changes` (Dockerfile lines) and
/// saves it as a docker archive at `out`, in a throwaway image store under `dir`.
fn image_archive(dir: &Path, rootfs: &Path, changes: &[&str], name: &str, out: &Path) {
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
    let mut import = vec!["import"];
    for change in changes {
        import.extend(["--change", change]);
    }
    import.extend([rootfs.to_str().expect("utf-8"), name]);
    podman(&import);
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        out.to_str().expect("utf-8"),
        name,
    ]);
}
