//! The CNI result (interfaces, IPs, routes, DNS): one type, read from any supported version and
//! written in the version the runtime asked for.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::version::CniVersion;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// The netns path for an interface inside the container; absent for host-side interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    pub address: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub dst: IpNet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advmss: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub table: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<u8>,
}

impl Route {
    pub fn new(dst: IpNet, gw: Option<IpAddr>) -> Route {
        Route {
            dst,
            gw,
            mtu: None,
            advmss: None,
            priority: None,
            table: None,
            scope: None,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub search: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        *self == Dns::default()
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    #[serde(default)]
    pub ips: Vec<IpConfig>,
    #[serde(default)]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Dns::is_empty")]
    pub dns: Dns,
}

impl CniResult {
    /// Reads a result of any supported version (0.3.x/0.4.0 `ips[].version` is accepted and
    /// ignored: the address says its family).
    pub fn from_json(v: &Value) -> Result<CniResult, String> {
        serde_json::from_value(v.clone()).map_err(|e| e.to_string())
    }

    /// Writes the result in `version`'s shape.
    pub fn to_json(&self, version: CniVersion) -> Value {
        let mut out = serde_json::to_value(self).expect("a result always serializes");
        out["cniVersion"] = version.as_str().into();
        if version.ips_carry_version() {
            for (ip, cfg) in out["ips"]
                .as_array_mut()
                .into_iter()
                .flatten()
                .zip(&self.ips)
            {
                let family = if cfg.address.addr().is_ipv4() {
                    "4"
                } else {
                    "6"
                };
                ip["version"] = family.into();
            }
        }
        if !version.has_route_and_interface_extras() {
            strip(
                &mut out["routes"],
                &["mtu", "advmss", "priority", "table", "scope"],
            );
            strip(&mut out["interfaces"], &["mtu"]);
        }
        out
    }

    /// Appends `ours` after this (previous) result, shifting our interface indices past the
    /// interfaces already listed.
    pub fn chain(mut self, ours: CniResult) -> CniResult {
        let offset = self.interfaces.len();
        self.interfaces.extend(ours.interfaces);
        self.ips.extend(ours.ips.into_iter().map(|mut ip| {
            ip.interface = ip.interface.map(|i| i + offset);
            ip
        }));
        self.routes.extend(ours.routes);
        if self.dns.is_empty() {
            self.dns = ours.dns;
        }
        self
    }
}

fn strip(list: &mut Value, keys: &[&str]) {
    for item in list.as_array_mut().into_iter().flatten() {
        if let Some(obj) = item.as_object_mut() {
            for k in keys {
                obj.remove(*k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> CniResult {
        CniResult {
            interfaces: vec![
                Interface {
                    name: "st0123".into(),
                    mac: Some("02:00:00:00:00:01".into()),
                    sandbox: None,
                    mtu: Some(1450),
                },
                Interface {
                    name: "eth0".into(),
                    mac: Some("02:00:00:00:00:02".into()),
                    sandbox: Some("/var/run/netns/p".into()),
                    mtu: Some(1450),
                },
            ],
            ips: vec![IpConfig {
                address: "10.244.0.5/32".parse().unwrap(),
                gateway: Some("169.254.1.1".parse().unwrap()),
                interface: Some(1),
            }],
            routes: vec![Route {
                mtu: Some(1450),
                ..Route::new(
                    "0.0.0.0/0".parse().unwrap(),
                    Some("169.254.1.1".parse().unwrap()),
                )
            }],
            dns: Dns::default(),
        }
    }

    #[test]
    fn v1_1_keeps_extras_and_omits_ip_version() {
        let j = sample().to_json(CniVersion::V1_1_0);
        assert_eq!(j["cniVersion"], "1.1.0");
        assert_eq!(
            j["ips"][0],
            json!({"address": "10.244.0.5/32", "gateway": "169.254.1.1", "interface": 1})
        );
        assert_eq!(j["routes"][0]["mtu"], 1450);
        assert_eq!(j["interfaces"][1]["mtu"], 1450);
        assert!(j.get("dns").is_none());
    }

    #[test]
    fn older_versions_get_their_own_shape() {
        let j = sample().to_json(CniVersion::V0_3_1);
        assert_eq!(j["ips"][0]["version"], "4");
        assert!(j["routes"][0].get("mtu").is_none());
        assert!(j["interfaces"][1].get("mtu").is_none());
        let j = sample().to_json(CniVersion::V1_0_0);
        assert!(j["ips"][0].get("version").is_none());
        assert!(j["routes"][0].get("mtu").is_none());
    }

    #[test]
    fn every_version_reads_back_what_it_wrote() {
        for v in CniVersion::ALL {
            let back = CniResult::from_json(&sample().to_json(v)).unwrap();
            assert_eq!(back.ips, sample().ips, "{v}");
        }
    }

    #[test]
    fn chaining_shifts_our_interface_indices() {
        let prev = CniResult {
            interfaces: vec![Interface {
                name: "other".into(),
                ..Interface::default()
            }],
            ..CniResult::default()
        };
        let merged = prev.chain(sample());
        assert_eq!(merged.interfaces.len(), 3);
        assert_eq!(merged.ips[0].interface, Some(2));
    }
}
