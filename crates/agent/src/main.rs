//! `straitd`: loads the configuration, starts the agent with the configured cluster store,
//! opens the socket, writes the conflist (the node's "ready"), and serves until SIGTERM/SIGINT.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use strait_agent::config::StoreConfig;
use strait_agent::{Agent, Config, conflist, server};
use strait_store::{EmbeddedStore, EtcdStore, KubeStore, Store};
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
    match config.store.clone() {
        StoreConfig::Embedded { path } => {
            let store = EmbeddedStore::open(&path)
                .with_context(|| format!("opening the embedded store in {}", path.display()))?;
            run(config, store, None).await
        }
        StoreConfig::Kubernetes {
            kubeconfig,
            orphan_grace,
        } => {
            let store = KubeStore::connect(kubeconfig.as_deref())
                .await
                .context("connecting to the Kubernetes API")?;
            let pods = Some((store.client(), Duration::from_secs(orphan_grace.into())));
            run(config, store, pods).await
        }
        StoreConfig::Etcd {
            endpoints,
            prefix,
            lease_ttl,
        } => {
            let store = EtcdStore::connect(&endpoints, &prefix, lease_ttl)
                .await
                .with_context(|| format!("connecting to etcd at {}", endpoints.join(",")))?;
            run(config, store, None).await
        }
    }
}

/// Runs the agent; `pods` is the Kubernetes client to read pods with, and the grace before a
/// gone pod's address is released.
async fn run<S: Store>(
    config: Config,
    store: S,
    pods: Option<(kube::Client, Duration)>,
) -> anyhow::Result<()> {
    let node = config.node_name.clone();
    let mut agent = Agent::start(config, store).await?;
    if let Some((client, orphan_grace)) = pods {
        agent = agent.with_pods(client, orphan_grace);
    }
    let agent = Arc::new(agent);
    let mut ready = agent.start_overlay()?;
    agent.start_orphan_sweep();
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
    let leaving = Arc::clone(&agent);
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
            () = leaving.has_left() => {}
        }
    };
    server::serve(agent, listener, shutdown).await;
    let _ = std::fs::remove_file(&socket);
    tracing::info!("stopped");
    Ok(())
}
