//! The pod registry: one record per attachment (network, container id, interface) with what was
//! given to it. Each record is a crash-safe file written before the CNI answer leaves the agent,
//! and carries its format number. The IPAM allocators are rebuilt from these records on start,
//! with the kernel's host veths as the second ledger for records that cannot be read.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use strait_netlink::MacAddr;
use strait_store::file::{remove_durable, remove_stale_temporaries, write_atomic};

use crate::error::AgentError;

/// What identifies an attachment; ADD is idempotent per key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AttachmentKey {
    pub network: String,
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    /// The pod's UID, when the runtime passed it: tells a pod from a later one of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub key: AttachmentKey,
    /// The network serving it, when an annotation chose another than the key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    pub netns: Option<String>,
    pub pod: Option<PodRef>,
    pub addresses: Vec<IpNet>,
    pub host_veth: String,
    /// The MAC Strait gave the pod's interface (records written before it chose one have none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_mac: Option<MacAddr>,
    pub mtu: u32,
    /// DEL has answered; its data plane is being removed, after which the record and its
    /// addresses go. A restart finishes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub releasing: bool,
}

/// The record format this straitd writes and reads. Records written before formats were numbered
/// carry none and are format 1.
pub const RECORD_FORMAT: u64 = 1;

/// A record as it is written: its format number, then the attachment.
#[derive(Serialize)]
struct OnDisk<'a> {
    format: u64,
    #[serde(flatten)]
    attachment: &'a Attachment,
}

/// Reads one record's bytes.
fn parse(bytes: &[u8]) -> Result<Attachment, String> {
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let format = match value.get("format") {
        None => 1,
        Some(f) => f.as_u64().ok_or("its format is not a number")?,
    };
    if format != RECORD_FORMAT {
        return Err(format!(
            "it has format {format}, and this straitd reads format {RECORD_FORMAT} (written by \
             another version of straitd?)"
        ));
    }
    serde_json::from_value(value).map_err(|e| e.to_string())
}

#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    records: Mutex<BTreeMap<AttachmentKey, Attachment>>,
}

impl Attachment {
    /// The network that serves the attachment.
    pub fn network(&self) -> &str {
        self.served_by.as_deref().unwrap_or(&self.key.network)
    }
}

impl Registry {
    /// Opens the registry in `dir`, loading every record. A record that cannot be read is moved
    /// aside (`*.unreadable`) and reported, never silently dropped; its pod's addresses are taken
    /// back from the kernel (see [`crate::recovery`]).
    pub fn open(dir: &Path) -> Result<(Registry, Vec<String>), AgentError> {
        let io_err = |source| AgentError::RegistryIo {
            path: dir.to_path_buf(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        remove_stale_temporaries(dir).map_err(io_err)?;
        let mut records = BTreeMap::new();
        let mut warnings = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err)? {
            let path = entry.map_err(io_err)?.path();
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let parsed = fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| parse(&b));
            match parsed {
                Ok(a) => {
                    records.insert(a.key.clone(), a);
                }
                Err(e) => {
                    let aside = path.with_extension("unreadable");
                    let _ = fs::rename(&path, &aside);
                    warnings.push(format!(
                        "record {} is unreadable ({e}); moved to {}",
                        path.display(),
                        aside.display()
                    ));
                }
            }
        }
        Ok((
            Registry {
                dir: dir.to_path_buf(),
                records: Mutex::new(records),
            },
            warnings,
        ))
    }

    fn path_of(&self, a: &Attachment) -> PathBuf {
        self.dir.join(format!("{}.json", a.host_veth))
    }

    pub fn get(&self, key: &AttachmentKey) -> Option<Attachment> {
        self.lock().get(key).cloned()
    }

    pub fn all(&self) -> Vec<Attachment> {
        self.lock().values().cloned().collect()
    }

    /// The host veth and pod MAC of each attachment, not being released, whose pod has `ip` at a
    /// MAC Strait chose: where the reconciler keeps a neighbour for `ip`.
    pub fn kept_neighbours(&self, ip: IpAddr) -> Vec<(String, MacAddr)> {
        self.lock()
            .values()
            .filter(|a| !a.releasing && a.addresses.iter().any(|n| n.addr() == ip))
            .filter_map(|a| Some((a.host_veth.clone(), a.pod_mac?)))
            .collect()
    }

    /// Writes the record durably, then makes it visible.
    pub(super) fn put(&self, a: &Attachment) -> Result<(), AgentError> {
        self.check_name(a)?;
        let path = self.path_of(a);
        let bytes = serde_json::to_vec_pretty(&OnDisk {
            format: RECORD_FORMAT,
            attachment: a,
        })
        .expect("records serialize");
        write_atomic(&path, &bytes, 0o600)
            .map_err(|source| AgentError::RegistryIo { path, source })?;
        self.lock().insert(a.key.clone(), a.clone());
        Ok(())
    }

    /// Refuses an attachment whose host veth name another attachment's record already has (two
    /// keys whose names hash alike): building it would delete that pod's veth.
    pub(super) fn check_name(&self, a: &Attachment) -> Result<(), AgentError> {
        match self
            .lock()
            .values()
            .find(|o| o.host_veth == a.host_veth && o.key != a.key)
        {
            Some(other) => Err(AgentError::RecordCollision {
                key: Box::new(a.key.clone()),
                other: Box::new(other.key.clone()),
                name: a.host_veth.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Removes the record durably; returns it if it was there.
    pub(super) fn remove(&self, key: &AttachmentKey) -> Result<Option<Attachment>, AgentError> {
        let Some(a) = self.get(key) else {
            return Ok(None);
        };
        let path = self.path_of(&a);
        remove_durable(&path).map_err(|source| AgentError::RegistryIo { path, source })?;
        Ok(self.lock().remove(key))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<AttachmentKey, Attachment>> {
        self.records.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
impl Registry {
    /// Writes `a`, for other modules' unit tests (only the attachments service writes records).
    pub(crate) fn put_for_test(&self, a: &Attachment) {
        self.put(a).expect("the record is written");
    }

    /// Drops `key`'s record, for other modules' unit tests.
    pub(crate) fn remove_for_test(&self, key: &AttachmentKey) {
        self.remove(key).expect("the record is removed");
    }
}

/// An attachment record for unit tests: network `n`, interface `eth0`, `ip` as a /32, the pod
/// MAC `02:00:00:00:00:<mac>` when given.
#[cfg(test)]
pub(crate) fn test_record(cid: &str, veth: &str, ip: &str, mac: Option<u8>) -> Attachment {
    Attachment {
        key: AttachmentKey {
            network: "n".into(),
            container_id: cid.into(),
            ifname: "eth0".into(),
        },
        served_by: None,
        netns: None,
        pod: None,
        addresses: vec![format!("{ip}/32").parse().expect("an IPv4 address")],
        host_veth: veth.into(),
        pod_mac: mac.map(|m| MacAddr([2, 0, 0, 0, 0, m])),
        mtu: 1450,
        releasing: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attachment(cid: &str, veth: &str) -> Attachment {
        Attachment {
            netns: Some("/var/run/netns/x".into()),
            ..test_record(cid, veth, "10.0.0.5", Some(1))
        }
    }

    #[test]
    fn records_survive_a_reopen_and_garbage_is_set_aside() {
        let dir = std::env::temp_dir().join(format!("strait-registry-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let (reg, _) = Registry::open(&dir).unwrap();
        reg.put(&attachment("a", "st000000000001")).unwrap();
        reg.put(&attachment("b", "st000000000002")).unwrap();
        assert!(matches!(
            reg.put(&attachment("c", "st000000000002")),
            Err(AgentError::RecordCollision { .. })
        ));
        reg.remove(&attachment("b", "").key).unwrap().unwrap();
        assert!(reg.remove(&attachment("b", "").key).unwrap().is_none());
        let written = fs::read_to_string(dir.join("st000000000001.json")).unwrap();
        assert!(written.contains("\"format\": 1"), "{written}");
        fs::write(dir.join("st00000000000f.json"), b"{trunc").unwrap();
        let newer = written.replace("\"format\": 1", "\"format\": 2");
        fs::write(dir.join("st00000000000e.json"), newer).unwrap();
        // Written before records carried a format: read as format 1.
        let legacy = serde_json::to_vec(&attachment("d", "st00000000000d")).unwrap();
        fs::write(dir.join("st00000000000d.json"), legacy).unwrap();
        let (again, warnings) = Registry::open(&dir).unwrap();
        assert_eq!(
            again.all(),
            vec![
                attachment("a", "st000000000001"),
                attachment("d", "st00000000000d")
            ]
        );
        assert_eq!(warnings.len(), 2, "{warnings:?}");
        assert!(
            warnings.iter().any(|w| w.contains("format 2")),
            "{warnings:?}"
        );
        assert!(dir.join("st00000000000f.unreadable").exists());
        assert!(dir.join("st00000000000e.unreadable").exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
