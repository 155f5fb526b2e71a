//! CNI_ARGS: the runtime's `KEY=VALUE;KEY=VALUE` extras, of which Strait reads the Kubernetes pod
//! identity and ignores the rest.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    /// Parses `K=V;K=V`. Empty segments are skipped; a segment without `=` is an error naming it.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in raw.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"))?;
            if k.is_empty() {
                return Err(format!("CNI_ARGS entry {pair:?} has an empty key"));
            }
            map.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// The Kubernetes namespace and name of the pod, when the runtime passed them.
    pub fn pod(&self) -> Option<(&str, &str)> {
        Some((self.get("K8S_POD_NAMESPACE")?, self.get("K8S_POD_NAME")?))
    }

    /// The Kubernetes UID of the pod, when the runtime passed it.
    pub fn pod_uid(&self) -> Option<&str> {
        self.get("K8S_POD_UID")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubelet_style_args() {
        let a = CniArgs::parse(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web-0;K8S_POD_INFRA_CONTAINER_ID=abc;",
        )
        .unwrap();
        assert_eq!(a.pod(), Some(("default", "web-0")));
        assert_eq!(a.get("IgnoreUnknown"), Some("1"));
    }

    #[test]
    fn empty_is_fine_and_garbage_is_named() {
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        let err = CniArgs::parse("A=1;oops").unwrap_err();
        assert!(err.contains("oops"), "{err}");
        assert!(CniArgs::parse("=1").is_err());
    }
}
