//! One async lock per key, so that requests for the same attachment run one at a time while
//! requests for different attachments run in parallel. Idle entries are dropped as they go.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

#[derive(Debug)]
pub struct KeyedLocks<K> {
    map: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    pub async fn lock(&self, key: &K) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Nobody but the map holds these: no task waits on or owns them.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(map.entry(key.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn same_key_waits_other_keys_do_not() {
        let locks = Arc::new(KeyedLocks::default());
        let first = locks.lock(&"a").await;
        let _other = tokio::time::timeout(Duration::from_millis(50), locks.lock(&"b"))
            .await
            .expect("another key is free");
        let l = Arc::clone(&locks);
        let waiter = tokio::spawn(async move { l.lock(&"a").await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        drop(first);
        waiter.await.unwrap();
    }
}
