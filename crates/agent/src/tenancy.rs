//! What a pod may ask of its network. The namespace is the boundary: its annotations, which the
//! cluster admin sets (tenants are not given write access to namespaces), name the network and
//! the pool its pods get by default and the others they may name; a pod's own annotations choose
//! only within that. A fixed address must lie in a pool the namespace may use, and that the
//! configuration opens to fixed addresses (checked where the pools are known).

use std::collections::BTreeMap;

/// On a pod or its namespace: the network the pod joins (the namespace's is its pods' default).
pub const NETWORK: &str = "strait.io/network";
/// On a pod or its namespace: the pool its address comes from (likewise).
pub const POOL: &str = "strait.io/pool";
/// On a pod: the address it must have.
pub const ADDRESS: &str = "strait.io/ip-address";
/// On a namespace: the networks its pods may name besides its default, comma-separated, or `*`.
pub const ALLOWED_NETWORKS: &str = "strait.io/allowed-networks";
/// On a namespace: the pools its pods may name (and take fixed addresses from) besides its
/// default, comma-separated, or `*`.
pub const ALLOWED_POOLS: &str = "strait.io/allowed-pools";

/// Names a namespace allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Any,
    Only(Vec<String>),
}

impl Allowed {
    /// The default, if any, and what the namespace's list annotation adds.
    fn of(default: Option<&String>, list: Option<&String>) -> Allowed {
        if list.is_some_and(|l| l.trim() == "*") {
            return Allowed::Any;
        }
        let listed = list
            .into_iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(String::from);
        Allowed::Only(default.cloned().into_iter().chain(listed).collect())
    }

    pub fn permits(&self, name: &str) -> bool {
        match self {
            Allowed::Any => true,
            Allowed::Only(names) => names.iter().any(|n| n == name),
        }
    }

    fn describe(&self) -> String {
        match self {
            Allowed::Any => "any".into(),
            Allowed::Only(names) if names.is_empty() => "none".into(),
            Allowed::Only(names) => names.join(", "),
        }
    }
}

/// What a pod gets, decided from its annotations within its namespace's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIntent {
    /// `None`: the network the runtime's configuration names.
    pub network: Option<String>,
    /// `None`: any pool of the network.
    pub pool: Option<String>,
    /// The fixed address it asks for, as written.
    pub address: Option<String>,
    /// The pools the namespace names: those the pod may take a fixed address from, and its
    /// other family's address when it chose a pool or a fixed address.
    pub pools: Allowed,
}

impl Default for PodIntent {
    /// No Kubernetes (a runtime without pods and namespaces): the configuration decides all.
    fn default() -> Self {
        PodIntent {
            network: None,
            pool: None,
            address: None,
            pools: Allowed::Any,
        }
    }
}

/// The pod's intent, or why its namespace does not allow it. `default_network` is the network
/// the runtime's configuration names, which a pod may always name.
pub fn decide(
    namespace: &str,
    pod: &BTreeMap<String, String>,
    ns: &BTreeMap<String, String>,
    default_network: &str,
) -> Result<PodIntent, String> {
    let networks = Allowed::of(ns.get(NETWORK), ns.get(ALLOWED_NETWORKS));
    let pools = Allowed::of(ns.get(POOL), ns.get(ALLOWED_POOLS));
    let refuse = |what: &str, name: &str, allowed: &Allowed, annotation: &str| {
        format!(
            "namespace {namespace} does not let its pods choose {what} {name:?} (it allows: {}); \
             the cluster admin lists what it may use in the namespace's {annotation} annotation",
            allowed.describe()
        )
    };
    let network = match pod.get(NETWORK) {
        Some(n) if n == default_network && !ns.contains_key(NETWORK) => Some(n.clone()),
        Some(n) if networks.permits(n) => Some(n.clone()),
        Some(n) => return Err(refuse("network", n, &networks, ALLOWED_NETWORKS)),
        None => ns.get(NETWORK).cloned(),
    };
    let pool = match pod.get(POOL) {
        Some(p) if pools.permits(p) => Some(p.clone()),
        Some(p) => return Err(refuse("pool", p, &pools, ALLOWED_POOLS)),
        None => ns.get(POOL).cloned(),
    };
    Ok(PodIntent {
        network,
        pool,
        address: pod.get(ADDRESS).cloned(),
        pools,
    })
}

impl PodIntent {
    /// Whether pool `name` may give the pod its address of a family its chosen pool (or fixed
    /// address) is not of. Where neither the pod nor its namespace chose a pool (nor a fixed
    /// address), any pool, as for the chosen family; else any pool where the namespace names
    /// none, and only a pool it names (as its default or in its list) where it does. A namespace
    /// kept to one team's IPv4 pool never gets another team's IPv6 addresses.
    pub fn may_draw_from(&self, name: &str) -> bool {
        if self.pool.is_none() && self.address.is_none() {
            return true;
        }
        match &self.pools {
            Allowed::Any => true,
            Allowed::Only(names) => names.is_empty() || names.iter().any(|n| n == name),
        }
    }
}

/// Why a fixed address in pool `pool` is refused to a pod with `intent`, if it is.
pub fn fixed_address_refusal(intent: &PodIntent, pool: &str, opened: bool) -> Option<String> {
    if !opened {
        return Some(format!(
            "pool {pool} does not give fixed addresses (set fixed_addresses = true on it in \
             straitd's configuration to allow them)"
        ));
    }
    (!intent.pools.permits(pool)).then(|| {
        format!(
            "its namespace may not take addresses from pool {pool} (it allows: {}); the cluster \
             admin lists what it may use in the namespace's {ALLOWED_POOLS} annotation",
            intent.pools.describe()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_namespace_decides_and_the_pod_chooses_within_it() {
        let decide = |pod: &[(&str, &str)], ns: &[(&str, &str)]| {
            decide("shop", &map(pod), &map(ns), "strait")
        };
        // Nothing said: the configuration's network, any pool.
        let plain = decide(&[], &[]).unwrap();
        assert_eq!((plain.network, plain.pool), (None, None));
        // The namespace's defaults apply; a pod may repeat them.
        let ns = [(NETWORK, "other"), (POOL, "gold")];
        let by_ns = decide(&[(POOL, "gold")], &ns).unwrap();
        assert_eq!(
            (by_ns.network.as_deref(), by_ns.pool.as_deref()),
            (Some("other"), Some("gold"))
        );
        // A pod cannot leave what its namespace allows, whichever way it tries.
        for pod in [
            &[(NETWORK, "other")][..],
            &[(POOL, "gold")],
            &[(NETWORK, "strait")],
        ] {
            let refused = decide(pod, &[(NETWORK, "blue"), (POOL, "blue-pool")]);
            assert!(refused.unwrap_err().contains("allows: blue"), "{pod:?}");
        }
        assert!(
            decide(&[(POOL, "gold")], &[]).is_err(),
            "no pool is allowed by default"
        );
        // The configuration's network is always fine where the namespace names no network.
        assert!(decide(&[(NETWORK, "strait")], &[]).is_ok());
        // Lists, and `*`.
        let listed = [(ALLOWED_POOLS, "gold, silver"), (ALLOWED_NETWORKS, "other")];
        assert!(decide(&[(POOL, "silver"), (NETWORK, "other")], &listed).is_ok());
        assert!(decide(&[(POOL, "bronze")], &listed).is_err());
        assert!(decide(&[(POOL, "bronze")], &[(ALLOWED_POOLS, "*")]).is_ok());
    }

    #[test]
    fn another_family_draws_only_from_the_pools_a_restricted_namespace_names() {
        let decide_with = |pod: &[(&str, &str)], ns: &[(&str, &str)]| {
            decide("shop", &map(pod), &map(ns), "strait").unwrap()
        };
        let decide = |ns: &[(&str, &str)]| decide_with(&[], ns);
        assert!(
            decide(&[]).may_draw_from("team-b-v6"),
            "a namespace that names no pool"
        );
        assert!(
            PodIntent::default().may_draw_from("team-b-v6"),
            "no Kubernetes"
        );
        let team_a = decide(&[(POOL, "team-a-v4"), (ALLOWED_POOLS, "team-a-v6")]);
        assert!(team_a.may_draw_from("team-a-v6"));
        assert!(!team_a.may_draw_from("team-b-v6"));
        assert!(!decide(&[(POOL, "team-a-v4")]).may_draw_from("team-a-v6"));
        assert!(decide(&[(ALLOWED_POOLS, "*")]).may_draw_from("team-b-v6"));
        // Nothing chosen: any pool for every family, as before.
        assert!(decide(&[(ALLOWED_POOLS, "gold")]).may_draw_from("team-b-v6"));
        // A pod's own choice, or a fixed address, binds its other family too.
        let named = decide_with(&[(POOL, "gold")], &[(ALLOWED_POOLS, "gold")]);
        assert!(!named.may_draw_from("team-b-v6"));
        let fixed = decide_with(&[(ADDRESS, "10.0.0.7")], &[(ALLOWED_POOLS, "gold")]);
        assert!(!fixed.may_draw_from("team-b-v6") && fixed.may_draw_from("gold"));
    }

    #[test]
    fn fixed_addresses_need_an_opened_pool_the_namespace_may_use() {
        let ns = [(POOL, "static")];
        let intent = decide("shop", &map(&[(ADDRESS, "10.0.0.7")]), &map(&ns), "n").unwrap();
        assert_eq!(intent.address.as_deref(), Some("10.0.0.7"));
        assert_eq!(fixed_address_refusal(&intent, "static", true), None);
        let closed = fixed_address_refusal(&intent, "static", false).unwrap();
        assert!(closed.contains("fixed_addresses = true"), "{closed}");
        let other = fixed_address_refusal(&intent, "dynamic", true).unwrap();
        assert!(other.contains("allows: static"), "{other}");
        let nothing = decide("shop", &map(&[(ADDRESS, "10.0.0.7")]), &map(&[]), "n").unwrap();
        assert!(fixed_address_refusal(&nothing, "static", true).is_some());
        assert_eq!(
            fixed_address_refusal(&PodIntent::default(), "static", true),
            None
        );
    }
}
