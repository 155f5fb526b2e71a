//! The agent's Unix socket: root-only (0600 in a 0700 directory), one request per connection,
//! requests served concurrently (at most 256 at once), in-flight ones finished on shutdown.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use strait_rpc::{MAX_MESSAGE_BYTES, Received, Request, Response};
use strait_store::Store;
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::agent::Agent;
use crate::caller::Caller;

/// A client that has not sent its whole request, or read its whole answer, by then is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// At most this many connections are served at once.
const MAX_CONNECTIONS: usize = 256;
/// How long shutdown waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the socket, refusing to steal it from a live agent.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("another straitd is already serving {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serves until `shutdown` completes, then lets requests in flight finish.
pub async fn serve<S: Store>(
    agent: Arc<Agent<S>>,
    listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut in_flight = JoinSet::new();
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(shutdown);
    loop {
        // More clients than slots wait in the kernel's backlog, not on the agent's descriptors.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
        };
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let agent = Arc::clone(&agent);
                    in_flight.spawn(async move {
                        let _slot = slot;
                        answer(&agent, stream).await
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
        while in_flight.try_join_next().is_some() {}
    }
    let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while in_flight.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = in_flight.len(),
            "shutting down with requests still in flight"
        );
    }
}

/// Reads the connection's header and the descriptors it may carry.
async fn read_header(stream: &UnixStream) -> io::Result<Received> {
    loop {
        stream.readable().await?;
        match stream.try_io(Interest::READABLE, || {
            strait_rpc::recv_header(stream.as_raw_fd())
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

async fn read_request(stream: &mut UnixStream) -> Result<(Request, Received), String> {
    let passed = read_header(stream)
        .await
        .map_err(|e| format!("reading the request header: {e}"))?;
    let mut body = Vec::new();
    stream
        .take(MAX_MESSAGE_BYTES)
        .read_to_end(&mut body)
        .await
        .map_err(|e| format!("reading the request: {e}"))?;
    Ok((Request::decode(&body)?, passed))
}

async fn answer<S: Store>(agent: &Arc<Agent<S>>, mut stream: UnixStream) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut stream)).await {
        Ok(Ok((request, passed))) => {
            agent
                .handle(request, passed, Caller::on(stream.as_fd()))
                .await
        }
        Ok(Err(e)) => Response::BadRequest(e),
        Err(_) => Response::BadRequest("the request did not arrive in time".into()),
    };
    match tokio::time::timeout(READ_TIMEOUT, stream.write_all(&response.encode())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "could not send a response; the client went away"),
        Err(_) => tracing::warn!("could not send a response; the client does not read it"),
    }
    let _ = stream.shutdown().await;
    // A request refused half-read: read the rest (bounded), or closing with unread input would
    // reset the connection and the client would lose the answer.
    let mut rest = (&mut stream).take(2 * MAX_MESSAGE_BYTES);
    let _ = tokio::time::timeout(
        READ_TIMEOUT,
        tokio::io::copy(&mut rest, &mut tokio::io::sink()),
    )
    .await;
}
