//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (the process answers)
//! and `/readyz` (the node is reconciled and serving; 503 with the reason otherwise).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use strait_store::Store;
use tokio::sync::watch;

use crate::agent::Agent;

struct Shared<S> {
    agent: Arc<Agent<S>>,
    ready: watch::Receiver<bool>,
}

/// Serves on `address` until the process ends.
pub async fn serve<S: Store>(
    address: &str,
    agent: Arc<Agent<S>>,
    ready: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(address).await?;
    let app = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<S>))
        .with_state(Arc::new(Shared { agent, ready }));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(())
}

async fn metrics<S: Store>(State(shared): State<Arc<Shared<S>>>) -> String {
    let agent = &shared.agent;
    for (name, net) in &agent.networks {
        let (_, usage) = net.usage().await;
        agent
            .metrics
            .set_ipam(name, usage.allocated, usage.capacity);
    }
    let quarantined = agent.recovery.quarantined();
    agent.metrics.set_recovery(
        quarantined.iter().map(|q| q.addresses.len()).sum(),
        agent.recovery.conflicts().len(),
    );
    agent.metrics.encode()
}

async fn readyz<S: Store>(State(shared): State<Arc<Shared<S>>>) -> (StatusCode, String) {
    if !*shared.ready.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not reconciled yet\n".into(),
        );
    }
    if let Some(why) = shared.agent.recovery.not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let last = shared.agent.last_pass.lock().expect("not poisoned").clone();
    match last {
        Some(pass) if !pass.errors.is_empty() => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the last reconcile pass failed: {}\n",
                pass.errors.join("; ")
            ),
        ),
        _ => (StatusCode::OK, "ready\n".into()),
    }
}
