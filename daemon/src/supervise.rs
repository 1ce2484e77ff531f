//! Supervision policy: restart budget and backoff, exit classification.
//!
//! [`RestartBudget`]: at most [`RESTART_LIMIT`] restarts within [`RESTART_WINDOW`]; the n-th restart
//! in the window waits `1 s * 2^(n-1)` (capped at 30 s). A child killed by `SIGSYS` (seccomp) or
//! that violated the IPC protocol is a security event ([`ExitKind::is_security_event`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// Restarts allowed within [`RESTART_WINDOW`].
pub const RESTART_LIMIT: usize = 5;
/// The window of the restart budget.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// First backoff delay.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest backoff delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Restart accounting of one child.
#[derive(Debug, Default)]
pub struct RestartBudget {
    history: VecDeque<Instant>,
}

impl RestartBudget {
    /// Records a restart at `now` and returns the delay before it, or `None` when the budget is
    /// exhausted (the daemon must give up).
    pub fn next_delay(&mut self, now: Instant) -> Option<Duration> {
        while self
            .history
            .front()
            .is_some_and(|t| now.duration_since(*t) > RESTART_WINDOW)
        {
            self.history.pop_front();
        }
        if self.history.len() >= RESTART_LIMIT {
            return None;
        }
        self.history.push_back(now);
        let n = u32::try_from(self.history.len())
            .unwrap_or(u32::MAX)
            .saturating_sub(1)
            .min(16);
        Some((BACKOFF_START * 2u32.pow(n)).min(BACKOFF_MAX))
    }
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// Exited with a status.
    Exited(i32),
    /// Killed by a signal.
    Signaled(Signal),
    /// The parent detected an IPC protocol violation and killed it.
    ProtocolViolation(String),
}

impl ExitKind {
    /// From a `waitpid` status (`None` for statuses that are not terminations).
    pub fn from_wait(st: WaitStatus) -> Option<Self> {
        match st {
            WaitStatus::Exited(_, code) => Some(ExitKind::Exited(code)),
            WaitStatus::Signaled(_, sig, _) => Some(ExitKind::Signaled(sig)),
            _ => None,
        }
    }

    /// Seccomp kill or protocol violation.
    pub fn is_security_event(&self) -> bool {
        matches!(
            self,
            ExitKind::Signaled(Signal::SIGSYS) | ExitKind::ProtocolViolation(_)
        )
    }

    /// A description for the log.
    pub fn describe(&self) -> String {
        match self {
            ExitKind::Exited(c) => format!("exited with status {c}"),
            ExitKind::Signaled(Signal::SIGSYS) => "killed by SIGSYS (seccomp violation)".into(),
            ExitKind::Signaled(s) => format!("killed by {}", s.as_str()),
            ExitKind::ProtocolViolation(w) => {
                format!("killed after an IPC protocol violation ({w})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_and_backoff() {
        let mut b = RestartBudget::default();
        let t0 = Instant::now();
        let delays: Vec<_> = (0..5)
            .map(|i| b.next_delay(t0 + Duration::from_secs(i)).unwrap())
            .collect();
        assert_eq!(
            delays.iter().map(|d| d.as_secs()).collect::<Vec<_>>(),
            vec![1, 2, 4, 8, 16]
        );
        assert_eq!(b.next_delay(t0 + Duration::from_secs(10)), None);
        // After the window has passed the budget is available again.
        assert_eq!(
            b.next_delay(t0 + Duration::from_secs(200)),
            Some(BACKOFF_START)
        );
    }

    #[test]
    fn classification() {
        let pid = nix::unistd::Pid::from_raw(5);
        assert!(
            ExitKind::from_wait(WaitStatus::Signaled(pid, Signal::SIGSYS, false))
                .unwrap()
                .is_security_event()
        );
        assert!(
            !ExitKind::from_wait(WaitStatus::Signaled(pid, Signal::SIGKILL, false))
                .unwrap()
                .is_security_event()
        );
        assert!(ExitKind::ProtocolViolation("x".into()).is_security_event());
        assert_eq!(
            ExitKind::from_wait(WaitStatus::Exited(pid, 1)),
            Some(ExitKind::Exited(1))
        );
        assert_eq!(ExitKind::from_wait(WaitStatus::StillAlive), None);
    }
}
