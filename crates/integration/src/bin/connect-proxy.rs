//! An HTTP CONNECT proxy on a Unix socket, run by the test clusters on a node so that the control
//! plane, which sits outside the pod network, reaches pods, Services and kubelets through it (the
//! apiserver's egress selector for "cluster" traffic; Konnectivity's role in managed clusters).
//! Every tunnel opened, and every one refused, goes to standard error.
//!
//! Usage: connect-proxy --listen SOCKET_PATH

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

/// A request head longer than this, or slower than [`HEAD_TIMEOUT`], is refused.
const HEAD_LIMIT: usize = 8192;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the request head (up to the blank line) and returns its CONNECT target.
async fn read_target(client: &mut UnixStream) -> Result<String, String> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= HEAD_LIMIT {
            return Err("request head too long".into());
        }
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            Ok(_) => return Err("closed before the request ended".into()),
            Err(e) => return Err(e.to_string()),
        }
    }
    let head = String::from_utf8_lossy(&head);
    let line = head.lines().next().unwrap_or_default();
    match line.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["CONNECT", target, version] if version.starts_with("HTTP/1.") => Ok(target.to_string()),
        _ => Err(format!("not a CONNECT request: {line:?}")),
    }
}

async fn tunnel(mut client: UnixStream) {
    let target = match tokio::time::timeout(HEAD_TIMEOUT, read_target(&mut client)).await {
        Ok(Ok(target)) => target,
        Ok(Err(why)) => {
            eprintln!("refused: {why}");
            let _ = client.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
            return;
        }
        Err(_) => {
            eprintln!("refused: no request within {HEAD_TIMEOUT:?}");
            return;
        }
    };
    let upstream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target)).await;
    let mut upstream = match upstream {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            eprintln!("{target}: {e}");
            let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
            return;
        }
        Err(_) => {
            eprintln!("{target}: no connection within {CONNECT_TIMEOUT:?}");
            let _ = client
                .write_all(b"HTTP/1.1 504 Gateway Timeout\r\n\r\n")
                .await;
            return;
        }
    };
    eprintln!("{target}: tunnel open");
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [flag, path] = args.as_slice() else {
        eprintln!("usage: connect-proxy --listen SOCKET_PATH");
        std::process::exit(2);
    };
    if flag != "--listen" {
        eprintln!("usage: connect-proxy --listen SOCKET_PATH");
        std::process::exit(2);
    }
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).unwrap_or_else(|e| {
        eprintln!("connect-proxy: {path}: {e}");
        std::process::exit(1);
    });
    eprintln!("connect-proxy: listening on {path}");
    loop {
        match listener.accept().await {
            Ok((client, _)) => {
                tokio::spawn(tunnel(client));
            }
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
