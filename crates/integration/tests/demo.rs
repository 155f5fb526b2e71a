//! The README's first command: `straitctl demo up` builds a working three-node pod network on
//! this machine, in both modes, and measures it; `straitctl demo down` leaves the machine as it was.

use std::process::Command;

use strait_integration::{bin, require_root, run_ok};

fn machine() -> (String, Vec<String>) {
    let netns = run_ok("ip", &["netns", "list"]);
    let mut names: Vec<String> = netns
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect();
    names.retain(|n| n.starts_with("strait-demo"));
    let links = run_ok("ip", &["-br", "link"]);
    (links, names)
}

#[test]
fn demo_up_measures_a_working_network_and_down_removes_every_trace() {
    require_root();
    assert!(
        !std::path::Path::new("/var/lib/strait-demo").exists(),
        "a demo is already running on this machine: run `straitctl demo down` first"
    );
    let before = machine();
    for mode in ["vxlan", "routed"] {
        let up = Command::new(bin("straitctl"))
            .args(["demo", "up", "--mode", mode])
            .output()
            .unwrap();
        let printed = String::from_utf8_lossy(&up.stdout).into_owned();
        let down = Command::new(bin("straitctl"))
            .args(["demo", "down"])
            .output()
            .unwrap();
        assert!(
            up.status.success(),
            "{printed}{}",
            String::from_utf8_lossy(&up.stderr)
        );
        assert!(
            printed.contains("30/30 pod pairs reach each other"),
            "{mode}: {printed}"
        );
        assert!(printed.contains("node3-pod2"), "{printed}");
        assert!(
            down.status.success(),
            "{}",
            String::from_utf8_lossy(&down.stderr)
        );
        assert_eq!(machine(), before, "{mode}: the machine is as it was");
    }
    assert!(!std::path::Path::new("/var/lib/strait-demo").exists());
    let agents = run_ok("ps", &["-eo", "args"]);
    assert!(
        !agents
            .lines()
            .any(|l| l.contains("strait-demo") && l.contains("straitd")),
        "{agents}"
    );
}
