//! The network configuration a runtime passes on stdin, reduced to what Strait reads, with every
//! refusal carrying the spec's code and a fix.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::env::is_identifier;
use crate::error::{CniError, ErrorCode};
use crate::result::CniResult;
use crate::version::CniVersion;

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// Strait's plugin configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConf {
    pub cni_version: CniVersion,
    /// The configuration's (or conflist's) `name`.
    pub name: String,
    /// Which of the agent's networks to attach to; the configuration's `name` when absent.
    pub network: Option<String>,
    /// The agent's socket, when not the default.
    pub socket: Option<String>,
    pub prev_result: Option<CniResult>,
    /// GC only: the attachments the runtime still holds.
    pub valid_attachments: Option<Vec<Attachment>>,
}

fn decoding(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::DecodingFailure, msg, details)
}

fn invalid(msg: impl Into<String>, details: impl Into<String>) -> CniError {
    CniError::new(ErrorCode::InvalidConfig, msg, details)
}

/// Reads `cniVersion` from a parsed object: missing or unknown is an incompatible version.
pub(crate) fn read_version(obj: &Map<String, Value>) -> Result<CniVersion, CniError> {
    let supported = CniVersion::supported_list();
    match obj.get("cniVersion") {
        None => Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            "the network configuration has no cniVersion",
            format!("add \"cniVersion\" with one of: {supported}"),
        )),
        Some(Value::String(s)) => s.parse().map_err(|_| {
            CniError::new(
                ErrorCode::IncompatibleVersion,
                format!("cniVersion {s:?} is not supported by strait"),
                format!("use one of: {supported}"),
            )
        }),
        Some(other) => Err(decoding(
            format!("cniVersion must be a string, found {other}"),
            format!(
                "write it as a string, e.g. \"cniVersion\": \"{}\"",
                CniVersion::LATEST
            ),
        )),
    }
}

/// Parses stdin into a JSON object, naming what is wrong with it.
pub(crate) fn parse_object(stdin: &[u8]) -> Result<Map<String, Value>, CniError> {
    if stdin.iter().all(u8::is_ascii_whitespace) {
        return Err(decoding(
            "stdin is empty",
            "the runtime must pass the network configuration as JSON on stdin",
        ));
    }
    match serde_json::from_slice::<Value>(stdin) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(other) => Err(decoding(
            format!(
                "the network configuration must be a JSON object, not {}",
                kind(&other)
            ),
            "pass a single JSON object such as {\"cniVersion\":\"1.0.0\",\"name\":\"strait\",\"type\":\"strait\"}",
        )),
        Err(e) => Err(decoding(
            format!("the network configuration is not valid JSON: {e}"),
            "check the file in the CNI configuration directory for truncation or syntax errors",
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn optional_string(obj: &Map<String, Value>, key: &str) -> Result<Option<String>, CniError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(
            format!("field {key:?} must be a string, found {}", kind(other)),
            format!("fix or remove {key:?} in the network configuration"),
        )),
    }
}

impl NetConf {
    pub fn parse(stdin: &[u8]) -> Result<NetConf, CniError> {
        let obj = parse_object(stdin)?;
        let cni_version = read_version(&obj)?;
        let name = optional_string(&obj, "name")?.unwrap_or_default();
        if name.is_empty() {
            return Err(invalid(
                "the network configuration has no name",
                "add \"name\": the network's name, e.g. \"strait\"",
            ));
        }
        if !is_identifier(&name) {
            return Err(invalid(
                format!("network name {name:?} is not valid"),
                "a network name starts with a letter or digit and holds only letters, digits, '_', '.' and '-'",
            ));
        }
        if optional_string(&obj, "type")?.is_none() {
            return Err(invalid(
                "the network configuration has no type",
                "add \"type\": \"strait\"",
            ));
        }
        if obj.get("ipam").is_some_and(|v| !v.is_null()) {
            return Err(CniError::new(
                ErrorCode::UnsupportedField,
                "strait allocates addresses itself and does not take an \"ipam\" section",
                "remove \"ipam\" from the configuration; address pools are set in straitd's configuration",
            ));
        }
        let network = optional_string(&obj, "network")?;
        let socket = optional_string(&obj, "socket")?;
        if let Some(s) = &socket
            && !s.starts_with('/')
        {
            return Err(invalid(
                format!("socket {s:?} is not an absolute path"),
                "set \"socket\" to the agent's Unix socket, e.g. /run/strait/strait.sock, or remove it",
            ));
        }
        let prev_result = match obj.get("prevResult") {
            None | Some(Value::Null) => None,
            Some(v) => Some(CniResult::from_json(v).map_err(|e| {
                decoding(
                    format!("prevResult is not a CNI result: {e}"),
                    "the plugin before strait in the chain produced a malformed result",
                )
            })?),
        };
        let valid_attachments = match obj.get("cni.dev/valid-attachments") {
            None | Some(Value::Null) => None,
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(|e| {
                decoding(
                    format!("cni.dev/valid-attachments is malformed: {e}"),
                    "it must be a list of {\"containerID\": ..., \"ifname\": ...}",
                )
            })?),
        };
        Ok(NetConf {
            cni_version,
            name,
            network,
            socket,
            prev_result,
            valid_attachments,
        })
    }

    /// The agent network this configuration attaches to.
    pub fn network_name(&self) -> &str {
        self.network.as_deref().unwrap_or(&self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<NetConf, CniError> {
        NetConf::parse(s.as_bytes())
    }

    #[test]
    fn a_minimal_config_parses() {
        let c = parse(r#"{"cniVersion":"1.0.0","name":"strait","type":"strait"}"#).unwrap();
        assert_eq!(c.cni_version, CniVersion::V1_0_0);
        assert_eq!(c.network_name(), "strait");
        let c = parse(r#"{"cniVersion":"0.3.1","name":"n","type":"strait","network":"other","socket":"/x.sock"}"#)
            .unwrap();
        assert_eq!(c.network_name(), "other");
        assert_eq!(c.socket.as_deref(), Some("/x.sock"));
    }

    #[test]
    fn each_wrong_config_gets_its_code() {
        let cases: &[(&str, ErrorCode)] = &[
            ("", ErrorCode::DecodingFailure),
            ("   \n", ErrorCode::DecodingFailure),
            (
                r#"{"cniVersion":"1.0.0","name":"#,
                ErrorCode::DecodingFailure,
            ),
            ("[1,2]", ErrorCode::DecodingFailure),
            ("nonsense", ErrorCode::DecodingFailure),
            (
                r#"{"name":"n","type":"strait"}"#,
                ErrorCode::IncompatibleVersion,
            ),
            (
                r#"{"cniVersion":"0.2.0","name":"n","type":"strait"}"#,
                ErrorCode::IncompatibleVersion,
            ),
            (
                r#"{"cniVersion":1,"name":"n","type":"strait"}"#,
                ErrorCode::DecodingFailure,
            ),
            (
                r#"{"cniVersion":"1.0.0","type":"strait"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"bad name","type":"strait"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"strait","network":5}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"strait","socket":"rel"}"#,
                ErrorCode::InvalidConfig,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"strait","ipam":{"type":"host-local"}}"#,
                ErrorCode::UnsupportedField,
            ),
            (
                r#"{"cniVersion":"1.0.0","name":"n","type":"strait","prevResult":{"ips":"x"}}"#,
                ErrorCode::DecodingFailure,
            ),
            (
                r#"{"cniVersion":"1.1.0","name":"n","type":"strait","cni.dev/valid-attachments":[{"x":1}]}"#,
                ErrorCode::DecodingFailure,
            ),
        ];
        for (input, code) in cases {
            let err = parse(input).unwrap_err();
            assert_eq!(err.code, *code, "{input}: {err}");
            assert!(!err.details.is_empty(), "{input}: no advice given");
        }
    }

    #[test]
    fn gc_attachments_and_prev_result_are_read() {
        let c = parse(
            r#"{"cniVersion":"1.1.0","name":"n","type":"strait",
                "cni.dev/valid-attachments":[{"containerID":"a","ifname":"eth0"}],
                "prevResult":{"cniVersion":"1.1.0","ips":[{"address":"10.0.0.2/24"}]}}"#,
        )
        .unwrap();
        assert_eq!(c.valid_attachments.unwrap()[0].container_id, "a");
        assert_eq!(c.prev_result.unwrap().ips.len(), 1);
    }
}
