//! The caller of one request on the socket: its budget, and whether it is still there to read the
//! answer (its connection is looked at when asked, no task watches it). A CNI request does its
//! work only while both hold: ADD checks before it persists and before it touches the kernel, and
//! undoes what it built when the caller left meanwhile, so that nothing is left for a runtime that
//! already counted the request as failed; every command waits for its attachment's lock only
//! within the budget.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use crate::error::AgentError;

/// How long the agent works on one request: well within the plugin's own wait (60 s), which is
/// within the kubelet's CRI deadline (2 min), so the answer still finds its caller.
pub const REQUEST_BUDGET: Duration = Duration::from_secs(30);

/// The caller of one request: the connection it waits on, and its deadline.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    connection: Option<BorrowedFd<'a>>,
    budget: Duration,
    deadline: Instant,
}

impl<'a> Caller<'a> {
    /// The caller waiting on `connection`, whose request has just arrived, with the whole
    /// [`REQUEST_BUDGET`].
    pub fn on(connection: BorrowedFd<'a>) -> Caller<'a> {
        Caller {
            connection: Some(connection),
            ..Caller::with_budget(REQUEST_BUDGET)
        }
    }

    /// A caller that never leaves, with `budget`.
    pub fn with_budget(budget: Duration) -> Caller<'a> {
        Caller {
            connection: None,
            budget,
            deadline: Instant::now() + budget,
        }
    }

    /// Whether the request may go on: the caller is there and the budget not spent.
    pub fn check(&self) -> Result<(), AgentError> {
        if self.is_gone() {
            return Err(AgentError::CallerGone);
        }
        if Instant::now() > self.deadline {
            return Err(AgentError::OutOfTime {
                budget: self.budget,
            });
        }
        Ok(())
    }

    /// Waits for `work` (a lock, say) no longer than what is left of the budget.
    pub async fn within<T>(
        &self,
        work: impl std::future::Future<Output = T>,
    ) -> Result<T, AgentError> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        tokio::time::timeout(left, work)
            .await
            .map_err(|_| AgentError::OutOfTime {
                budget: self.budget,
            })
    }

    /// Whether the caller has closed its connection (it has already shut down its writing half
    /// when its request arrived: only a full close counts).
    pub fn is_gone(&self) -> bool {
        self.connection.is_some_and(peer_closed)
    }
}

/// Whether the peer of a connected stream socket has closed it (POLLHUP), without waiting.
fn peer_closed(fd: BorrowedFd<'_>) -> bool {
    let mut poll = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLHUP,
        revents: 0,
    };
    // SAFETY: poll(2) on one valid descriptor, with a zero timeout.
    let ready = unsafe { libc::poll(&mut poll, 1, 0) };
    ready > 0 && poll.revents & (libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::Shutdown;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;

    use super::*;

    #[test]
    fn a_half_closed_connection_is_a_caller_waiting_and_a_closed_one_is_gone() {
        let (agent_end, mut plugin_end) = UnixStream::pair().unwrap();
        plugin_end.write_all(b"request").unwrap();
        plugin_end.shutdown(Shutdown::Write).unwrap();
        assert!(!peer_closed(agent_end.as_fd()));
        drop(plugin_end);
        assert!(peer_closed(agent_end.as_fd()));
    }

    #[test]
    fn a_spent_budget_stops_the_request() {
        assert!(Caller::with_budget(Duration::from_secs(60)).check().is_ok());
        let (agent_end, plugin_end) = UnixStream::pair().unwrap();
        let caller = Caller::on(agent_end.as_fd());
        assert!(caller.check().is_ok());
        drop(plugin_end);
        assert!(matches!(caller.check(), Err(AgentError::CallerGone)));
        let spent = Caller::with_budget(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(matches!(spent.check(), Err(AgentError::OutOfTime { .. })));
    }

    #[tokio::test]
    async fn a_wait_ends_with_the_budget() {
        let caller = Caller::with_budget(Duration::from_millis(50));
        assert_eq!(caller.within(async { 7 }).await.unwrap(), 7);
        let never = caller.within(std::future::pending::<()>()).await;
        assert!(matches!(never, Err(AgentError::OutOfTime { .. })));
    }
}
