//! `strait`, the CNI plugin the runtime executes. It validates the invocation, opens the
//! container's network namespace (in the runtime's mount namespace, where CNI_NETNS means
//! something) and, for ADD and CHECK, an rtnetlink socket inside it, forwards them to the node
//! agent over its Unix socket and prints the answer. It
//! holds no network logic and no state: stdout carries only the result or error JSON.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use strait_cni::{
    CniError, Command, ErrorCode, Invocation, answer_version, parse_request, version_reply,
};
use strait_netns::{Netns, NetnsError};
use strait_rpc::{CallError, DEFAULT_SOCKET, Passed, Request, Response, call};

/// How long to wait for the agent's answer before giving up with "try again later": half the
/// kubelet's CRI deadline (2 min), so the runtime still hears the answer; the agent gives up on
/// its own side after 30 s.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        Ok(_) => run(&stdin),
        Err(e) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("reading the network configuration from stdin failed: {e}"),
            "the runtime must pass the configuration on stdin",
        )),
    };
    let (json, code) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(json)) => (json, ExitCode::SUCCESS),
        Err(e) => (e.to_json(answer_version(&stdin)), ExitCode::FAILURE),
    };
    let mut out = std::io::stdout().lock();
    if serde_json::to_writer(&mut out, &json).is_err() || out.write_all(b"\n").is_err() {
        return ExitCode::FAILURE;
    }
    code
}

fn run(stdin: &[u8]) -> Result<Option<serde_json::Value>, CniError> {
    let invocation = Invocation::from_env(|k| std::env::var(k).ok())?;
    if invocation.command == Command::Version {
        return Ok(Some(version_reply(stdin)));
    }
    let request = parse_request(invocation, stdin)?;
    let command = request.invocation.command;
    let netns = open_netns(command, request.invocation.netns.as_deref())?;
    let socket = request
        .config
        .socket
        .clone()
        .unwrap_or_else(|| DEFAULT_SOCKET.to_string());
    // ADD and CHECK change or read the namespace: through a socket opened inside it here, where
    // entering namespaces is allowed, so that the agent needs no such right.
    let route_socket = match (&netns, command) {
        (Some(ns), Command::Add | Command::Check) => Some(ns.route_socket().map_err(|e| {
            CniError::new(
                ErrorCode::IoFailure,
                format!("opening a netlink socket inside the container's namespace: {e}"),
                "the plugin must run as root, as runtimes run CNI plugins",
            )
        })?),
        _ => None,
    };
    let request = Request::Cni(Box::new(request));
    let passed = Passed {
        netns: netns.as_ref().map(Netns::fd),
        socket: route_socket.as_ref().map(|s| s.as_fd()),
    };
    match call(Path::new(&socket), &request, passed, AGENT_TIMEOUT) {
        Ok(Response::CniOk(json)) => Ok(json),
        Ok(Response::CniError(e)) => Err(e),
        Ok(Response::BadRequest(why)) => Err(CniError::new(
            ErrorCode::DecodingFailure,
            format!("the strait agent could not read the request: {why}"),
            "the plugin and straitd are different versions, or the request was damaged: install matching binaries",
        )),
        Ok(other) => Err(CniError::new(
            ErrorCode::Internal,
            format!("the strait agent answered a CNI request with {other:?}"),
            "the plugin and straitd are different versions: install matching binaries",
        )),
        Err(e @ CallError::TooLarge { .. }) => Err(CniError::new(
            ErrorCode::InvalidConfig,
            e.to_string(),
            "the network configuration (with its prevResult) must stay within that size",
        )),
        Err(e) => Err(agent_unreachable(command, e)),
    }
}

/// Opens the container's namespace. ADD and CHECK need it; DEL goes on without one that is gone.
fn open_netns(command: Command, path: Option<&str>) -> Result<Option<Netns>, CniError> {
    let Some(path) = path else {
        return Ok(None);
    };
    match Netns::open(path) {
        Ok(ns) => Ok(Some(ns)),
        Err(_) if command == Command::Del => Ok(None),
        Err(e @ NetnsError::NotFound { .. }) => Err(CniError::new(
            ErrorCode::UnknownContainer,
            e.to_string(),
            "the container's network namespace is gone; nothing was changed",
        )),
        Err(e @ NetnsError::NotNetns { .. }) => Err(CniError::new(
            ErrorCode::InvalidEnvironment,
            e.to_string(),
            "set CNI_NETNS to the path of a network namespace (e.g. /var/run/netns/NAME or /proc/PID/ns/net)",
        )),
        Err(e) => Err(CniError::new(
            ErrorCode::IoFailure,
            e.to_string(),
            "the plugin must run as root in the runtime's mount namespace",
        )),
    }
}

/// The agent could not answer: STATUS says the plugin is unavailable, everything else is retried.
fn agent_unreachable(command: Command, e: CallError) -> CniError {
    let details = match &e {
        CallError::AgentDown { .. } => {
            "start straitd on this node (or check \"socket\" in the network configuration); nothing was changed"
        }
        _ => "check straitd's log on this node; the runtime should retry",
    };
    let code = if command == Command::Status {
        ErrorCode::PluginNotAvailable
    } else {
        ErrorCode::TryAgainLater
    };
    CniError::new(code, e.to_string(), details)
}
