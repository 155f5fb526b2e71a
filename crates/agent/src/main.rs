//! `straitd`: loads the configuration, starts the agent with the configured cluster store,
//! opens the socket, writes the conflist (the node's "ready"), and serves until SIGTERM/SIGINT.
//! `straitd install-plugin DIR` installs the CNI plugins shipped with it (a DaemonSet's init
//! container does this on each node).

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use strait_agent::config::StoreConfig;
use strait_agent::{Agent, AgentError, Config, conflist, install, server};
use strait_store::{EmbeddedStore, EtcdStore, Kind, KubeStore, Store, StoreError};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(name = "straitd", version, about = "The Strait node agent")]
struct Args {
    /// The agent's configuration file.
    #[arg(long, default_value = "/etc/strait/straitd.toml")]
    config: PathBuf,
    /// Log line format (on stderr).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Tool>,
}

#[derive(Subcommand)]
enum Tool {
    /// Copies the `strait` CNI plugin that sits beside this binary, and the chained plugins
    /// shipped in ../lib/strait/cni/, into DIR (the node's CNI binary directory), replacing
    /// older copies atomically, and exits.
    InstallPlugin { dir: PathBuf },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRAIT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    if let Some(Tool::InstallPlugin { dir }) = &args.command {
        let installed = std::env::current_exe()
            .map_err(|source| AgentError::Install {
                what: "finding straitd's own path".into(),
                source,
            })
            .and_then(|exe| install::shipped_plugins(&exe))
            .and_then(|plugins| install::install(&plugins, dir));
        return match installed {
            Ok(paths) => {
                for path in paths {
                    tracing::info!(plugin = %path.display(), "installed");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!("{e}");
                ExitCode::FAILURE
            }
        };
    }
    raise_descriptor_limit();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("straitd: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(start(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// Lifts the soft limit on open descriptors to the hard one: the agent holds one per request,
/// per pod namespace it works in and per watch, and runtimes often start it with 1024.
fn raise_descriptor_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The error and each cause that adds something (our errors already quote their sources).
fn describe(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out = format!("{out}: {text}");
        }
    }
    out
}

async fn start(args: Args) -> anyhow::Result<()> {
    let config = Config::load(&args.config)?;
    if let (true, Ok(step)) = (cfg!(debug_assertions), std::env::var("STRAIT_FAULT")) {
        tracing::warn!(%step, "fault injection is on: every ADD fails at this step");
    }
    match config.store.clone() {
        StoreConfig::Embedded { path } => {
            let store = EmbeddedStore::open(&path)
                .with_context(|| format!("opening the embedded store in {}", path.display()))?;
            run(Agent::start(config, store).await?).await
        }
        StoreConfig::Kubernetes {
            kubeconfig,
            orphan_grace,
            node_grace,
        } => {
            let agent = until_store_answers(|| async {
                let store = KubeStore::connect(kubeconfig.as_deref())
                    .await
                    .context("connecting to the Kubernetes API")?;
                let (client, watch_client) = (store.client(), store.watch_client());
                let agent = Agent::start(config.clone(), store).await?;
                Ok(agent.with_pods(
                    client,
                    watch_client,
                    Duration::from_secs(orphan_grace.into()),
                    Duration::from_secs(node_grace.into()),
                ))
            })
            .await?;
            run(agent).await
        }
        StoreConfig::Etcd {
            endpoints,
            prefix,
            lease_ttl,
        } => {
            let agent = until_store_answers(|| async {
                let store = EtcdStore::connect(&endpoints, &prefix, lease_ttl)
                    .await
                    .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
                Ok(Agent::start(config.clone(), store).await?)
            })
            .await?;
            run(agent).await
        }
    }
}

/// Repeats a start-up `step` while the cluster store cannot serve this node, pausing 1 s, then
/// twice as long each time up to 30 s: a node may boot before its store is up, or (on Kubernetes)
/// before its service proxy routes to the API or its kubelet registers it. Any other failure
/// ends the agent.
async fn until_store_answers<T, F, Fut>(mut step: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut pause = Duration::from_secs(1);
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e) if store_not_ready(&e) => {
                tracing::warn!(error = %describe(&e), retry_in_s = pause.as_secs(),
                    "the cluster store cannot serve this node yet; waiting for it");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether the store cannot serve this node yet: it does not answer, or (Kubernetes) the node is
/// not registered yet.
fn store_not_ready(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        matches!(
            cause.downcast_ref(),
            Some(
                StoreError::Unavailable(_)
                    | StoreError::NotFound {
                        kind: Kind::Node,
                        ..
                    }
            )
        )
    })
}

/// Serves until the node leaves, or SIGTERM/SIGINT.
async fn run<S: Store>(agent: Agent<S>) -> anyhow::Result<()> {
    let node = agent.config().node_name.clone();
    let agent = Arc::new(agent);
    let mut ready = agent.start_overlay()?;
    agent.start_orphan_sweep();
    agent.start_block_reclaim();
    agent.resume_releases();
    agent.start_block_return();
    agent.keep_record();
    let metrics_address = agent.config().metrics_address.clone();
    if !metrics_address.is_empty() {
        strait_agent::http::serve(&metrics_address, Arc::clone(&agent), ready.clone())
            .await
            .with_context(|| format!("serving metrics on {metrics_address}"))?;
    }
    // Serve CNI only once the node's network is in place.
    ready.wait_for(|r| *r).await?;
    let socket = agent.config().socket.clone();
    let listener = server::bind(&socket)
        .with_context(|| format!("opening the agent socket {}", socket.display()))?;
    match conflist::write(agent.config()).context("writing the CNI configuration")? {
        Some(path) => {
            tracing::info!(%node, socket = %socket.display(), conflist = %path.display(), "ready")
        }
        None => tracing::info!(%node, socket = %socket.display(), "ready (no conflist written)"),
    }
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stopping = Arc::clone(&agent);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
            () = stopping.until_stopped() => {}
        }
        stopping.wind_down();
    };
    let stopped = Arc::clone(&agent);
    server::serve(agent, listener, shutdown).await;
    let _ = std::fs::remove_file(&socket);
    if let Some(why) = stopped.failure() {
        anyhow::bail!(why);
    }
    tracing::info!("stopped");
    Ok(())
}
