//! The records of a cluster's DNS zone, as Kubernetes' DNS specification defines them, from its
//! Services and Endpoints: `SVC.NS.svc.ZONE` (the cluster IP, or a headless service's ready
//! endpoints), `HOST.SVC.NS.svc.ZONE` for a headless service's endpoints, SRV records for named
//! ports, CNAMEs for ExternalName services, `A-B-C-D.NS.pod.ZONE`, and PTR records. What the test
//! clusters run in place of CoreDNS (`bin/cluster-dns.rs` serves it).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::{Endpoints, Service};

use crate::dns_wire::{Answer, Rcode, Rdata, Record, TYPE_ANY, TYPE_CNAME, TYPE_SOA, TYPE_SRV};

/// Seconds a client may keep an answer (CoreDNS's default for the cluster zone).
const TTL: u32 = 5;
/// How many ExternalName services in a row a CNAME is followed through (a loop ends there).
const CNAME_CHAIN: usize = 8;

/// A port: name, protocol (lowercase), number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedPort {
    pub name: String,
    pub protocol: String,
    pub port: u16,
}

/// What DNS needs of a Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    ClusterIp(Vec<IpAddr>),
    Headless,
    ExternalName(String),
}

/// What DNS needs of a ready endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub hostname: Option<String>,
    pub ports: Vec<NamedPort>,
}

/// The cluster's services and their endpoints, keyed by (namespace, name).
#[derive(Debug, Default, Clone)]
pub struct Zone {
    pub domain: String,
    pub services: BTreeMap<(String, String), (ServiceKind, Vec<NamedPort>)>,
    pub endpoints: BTreeMap<(String, String), Vec<Endpoint>>,
}

fn ports_of<'a>(
    ports: impl Iterator<Item = (Option<&'a String>, Option<&'a String>, i32)>,
) -> Vec<NamedPort> {
    ports
        .filter_map(|(name, protocol, port)| {
            Some(NamedPort {
                name: name.filter(|n| !n.is_empty())?.to_ascii_lowercase(),
                protocol: protocol.map_or("tcp".into(), |p| p.to_ascii_lowercase()),
                port: u16::try_from(port).ok()?,
            })
        })
        .collect()
}

impl Zone {
    pub fn new(domain: &str) -> Zone {
        Zone {
            domain: domain.trim_end_matches('.').to_ascii_lowercase(),
            ..Zone::default()
        }
    }

    /// The zone from the API's objects.
    pub fn from_objects<'a>(
        domain: &str,
        services: impl IntoIterator<Item = &'a Service>,
        endpoints: impl IntoIterator<Item = &'a Endpoints>,
    ) -> Zone {
        let mut zone = Zone::new(domain);
        let key = |m: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta| {
            (
                m.namespace.clone().unwrap_or_default(),
                m.name.clone().unwrap_or_default(),
            )
        };
        for service in services {
            let Some(spec) = &service.spec else { continue };
            let kind = if spec.type_.as_deref() == Some("ExternalName") {
                let Some(target) = &spec.external_name else {
                    continue;
                };
                ServiceKind::ExternalName(target.trim_end_matches('.').to_ascii_lowercase())
            } else {
                let ips: Vec<IpAddr> = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .fold(Vec::new(), |mut ips, ip| {
                        if !ips.contains(&ip) {
                            ips.push(ip);
                        }
                        ips
                    });
                if ips.is_empty() {
                    ServiceKind::Headless
                } else {
                    ServiceKind::ClusterIp(ips)
                }
            };
            let ports = ports_of(
                spec.ports
                    .iter()
                    .flatten()
                    .map(|p| (p.name.as_ref(), p.protocol.as_ref(), p.port)),
            );
            zone.services.insert(key(&service.metadata), (kind, ports));
        }
        for object in endpoints {
            let mut ready = Vec::new();
            for subset in object.subsets.iter().flatten() {
                let ports = ports_of(
                    subset
                        .ports
                        .iter()
                        .flatten()
                        .map(|p| (p.name.as_ref(), p.protocol.as_ref(), p.port)),
                );
                for address in subset.addresses.iter().flatten() {
                    let Ok(ip) = address.ip.parse() else { continue };
                    ready.push(Endpoint {
                        ip,
                        hostname: address.hostname.clone().filter(|h| !h.is_empty()),
                        ports: ports.clone(),
                    });
                }
            }
            zone.endpoints.insert(key(&object.metadata), ready);
        }
        zone
    }

    fn record(&self, name: String, data: Rdata) -> Record {
        Record {
            name,
            ttl: TTL,
            data,
        }
    }

    fn soa(&self) -> Record {
        self.record(
            self.domain.clone(),
            Rdata::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: 1,
                minimum: TTL,
            },
        )
    }

    /// An answer with `records` of the asked type (an empty one says the name exists).
    fn found(&self, qtype: u16, records: Vec<Record>) -> Answer {
        let answers: Vec<Record> = records
            .into_iter()
            .filter(|r| qtype == TYPE_ANY || r.data.rtype() == qtype)
            .collect();
        let mut answer = Answer::code(Rcode::NoError);
        if answers.is_empty() {
            answer.authority.push(self.soa());
        }
        answer.answers = answers;
        answer
    }

    fn nxdomain(&self) -> Answer {
        let mut answer = Answer::code(Rcode::NxDomain);
        answer.authority.push(self.soa());
        answer
    }

    fn address(&self, name: &str, ip: IpAddr) -> Record {
        self.record(
            name.to_string(),
            match ip {
                IpAddr::V4(v4) => Rdata::A(v4),
                IpAddr::V6(v6) => Rdata::Aaaa(v6),
            },
        )
    }

    /// An endpoint's name under its headless service: its hostname, or its address with dashes.
    fn endpoint_label(endpoint: &Endpoint) -> String {
        endpoint
            .hostname
            .clone()
            .unwrap_or_else(|| endpoint.ip.to_string().replace(['.', ':'], "-"))
    }

    /// The answer to a question for `name` (lowercase, no final dot) of type `qtype`.
    pub fn resolve(&self, name: &str, qtype: u16) -> Answer {
        self.resolve_within(name, qtype, CNAME_CHAIN)
    }

    /// As [`Zone::resolve`], following at most `chain` CNAMEs within the zone.
    fn resolve_within(&self, name: &str, qtype: u16, chain: usize) -> Answer {
        if name.ends_with(".in-addr.arpa") || name.ends_with(".ip6.arpa") {
            return self.reverse(name, qtype);
        }
        let prefix = if name == self.domain {
            ""
        } else if let Some(p) = name.strip_suffix(&format!(".{}", self.domain)) {
            p
        } else {
            return Answer::code(Rcode::Refused);
        };
        let labels: Vec<&str> = prefix.split('.').filter(|l| !l.is_empty()).collect();
        match labels.as_slice() {
            [] if qtype == TYPE_SOA || qtype == TYPE_ANY => self.found(qtype, vec![self.soa()]),
            [] | ["svc"] | ["pod"] | [_, "pod"] => self.found(qtype, Vec::new()),
            // A namespace's name under svc exists while it has services.
            [namespace, "svc"] if self.services.keys().any(|(ns, _)| ns == namespace) => {
                self.found(qtype, Vec::new())
            }
            [pod_ip, _namespace, "pod"] => match dashed_ip(pod_ip) {
                Some(ip) => self.found(qtype, vec![self.address(name, ip)]),
                None => self.nxdomain(),
            },
            [service, namespace, "svc"] => self.service(name, namespace, service, qtype, chain),
            [port, protocol, service, namespace, "svc"]
                if port.starts_with('_') && protocol.starts_with('_') =>
            {
                self.srv(name, namespace, service, &port[1..], &protocol[1..], qtype)
            }
            [host, service, namespace, "svc"] => {
                let key = (namespace.to_string(), service.to_string());
                let records: Vec<Record> = self
                    .endpoints_of_headless(&key)
                    .filter(|e| Self::endpoint_label(e) == *host)
                    .map(|e| self.address(name, e.ip))
                    .collect();
                if records.is_empty() {
                    self.nxdomain()
                } else {
                    self.found(qtype, records)
                }
            }
            _ => self.nxdomain(),
        }
    }

    fn endpoints_of_headless(&self, key: &(String, String)) -> impl Iterator<Item = &Endpoint> {
        let headless = matches!(self.services.get(key), Some((ServiceKind::Headless, _)));
        self.endpoints
            .get(key)
            .filter(|_| headless)
            .into_iter()
            .flatten()
    }

    fn service(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        qtype: u16,
        chain: usize,
    ) -> Answer {
        let key = (namespace.to_string(), service.to_string());
        let Some((kind, _)) = self.services.get(&key) else {
            return self.nxdomain();
        };
        match kind {
            ServiceKind::ClusterIp(ips) => {
                let records = ips.iter().map(|ip| self.address(name, *ip)).collect();
                self.found(qtype, records)
            }
            ServiceKind::Headless => {
                let records = self
                    .endpoints_of_headless(&key)
                    .map(|e| self.address(name, e.ip))
                    .collect();
                self.found(qtype, records)
            }
            ServiceKind::ExternalName(target) => {
                let mut answer = Answer::code(Rcode::NoError);
                answer
                    .answers
                    .push(self.record(name.to_string(), Rdata::Cname(target.clone())));
                // Within the zone, the target's records come along (as CoreDNS sends them).
                let in_zone = target.ends_with(&format!(".{}", self.domain));
                if qtype != TYPE_CNAME && in_zone && chain > 0 {
                    let chased = self.resolve_within(target, qtype, chain - 1);
                    answer.answers.extend(chased.answers);
                }
                answer
            }
        }
    }

    fn srv(
        &self,
        name: &str,
        namespace: &str,
        service: &str,
        port: &str,
        protocol: &str,
        qtype: u16,
    ) -> Answer {
        let key = (namespace.to_string(), service.to_string());
        let Some((kind, ports)) = self.services.get(&key) else {
            return self.nxdomain();
        };
        let matches = |p: &NamedPort| p.name == port && p.protocol == protocol;
        let service_name = format!("{service}.{namespace}.svc.{}", self.domain);
        let mut records = Vec::new();
        let mut additional = Vec::new();
        match kind {
            ServiceKind::ClusterIp(ips) => {
                for p in ports.iter().filter(|p| matches(p)) {
                    records.push(self.record(name.to_string(), srv(p.port, &service_name)));
                    additional.extend(ips.iter().map(|ip| self.address(&service_name, *ip)));
                }
            }
            ServiceKind::Headless => {
                for endpoint in self.endpoints_of_headless(&key) {
                    let target = format!("{}.{service_name}", Self::endpoint_label(endpoint));
                    for p in endpoint.ports.iter().filter(|p| matches(p)) {
                        records.push(self.record(name.to_string(), srv(p.port, &target)));
                        additional.push(self.address(&target, endpoint.ip));
                    }
                }
            }
            ServiceKind::ExternalName(_) => {}
        }
        if records.is_empty() {
            return self.nxdomain();
        }
        let mut answer = self.found(qtype, records);
        if qtype == TYPE_SRV {
            answer.additional = additional;
        }
        answer
    }

    /// PTR records: a cluster IP names its service, a headless service's endpoint its name
    /// under that service.
    fn reverse(&self, name: &str, qtype: u16) -> Answer {
        let Some(ip) = reverse_ip(name) else {
            return Answer::code(Rcode::Refused);
        };
        let mut targets = Vec::new();
        for ((namespace, service), (kind, _)) in &self.services {
            let service_name = format!("{service}.{namespace}.svc.{}", self.domain);
            match kind {
                ServiceKind::ClusterIp(ips) if ips.contains(&ip) => targets.push(service_name),
                ServiceKind::Headless => targets.extend(
                    self.endpoints_of_headless(&(namespace.clone(), service.clone()))
                        .filter(|e| e.ip == ip)
                        .map(|e| format!("{}.{service_name}", Self::endpoint_label(e))),
                ),
                _ => {}
            }
        }
        if targets.is_empty() {
            return Answer::code(Rcode::Refused);
        }
        let records = targets
            .into_iter()
            .map(|t| self.record(name.to_string(), Rdata::Ptr(t)))
            .collect();
        self.found(qtype, records)
    }
}

fn srv(port: u16, target: &str) -> Rdata {
    Rdata::Srv {
        priority: 0,
        weight: 100,
        port,
        target: target.to_string(),
    }
}

/// `10-244-1-5` → 10.244.1.5 (and an IPv6 address with dashes for colons).
fn dashed_ip(label: &str) -> Option<IpAddr> {
    if let Ok(v4) = label.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    label
        .replace('-', ":")
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// `5.1.244.10.in-addr.arpa` → 10.244.1.5; nibble names under ip6.arpa likewise.
fn reverse_ip(name: &str) -> Option<IpAddr> {
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<&str> = v4.split('.').collect();
        octets.reverse();
        return octets.join(".").parse::<Ipv4Addr>().ok().map(IpAddr::V4);
    }
    let nibbles: Vec<&str> = name.strip_suffix(".ip6.arpa")?.split('.').collect();
    if nibbles.len() != 32 {
        return None;
    }
    let hex: String = nibbles.iter().rev().copied().collect();
    let value = u128::from_str_radix(&hex, 16).ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(value)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns_wire::{TYPE_A, TYPE_AAAA, TYPE_PTR};

    fn zone() -> Zone {
        let mut zone = Zone::new("cluster.local.");
        let key = |ns: &str, n: &str| (ns.to_string(), n.to_string());
        let http = |port| NamedPort {
            name: "http".into(),
            protocol: "tcp".into(),
            port,
        };
        zone.services.insert(
            key("default", "web"),
            (
                ServiceKind::ClusterIp(vec!["10.96.0.20".parse().unwrap()]),
                vec![http(80)],
            ),
        );
        zone.services
            .insert(key("db", "pg"), (ServiceKind::Headless, vec![http(5432)]));
        zone.endpoints.insert(
            key("db", "pg"),
            vec![
                Endpoint {
                    ip: "10.244.1.5".parse().unwrap(),
                    hostname: Some("pg-0".into()),
                    ports: vec![http(5432)],
                },
                Endpoint {
                    ip: "10.244.2.7".parse().unwrap(),
                    hostname: None,
                    ports: vec![http(5432)],
                },
            ],
        );
        zone.services.insert(
            key("default", "alias"),
            (
                ServiceKind::ExternalName("web.default.svc.cluster.local".into()),
                Vec::new(),
            ),
        );
        zone.services.insert(
            key("default", "out"),
            (
                ServiceKind::ExternalName("foo.example.com".into()),
                Vec::new(),
            ),
        );
        zone
    }

    fn data(answer: &Answer) -> Vec<Rdata> {
        answer.answers.iter().map(|r| r.data.clone()).collect()
    }

    fn a(ip: &str) -> Rdata {
        Rdata::A(ip.parse().unwrap())
    }

    #[test]
    fn services_resolve_to_their_cluster_ip_or_ready_endpoints() {
        let zone = zone();
        let web = zone.resolve("web.default.svc.cluster.local", TYPE_A);
        assert_eq!(web.rcode, Rcode::NoError);
        assert_eq!(data(&web), vec![a("10.96.0.20")]);
        let pg = zone.resolve("pg.db.svc.cluster.local", TYPE_A);
        assert_eq!(data(&pg), vec![a("10.244.1.5"), a("10.244.2.7")]);
        let host = zone.resolve("pg-0.pg.db.svc.cluster.local", TYPE_A);
        assert_eq!(data(&host), vec![a("10.244.1.5")]);
        let dashed = zone.resolve("10-244-2-7.pg.db.svc.cluster.local", TYPE_A);
        assert_eq!(data(&dashed), vec![a("10.244.2.7")]);
    }

    #[test]
    fn an_existing_name_of_another_type_is_empty_and_a_missing_one_nxdomain() {
        let zone = zone();
        let aaaa = zone.resolve("web.default.svc.cluster.local", TYPE_AAAA);
        assert_eq!((aaaa.rcode, aaaa.answers.len()), (Rcode::NoError, 0));
        assert_eq!(aaaa.authority[0].data.rtype(), TYPE_SOA);
        for missing in [
            "nope.default.svc.cluster.local",
            "pg-9.pg.db.svc.cluster.local",
            // Not headless: no names under it.
            "x.web.default.svc.cluster.local",
            "a.b.c.d.e.f.cluster.local",
        ] {
            assert_eq!(
                zone.resolve(missing, TYPE_A).rcode,
                Rcode::NxDomain,
                "{missing}"
            );
        }
        assert_eq!(zone.resolve("example.com", TYPE_A).rcode, Rcode::Refused);
        assert_eq!(
            zone.resolve("db.svc.cluster.local", TYPE_A).rcode,
            Rcode::NoError
        );
    }

    #[test]
    fn external_names_are_cnames_chased_within_the_zone() {
        let zone = zone();
        let alias = zone.resolve("alias.default.svc.cluster.local", TYPE_A);
        assert_eq!(
            data(&alias),
            vec![
                Rdata::Cname("web.default.svc.cluster.local".into()),
                a("10.96.0.20")
            ]
        );
        let out = zone.resolve("out.default.svc.cluster.local", TYPE_CNAME);
        assert_eq!(data(&out), vec![Rdata::Cname("foo.example.com".into())]);
    }

    #[test]
    fn cname_chains_are_followed_and_loops_end() {
        let mut zone = zone();
        let external = |target: &str| (ServiceKind::ExternalName(target.into()), Vec::new());
        let key = |n: &str| ("default".to_string(), n.to_string());
        zone.services
            .insert(key("hop"), external("alias.default.svc.cluster.local"));
        let hop = zone.resolve("hop.default.svc.cluster.local", TYPE_A);
        assert_eq!(
            data(&hop),
            vec![
                Rdata::Cname("alias.default.svc.cluster.local".into()),
                Rdata::Cname("web.default.svc.cluster.local".into()),
                a("10.96.0.20")
            ]
        );
        zone.services
            .insert(key("ping"), external("pong.default.svc.cluster.local"));
        zone.services
            .insert(key("pong"), external("ping.default.svc.cluster.local"));
        let looped = zone.resolve("ping.default.svc.cluster.local", TYPE_A);
        assert_eq!(looped.rcode, Rcode::NoError);
        assert_eq!(looped.answers.len(), CNAME_CHAIN + 1);
    }

    #[test]
    fn zone_from_api_objects() {
        let service: Service =
            k8s_openapi::serde_json::from_value(k8s_openapi::serde_json::json!({
                "metadata": {"name": "web", "namespace": "default"},
                "spec": {"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}
            }))
            .unwrap();
        let headless: Service = k8s_openapi::serde_json::from_value(k8s_openapi::serde_json::json!({
            "metadata": {"name": "pg", "namespace": "db"},
            "spec": {"clusterIP": "None", "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]}
        }))
        .unwrap();
        let endpoints: Endpoints = k8s_openapi::serde_json::from_value(k8s_openapi::serde_json::json!({
            "metadata": {"name": "pg", "namespace": "db"},
            "subsets": [{
                "addresses": [{"ip": "10.244.1.5", "hostname": "pg-0"}, {"ip": "not an address"}],
                "notReadyAddresses": [{"ip": "10.244.1.6"}],
                "ports": [{"name": "sql", "port": 5432, "protocol": "TCP"}]
            }]
        }))
        .unwrap();
        let zone = Zone::from_objects("cluster.local", [&service, &headless], [&endpoints]);
        assert_eq!(
            data(&zone.resolve("web.default.svc.cluster.local", TYPE_A)),
            vec![a("10.96.0.20")]
        );
        // Only ready, readable addresses.
        assert_eq!(
            data(&zone.resolve("pg.db.svc.cluster.local", TYPE_A)),
            vec![a("10.244.1.5")]
        );
        assert_eq!(
            data(&zone.resolve("_sql._tcp.pg.db.svc.cluster.local", TYPE_SRV)),
            vec![srv(5432, "pg-0.pg.db.svc.cluster.local")]
        );
        assert_eq!(
            zone.resolve("nothing.svc.cluster.local", TYPE_A).rcode,
            Rcode::NxDomain
        );
    }

    #[test]
    fn named_ports_have_srv_records() {
        let zone = zone();
        let web = zone.resolve("_http._tcp.web.default.svc.cluster.local", TYPE_SRV);
        assert_eq!(data(&web), vec![srv(80, "web.default.svc.cluster.local")]);
        assert_eq!(web.additional.len(), 1);
        let pg = zone.resolve("_http._tcp.pg.db.svc.cluster.local", TYPE_SRV);
        assert_eq!(
            data(&pg),
            vec![
                srv(5432, "pg-0.pg.db.svc.cluster.local"),
                srv(5432, "10-244-2-7.pg.db.svc.cluster.local")
            ]
        );
        let udp = zone.resolve("_http._udp.web.default.svc.cluster.local", TYPE_SRV);
        assert_eq!(udp.rcode, Rcode::NxDomain);
    }

    #[test]
    fn pods_and_reverse_names() {
        let zone = zone();
        let pod = zone.resolve("10-244-1-9.any.pod.cluster.local", TYPE_A);
        assert_eq!(data(&pod), vec![a("10.244.1.9")]);
        let ptr = zone.resolve("20.0.96.10.in-addr.arpa", TYPE_PTR);
        assert_eq!(
            data(&ptr),
            vec![Rdata::Ptr("web.default.svc.cluster.local".into())]
        );
        let endpoint = zone.resolve("5.1.244.10.in-addr.arpa", TYPE_PTR);
        assert_eq!(
            data(&endpoint),
            vec![Rdata::Ptr("pg-0.pg.db.svc.cluster.local".into())]
        );
        assert_eq!(
            zone.resolve("1.1.168.192.in-addr.arpa", TYPE_PTR).rcode,
            Rcode::Refused
        );
        assert_eq!(
            reverse_ip("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"),
            Some("2001:db8::1".parse().unwrap())
        );
    }
}
