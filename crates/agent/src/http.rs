//! The agent's HTTP endpoints: `/metrics` (Prometheus text), `/healthz` (every supervised task
//! runs) and `/readyz` (the node is reconciled and serving; 503 with the reason otherwise). They
//! are meant for the node only (the default address is 127.0.0.1) and bounded: at most
//! [`MAX_CONNECTIONS`] connections at once (more wait in the kernel's backlog), each closed after
//! [`CONNECTION_LIFETIME`] however slowly its client sends, so that no client can use up the
//! descriptors the CNI socket needs.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::serve::Listener;
use strait_store::Store;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Sleep;

use crate::agent::Agent;

/// At most this many HTTP connections at once.
pub const MAX_CONNECTIONS: usize = 16;
/// A connection is closed this long after it was accepted.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(10);

/// A listener that accepts a connection only when a slot is free.
struct Bounded {
    inner: TcpListener,
    slots: Arc<Semaphore>,
}

impl Listener for Bounded {
    type Io = Expiring;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Expiring, SocketAddr) {
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (io, addr) = Listener::accept(&mut self.inner).await;
        let expires = Box::pin(tokio::time::sleep(CONNECTION_LIFETIME));
        (
            Expiring {
                io,
                expires,
                _slot: slot,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

/// A connection that fails every read and write once its lifetime is over, and frees its slot
/// when dropped.
struct Expiring {
    io: TcpStream,
    expires: Pin<Box<Sleep>>,
    _slot: OwnedSemaphorePermit,
}

impl Expiring {
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.expires.as_mut().poll(cx).is_ready()
    }
}

fn expired_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the connection's lifetime is over")
}

impl AsyncRead for Expiring {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Expiring {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.expired(cx) {
            return Poll::Ready(Err(expired_error()));
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

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
    let listener = Bounded {
        inner: TcpListener::bind(address).await?,
        slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
    };
    let app = Router::new()
        .route("/metrics", get(metrics::<S>))
        .route("/healthz", get(healthz::<S>))
        .route("/readyz", get(readyz::<S>))
        .with_state(Arc::new(Shared {
            agent: Arc::clone(&agent),
            ready,
        }));
    agent.tasks.spawn("http endpoint", async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the HTTP endpoint stopped");
        }
    });
    Ok(())
}

async fn metrics<S: Store>(State(shared): State<Arc<Shared<S>>>) -> String {
    let agent = &shared.agent;
    for (name, net) in agent.ipam.networks() {
        for (ipv6, usage) in net.usage_by_family().await {
            agent
                .metrics
                .set_ipam(name, ipv6, usage.allocated, usage.capacity);
        }
    }
    let recovery = agent.attachments.recovery();
    let quarantined = recovery.quarantined();
    agent.metrics.set_recovery(
        quarantined.iter().map(|q| q.addresses.len()).sum(),
        recovery.conflicts().len(),
    );
    agent.metrics.encode()
}

async fn healthz<S: Store>(State(shared): State<Arc<Shared<S>>>) -> (StatusCode, String) {
    let stopped = shared.agent.stopped_tasks();
    if stopped.is_empty() {
        (StatusCode::OK, "ok\n".into())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("stopped: {}\n", stopped.join(", ")),
        )
    }
}

async fn readyz<S: Store>(State(shared): State<Arc<Shared<S>>>) -> (StatusCode, String) {
    if !*shared.ready.borrow() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "not reconciled yet\n".into(),
        );
    }
    if let Some(why) = shared.agent.attachments.recovery().not_ready() {
        return (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n"));
    }
    let last = shared.agent.overlay.last_pass();
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
