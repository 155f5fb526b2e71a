//! The CNI protocol as Strait speaks it: parse what a runtime hands a plugin (environment and
//! stdin) into a typed request, answer with results and errors in the version the runtime asked
//! for. Pure functions over plain data: no I/O happens here.

mod args;
mod config;
mod env;
mod error;
mod request;
mod result;
mod version;

pub use args::CniArgs;
pub use config::{Attachment, NetConf};
pub use env::{Command, Invocation};
pub use error::{CniError, ErrorCode};
pub use request::{CniRequest, answer_version, parse_request, version_reply};
pub use result::{CniResult, Dns, Interface, IpConfig, Route};
pub use version::CniVersion;
