//! The CNI_* environment of one plugin invocation, validated per command as the spec requires.

use serde::{Deserialize, Serialize};

use crate::args::CniArgs;
use crate::error::{CniError, ErrorCode};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    Add,
    Del,
    Check,
    Version,
    Status,
    Gc,
}

impl Command {
    fn parse(s: &str) -> Option<Command> {
        Some(match s {
            "ADD" => Command::Add,
            "DEL" => Command::Del,
            "CHECK" => Command::Check,
            "VERSION" => Command::Version,
            "STATUS" => Command::Status,
            "GC" => Command::Gc,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
            Command::Version => "VERSION",
            Command::Status => "STATUS",
            Command::Gc => "GC",
        }
    }

    /// ADD, DEL and CHECK act on one container attachment.
    fn targets_container(self) -> bool {
        matches!(self, Command::Add | Command::Del | Command::Check)
    }

    fn needs_netns(self) -> bool {
        matches!(self, Command::Add | Command::Check)
    }
}

/// One invocation's environment. Fields a command does not use are empty / `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invocation {
    pub command: Command,
    pub container_id: String,
    pub netns: Option<String>,
    pub ifname: String,
    pub args: CniArgs,
    pub path: Vec<String>,
}

fn invalid_env(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidEnvironment, msg, details)
}

impl Invocation {
    /// Reads and validates the CNI_* variables through `get` (the process environment in the
    /// plugin, a map in tests).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Invocation, CniError> {
        let raw_command = get("CNI_COMMAND").ok_or_else(|| {
            invalid_env(
                "CNI_COMMAND is not set",
                "set CNI_COMMAND to one of ADD, DEL, CHECK, VERSION, STATUS, GC",
            )
        })?;
        let command = Command::parse(&raw_command).ok_or_else(|| {
            invalid_env(
                format!("CNI_COMMAND {raw_command:?} is not a CNI command"),
                "set CNI_COMMAND to one of ADD, DEL, CHECK, VERSION, STATUS, GC",
            )
        })?;
        let mut inv = Invocation {
            command,
            container_id: String::new(),
            netns: None,
            ifname: String::new(),
            args: CniArgs::default(),
            path: Vec::new(),
        };
        if command == Command::Version {
            return Ok(inv);
        }
        let path = require(&get, "CNI_PATH", "the directories holding CNI plugins")?;
        inv.path = path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect();
        if !command.targets_container() {
            return Ok(inv);
        }
        inv.container_id = require(&get, "CNI_CONTAINERID", "the container's id")?;
        validate_container_id(&inv.container_id)?;
        inv.ifname = require(
            &get,
            "CNI_IFNAME",
            "the interface name to create, e.g. eth0",
        )?;
        validate_ifname(&inv.ifname)?;
        inv.netns = get("CNI_NETNS").filter(|n| !n.is_empty());
        match &inv.netns {
            None if command.needs_netns() => {
                return Err(invalid_env(
                    format!("CNI_NETNS is not set for {}", command.as_str()),
                    "set CNI_NETNS to the path of the container's network namespace, e.g. /var/run/netns/NAME",
                ));
            }
            Some(ns) if !ns.starts_with('/') => {
                return Err(invalid_env(
                    format!("CNI_NETNS {ns:?} is not an absolute path"),
                    "set CNI_NETNS to the absolute path of the container's network namespace",
                ));
            }
            _ => {}
        }
        inv.args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())
            .map_err(|e| invalid_env(e, "CNI_ARGS must be KEY=VALUE pairs separated by ';'"))?;
        if inv.command == Command::Add {
            inv.args.check_pod_identity().map_err(|e| {
                invalid_env(e, "the runtime must pass the pod's own namespace and name")
            })?;
        }
        Ok(inv)
    }
}

fn require(
    get: &impl Fn(&str) -> Option<String>,
    name: &str,
    what: &str,
) -> Result<String, CniError> {
    get(name).filter(|v| !v.is_empty()).ok_or_else(|| {
        invalid_env(
            format!("{name} is not set"),
            format!("the runtime must set {name} to {what}"),
        )
    })
}

/// The spec's rule for container ids and network names: an alphanumeric first character, then
/// alphanumerics, `_`, `.` or `-`.
pub(crate) fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn validate_container_id(id: &str) -> Result<(), CniError> {
    if is_identifier(id) {
        return Ok(());
    }
    Err(invalid_env(
        format!("CNI_CONTAINERID {id:?} has characters a container id may not have"),
        "a container id starts with a letter or digit and holds only letters, digits, '_', '.' and '-'",
    ))
}

/// What the kernel accepts as an interface name: 1–15 bytes, not `.`/`..`, no `/`, `:` or space.
fn validate_ifname(name: &str) -> Result<(), CniError> {
    const MAX: usize = 15;
    let bad = if name.len() > MAX {
        Some(format!(
            "is {} bytes long; the kernel allows at most {MAX}",
            name.len()
        ))
    } else if name == "." || name == ".." {
        Some("is not a name the kernel accepts".to_string())
    } else if name
        .chars()
        .any(|c| c == '/' || c == ':' || c.is_whitespace())
    {
        Some("contains '/', ':' or whitespace".to_string())
    } else {
        None
    };
    match bad {
        None => Ok(()),
        Some(why) => Err(invalid_env(
            format!("CNI_IFNAME {name:?} {why}"),
            "set CNI_IFNAME to a valid interface name, e.g. eth0",
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const ADD: [(&str, &str); 5] = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "c1"),
        ("CNI_NETNS", "/var/run/netns/x"),
        ("CNI_IFNAME", "eth0"),
        ("CNI_PATH", "/opt/cni/bin:/usr/lib/cni"),
    ];

    fn without(key: &str) -> Vec<(&'static str, &'static str)> {
        ADD.iter().copied().filter(|(k, _)| *k != key).collect()
    }

    fn with(key: &'static str, value: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut v = without(key);
        v.push((key, value));
        v
    }

    #[test]
    fn a_complete_add_parses() {
        let inv = Invocation::from_env(env(&ADD)).unwrap();
        assert_eq!(inv.command, Command::Add);
        assert_eq!(inv.container_id, "c1");
        assert_eq!(inv.netns.as_deref(), Some("/var/run/netns/x"));
        assert_eq!(inv.path, ["/opt/cni/bin", "/usr/lib/cni"]);
    }

    #[test]
    fn each_missing_variable_is_named() {
        for key in [
            "CNI_COMMAND",
            "CNI_CONTAINERID",
            "CNI_NETNS",
            "CNI_IFNAME",
            "CNI_PATH",
        ] {
            let err = Invocation::from_env(env(&without(key))).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{key}");
            assert!(err.msg.contains(key), "{key}: {}", err.msg);
        }
    }

    #[test]
    fn malformed_values_are_refused() {
        for (key, value) in [
            ("CNI_COMMAND", "FROB"),
            ("CNI_CONTAINERID", "-starts-with-dash"),
            ("CNI_CONTAINERID", "has/slash"),
            ("CNI_IFNAME", "abcdefghijklmnop"),
            ("CNI_IFNAME", "eth/0"),
            ("CNI_IFNAME", ".."),
            ("CNI_NETNS", "relative/path"),
            ("CNI_ARGS", "K8S_POD_NAME"),
        ] {
            let err = Invocation::from_env(env(&with(key, value))).unwrap_err();
            assert_eq!(err.code, ErrorCode::InvalidEnvironment, "{key}={value}");
        }
    }

    #[test]
    fn del_needs_no_netns_and_version_needs_nothing() {
        let mut del = without("CNI_NETNS");
        del.retain(|(k, _)| *k != "CNI_COMMAND");
        del.push(("CNI_COMMAND", "DEL"));
        assert_eq!(Invocation::from_env(env(&del)).unwrap().netns, None);
        let v = Invocation::from_env(env(&[("CNI_COMMAND", "VERSION")])).unwrap();
        assert_eq!(v.command, Command::Version);
    }

    #[test]
    fn gc_and_status_need_only_the_path() {
        for cmd in ["GC", "STATUS"] {
            let inv =
                Invocation::from_env(env(&[("CNI_COMMAND", cmd), ("CNI_PATH", "/opt/cni/bin")]))
                    .unwrap();
            assert!(inv.container_id.is_empty());
            assert!(Invocation::from_env(env(&[("CNI_COMMAND", cmd)])).is_err());
        }
    }
}
