//! What CHECK finds wrong with an attachment, as values: the kernel's differences from the
//! attachment's plan, and what the agent itself knows (the namespace CHECK names, addresses it
//! could not take back, the chain's previous result). Each prints as a sentence.

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use strait_dataplane::Finding;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckFinding {
    /// The kernel differs from the attachment's plan.
    Kernel(Finding),
    /// The pod's namespace could not be used.
    Namespace(String),
    /// CHECK names another namespace than the attachment's.
    NetnsChanged {
        recorded: Option<String>,
        named: Option<String>,
    },
    /// An address of the pod another record holds (found at start).
    Conflict { address: IpAddr, reason: String },
    /// The chain's previous result lacks one of the pod's addresses.
    PrevResultAddress(IpNet),
    /// The chain's previous result lacks the pod's interface.
    PrevResultInterface(String),
}

impl fmt::Display for CheckFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let none = |n: &Option<String>| n.clone().unwrap_or_else(|| "(none)".into());
        match self {
            CheckFinding::Kernel(finding) => finding.fmt(f),
            CheckFinding::Namespace(why) => f.write_str(why),
            CheckFinding::NetnsChanged { recorded, named } => write!(
                f,
                "the attachment was set up in network namespace {}, CHECK names {}",
                none(recorded),
                none(named)
            ),
            CheckFinding::Conflict { address, reason } => {
                write!(f, "address {address} cannot be kept: {reason}")
            }
            CheckFinding::PrevResultAddress(address) => {
                write!(f, "prevResult does not list address {address}")
            }
            CheckFinding::PrevResultInterface(ifname) => {
                write!(
                    f,
                    "prevResult does not list interface {ifname} in the container"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_finding_of_the_agent_reads_as_a_sentence() {
        let cases = [
            (
                CheckFinding::NetnsChanged {
                    recorded: Some("/run/netns/a".into()),
                    named: None,
                },
                "the attachment was set up in network namespace /run/netns/a, CHECK names (none)",
            ),
            (
                CheckFinding::Conflict {
                    address: "10.0.0.5".parse().unwrap(),
                    reason: "another node holds its block".into(),
                },
                "address 10.0.0.5 cannot be kept: another node holds its block",
            ),
            (
                CheckFinding::PrevResultAddress("10.0.0.5/32".parse().unwrap()),
                "prevResult does not list address 10.0.0.5/32",
            ),
            (
                CheckFinding::PrevResultInterface("eth0".into()),
                "prevResult does not list interface eth0 in the container",
            ),
            (
                CheckFinding::Namespace("the namespace is gone".into()),
                "the namespace is gone",
            ),
        ];
        for (finding, sentence) in cases {
            assert_eq!(finding.to_string(), sentence);
        }
    }
}
