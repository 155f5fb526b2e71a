//! One plugin invocation as a whole: the validated environment plus the parsed configuration.
//! This is what the plugin forwards to the agent.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::{NetConf, parse_object, read_version};
use crate::env::{Command, Invocation};
use crate::error::{CniError, ErrorCode};
use crate::version::CniVersion;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CniRequest {
    pub invocation: Invocation,
    pub config: NetConf,
}

/// Parses an ADD, DEL, CHECK, STATUS or GC invocation. VERSION is answered by [`version_reply`].
pub fn parse_request(invocation: Invocation, stdin: &[u8]) -> Result<CniRequest, CniError> {
    let config = NetConf::parse(stdin)?;
    let version = config.cni_version;
    let allowed = match invocation.command {
        Command::Check => version.has_check(),
        Command::Status | Command::Gc => version.has_status_and_gc(),
        _ => true,
    };
    if !allowed {
        return Err(CniError::new(
            ErrorCode::IncompatibleVersion,
            format!(
                "{} does not exist in CNI {version}",
                invocation.command.as_str()
            ),
            format!(
                "{} needs cniVersion {} or newer in the network configuration",
                invocation.command.as_str(),
                if invocation.command == Command::Check {
                    CniVersion::V0_4_0
                } else {
                    CniVersion::V1_1_0
                }
            ),
        ));
    }
    Ok(CniRequest { invocation, config })
}

/// The version to write an answer in: the configuration's when it has a supported one.
pub fn answer_version(stdin: &[u8]) -> CniVersion {
    parse_object(stdin)
        .ok()
        .and_then(|obj| read_version(&obj).ok())
        .unwrap_or(CniVersion::LATEST)
}

/// VERSION's answer: the versions Strait speaks, labelled with the runtime's version when known.
pub fn version_reply(stdin: &[u8]) -> Value {
    serde_json::json!({
        "cniVersion": answer_version(stdin).as_str(),
        "supportedVersions": CniVersion::ALL.map(|v| v.as_str()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(cmd: &'static str) -> impl Fn(&str) -> Option<String> {
        move |k| {
            Some(
                match k {
                    "CNI_COMMAND" => cmd,
                    "CNI_CONTAINERID" => "c1",
                    "CNI_NETNS" => "/var/run/netns/p",
                    "CNI_IFNAME" => "eth0",
                    "CNI_PATH" => "/opt/cni/bin",
                    _ => return None,
                }
                .to_string(),
            )
        }
    }

    fn conf(version: &str) -> Vec<u8> {
        format!(r#"{{"cniVersion":"{version}","name":"strait","type":"strait"}}"#).into_bytes()
    }

    #[test]
    fn commands_are_checked_against_the_config_version() {
        let parse =
            |cmd, version| parse_request(Invocation::from_env(env(cmd)).unwrap(), &conf(version));
        assert!(parse("CHECK", "0.4.0").is_ok());
        for (cmd, version) in [("CHECK", "0.3.1"), ("GC", "1.0.0"), ("STATUS", "0.4.0")] {
            let err = parse(cmd, version).unwrap_err();
            assert_eq!(err.code, ErrorCode::IncompatibleVersion, "{cmd} {version}");
        }
        assert!(parse("GC", "1.1.0").is_ok());
    }

    #[test]
    fn version_reply_lists_everything_and_echoes_a_known_version() {
        let r = version_reply(&conf("0.4.0"));
        assert_eq!(r["cniVersion"], "0.4.0");
        assert_eq!(
            r["supportedVersions"].as_array().unwrap().len(),
            CniVersion::ALL.len()
        );
        assert_eq!(
            version_reply(b"")["cniVersion"],
            CniVersion::LATEST.as_str()
        );
        assert_eq!(
            version_reply(&conf("9.9.9"))["cniVersion"],
            CniVersion::LATEST.as_str()
        );
    }
}
