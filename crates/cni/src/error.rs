//! CNI errors: the spec's well-known codes, Strait's own codes (100 and up, as the spec reserves),
//! and the JSON error object a plugin prints.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::version::CniVersion;

/// Every error code Strait answers with. 1–99 are the spec's; 100 and up are Strait's, documented in
/// `docs/errors.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
pub enum ErrorCode {
    /// 1: the configuration's cniVersion is not one this plugin speaks, or too old for the command.
    IncompatibleVersion,
    /// 2: the configuration has a field this plugin refuses.
    UnsupportedField,
    /// 3: the container is unknown or gone; the runtime needs no cleanup.
    UnknownContainer,
    /// 4: a CNI_* environment variable is missing or malformed.
    InvalidEnvironment,
    /// 5: reading stdin or writing stdout failed.
    IoFailure,
    /// 6: stdin (or a part of it) is not the JSON it should be.
    DecodingFailure,
    /// 7: the configuration is well-formed but wrong.
    InvalidConfig,
    /// 11: something transient (the agent is not up); retry later.
    TryAgainLater,
    /// 50: STATUS — the plugin cannot add containers now.
    PluginNotAvailable,
    /// 100: the network's address pool has no free address and no free block.
    PoolExhausted,
    /// 101: the kernel lacks a feature the network needs.
    KernelFeatureMissing,
    /// 102: programming the kernel failed.
    DataplaneFailed,
    /// 103: CHECK found the container's network different from what was set up.
    CheckFailed,
    /// 104: the agent failed in a way that is a bug or a broken node (see its log).
    Internal,
    /// 105: the address the pod asked for is taken, or belongs to another node's block.
    AddressUnavailable,
    /// 106: the pod's namespace does not allow what the pod asked for.
    NotAllowed,
}

impl ErrorCode {
    pub fn code(self) -> u32 {
        match self {
            ErrorCode::IncompatibleVersion => 1,
            ErrorCode::UnsupportedField => 2,
            ErrorCode::UnknownContainer => 3,
            ErrorCode::InvalidEnvironment => 4,
            ErrorCode::IoFailure => 5,
            ErrorCode::DecodingFailure => 6,
            ErrorCode::InvalidConfig => 7,
            ErrorCode::TryAgainLater => 11,
            ErrorCode::PluginNotAvailable => 50,
            ErrorCode::PoolExhausted => 100,
            ErrorCode::KernelFeatureMissing => 101,
            ErrorCode::DataplaneFailed => 102,
            ErrorCode::CheckFailed => 103,
            ErrorCode::Internal => 104,
            ErrorCode::AddressUnavailable => 105,
            ErrorCode::NotAllowed => 106,
        }
    }

    const ALL: [ErrorCode; 16] = [
        ErrorCode::IncompatibleVersion,
        ErrorCode::UnsupportedField,
        ErrorCode::UnknownContainer,
        ErrorCode::InvalidEnvironment,
        ErrorCode::IoFailure,
        ErrorCode::DecodingFailure,
        ErrorCode::InvalidConfig,
        ErrorCode::TryAgainLater,
        ErrorCode::PluginNotAvailable,
        ErrorCode::PoolExhausted,
        ErrorCode::KernelFeatureMissing,
        ErrorCode::DataplaneFailed,
        ErrorCode::CheckFailed,
        ErrorCode::Internal,
        ErrorCode::AddressUnavailable,
        ErrorCode::NotAllowed,
    ];
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        c.code()
    }
}

impl TryFrom<u32> for ErrorCode {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, String> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.code() == n)
            .ok_or_else(|| format!("unknown CNI error code {n}"))
    }
}

/// A CNI error: what went wrong (`msg`) and what to do about it (`details`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub struct CniError {
    pub code: ErrorCode,
    pub msg: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl fmt::Display for CniError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CNI error {}: {}", self.code.code(), self.msg)?;
        if !self.details.is_empty() {
            write!(f, " ({})", self.details)?;
        }
        Ok(())
    }
}

impl CniError {
    pub fn new(code: ErrorCode, msg: impl Into<String>, details: impl Into<String>) -> Self {
        CniError {
            code,
            msg: msg.into(),
            details: details.into(),
        }
    }

    /// The error object the spec wants on stdout, in the given version.
    pub fn to_json(&self, version: CniVersion) -> serde_json::Value {
        let mut out = serde_json::json!({
            "cniVersion": version.as_str(),
            "code": self.code.code(),
            "msg": self.msg,
        });
        if !self.details.is_empty() {
            out["details"] = self.details.clone().into();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_through_numbers() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(c.code()), Ok(c));
        }
        assert!(ErrorCode::try_from(8).is_err());
    }

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(ErrorCode::InvalidConfig, "bad", "fix it");
        let j = e.to_json(CniVersion::V1_0_0);
        assert_eq!(
            j,
            serde_json::json!({"cniVersion": "1.0.0", "code": 7, "msg": "bad", "details": "fix it"})
        );
        let bare = CniError::new(ErrorCode::TryAgainLater, "later", "").to_json(CniVersion::V1_1_0);
        assert!(bare.get("details").is_none());
    }
}
