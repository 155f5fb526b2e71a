//! How long things have been missing, for the sweeps that act on what stays gone (orphaned pods'
//! attachments, deleted nodes' blocks): a thing is overdue once it has been missing for a grace
//! period without a break. Reappearing forgets it; a check that finds it not gone after all starts
//! its grace period again.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Absences<K> {
    grace: Duration,
    since: HashMap<K, Instant>,
}

impl<K: Eq + Hash + Clone> Absences<K> {
    pub fn new(grace: Duration) -> Absences<K> {
        Absences {
            grace,
            since: HashMap::new(),
        }
    }

    /// Records that `missing` are what is missing now, forgetting everything else; returns
    /// those missing for the whole grace period.
    pub fn overdue(&mut self, missing: impl IntoIterator<Item = K>) -> Vec<K> {
        self.overdue_at(Instant::now(), missing)
    }

    fn overdue_at(&mut self, now: Instant, missing: impl IntoIterator<Item = K>) -> Vec<K> {
        let mut since = HashMap::new();
        let mut overdue = Vec::new();
        for key in missing {
            let first = self.since.get(&key).copied().unwrap_or(now);
            if now - first >= self.grace {
                overdue.push(key.clone());
            }
            since.insert(key, first);
        }
        self.since = since;
        overdue
    }

    /// `key` was found not gone after all: its grace period starts again.
    pub fn restart(&mut self, key: &K) {
        self.restart_at(Instant::now(), key);
    }

    fn restart_at(&mut self, now: Instant, key: &K) {
        if let Some(first) = self.since.get_mut(key) {
            *first = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(10);

    #[test]
    fn overdue_only_after_missing_the_whole_grace_period() {
        let t0 = Instant::now();
        let mut a = Absences::new(GRACE);
        assert!(a.overdue_at(t0, ["x"]).is_empty());
        assert!(a.overdue_at(t0 + GRACE / 2, ["x", "y"]).is_empty());
        assert_eq!(a.overdue_at(t0 + GRACE, ["x", "y"]), ["x"]);
        assert_eq!(a.overdue_at(t0 + GRACE * 2, ["x", "y"]), ["x", "y"]);
    }

    #[test]
    fn reappearing_forgets_and_a_restart_waits_again() {
        let t0 = Instant::now();
        let mut a = Absences::new(GRACE);
        a.overdue_at(t0, ["x", "y"]);
        // x is back for one pass: its absence starts over.
        a.overdue_at(t0 + GRACE / 2, ["y"]);
        assert_eq!(a.overdue_at(t0 + GRACE, ["x", "y"]), ["y"]);
        a.restart_at(t0 + GRACE, &"y");
        assert!(a.overdue_at(t0 + GRACE * 3 / 2, ["x", "y"]).is_empty());
        assert_eq!(a.overdue_at(t0 + GRACE * 2, ["x", "y"]), ["x", "y"]);
    }
}
