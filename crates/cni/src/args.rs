//! CNI_ARGS: the runtime's `KEY=VALUE;KEY=VALUE` extras, of which Strait reads the Kubernetes pod
//! identity and ignores the rest. The identity is stored, printed by straitctl and put into API
//! paths, so it must be shaped like the names runtimes give (Kubernetes' and podman's): a letter
//! or digit, then letters, digits, '_', '.' and '-'. Anything else is refused.

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

    /// Checks the pod identity an ADD stores (a DEL or CHECK of an attachment stored under any
    /// name must still work).
    pub fn check_pod_identity(&self) -> Result<(), String> {
        for key in ["K8S_POD_NAMESPACE", "K8S_POD_NAME"] {
            if let Some(value) = self.get(key)
                && !is_name(value)
            {
                return Err(format!(
                    "CNI_ARGS {key} {value:?} is not a name: a letter or digit, then letters, \
                     digits, '_', '.' and '-', at most {MAX_NAME} characters"
                ));
            }
        }
        if let Some(uid) = self.get("K8S_POD_UID")
            && !(uid.len() <= 64 && uid.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        {
            return Err(format!(
                "CNI_ARGS K8S_POD_UID {uid:?} is not a Kubernetes UID"
            ));
        }
        Ok(())
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

/// The longest pod name or namespace (a Kubernetes DNS subdomain).
const MAX_NAME: usize = 253;

/// A runtime's name for a pod or namespace: Kubernetes' DNS names and podman's container names
/// both are; no path separator, space or control character is.
fn is_name(value: &str) -> bool {
    value.len() <= MAX_NAME
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
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

    #[test]
    fn a_pod_identity_must_be_shaped_like_kubernetes_names() {
        for bad in [
            "K8S_POD_NAMESPACE=../../etc;K8S_POD_NAME=x",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=x/status?\u{1b}[31m",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=-x",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=",
            "K8S_POD_NAMESPACE=default;K8S_POD_NAME=x;K8S_POD_UID=a/b",
        ] {
            let err = CniArgs::parse(bad)
                .unwrap()
                .check_pod_identity()
                .unwrap_err();
            assert!(err.contains("K8S_POD_"), "{bad}: {err}");
        }
        for good in [
            "K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=coredns-7f9c.a-1;K8S_POD_UID=1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            // podman passes the container's name as both.
            "K8S_POD_NAMESPACE=My_App;K8S_POD_NAME=My_App",
        ] {
            assert!(
                CniArgs::parse(good).unwrap().check_pod_identity().is_ok(),
                "{good}"
            );
        }
    }
}
