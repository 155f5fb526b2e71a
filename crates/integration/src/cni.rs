//! Invoking a CNI plugin binary exactly as a runtime does: a clean environment with the CNI_*
//! variables, the configuration on stdin, JSON (or nothing) on stdout.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

/// What one invocation produced.
#[derive(Debug)]
pub struct Outcome {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.stdout).ok()
    }

    /// The result JSON of a successful call; panics with the error otherwise.
    pub fn ok(&self) -> Value {
        assert!(
            self.success,
            "plugin failed: {} {}",
            self.stdout, self.stderr
        );
        self.json().unwrap_or(Value::Null)
    }

    /// Asserts failure with `code`, a message and advice; returns the error JSON.
    pub fn err(&self, code: u64) -> Value {
        assert!(
            !self.success,
            "expected error {code}, got success: {}",
            self.stdout
        );
        let json = self
            .json()
            .unwrap_or_else(|| panic!("error output is not JSON: {:?}", self.stdout));
        assert_eq!(json["code"], code, "{json}");
        assert!(
            json["msg"].as_str().is_some_and(|m| !m.is_empty()),
            "no msg: {json}"
        );
        assert!(
            json["details"].as_str().is_some_and(|m| !m.is_empty()),
            "no details: {json}"
        );
        json
    }
}

/// The first address of a CNI result (or of a straitctl pod's `addresses`), without its prefix.
pub fn address(result: &Value) -> String {
    let first = result["ips"][0]["address"]
        .as_str()
        .or_else(|| result["addresses"][0].as_str())
        .unwrap_or_else(|| panic!("no address in {result}"));
    first.split('/').next().unwrap_or(first).to_string()
}

/// Every address of an ADD's result (or a straitctl pod), without prefix lengths, in order.
pub fn addresses(result: &Value) -> Vec<String> {
    let ips: Vec<&str> = match result["ips"].as_array() {
        Some(ips) => ips.iter().filter_map(|ip| ip["address"].as_str()).collect(),
        None => result["addresses"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default(),
    };
    ips.iter()
        .map(|a| a.split('/').next().unwrap_or(a).to_string())
        .collect()
}

/// The CNI_* environment of one call.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub vars: Vec<(String, String)>,
}

impl Env {
    /// A complete environment for an attachment command.
    pub fn attachment(command: &str, container_id: &str, netns: &str, ifname: &str) -> Env {
        Env::default()
            .set("CNI_COMMAND", command)
            .set("CNI_CONTAINERID", container_id)
            .set("CNI_NETNS", netns)
            .set("CNI_IFNAME", ifname)
            .set("CNI_PATH", "/opt/cni/bin")
    }

    pub fn set(mut self, key: &str, value: &str) -> Env {
        self.vars.retain(|(k, _)| k != key);
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    pub fn unset(mut self, key: &str) -> Env {
        self.vars.retain(|(k, _)| k != key);
        self
    }
}

/// Runs `plugin` with exactly `env` (plus PATH) and `stdin`.
pub fn invoke(plugin: &Path, env: &Env, stdin: &str) -> Outcome {
    invoke_command(Command::new(plugin), env, stdin)
}

/// Runs `command` (which ends up executing a plugin) with exactly `env` (plus PATH) and `stdin`.
pub fn invoke_command(mut command: Command, env: &Env, stdin: &str) -> Outcome {
    let mut child = command
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(stdin.as_bytes())
        .expect("plugin reads stdin");
    let out = child.wait_with_output().expect("plugin runs");
    Outcome {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}
