//! Kubernetes' own network conformance suite (1.20's `e2e.test`, built offline) against the
//! two-node cluster with Strait installed from deploy/. What runs and what is excluded, with why,
//! is docs/conformance.md, which this test reads. Long (about 25 minutes): run by name
//! (`-- --ignored --nocapture`); it prints the summary, and the JUnit files stay in
//! target/conformance/.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use strait_integration::ScratchDir;
use strait_integration::control_plane::kube_binary;
use strait_integration::fabric::PREFIX;
use strait_integration::images::{conformance_images, kubernetes_images};
use strait_integration::kube_cluster::KubeCluster;
use strait_integration::netns::TestNetns;

const MINUTE: Duration = Duration::from_secs(60);
/// Specs that do not run in parallel with others.
const SERIAL: &str = r"\[Serial\]";

/// The suite's focus and skip patterns, from docs/conformance.md.
struct Selection {
    focus: String,
    skip: Vec<String>,
}

impl Selection {
    fn read() -> Selection {
        let doc = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/conformance.md");
        let text = std::fs::read_to_string(&doc).expect("docs/conformance.md");
        let focus = text
            .lines()
            .find_map(|l| l.strip_prefix("Focus: `")?.strip_suffix('`'))
            .expect("a Focus line")
            .to_string();
        let excluded = text
            .split("## Excluded")
            .nth(1)
            .expect("an Excluded section");
        let skip: Vec<String> = excluded
            .lines()
            .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
            .map(|(pattern, _)| pattern.to_string())
            .collect();
        assert!(!skip.is_empty(), "the Excluded table has rows");
        Selection { focus, skip }
    }

    fn skip_with(&self, more: &[&str]) -> String {
        self.skip
            .iter()
            .map(String::as_str)
            .chain(more.iter().copied())
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// One spec's outcome in a JUnit file.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Passed,
    Failed(String),
    Skipped,
}

/// The test cases of every JUnit file in `dir`: (name, outcome).
fn junit(dir: &Path) -> Vec<(String, Outcome)> {
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(dir).expect("report dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut rest = text.as_str();
        while let Some(start) = rest.find("<testcase ") {
            rest = &rest[start..];
            let head_end = rest.find('>').expect("a complete tag");
            let head = &rest[..head_end];
            let name = head
                .split("name=\"")
                .nth(1)
                .and_then(|n| n.split('"').next())
                .map(unescape)
                .unwrap_or_default();
            let (body, next) = if head.ends_with('/') {
                ("", head_end + 1)
            } else {
                let end = rest.find("</testcase>").expect("a closing tag");
                (&rest[head_end + 1..end], end)
            };
            let outcome = if let Some(failure) = body.find("<failure") {
                let failure = &body[failure..];
                let end = failure.find("</failure>").map_or(failure.len(), |e| e + 10);
                Outcome::Failed(unescape(&failure[..end]).chars().take(2000).collect())
            } else if body.contains("<skipped") {
                Outcome::Skipped
            } else {
                Outcome::Passed
            };
            cases.push((name, outcome));
            rest = &rest[next..];
        }
    }
    cases
}

/// `s` as a regular expression that matches exactly it.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special.then_some('\\').into_iter().chain([c])
        })
        .collect()
}

fn unescape(s: &str) -> String {
    s.replace("&#xA;", "\n")
        .replace("&#x9;", "\t")
        .replace("&#34;", "\"")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The specs `focus` and `skip` select (a dry run: no cluster needed).
fn selected(focus: &str, skip: &str, dir: &Path) -> BTreeSet<String> {
    std::fs::create_dir_all(dir).expect("dry-run dir");
    let status = std::process::Command::new(kube_binary("e2e.test"))
        .args([
            "--ginkgo.dryRun",
            "--ginkgo.noColor",
            &format!("--ginkgo.focus={focus}"),
            &format!("--ginkgo.skip={skip}"),
            &format!("--report-dir={}", dir.display()),
            "--disable-log-dump",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("e2e.test runs");
    assert!(status.success(), "the dry run of e2e.test failed");
    junit(dir)
        .into_iter()
        .filter(|(_, o)| *o != Outcome::Skipped)
        .map(|(name, _)| name)
        .collect()
}

/// The suite's Networking specs first check that the runner reaches the internet (an HTTP GET of
/// `http://google.com`, "not really a test of Kubernetes", says the suite). Tests send nothing
/// off the machine: in the runner's namespace that name resolves (`ip netns exec` mounts
/// /etc/netns/NS/hosts as /etc/hosts) to a web server of ours on the fabric's own address.
struct InternetStandIn {
    hosts_dir: PathBuf,
    server: Child,
}

impl InternetStandIn {
    fn start(fabric: &TestNetns, address: &str, dir: &Path) -> InternetStandIn {
        let hosts_dir = Path::new("/etc/netns").join(&fabric.name);
        std::fs::create_dir_all(&hosts_dir).expect("/etc/netns/NS");
        std::fs::write(
            hosts_dir.join("hosts"),
            format!("127.0.0.1 localhost\n{address} google.com\n"),
        )
        .expect("hosts");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), "ok\n").expect("index.html");
        let server = fabric
            .command(
                "busybox",
                &[
                    "httpd",
                    "-f",
                    "-p",
                    &format!("{address}:80"),
                    "-h",
                    www.to_str().expect("utf-8"),
                ],
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox httpd starts");
        let stand_in = InternetStandIn { hosts_dir, server };
        strait_integration::wait_until(
            "the stand-in web server answers",
            Duration::from_secs(10),
            || {
                fabric
                    .exec("busybox", &["wget", "-q", "-O", "-", "http://google.com/"])
                    .status
                    .success()
            },
            || "busybox httpd does not answer in the fabric namespace".into(),
        );
        stand_in
    }
}

impl Drop for InternetStandIn {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
        // Only when empty: nothing else of the machine's is touched.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

#[test]
#[ignore = "Kubernetes' conformance suite takes about 25 minutes: run it by name"]
fn kubernetes_network_conformance() {
    strait_integration::require_root();
    let selection = Selection::read();
    // Kept after the run: the JUnit files, ginkgo's output, the summary.
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/conformance");
    let _ = std::fs::remove_dir_all(&reports);
    let everything = selected(&selection.focus, "^$", &reports.join("dry-all"));
    let chosen = selected(
        &selection.focus,
        &selection.skip_with(&[]),
        &reports.join("dry-chosen"),
    );
    let excluded: Vec<&String> = everything.difference(&chosen).collect();
    assert!(!chosen.is_empty(), "the focus selects specs");

    let work = ScratchDir::new("conformance");
    let mut images = kubernetes_images(work.path(), false);
    images.extend(conformance_images(&work.path().join("conformance")));
    let cluster = KubeCluster::start(2, &images, &[]);
    cluster.apply_strait();
    let names: Vec<String> = cluster.nodes.iter().map(|n| n.name.clone()).collect();
    cluster.wait_until(
        "both nodes Ready",
        3 * MINUTE,
        || {
            names
                .iter()
                .all(|n| cluster.node_ready(n).is_some_and(|(ready, _)| ready))
        },
        || cluster.kubectl(&["-n", "kube-system", "describe", "pods"]),
    );
    cluster.wait_strait_ready();
    let _internet =
        InternetStandIn::start(&cluster.fabric.ns, &format!("{PREFIX}.254"), work.path());

    let started = Instant::now();
    // The parallel pass, then the [Serial] specs one at a time (named one by one: the suite's
    // patterns cannot say "the focus and [Serial]").
    let serial: Vec<String> = chosen
        .iter()
        .filter(|n| n.contains("[Serial]"))
        .map(|n| regex_escape(n))
        .collect();
    let mut passes = vec![(
        "parallel",
        selection.skip_with(&[SERIAL]),
        selection.focus.clone(),
        4,
    )];
    if !serial.is_empty() {
        passes.push(("serial", "^$".to_string(), serial.join("|"), 1));
    }
    for (pass, skip, focus, nodes) in &passes {
        let dir = reports.join(pass);
        std::fs::create_dir_all(&dir).expect("report dir");
        let log = std::fs::File::create(reports.join(format!("{pass}.log"))).expect("log");
        let status = cluster
            .control_plane
            .command(&kube_binary("ginkgo"))
            .args([
                format!("--nodes={nodes}"),
                "--noColor".into(),
                format!("--focus={focus}"),
                format!("--skip={skip}"),
                kube_binary("e2e.test").display().to_string(),
                "--".into(),
                "--provider=skeleton".into(),
                // Specs that need two nodes skip themselves unless told how many there are.
                format!("--num-nodes={}", cluster.nodes.len()),
                format!(
                    "--kubeconfig={}",
                    cluster.control_plane.kubeconfig.display()
                ),
                format!("--kubectl-path={}", kube_binary("kubectl").display()),
                format!("--report-dir={}", dir.display()),
                "--disable-log-dump".into(),
                "--node-schedulable-timeout=5m".into(),
                "--system-pods-startup-timeout=5m".into(),
            ])
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("ginkgo runs");
        eprintln!(
            "[conformance] {pass} pass ended ({status}) after {:.0} s",
            started.elapsed().as_secs_f64()
        );
    }

    // Each spec's outcome from the pass meant to run it (the other lists it as skipped).
    let results: Vec<(String, Outcome)> = passes
        .iter()
        .flat_map(|(pass, ..)| {
            let serial_pass = *pass == "serial";
            junit(&reports.join(pass))
                .into_iter()
                .filter(move |(name, _)| name.contains("[Serial]") == serial_pass)
        })
        .filter(|(name, _)| chosen.contains(name))
        .collect();
    let ran: BTreeSet<&String> = results.iter().map(|(n, _)| n).collect();
    let missing: Vec<&String> = chosen.iter().filter(|n| !ran.contains(n)).collect();
    let with = |wanted: fn(&Outcome) -> bool| -> Vec<&(String, Outcome)> {
        results.iter().filter(|(_, o)| wanted(o)).collect()
    };
    let (passed, failed, skipped) = (
        with(|o| *o == Outcome::Passed),
        with(|o| matches!(o, Outcome::Failed(_))),
        with(|o| *o == Outcome::Skipped),
    );
    let mut summary = format!(
        "Kubernetes 1.20 network conformance: {} passed, {} failed, {} skipped by the suite \
         itself, {} excluded (docs/conformance.md), {} selected but not reported; {:.0} s\n",
        passed.len(),
        failed.len(),
        skipped.len(),
        excluded.len(),
        missing.len(),
        started.elapsed().as_secs_f64()
    );
    let mut section = |title: &str, names: Vec<&String>| {
        summary.push_str(&format!("{title} ({}):\n", names.len()));
        for name in names {
            summary.push_str(&format!("  {name}\n"));
        }
    };
    section("passed", passed.iter().map(|(n, _)| n).collect());
    section("FAILED", failed.iter().map(|(n, _)| n).collect());
    section(
        "skipped by the suite",
        skipped.iter().map(|(n, _)| n).collect(),
    );
    section("excluded", excluded);
    section("NOT REPORTED", missing.clone());
    std::fs::write(reports.join("summary.txt"), &summary).expect("summary");
    eprintln!("{summary}");
    for (name, outcome) in &failed {
        if let Outcome::Failed(why) = outcome {
            eprintln!("--- {name}\n{why}\n");
        }
    }
    assert!(
        failed.is_empty() && missing.is_empty(),
        "conformance failed; logs in {}",
        reports.display()
    );
}

#[test]
fn the_selection_reads_from_the_docs_and_junit_parses() {
    assert_eq!(regex_escape("a [b] (c)."), r"a \[b\] \(c\)\.");
    let selection = Selection::read();
    assert!(selection.focus.contains("Networking"));
    assert!(selection.skip.iter().any(|s| s == "SCTP"));
    let dir = std::env::temp_dir().join(format!("strait-junit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("junit_01.xml"),
        r#"<testsuite><testcase name="a &#34;b&#34;" time="1"></testcase>
<testcase name="c" time="0"><skipped></skipped></testcase>
<testcase name="d" time="2"><failure type="Failure">x &lt; y</failure></testcase></testsuite>"#,
    )
    .unwrap();
    let cases = junit(&dir);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(
        cases,
        vec![
            ("a \"b\"".to_string(), Outcome::Passed),
            ("c".to_string(), Outcome::Skipped),
            (
                "d".to_string(),
                Outcome::Failed("<failure type=\"Failure\">x < y</failure>".into())
            ),
        ]
    );
}
