//! Kubernetes' own network conformance suite (1.20's `e2e.test`, built offline) against the
//! two-node cluster with Strait installed from deploy/. What runs and what is excluded, with why,
//! is docs/conformance.md, which this test reads. Long (about 30 minutes): run by name
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
use strait_integration::machine::MachineState;
use strait_integration::netns::TestNetns;

const MINUTE: Duration = Duration::from_secs(60);
/// Specs that do not run in parallel with others.
const SERIAL: &str = r"\[Serial\]";

/// What docs/conformance.md says: the suite's focus and skip patterns, the specs expected to
/// skip themselves, and the lists of specs that run and that are excluded.
struct Selection {
    focus: String,
    skip: Vec<String>,
    self_skips: BTreeSet<String>,
    runs: BTreeSet<String>,
    excluded: BTreeSet<String>,
}

/// The text of the section of `doc` whose heading starts with `heading`.
fn section<'a>(doc: &'a str, heading: &str) -> &'a str {
    let start = doc
        .find(&format!("\n## {heading}"))
        .unwrap_or_else(|| panic!("docs/conformance.md has a section \"{heading}\""));
    let body = &doc[start + 1..];
    let body = &body[body.find('\n').unwrap_or(body.len())..];
    &body[..body.find("\n## ").unwrap_or(body.len())]
}

/// The first backquoted cell of each table row of `text`.
fn table_keys(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("| `")?.split_once("` |"))
        .map(|(key, _)| key.to_string())
        .collect()
}

/// The backquoted items of each list line (`- `name``) of `text`.
fn list_items(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("- `")?.strip_suffix('`'))
        .map(str::to_string)
        .collect()
}

/// `names` as docs/conformance.md lists them.
fn as_list(names: &BTreeSet<String>) -> String {
    names.iter().map(|n| format!("- `{n}`\n")).collect()
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
        let skip = table_keys(section(&text, "Excluded, and why"));
        assert!(!skip.is_empty(), "the Excluded table has rows");
        Selection {
            focus,
            skip,
            self_skips: table_keys(section(&text, "Skipped by the suite itself"))
                .into_iter()
                .collect(),
            runs: list_items(section(&text, "The specs that run")),
            excluded: list_items(section(&text, "The specs excluded")),
        }
    }

    /// The specs the focus selects and, of those, the ones the skip patterns exclude (dry
    /// runs into `dir`).
    fn specs(&self, dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
        let everything = selected(&self.focus, "^$", &dir.join("dry-all"));
        let chosen = selected(&self.focus, &self.skip_with(&[]), &dir.join("dry-chosen"));
        let excluded = everything.difference(&chosen).cloned().collect();
        (chosen, excluded)
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
    let out = std::process::Command::new(kube_binary("e2e.test"))
        .args([
            "--ginkgo.dryRun",
            "--ginkgo.noColor",
            &format!("--ginkgo.focus={focus}"),
            &format!("--ginkgo.skip={skip}"),
            &format!("--report-dir={}", dir.display()),
            "--disable-log-dump",
        ])
        .output()
        .expect("e2e.test runs");
    assert!(
        out.status.success(),
        "the dry run of e2e.test failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    junit(dir)
        .into_iter()
        .filter(|(_, o)| *o != Outcome::Skipped)
        .map(|(name, _)| name)
        .collect()
}

/// The internet, as far as the suite looks for it, inside the fabric's namespace: its Networking
/// specs first check that the runner reaches `http://google.com` ("not really a test of
/// Kubernetes", says the suite). In the runner's namespace that name resolves (`ip netns exec`
/// mounts /etc/netns/NS/hosts as /etc/hosts) to a web server on the fabric's address: nothing
/// leaves the machine.
struct InternetStandIn {
    hosts_dir: PathBuf,
    server: Option<Child>,
}

impl InternetStandIn {
    fn start(fabric: &TestNetns, address: &str, dir: &Path) -> InternetStandIn {
        let hosts_dir = Path::new("/etc/netns").join(&fabric.name);
        // Made first: whatever follows fails, dropping it undoes what was done.
        let mut stand_in = InternetStandIn {
            hosts_dir: hosts_dir.clone(),
            server: None,
        };
        std::fs::create_dir_all(&hosts_dir).expect("/etc/netns/NS");
        std::fs::write(
            hosts_dir.join("hosts"),
            format!("127.0.0.1 localhost\n{address} google.com\n"),
        )
        .expect("hosts");
        let www = dir.join("www");
        std::fs::create_dir_all(&www).expect("www");
        std::fs::write(www.join("index.html"), "ok\n").expect("index.html");
        let web = [
            "httpd",
            "-f",
            "-p",
            &format!("{address}:80"),
            "-h",
            www.to_str().expect("utf-8"),
        ];
        let server = fabric
            .command("busybox", &web)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("busybox httpd does not start: {e}"));
        stand_in.server = Some(server);
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
        if let Some(server) = &mut self.server {
            let _ = server.kill();
            let _ = server.wait();
        }
        let _ = std::fs::remove_dir_all(&self.hosts_dir);
        // Only when empty: nothing else of the machine's is touched.
        let _ = std::fs::remove_dir("/etc/netns");
    }
}

#[test]
#[ignore = "Kubernetes' conformance suite takes about 30 minutes: run it by name"]
fn kubernetes_network_conformance() {
    strait_integration::require_root();
    let mut selection = Selection::read();
    // To run some of the specs by hand: a narrower focus (the skip table still applies).
    if let Ok(focus) = std::env::var("STRAIT_CONFORMANCE_FOCUS") {
        selection.focus = focus;
    }
    // Kept after the run: the JUnit files, ginkgo's output, the summary.
    let reports = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/conformance");
    let _ = std::fs::remove_dir_all(&reports);
    let (chosen, excluded) = selection.specs(&reports);
    assert!(!chosen.is_empty(), "the focus selects specs");

    let before = MachineState::capture();
    let (results, took, failed_passes) = run_on_a_cluster(&selection, &chosen, &reports);
    let after = MachineState::capture();
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
        took.as_secs_f64()
    );
    let mut add = |title: &str, names: Vec<&String>| {
        summary.push_str(&format!("{title} ({}):\n", names.len()));
        for name in names {
            summary.push_str(&format!("  {name}\n"));
        }
    };
    add("passed", passed.iter().map(|(n, _)| n).collect());
    add("FAILED", failed.iter().map(|(n, _)| n).collect());
    add(
        "skipped by the suite",
        skipped.iter().map(|(n, _)| n).collect(),
    );
    add("excluded", excluded.iter().collect());
    add("NOT REPORTED", missing.clone());
    std::fs::write(reports.join("summary.txt"), &summary).expect("summary");
    eprintln!("{summary}");
    for (name, outcome) in &failed {
        if let Outcome::Failed(why) = outcome {
            eprintln!("--- {name}\n{why}\n");
        }
    }
    assert!(
        failed.is_empty() && missing.is_empty() && failed_passes.is_empty(),
        "conformance failed ({failed_passes:?}); logs in {}",
        reports.display()
    );
    // A spec that skips itself must be one the docs expect to (with why): a skip cannot hide
    // a spec that should have run.
    let unexpected: Vec<&String> = skipped
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !selection.self_skips.contains(*n))
        .collect();
    assert!(
        unexpected.is_empty(),
        "specs skipped themselves that docs/conformance.md does not expect to: {unexpected:#?}"
    );
    assert_eq!(after, before, "the machine is as it was before");
}

/// Starts the two-node cluster with Strait from deploy/, runs the `chosen` specs (the parallel
/// pass, then the [Serial] ones), reporting into `reports`, and tears the cluster down; returns
/// each spec's outcome, how long the passes took, and the passes ginkgo failed.
fn run_on_a_cluster(
    selection: &Selection,
    chosen: &BTreeSet<String>,
    reports: &Path,
) -> (Vec<(String, Outcome)>, Duration, Vec<String>) {
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
        || cluster.agent_pods_detail(),
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
    // Each pass ends after its time limit (ginkgo's own default is a day), well within CI's.
    let mut passes = vec![(
        "parallel",
        selection.skip_with(&[SERIAL]),
        selection.focus.clone(),
        4,
        "45m",
    )];
    if !serial.is_empty() {
        passes.push(("serial", "^$".to_string(), serial.join("|"), 1, "15m"));
    }
    let mut failed_passes = Vec::new();
    for (pass, skip, focus, nodes, limit) in &passes {
        let dir = reports.join(pass);
        std::fs::create_dir_all(&dir).expect("report dir");
        let log = std::fs::File::create(reports.join(format!("{pass}.log"))).expect("log");
        let status = cluster
            .control_plane
            .command(&kube_binary("ginkgo"))
            .args([
                format!("--nodes={nodes}"),
                "--noColor".into(),
                format!("--timeout={limit}"),
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
        if !status.success() {
            failed_passes.push(format!("the {pass} pass: ginkgo {status} (see {pass}.log)"));
        }
    }

    // Each spec's outcome from the pass meant to run it (the other lists it as skipped), and
    // any failure of the suite's own setup or teardown (BeforeSuite, AfterSuite).
    let results = passes
        .iter()
        .flat_map(|(pass, ..)| {
            let serial_pass = *pass == "serial";
            junit(&reports.join(pass))
                .into_iter()
                .filter(move |(name, outcome)| {
                    if chosen.contains(name) {
                        name.contains("[Serial]") == serial_pass
                    } else {
                        matches!(outcome, Outcome::Failed(_))
                    }
                })
        })
        .collect();
    (results, started.elapsed(), failed_passes)
}

#[test]
fn the_docs_list_exactly_the_specs_the_suite_selects() {
    let selection = Selection::read();
    let dir = ScratchDir::new("conformance-lists");
    let (chosen, excluded) = selection.specs(dir.path());
    assert!(
        chosen == selection.runs,
        "docs/conformance.md's \"The specs that run\" should read:\n{}",
        as_list(&chosen)
    );
    assert!(
        excluded == selection.excluded,
        "docs/conformance.md's \"The specs excluded\" should read:\n{}",
        as_list(&excluded)
    );
    assert!(
        selection.self_skips.is_subset(&chosen),
        "every spec expected to skip itself is one that runs"
    );
}

#[test]
fn the_selection_reads_from_the_docs_and_junit_parses() {
    assert_eq!(regex_escape("a [b] (c)."), r"a \[b\] \(c\)\.");
    let selection = Selection::read();
    assert!(selection.focus.contains("Networking"));
    assert!(selection.skip.iter().any(|s| s == "SCTP"));
    let scratch = ScratchDir::new("junit");
    let dir = scratch.path();
    std::fs::write(
        dir.join("junit_01.xml"),
        r#"<testsuite><testcase name="a &#34;b&#34;" time="1"></testcase>
<testcase name="c" time="0"><skipped></skipped></testcase>
<testcase name="d" time="2"><failure type="Failure">x &lt; y</failure></testcase></testsuite>"#,
    )
    .unwrap();
    let cases = junit(dir);
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
