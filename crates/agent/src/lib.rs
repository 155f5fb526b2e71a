//! straitd, the node agent. It owns the node's Strait state: the pod registry and IPAM
//! ([`registry`], [`network`]), the data plane through `strait-dataplane`, and the socket the CNI
//! plugin and straitctl talk to ([`server`]). `main.rs` only wires these together.

pub mod absences;
pub mod agent;
pub mod blocks;
pub mod caller;
pub mod cluster;
pub mod cni;
pub mod config;
pub mod conflist;
pub mod drift;
pub mod error;
pub mod findings;
pub mod freed;
pub mod http;
pub mod install;
pub mod locks;
pub mod metrics;
pub mod network;
pub mod node;
pub mod orphans;
pub mod pods;
pub mod presence;
pub mod reclaim;
pub mod reconciler;
pub mod recovery;
pub mod registry;
pub mod server;
pub mod status;
pub mod tasks;
pub mod tenancy;
pub mod underlay;
pub mod wake;

pub use agent::{Agent, StartError};
pub use config::Config;
