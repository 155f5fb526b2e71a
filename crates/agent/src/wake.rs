//! What wakes the reconciler: every source signals one shared wake-up (bursts collapse into a
//! single pass) and says why, so a pass knows what it is answering.

use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    /// The cluster store changed.
    Store = 1,
    /// The kernel changed something we own.
    Kernel = 2,
    /// The nftables ruleset changed.
    Nft = 4,
    /// The slow periodic pass, or a retry.
    Timer = 8,
}

/// The set of reasons a pass answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reasons(u8);

impl Reasons {
    pub fn has(self, r: Reason) -> bool {
        self.0 & r as u8 != 0
    }

    /// Only the store changed: the kernel still holds what the last pass left.
    pub fn store_only(self) -> bool {
        self.0 == Reason::Store as u8
    }

    pub fn with(self, other: Reasons) -> Reasons {
        Reasons(self.0 | other.0)
    }
}

#[derive(Debug, Default)]
pub struct Wake {
    notify: Notify,
    reasons: AtomicU8,
}

impl Wake {
    pub fn signal(&self, reason: Reason) {
        self.reasons.fetch_or(reason as u8, Ordering::SeqCst);
        self.notify.notify_one();
    }

    /// Takes the reasons signalled so far without waiting.
    pub fn take(&self) -> Reasons {
        Reasons(self.reasons.swap(0, Ordering::SeqCst))
    }

    /// Waits for a signal, or `timeout` (which counts as [`Reason::Timer`]).
    pub async fn wait(&self, timeout: Duration) -> Reasons {
        let timed_out = tokio::time::timeout(timeout, self.notify.notified())
            .await
            .is_err();
        let mut reasons = self.reasons.swap(0, Ordering::SeqCst);
        if timed_out {
            reasons |= Reason::Timer as u8;
        }
        Reasons(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_collapse_and_keep_their_reasons() {
        let wake = Wake::default();
        wake.signal(Reason::Store);
        wake.signal(Reason::Kernel);
        let r = wake.wait(Duration::from_secs(5)).await;
        assert!(r.has(Reason::Store) && r.has(Reason::Kernel) && !r.has(Reason::Timer));
        let r = wake.wait(Duration::from_millis(10)).await;
        assert!(r.has(Reason::Timer) && !r.has(Reason::Store));
    }
}
