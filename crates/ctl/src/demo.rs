//! `straitctl demo up|down`: a multi-node Strait pod network on this one machine. A "fabric"
//! network namespace holds a bridge that plays the switch; each node is a network namespace
//! plugged into it, running its own straitd (the same binary and configuration a real machine
//! would use), all sharing one embedded store; pods are namespaces attached through the real
//! `strait` plugin. `up` prints where each pod lives and a connectivity matrix it measured with
//! ping; `down` removes every trace. Everything is recorded in `demo.json` before it is created,
//! so a failed `up` and a later `down` both remove exactly what exists.

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
const UNDERLAY: &str = "192.168.100";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Demo {
    fabric: Option<String>,
    nodes: Vec<DemoNode>,
}

#[derive(Debug, Serialize, Deserialize)]
struct DemoNode {
    name: String,
    netns: String,
    address: String,
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

pub fn up(nodes: usize, pods_per_node: usize, mode: &str) -> anyhow::Result<()> {
    require_root_and_tools()?;
    if !(1..=200).contains(&nodes) {
        bail!("--nodes must be between 1 and 200");
    }
    if state_path().exists() {
        bail!("a demo is already up: run `straitctl demo down` first");
    }
    fs::create_dir_all(DIR)?;
    let mut demo = Demo::default();
    save(&demo)?;
    if let Err(e) = build(&mut demo, nodes, pods_per_node, mode) {
        let _ = save(&demo);
        eprintln!("the demo failed; removing what it built");
        let _ = teardown(&demo);
        return Err(e);
    }
    save(&demo)?;
    print_layout(&demo, mode);
    print_matrix(&demo);
    println!(
        "\nInspect a node:  straitctl --socket {} status   (also: peers, routes, pods)",
        demo.nodes[0].socket.display()
    );
    println!("Remove it all:   straitctl demo down");
    Ok(())
}

fn build(demo: &mut Demo, nodes: usize, pods_per_node: usize, mode: &str) -> anyhow::Result<()> {
    let straitd = sibling("straitd")?;
    let plugin = sibling("strait")?;
    let fabric = format!("{PREFIX}-fabric");
    demo.fabric = Some(fabric.clone());
    save(demo)?;
    ip(&["netns", "add", &fabric])?;
    ip(&["-n", &fabric, "link", "add", "br0", "type", "bridge"])?;
    ip(&["-n", &fabric, "link", "set", "br0", "up"])?;
    for n in 1..=nodes {
        let name = format!("node{n}");
        let dir = Path::new(DIR).join(&name);
        demo.nodes.push(DemoNode {
            netns: format!("{PREFIX}-{name}"),
            address: format!("{UNDERLAY}.{n}"),
            socket: dir.join("strait.sock"),
            agent_pid: None,
            pods: Vec::new(),
            name,
        });
        save(demo)?;
        let node = demo.nodes.last_mut().expect("just pushed");
        plug_in(&fabric, node, n)?;
        node.agent_pid = Some(start_agent(&straitd, node, &dir, mode)?);
        save(demo)?;
    }
    for n in 0..demo.nodes.len() {
        for p in 1..=pods_per_node {
            let node = &mut demo.nodes[n];
            let name = format!("{}-pod{p}", node.name);
            node.pods.push(DemoPod {
                netns: format!("{PREFIX}-{name}"),
                container_id: format!("demo-{name}"),
                name,
                address: None,
            });
            save(demo)?;
            let node = &mut demo.nodes[n];
            let pod = node.pods.last().expect("just pushed");
            ip(&["netns", "add", &pod.netns])?;
            ip(&["-n", &pod.netns, "link", "set", "lo", "up"])?;
            let address = cni(&plugin, "ADD", node, pod)?;
            node.pods.last_mut().expect("just pushed").address = Some(address);
        }
    }
    Ok(())
}

/// Creates the node's namespace and plugs its `eth0` into the fabric's bridge.
fn plug_in(fabric: &str, node: &DemoNode, n: usize) -> anyhow::Result<()> {
    let port = format!("p{n}");
    ip(&["netns", "add", &node.netns])?;
    ip(&["-n", &node.netns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        fabric,
        "link",
        "add",
        &port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &node.netns,
    ])?;
    ip(&["-n", fabric, "link", "set", &port, "master", "br0"])?;
    ip(&["-n", fabric, "link", "set", &port, "up"])?;
    ip(&[
        "-n",
        &node.netns,
        "addr",
        "add",
        &format!("{}/24", node.address),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", &node.netns, "link", "set", "eth0", "up"])?;
    Ok(())
}

/// Starts the node's straitd and waits until it serves; returns its PID.
fn start_agent(straitd: &Path, node: &DemoNode, dir: &Path, mode: &str) -> anyhow::Result<u32> {
    fs::create_dir_all(dir)?;
    let config = dir.join("straitd.toml");
    fs::write(
        &config,
        format!(
            "node_name = \"{name}\"\nnode_address = \"{address}\"\n\
             state_dir = \"{state}\"\nsocket = \"{socket}\"\n\
             [store]\nbackend = \"embedded\"\npath = \"{DIR}/store\"\n\
             [cni]\nconf_dir = \"{netd}\"\n\
             [[network]]\nname = \"strait\"\nmode = \"{mode}\"\n[[network.pool]]\ncidr = \"{POOL}\"\n",
            name = node.name,
            address = node.address,
            state = dir.join("state").display(),
            socket = node.socket.display(),
            netd = dir.join("net.d").display(),
        ),
    )?;
    let log = fs::File::create(dir.join("straitd.log"))?;
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &node.netns])
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
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&node.socket).is_err() {
        if Instant::now() > deadline || !Path::new(&format!("/proc/{}", child.id())).exists() {
            stop_agent(child.id());
            let log = fs::read_to_string(dir.join("straitd.log")).unwrap_or_default();
            bail!("straitd on {} did not become ready:\n{log}", node.name);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(child.id())
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

fn print_layout(demo: &Demo, mode: &str) {
    println!(
        "Strait demo: {} node(s) on one fabric, {mode} between nodes, embedded store in {DIR}/store\n",
        demo.nodes.len()
    );
    for node in &demo.nodes {
        println!(
            "{:<8} underlay {:<16} netns {}",
            node.name, node.address, node.netns
        );
    }
    println!();
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
    teardown(&demo)?;
    println!("The demo is down: its namespaces, agents and {DIR} are gone.");
    Ok(())
}

/// Removes everything `demo` records: pods (DEL first), agents, namespaces, the directory.
fn teardown(demo: &Demo) -> anyhow::Result<()> {
    let plugin = sibling("strait")?;
    for node in &demo.nodes {
        for pod in &node.pods {
            if pod.address.is_some()
                && let Err(e) = cni(&plugin, "DEL", node, pod)
            {
                eprintln!("warning: {e}");
            }
            let _ = ip(&["netns", "del", &pod.netns]);
        }
        if let Some(pid) = node.agent_pid {
            stop_agent(pid);
        }
        let _ = ip(&["netns", "del", &node.netns]);
    }
    if let Some(fabric) = &demo.fabric {
        let _ = ip(&["netns", "del", fabric]);
    }
    fs::remove_dir_all(DIR).context("removing the demo directory")
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
