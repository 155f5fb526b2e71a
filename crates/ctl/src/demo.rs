//! `straitctl demo up|down`: a Strait pod network on this one machine. Each node is a network
//! namespace running its own straitd (the same binary and configuration a real machine would
//! use), all sharing one embedded store; pods are namespaces attached through the real `strait`
//! plugin. `up` prints where each pod lives and a connectivity matrix it measured with ping;
//! `down` removes every trace. The state of a running demo is kept in `demo.json`.

use std::fs;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

const DIR: &str = "/var/lib/strait-demo";
const PREFIX: &str = "strait-demo";
const POOL: &str = "10.244.0.0/16";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Demo {
    nodes: Vec<DemoNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoNode {
    name: String,
    netns: String,
    socket: PathBuf,
    agent_pid: Option<u32>,
    pods: Vec<DemoPod>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoPod {
    name: String,
    netns: String,
    container_id: String,
    address: Option<String>,
}

fn state_path() -> PathBuf {
    Path::new(DIR).join("demo.json")
}

fn save(demo: &Demo) -> anyhow::Result<()> {
    fs::write(state_path(), serde_json::to_vec_pretty(demo)?).context("saving the demo state")
}

/// A binary installed next to straitctl.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} is missing: build the workspace (cargo build --release)",
            path.display()
        );
    }
    Ok(path)
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn require_root_and_tools() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces: run it as root");
    }
    for tool in ["ip", "nft", "ping"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_err() {
            bail!("{tool} is missing: scripts/install-deps demo installs it");
        }
    }
    Ok(())
}

pub fn up(nodes: usize, pods_per_node: usize) -> anyhow::Result<()> {
    require_root_and_tools()?;
    if state_path().exists() {
        bail!("a demo is already up: run `straitctl demo down` first");
    }
    fs::create_dir_all(DIR)?;
    let mut demo = Demo::default();
    save(&demo)?;
    let result = build(&mut demo, nodes, pods_per_node);
    save(&demo)?;
    result?;
    print_layout(&demo);
    print_matrix(&demo);
    println!(
        "\nInspect a node:  straitctl --socket {} pods",
        demo.nodes[0].socket.display()
    );
    println!("Remove it all:   straitctl demo down");
    Ok(())
}

fn build(demo: &mut Demo, nodes: usize, pods_per_node: usize) -> anyhow::Result<()> {
    let straitd = sibling("straitd")?;
    let plugin = sibling("strait")?;
    for n in 1..=nodes {
        let node = start_node(&straitd, n)?;
        demo.nodes.push(node);
        save(demo)?;
    }
    for node in &mut demo.nodes {
        for p in 1..=pods_per_node {
            let name = format!("{}-pod{p}", node.name);
            let netns = format!("{PREFIX}-{name}");
            ip(&["netns", "add", &netns])?;
            ip(&["-n", &netns, "link", "set", "lo", "up"])?;
            let mut pod = DemoPod {
                container_id: format!("demo-{name}"),
                name,
                netns,
                address: None,
            };
            pod.address = Some(cni(&plugin, "ADD", node, &pod)?);
            node.pods.push(pod);
        }
    }
    Ok(())
}

fn start_node(straitd: &Path, n: usize) -> anyhow::Result<DemoNode> {
    let name = format!("node{n}");
    let netns = format!("{PREFIX}-{name}");
    let dir = Path::new(DIR).join(&name);
    fs::create_dir_all(&dir)?;
    ip(&["netns", "add", &netns])?;
    let mut node = DemoNode {
        name: name.clone(),
        netns: netns.clone(),
        socket: dir.join("strait.sock"),
        agent_pid: None,
        pods: Vec::new(),
    };
    ip(&["-n", &netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        &netns,
        "addr",
        "add",
        &format!("172.31.255.{n}/32"),
        "dev",
        "lo",
    ])?;
    let config = dir.join("straitd.toml");
    fs::write(
        &config,
        format!(
            "node_name = \"{name}\"\nstate_dir = \"{state}\"\nsocket = \"{socket}\"\n\
             [store]\nbackend = \"embedded\"\npath = \"{DIR}/store\"\n\
             [cni]\nconf_dir = \"{netd}\"\n\
             [[network]]\nname = \"strait\"\n[[network.pool]]\ncidr = \"{POOL}\"\n",
            state = dir.join("state").display(),
            socket = node.socket.display(),
            netd = dir.join("net.d").display(),
        ),
    )?;
    let log = fs::File::create(dir.join("straitd.log"))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &netns])
        .arg(straitd)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; the agent leaves our session so it outlives us.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let child = command.spawn().context("starting straitd")?;
    node.agent_pid = Some(child.id());
    let deadline = Instant::now() + Duration::from_secs(15);
    while std::os::unix::net::UnixStream::connect(&node.socket).is_err() {
        if Instant::now() > deadline || !Path::new(&format!("/proc/{}", child.id())).exists() {
            let log = fs::read_to_string(dir.join("straitd.log")).unwrap_or_default();
            bail!("straitd on {name} did not become ready:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(node)
}

/// Runs the plugin as a runtime would; returns the pod's address for ADD.
fn cni(plugin: &Path, command: &str, node: &DemoNode, pod: &DemoPod) -> anyhow::Result<String> {
    let conf = serde_json::json!({
        "cniVersion": "1.0.0", "name": "strait", "type": "strait", "socket": node.socket,
    });
    let mut child = Command::new(plugin)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", &pod.container_id)
        .env("CNI_NETNS", format!("/var/run/netns/{}", pod.netns))
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", plugin.parent().unwrap_or(Path::new("/")))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(conf.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        bail!("CNI {command} of {} failed: {text}", pod.name);
    }
    let result: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Ok(result["ips"][0]["address"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string())
}

fn print_layout(demo: &Demo) {
    println!(
        "Strait demo: {} node(s), embedded store in {DIR}/store\n",
        demo.nodes.len()
    );
    println!("{:<14}{:<8}{:<16}NETNS", "POD", "NODE", "ADDRESS");
    for node in &demo.nodes {
        for pod in &node.pods {
            println!(
                "{:<14}{:<8}{:<16}{}",
                pod.name,
                node.name,
                pod.address.as_deref().unwrap_or("-"),
                pod.netns
            );
        }
    }
}

/// Pings every pod from every other pod and prints the round-trip times.
fn print_matrix(demo: &Demo) {
    let pods: Vec<&DemoPod> = demo.nodes.iter().flat_map(|n| &n.pods).collect();
    println!("\nConnectivity (ping round trip, measured now; rows ping columns):\n");
    print!("{:<14}", "");
    for p in &pods {
        print!("{:>14}", p.name);
    }
    println!();
    let (mut ok, mut total) = (0, 0);
    for from in &pods {
        print!("{:<14}", from.name);
        for to in &pods {
            if from.netns == to.netns {
                print!("{:>14}", "-");
                continue;
            }
            total += 1;
            let cell = match rtt(&from.netns, to.address.as_deref().unwrap_or_default()) {
                Some(ms) => {
                    ok += 1;
                    format!("{ms:.3} ms")
                }
                None => "FAIL".to_string(),
            };
            print!("{cell:>14}");
        }
        println!();
    }
    println!("\n{ok}/{total} pod pairs reach each other.");
}

fn rtt(netns: &str, address: &str) -> Option<f64> {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, "ping", "-c1", "-W2", "-n", address])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("time=")? + "time=".len();
    text[at..].split_whitespace().next()?.parse().ok()
}

pub fn down() -> anyhow::Result<()> {
    require_root_and_tools()?;
    let demo: Demo = match fs::read(state_path()) {
        Ok(bytes) => serde_json::from_slice(&bytes).context("reading the demo state")?,
        Err(_) => bail!("no demo is up (nothing in {DIR})"),
    };
    let plugin = sibling("strait")?;
    let mut problems = Vec::new();
    for node in &demo.nodes {
        for pod in &node.pods {
            if let Err(e) = cni(&plugin, "DEL", node, pod) {
                problems.push(e.to_string());
            }
            let _ = ip(&["netns", "del", &pod.netns]);
        }
        if let Some(pid) = node.agent_pid {
            stop_agent(pid);
        }
        let _ = ip(&["netns", "del", &node.netns]);
    }
    fs::remove_dir_all(DIR).context("removing the demo directory")?;
    for p in &problems {
        eprintln!("warning: {p}");
    }
    println!("The demo is down: its namespaces, agents and {DIR} are gone.");
    Ok(())
}

/// Stops a demo agent by PID, only if that PID is still a straitd.
fn stop_agent(pid: u32) {
    let is_ours = || {
        fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains("straitd"))
            .unwrap_or(false)
    };
    if !is_ours() {
        return;
    }
    // SAFETY: signalling a PID we started and just checked is a straitd.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    while is_ours() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if is_ours() {
        // SAFETY: as above.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}
