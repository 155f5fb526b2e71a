//! The Kubernetes backend: IP pools and blocks are cluster-scoped custom resources of group
//! `strait.io` (the value under `spec`); a node's record is the `strait.io/node` annotation of
//! its Node object (registered by the kubelet: the store never creates one), so a node deleted
//! from the API leaves its peers with it. A revision is the
//! object's `resourceVersion`. Create is create (409 when it exists), update and delete carry the
//! `resourceVersion` as a precondition, so racing writers get one winner. Watches relist after a
//! `410 Gone` or an apiserver restart and report that as a fresh listing.

use std::path::Path;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PostParams, Preconditions,
};
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
/// The Node annotation holding a node's record.
pub const NODE_ANNOTATION: &str = "strait.io/node";
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

/// The custom resource a kind is kept as (nodes are not one).
fn resource(kind: Kind) -> Option<ApiResource> {
    let (kind_name, plural) = match kind {
        Kind::Node => return None,
        Kind::IpPool => ("IPPool", "ippools"),
        Kind::IpBlock => ("IPBlock", "ipblocks"),
    };
    Some(ApiResource {
        group: GROUP.into(),
        version: VERSION.into(),
        api_version: format!("{GROUP}/{VERSION}"),
        kind: kind_name.into(),
        plural: plural.into(),
    })
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

/// A node's record, if its Node carries one (and it reads as JSON).
fn node_record(node: &Node) -> Option<Versioned<Value>> {
    let raw = node.annotations().get(NODE_ANNOTATION)?;
    Some(Versioned {
        name: node.name_any(),
        revision: revision_of(node.metadata.resource_version.as_ref()),
        value: serde_json::from_str(raw).ok()?,
    })
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
        let ar = resource(kind).expect("a custom resource kind");
        (Api::all_with(self.client.clone(), &ar), ar)
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn custom_object(
        ar: &ApiResource,
        name: &str,
        value: Value,
        revision: Option<u64>,
    ) -> DynamicObject {
        let mut obj = DynamicObject::new(name, ar).data(json!({ "spec": value }));
        obj.metadata.resource_version = revision.map(|r| r.to_string());
        obj
    }

    /// Sets (or, with `None`, removes) a node's record on its Node; `revision` makes it
    /// conditional on the Node being unchanged. Nodes are the kubelet's to register and the
    /// operator's to delete: without one this is [`StoreError::NotFound`], never a new Node.
    async fn set_node_record(
        &self,
        name: &str,
        value: Option<&Value>,
        revision: Option<u64>,
    ) -> Result<u64, StoreError> {
        let annotation = value.map(|v| Value::String(v.to_string()));
        let mut patch = json!({ "metadata": { "annotations": { NODE_ANNOTATION: annotation } } });
        if let Some(r) = revision {
            patch["metadata"]["resourceVersion"] = Value::String(r.to_string());
        }
        let node = self
            .nodes()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| map_error(e, Kind::Node, name, revision.unwrap_or(0)))?;
        Ok(revision_of(node.metadata.resource_version.as_ref()))
    }

    async fn get_node(&self, name: &str) -> Result<Option<Node>, StoreError> {
        self.nodes()
            .get_opt(name)
            .await
            .map_err(|e| map_error(e, Kind::Node, name, 0))
    }
}

impl Store for KubeStore {
    async fn get(&self, kind: Kind, name: &str) -> Result<Option<Versioned<Value>>, StoreError> {
        validate_name(name)?;
        if kind == Kind::Node {
            return Ok(self.get_node(name).await?.as_ref().and_then(node_record));
        }
        let (api, _) = self.custom_api(kind);
        let obj = api
            .get_opt(name)
            .await
            .map_err(|e| map_error(e, kind, name, 0))?;
        Ok(obj.as_ref().map(custom))
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Versioned<Value>>, StoreError> {
        let params = kube::api::ListParams::default();
        let mut out: Vec<Versioned<Value>> = if kind == Kind::Node {
            let nodes = self
                .nodes()
                .list(&params)
                .await
                .map_err(|e| map_error(e, kind, "", 0))?;
            nodes.items.iter().filter_map(node_record).collect()
        } else {
            let (api, _) = self.custom_api(kind);
            let objs = api
                .list(&params)
                .await
                .map_err(|e| map_error(e, kind, "", 0))?;
            objs.items.iter().map(custom).collect()
        };
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn create(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        if kind == Kind::Node {
            let node = self.get_node(name).await?;
            if node.as_ref().and_then(node_record).is_some() {
                return Err(StoreError::AlreadyExists {
                    kind,
                    name: name.to_string(),
                });
            }
            let revision = node.map(|n| revision_of(n.metadata.resource_version.as_ref()));
            return self.set_node_record(name, Some(&value), revision).await;
        }
        let (api, ar) = self.custom_api(kind);
        let created = api
            .create(
                &PostParams::default(),
                &KubeStore::custom_object(&ar, name, value, None),
            )
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
        if kind == Kind::Node {
            if self.get(kind, name).await?.is_none() {
                return Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                });
            }
            return self
                .set_node_record(name, Some(&value), Some(revision))
                .await;
        }
        let (api, ar) = self.custom_api(kind);
        let obj = KubeStore::custom_object(&ar, name, value, Some(revision));
        let replaced = api
            .replace(name, &PostParams::default(), &obj)
            .await
            .map_err(|e| map_error(e, kind, name, revision))?;
        Ok(revision_of(replaced.metadata.resource_version.as_ref()))
    }

    async fn put_live(&self, kind: Kind, name: &str, value: Value) -> Result<u64, StoreError> {
        validate_name(name)?;
        if kind == Kind::Node {
            return self.set_node_record(name, Some(&value), None).await;
        }
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
        if kind == Kind::Node {
            let nodes = Api::<Node>::all(self.watch_client.clone());
            let stream = watcher::watcher(nodes, watcher::Config::default()).default_backoff();
            tokio::spawn(pump(stream, tx, |n: &Node| (n.name_any(), node_record(n))));
        } else {
            let ar = resource(kind).expect("a custom resource kind");
            let api = Api::<DynamicObject>::all_with(self.watch_client.clone(), &ar);
            let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
            tokio::spawn(pump(stream, tx, |o: &DynamicObject| {
                (o.name_any(), Some(custom(o)))
            }));
        }
        Ok(rx)
    }

    async fn delete(
        &self,
        kind: Kind,
        name: &str,
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        validate_name(name)?;
        if kind == Kind::Node {
            let current = self.get(kind, name).await?;
            match (current, revision) {
                (None, _) => Err(StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                }),
                (Some(c), Some(r)) if c.revision != r => Err(StoreError::Conflict {
                    kind,
                    name: name.to_string(),
                    expected: r,
                    actual: Some(c.revision),
                }),
                (Some(c), _) => self
                    .set_node_record(name, None, Some(c.revision))
                    .await
                    .map(drop),
            }
        } else {
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
}

/// Turns a kube-runtime watcher into the store's watch events: listings (buffered until
/// complete) become a Reset; an object that carries no record any more is a Delete.
async fn pump<K>(
    stream: impl futures::Stream<Item = Result<Event<K>, watcher::Error>>,
    tx: mpsc::Sender<WatchEvent>,
    record: impl Fn(&K) -> (String, Option<Versioned<Value>>),
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
                if let (Some(list), (_, Some(v))) = (listing.as_mut(), record(&obj)) {
                    list.push(v);
                }
                continue;
            }
            Ok(Event::InitDone) => WatchEvent::Reset(listing.take().unwrap_or_default()),
            Ok(Event::Apply(obj)) => match record(&obj) {
                (_, Some(v)) => WatchEvent::Put(v),
                (name, None) => WatchEvent::Delete(name),
            },
            Ok(Event::Delete(obj)) => WatchEvent::Delete(record(&obj).0),
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
