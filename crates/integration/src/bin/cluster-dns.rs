//! The test clusters' DNS server, in place of CoreDNS (which cannot be built offline): it watches
//! the cluster's Services and Endpoints and answers for its zone over UDP and TCP, as Kubernetes'
//! DNS specification says (`strait_integration::cluster_dns`). Every question and its answer's
//! code go to standard error.
//!
//! Usage: cluster-dns --kubeconfig FILE --listen ADDRESS:PORT [--domain cluster.local]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Endpoints, Service};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use strait_integration::cluster_dns::Zone;
use strait_integration::dns_wire::{Malformed, parse_query, refusal, response};

/// A UDP answer without EDNS fits 512 bytes (RFC 1035); TCP's length prefix allows 65535.
const UDP_LIMIT: usize = 512;
const TCP_LIMIT: usize = 65535;
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// The first list of Services and Endpoints must arrive within this.
const LIST_TIMEOUT: Duration = Duration::from_secs(60);

struct Cluster {
    domain: String,
    services: Store<Service>,
    endpoints: Store<Endpoints>,
}

impl Cluster {
    /// The response to one message; `None` when nothing can be answered.
    fn answer(&self, message: &[u8], limit: usize) -> Option<Vec<u8>> {
        match parse_query(message) {
            Ok(query) => {
                let services = self.services.state();
                let endpoints = self.endpoints.state();
                let zone = Zone::from_objects(
                    &self.domain,
                    services.iter().map(Arc::as_ref),
                    endpoints.iter().map(Arc::as_ref),
                );
                let answer = zone.resolve(&query.name, query.qtype);
                eprintln!(
                    "{} type {}: {:?}, {} answers",
                    query.name,
                    query.qtype,
                    answer.rcode,
                    answer.answers.len()
                );
                Some(response(&query, &answer, limit))
            }
            Err(Malformed::NoHeader) => None,
            Err(Malformed::Refuse { id, flags, rcode }) => Some(refusal(id, flags, rcode)),
        }
    }
}

/// Keeps a store of every `K` in the cluster current, for as long as the process runs.
fn watch<K>(client: &Client) -> Store<K>
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + k8s_openapi::serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff();
    tokio::spawn(stream.for_each(|event| {
        if let Err(e) = event {
            eprintln!("watch interrupted (it retries): {e}");
        }
        futures::future::ready(())
    }));
    store
}

async fn serve_tcp(cluster: Arc<Cluster>, mut stream: TcpStream) {
    loop {
        let Ok(Ok(length)) = tokio::time::timeout(TCP_IDLE, stream.read_u16()).await else {
            return;
        };
        let mut message = vec![0; usize::from(length)];
        let read = tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut message)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let Some(out) = cluster.answer(&message, TCP_LIMIT) else {
            return;
        };
        let mut framed = (out.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&out);
        let written = tokio::time::timeout(TCP_IDLE, stream.write_all(&framed)).await;
        if !matches!(written, Ok(Ok(()))) {
            return;
        }
    }
}

fn usage() -> ! {
    eprintln!("usage: cluster-dns --kubeconfig FILE --listen ADDRESS:PORT [--domain DOMAIN]");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (mut kubeconfig, mut listen, mut domain) = (None, None, "cluster.local".to_string());
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--kubeconfig" => kubeconfig = Some(value),
            "--listen" => listen = Some(value.parse::<SocketAddr>().unwrap_or_else(|_| usage())),
            "--domain" => domain = value,
            _ => usage(),
        }
    }
    let (Some(kubeconfig), Some(listen)) = (kubeconfig, listen) else {
        usage()
    };
    let fail = |what: &str, e: &dyn std::fmt::Display| -> ! {
        eprintln!("cluster-dns: {what}: {e}");
        std::process::exit(1);
    };
    let file = Kubeconfig::read_from(&kubeconfig).unwrap_or_else(|e| fail(&kubeconfig, &e));
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|e| fail(&kubeconfig, &e));
    let client = Client::try_from(config).unwrap_or_else(|e| fail("client", &e));
    let cluster = Arc::new(Cluster {
        domain,
        services: watch(&client),
        endpoints: watch(&client),
    });
    let udp = UdpSocket::bind(listen)
        .await
        .unwrap_or_else(|e| fail(&listen.to_string(), &e));
    let tcp = TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| fail(&listen.to_string(), &e));
    let listed = async {
        cluster.services.wait_until_ready().await?;
        cluster.endpoints.wait_until_ready().await
    };
    match tokio::time::timeout(LIST_TIMEOUT, listed).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail("listing the cluster", &e),
        Err(_) => fail(
            "listing the cluster",
            &format!("no list within {LIST_TIMEOUT:?}"),
        ),
    }
    eprintln!("cluster-dns: serving {} on {listen}", cluster.domain);
    let tcp_cluster = cluster.clone();
    tokio::spawn(async move {
        loop {
            match tcp.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve_tcp(tcp_cluster.clone(), stream));
                }
                Err(e) => {
                    eprintln!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    });
    let mut buffer = vec![0; 4096];
    loop {
        let (length, peer) = match udp.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(e) => {
                eprintln!("receive: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if let Some(out) = cluster.answer(&buffer[..length], UDP_LIMIT) {
            let _ = udp.send_to(&out, peer).await;
        }
    }
}
