//! The Kubernetes backend: every record is a cluster-scoped custom resource of group `strait.io`
//! (the value under `spec`). A node's record is its StraitNode, named after its Node and owned by
//! it (an owner reference), so the agent never writes a core Node, the store never records a node
//! the kubelet has not registered, and Kubernetes' garbage collector deletes the record with its
//! Node: a node deleted from the API leaves its peers with it. A revision is the object's
//! `resourceVersion`. Create is create (409 when it exists), update and delete carry the
//! `resourceVersion` as a precondition, so racing writers get one winner. Watches relist after a
//! `410 Gone` or an apiserver restart and report that as a fresh listing.

use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams, Preconditions};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, Config, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::records::Kind;
use crate::{Store, StoreError, Versioned, Watch, WatchEvent, validate_name};

/// The custom resources' API group and version.
pub const GROUP: &str = "strait.io";
pub const VERSION: &str = "v1alpha1";
const WATCH_BUFFER: usize = 4096;
/// How long connecting to the API may take before the request fails as unavailable.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
/// How long a request may wait for the API's next bytes: a half-open connection must not hang
/// an ADD for ever. Watches wait for events far longer, so they use a client without it.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Clone)]
pub struct KubeStore {
    /// For requests: reads and writes time out.
    client: Client,
    /// For watches, which idle between events.
    watch_client: Client,
}

impl std::fmt::Debug for KubeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeStore").finish()
    }
}

/// The custom resource a kind is kept as.
fn resource(kind: Kind) -> ApiResource {
    let (kind_name, plural) = match kind {
        Kind::Node => ("StraitNode", "straitnodes"),
        Kind::IpPool => ("IPPool", "ippools"),
        Kind::IpBlock => ("IPBlock", "ipblocks"),
    };
    ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind_name.into(),
        plural: plural.into(),
    }
}

fn revision_of(resource_version: Option<&String>) -> u64 {
    resource_version.and_then(|r| r.parse().ok()).unwrap_or(0)
}

/// Maps an API error to the store's: 404, 409 (exists / changed), or unavailable.
fn map_error(e: kube::Error, kind: Kind, name: &str, expected: u64) -> StoreError {
    match &e {
        kube::Error::Api(status) if status.code == 404 => StoreError::NotFound {
            kind,
            name: name.to_string(),
        },
        kube::Error::Api(status) if status.code == 409 && status.reason == "AlreadyExists" => {
            StoreError::AlreadyExists {
                kind,
                name: name.to_string(),
            }
        }
        kube::Error::Api(status) if status.code == 409 => StoreError::Conflict {
            kind,
            name: name.to_string(),
            expected,
            actual: None,
        },
        kube::Error::Api(status) if status.code == 422 => StoreError::Rejected {
            kind,
            name: name.to_string(),
            reason: status.message.clone(),
        },
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => {
            StoreError::Denied(status.message.clone())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn custom(obj: &DynamicObject) -> Versioned<Value> {
    Versioned {
        name: obj.name_any(),
        revision: revision_of(obj.metadata.resource_version.as_ref()),
        value: obj.data.get("spec").cloned().unwrap_or(Value::Null),
    }
}

impl KubeStore {
    /// Connects with `kubeconfig`, or as the cluster's configuration says (in a pod: its service
    /// account; else `$KUBECONFIG` or `~/.kube/config`). A configuration that cannot be used is
    /// [`StoreError::Corrupt`]; an API that does not answer shows on the first request.
    pub async fn connect(kubeconfig: Option<&Path>) -> Result<KubeStore, StoreError> {
        let unreadable = |reason: String| StoreError::Corrupt {
            what: match kubeconfig {
                Some(path) => format!("the kubeconfig {}", path.display()),
                None => "the Kubernetes configuration (in-cluster or $KUBECONFIG)".to_string(),
            },
            reason,
        };
        let mut config = match kubeconfig {
            Some(path) => {
                let file = Kubeconfig::read_from(path).map_err(|e| unreadable(e.to_string()))?;
                Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
                    .await
                    .map_err(|e| unreadable(e.to_string()))?
            }
            None => Config::infer()
                .await
                .map_err(|e| unreadable(e.to_string()))?,
        };
        // Fail fast on an API that is not there (yet): the caller retries.
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        let watch_client =
            Client::try_from(config.clone()).map_err(|e| unreadable(e.to_string()))?;
        config.read_timeout = Some(READ_TIMEOUT);
        config.write_timeout = Some(READ_TIMEOUT);
        let client = Client::try_from(config).map_err(|e| unreadable(e.to_string()))?;
        Ok(KubeStore {
            client,
            watch_client,
        })
    }

    /// The client for requests (reads and writes time out), for callers that read more of the
    /// cluster than the store does.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The client for watches (no read timeout: a watch idles between events).
    pub fn watch_client(&self) -> Client {
        self.watch_client.clone()
    }

    fn custom_api(&self, kind: Kind) -> (Api<DynamicObject>, ApiResource) {
        let ar = resource(kind);
        (Api::all_with(self.client.clone(), &ar), ar)
    }

    /// The object that holds `value`. A node's record is owned by its Node (looked up here:
    /// without one this is [`StoreError::NotFound`], the kubelet has not registered the node).
    async fn object(
        &self,
        kind: Kind,
        name: &str,
        value: Value,
        revision: Option<u64>,
    ) -> Result<DynamicObject, StoreError> {
        let mut obj = DynamicObject::new(name, &resource(kind)).data(json!({ "spec": value }));
        obj.metadata.resource_version = revision.map(|r| r.to_string());
        if kind == Kind::Node {
            let node = Api::<Node>::all(self.client.clone())
                .get_opt(name)
                .await
                .map_err(|e| map_error(e, kind, name, 0))?
                .ok_or_else(|| StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                })?;
            obj.metadata.owner_references = Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Node".into(),
                name: name.to_string(),
                uid: node.uid().unwrap_or_default(),
                ..OwnerReference::default()
            }]);
        }
        Ok(obj)
    }
}

impl Store for KubeStore {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned<Value>>, StoreError> {
        validate_name(name)?;
        let (api, _) = self.custom_api(kind);
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| map_error(e, kind, name, 0))?;
        Ok(obj.as_ref().map(custom))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Value>>, StoreError> {
        let (api, _) = self.custom_api(kind);
        let objs = api
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| map_error(e, kind, "", 0))?;
        let mut out: Vec<Versioned<Value>> = objs.items.iter().map(custom).collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        let obj = self.object(kind, name, value, None).await?;
        let (api, _) = self.custom_api(kind);
        let created = api
            .create(&PostParams::default(), &obj)
            .await
            .map_err(|e| map_error(e, kind, name, 0))?;
        Ok(revision_of(created.metadata.resource_version.as_ref()))
    }

    async fn update(
        &self,
        kind: Kind,
        name: &str,
        value: Value,
        revision: u64,
    ) -> Result<u64, StoreError> {
        validate_name(name)?;
        let obj = self.object(kind, name, value, Some(revision)).await?;
        let (api, _) = self.custom_api(kind);
        let replaced = api
            .replace(name, &PostParams::default(), &obj)
            .await
            .map_err(|e| map_error(e, kind, name, revision))?;
        Ok(revision_of(replaced.metadata.resource_version.as_ref()))
    }

    async fn put_live(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        match self.create(kind, name, value.clone()).await {
            Err(StoreError::AlreadyExists { .. }) => {
                let current = self.get(kind, name).await?.map_or(0, |v| v.revision);
                self.update(kind, name, value, current).await
            }
            other => other,
        }
    }

    async fn watch(&self, kind: Kind) -> Result<Watch, StoreError> {
        let (tx, rx) = mpsc::channel(WATCH_BUFFER);
        let api = Api::<DynamicObject>::all_with(self.watch_client.clone(), &resource(kind));
        let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
        tokio::spawn(pump(stream, tx));
        Ok(rx)
    }

    async fn delete(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        let (api, _) = self.custom_api(kind);
        let params = DeleteParams {
            preconditions: revision.map(|r| Preconditions {
                resource_version: Some(r.to_string()),
                uid: None,
            }),
            ..DeleteParams::default()
        };
        api.delete(name, &params)
            .await
            .map(drop)
            .map_err(|e| map_error(e, kind, name, revision.unwrap_or(0)))
    }
}

/// Turns a kube-runtime watcher into the store's watch events: listings (buffered until
/// complete) become a Reset.
async fn pump(
    stream: impl futures::Stream<Item = Result<Event<DynamicObject>, watcher::Error>>,
    tx: mpsc::Sender<WatchEvent>,
) {
    futures::pin_mut!(stream);
    let mut listing: Option<Vec<Versioned<Value>>> = None;
    while let Some(event) = stream.next().await {
        let out = match event {
            Ok(Event::Init) => {
                listing = Some(Vec::new());
                continue;
            }
            Ok(Event::InitApply(obj)) => {
                if let Some(list) = listing.as_mut() {
                    list.push(custom(&obj));
                }
                continue;
            }
            Ok(Event::InitDone) => WatchEvent::Reset(listing.take().unwrap_or_default()),
            Ok(Event::Apply(obj)) => WatchEvent::Put(custom(&obj)),
            Ok(Event::Delete(obj)) => WatchEvent::Delete(obj.name_any()),
            // The watcher backs off and retries by itself; a relist follows as Init..InitDone.
            Err(_) => continue,
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An API server that accepts connections and never answers, like a half-open connection.
    #[tokio::test]
    async fn a_silent_api_makes_a_request_fail_instead_of_hanging() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let held = tokio::spawn(async move {
            let mut accepted = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                accepted.push(conn);
            }
        });
        let dir = std::env::temp_dir().join(format!("strait-kube-silent-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = dir.join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
                 clusters: [{{name: c, cluster: {{server: \"http://127.0.0.1:{port}\"}}}}]\n\
                 users: [{{name: u, user: {{token: t}}}}]\n\
                 contexts: [{{name: c, context: {{cluster: c, user: u}}}}]\n"
            ),
        )
        .unwrap();
        let store = KubeStore::connect(Some(&kubeconfig)).await.unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        // Far above the read timeout: reaching it means the request hung.
        let answer = tokio::time::timeout(READ_TIMEOUT * 6, store.get(Kind::IpPool, "pool")).await;
        held.abort();
        match answer {
            Ok(Err(StoreError::Unavailable(_))) => {}
            other => panic!("expected the store to be unavailable, got {other:?}"),
        }
    }
}
