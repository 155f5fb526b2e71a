//! Addresses freed lately, and by which namespace. A fixed address (`strait.io/ip-address`)
//! that another namespace freed less than `hold` ago is refused, so that a tenant cannot pick up
//! an address another tenant just let go, which other systems (firewall rules, DNS caches) may
//! still trust. Kept in memory: a restart forgets it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Freed {
    hold: Duration,
    by: Mutex<HashMap<IpAddr, (String, Instant)>>,
}

impl Freed {
    pub fn new(hold: Duration) -> Freed {
        Freed {
            hold,
            by: Mutex::default(),
        }
    }

    /// `namespace` freed `addresses` now.
    pub fn record(&self, namespace: &str, addresses: impl IntoIterator<Item = IpAddr>) {
        self.record_at(Instant::now(), namespace, addresses);
    }

    fn record_at(
        &self,
        now: Instant,
        namespace: &str,
        addresses: impl IntoIterator<Item = IpAddr>,
    ) {
        let mut by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        by.retain(|_, (_, at)| now.duration_since(*at) < self.hold);
        for ip in addresses {
            by.insert(ip, (namespace.to_string(), now));
        }
    }

    /// Why `namespace` may not have `ip` yet, if it may not.
    pub fn refusal(&self, ip: IpAddr, namespace: &str) -> Option<String> {
        self.refusal_at(Instant::now(), ip, namespace)
    }

    fn refusal_at(&self, now: Instant, ip: IpAddr, namespace: &str) -> Option<String> {
        let by = self.by.lock().unwrap_or_else(|p| p.into_inner());
        let (freer, at) = by.get(&ip)?;
        let age = now.duration_since(*at);
        (freer != namespace && age < self.hold).then(|| {
            format!(
                "namespace {freer} freed it {}s ago; other namespaces may have it {}s from now",
                age.as_secs(),
                (self.hold - age).as_secs().max(1)
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_namespace_waits_the_same_one_does_not() {
        let freed = Freed::new(Duration::from_secs(300));
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        let t0 = Instant::now();
        freed.record_at(t0, "shop", [ip]);
        let soon = t0 + Duration::from_secs(10);
        let refusal = freed.refusal_at(soon, ip, "rival").unwrap();
        assert!(
            refusal.contains("namespace shop freed it 10s ago"),
            "{refusal}"
        );
        assert_eq!(freed.refusal_at(soon, ip, "shop"), None);
        assert_eq!(
            freed.refusal_at(t0 + Duration::from_secs(300), ip, "rival"),
            None
        );
        assert_eq!(
            freed.refusal_at(soon, "10.0.0.8".parse().unwrap(), "rival"),
            None
        );
    }
}
