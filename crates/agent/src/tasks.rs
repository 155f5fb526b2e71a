//! The agent's long-running work (the reconciler, the store and pod watches, the sweeps, the
//! record keeper, the kernel and nftables event threads, the HTTP endpoint), each started under a
//! name. None of it is meant to end while the agent runs: a task that ends or panics is listed by
//! `/healthz` and stops the agent with an error, so that its supervisor (the DaemonSet, systemd)
//! starts it afresh; a restart keeps every pod's network (see [`crate::recovery`]).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::error::AgentError;

/// Why and when the agent must stop.
#[derive(Debug, Default)]
pub struct Stop {
    failure: Mutex<Option<String>>,
    signal: Notify,
}

impl Stop {
    /// Stops the agent without an error (the node left the cluster).
    pub fn stop(&self) {
        self.signal.notify_one();
    }

    /// Stops the agent on an error it cannot recover from while running; the process exits
    /// non-zero.
    pub fn fail(&self, why: String) {
        tracing::error!(error = %why, "stopping");
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(why);
        self.signal.notify_one();
    }

    /// Completes once the agent must stop.
    pub async fn until(&self) {
        self.signal.notified().await
    }

    /// Why the agent stopped, when it stopped on an error.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[derive(Debug)]
pub struct Tasks {
    stop: Arc<Stop>,
    stopped: Mutex<Vec<&'static str>>,
    /// Set when the agent ends its tasks on purpose (leaving, shutting down).
    winding_down: AtomicBool,
}

/// Held by a supervised task or thread while it runs: dropping it (the task ended, or unwound
/// from a panic) reports the task stopped.
#[derive(Debug)]
pub struct Running {
    name: &'static str,
    tasks: Arc<Tasks>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.tasks.ended(self.name);
    }
}

impl Tasks {
    pub fn new(stop: Arc<Stop>) -> Arc<Tasks> {
        Arc::new(Tasks {
            stop,
            stopped: Mutex::default(),
            winding_down: AtomicBool::new(false),
        })
    }

    /// Runs `work` as a tokio task named `name`.
    pub fn spawn(
        self: &Arc<Self>,
        name: &'static str,
        work: impl Future<Output = ()> + Send + 'static,
    ) {
        let running = self.running(name);
        tokio::spawn(async move {
            let _running = running;
            work.await;
        });
    }

    /// The guard a thread named `name` holds while it runs.
    pub fn running(self: &Arc<Self>, name: &'static str) -> Running {
        Running {
            name,
            tasks: Arc::clone(self),
        }
    }

    /// From now on tasks may end: the agent is leaving or shutting down.
    pub fn wind_down(&self) {
        self.winding_down.store(true, Ordering::SeqCst);
    }

    /// The tasks that ended while they should have run.
    pub fn stopped(&self) -> Vec<&'static str> {
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn ended(&self, name: &'static str) {
        if self.winding_down.load(Ordering::SeqCst) {
            return;
        }
        self.stopped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name);
        self.stop.fail(format!("the agent's task {name:?} stopped"));
    }
}

/// Runs blocking work (netlink, fsync, nft) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AgentError> + Send + 'static,
) -> Result<T, AgentError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(AgentError::Task)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_task_that_panics_or_ends_stops_the_agent_unless_it_winds_down() {
        let stop = Arc::new(Stop::default());
        let tasks = Tasks::new(Arc::clone(&stop));
        tasks.spawn("forever", std::future::pending());
        tasks.spawn("panics", async { panic!("on purpose") });
        stop.until().await;
        assert_eq!(tasks.stopped(), vec!["panics"]);
        assert_eq!(
            stop.failure().unwrap(),
            "the agent's task \"panics\" stopped"
        );

        let thread = {
            let running = tasks.running("thread");
            std::thread::spawn(move || {
                let _running = running;
            })
        };
        thread.join().unwrap();
        assert_eq!(tasks.stopped(), vec!["panics", "thread"]);

        tasks.wind_down();
        drop(tasks.running("ends"));
        assert_eq!(tasks.stopped(), vec!["panics", "thread"]);
    }
}
