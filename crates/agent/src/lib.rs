//! straitd, the node agent. Its services, each with one job: the pods attached on this node
//! ([`attachments`]), IPAM ([`ipam`]), the node's membership in the cluster ([`membership`]),
//! its overlay and the reconciler ([`overlay`], [`reconciler`]), and serving the CNI plugin and
//! straitctl ([`server`], [`status`]) and Prometheus ([`http`]). [`agent`] assembles them, the
//! CNI commands ([`cni`]) combine them; `main.rs` only wires these together.

pub mod absences;
pub mod agent;
pub mod attachments;
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
pub mod ipam;
pub mod leave;
pub mod locks;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod orphans;
pub mod overlay;
pub mod pods;
pub mod presence;
pub mod reclaim;
pub mod reconciler;
pub mod recovery;
pub mod server;
pub mod status;
pub mod tasks;
pub mod tenancy;
pub mod underlay;
pub mod wake;

pub use agent::Agent;
pub use config::Config;
pub use error::AgentError;
