//! The fixed descriptor layout a child finds its channel ends on after `exec`, and the helpers
//! both sides use to set it up.
//!
//! | fd | worker | broker |
//! |----|--------|--------|
//! | 3 ([`CONTROL_FD`]) | control: [`WorkerControl`] | control: [`BrokerControl`] |
//! | 4 ([`LOG_FD`]) | log: [`ChildLog`] | log: [`ChildLog`] |
//! | 5 ([`SIGNER_FD`]) | signer: [`WorkerSigner`] | — |
//!
//! Parent side: [`ChildFdMap`] collects the child's channel ends and [`ChildFdMap::spawn`] runs a
//! `Command` with them on those numbers. Child side: [`WorkerChannels::from_inherited`] /
//! [`BrokerChannels::from_inherited`] claim and check them (each must be an `AF_UNIX`
//! `SOCK_SEQPACKET` socket).
//!
//! Caveat of `spawn`: std reports `exec` failures through a close-on-exec pipe it opened before
//! `fork`; if that pipe happened to get one of the target numbers, the failure report would be
//! lost (the parent then sees the channel closed instead). The parent's descriptors 3..=5 are
//! normally long taken by the time children are spawned.

use std::os::fd::{OwnedFd, RawFd};
use std::process::{Child, Command};

use crate::channel::ChannelError;
use crate::msg::{
    BrokerToParent, LogRecord, ParentToBroker, ParentToWorker, SignRequest, SignResponse,
    WorkerToParent,
};
use crate::{Channel, NoMessage};

/// Control channel end in a child.
pub const CONTROL_FD: RawFd = 3;
/// Log channel end in a child.
pub const LOG_FD: RawFd = 4;
/// Signer channel end in the worker.
pub const SIGNER_FD: RawFd = 5;

/// The parent's end of the worker control channel.
pub type ParentWorkerControl = Channel<ParentToWorker, WorkerToParent>;
/// The worker's end of its control channel.
pub type WorkerControl = Channel<WorkerToParent, ParentToWorker>;
/// The parent's end of the broker control channel.
pub type ParentBrokerControl = Channel<ParentToBroker, BrokerToParent>;
/// The broker's end of its control channel.
pub type BrokerControl = Channel<BrokerToParent, ParentToBroker>;
/// A child's end of its log channel (send only).
pub type ChildLog = Channel<LogRecord, NoMessage>;
/// The parent's end of a child's log channel (receive only).
pub type ParentLog = Channel<NoMessage, LogRecord>;
/// The worker's end of the signer channel.
pub type WorkerSigner = Channel<SignRequest, SignResponse>;
/// The parent's end of the signer channel.
pub type ParentSigner = Channel<SignResponse, SignRequest>;

/// Setting up or taking over the fixed descriptor layout failed.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A target number below 3 (stdio).
    #[error("fd {fd} is reserved for stdio")]
    ReservedTarget {
        /// The number.
        fd: RawFd,
    },
    /// Two descriptors for the same target number.
    #[error("fd {fd} placed twice")]
    DuplicateTarget {
        /// The number.
        fd: RawFd,
    },
    /// The inherited channel end at `fd` is unusable.
    #[error("inherited channel fd {fd}")]
    Channel {
        /// The number.
        fd: RawFd,
        /// Why.
        #[source]
        source: ChannelError,
    },
    /// The child could not be spawned.
    #[error("spawning child process")]
    Spawn(#[source] std::io::Error),
}

/// Descriptors to place on fixed numbers in a child.
#[derive(Debug, Default)]
pub struct ChildFdMap {
    entries: Vec<(OwnedFd, RawFd)>,
}

impl ChildFdMap {
    /// An empty map.
    pub fn new() -> Self {
        ChildFdMap::default()
    }

    /// Put `fd` on number `target` (>= 3, not used twice) in the child.
    pub fn place(&mut self, fd: OwnedFd, target: RawFd) -> Result<&mut Self, LayoutError> {
        if target < 3 {
            return Err(LayoutError::ReservedTarget { fd: target });
        }
        if self.entries.iter().any(|(_, t)| *t == target) {
            return Err(LayoutError::DuplicateTarget { fd: target });
        }
        self.entries.push((fd, target));
        Ok(self)
    }

    /// The worker's layout: its ends of the control, log and signer channels.
    pub fn worker(control: WorkerControl, log: ChildLog, signer: WorkerSigner) -> Self {
        ChildFdMap {
            entries: vec![
                (control.into_owned_fd(), CONTROL_FD),
                (log.into_owned_fd(), LOG_FD),
                (signer.into_owned_fd(), SIGNER_FD),
            ],
        }
    }

    /// The broker's layout: its ends of the control and log channels.
    pub fn broker(control: BrokerControl, log: ChildLog) -> Self {
        ChildFdMap {
            entries: vec![
                (control.into_owned_fd(), CONTROL_FD),
                (log.into_owned_fd(), LOG_FD),
            ],
        }
    }

    /// Spawn `cmd` with the descriptors on their numbers. `cmd` is consumed so that the parent's
    /// copies of the child's ends are closed as soon as the child exists (the parent then sees
    /// end-of-file when the child dies).
    pub fn spawn(self, mut cmd: Command) -> Result<Child, LayoutError> {
        crate::sys::place_fds_on_exec(&mut cmd, self.entries);
        let child = cmd.spawn().map_err(LayoutError::Spawn)?;
        drop(cmd);
        Ok(child)
    }
}

fn inherit<Tx: crate::Message, Rx: crate::Message>(
    fd: RawFd,
) -> Result<Channel<Tx, Rx>, LayoutError> {
    Channel::from_inherited_fd(fd).map_err(|source| LayoutError::Channel { fd, source })
}

/// The worker's channel ends, taken from the fixed layout.
#[derive(Debug)]
pub struct WorkerChannels {
    /// Control channel (fd 3).
    pub control: WorkerControl,
    /// Log channel (fd 4).
    pub log: ChildLog,
    /// Signer channel (fd 5).
    pub signer: WorkerSigner,
}

impl WorkerChannels {
    /// Claim and check fds 3, 4 and 5.
    pub fn from_inherited() -> Result<Self, LayoutError> {
        Ok(WorkerChannels {
            control: inherit(CONTROL_FD)?,
            log: inherit(LOG_FD)?,
            signer: inherit(SIGNER_FD)?,
        })
    }
}

/// The broker's channel ends, taken from the fixed layout.
#[derive(Debug)]
pub struct BrokerChannels {
    /// Control channel (fd 3).
    pub control: BrokerControl,
    /// Log channel (fd 4).
    pub log: ChildLog,
}

impl BrokerChannels {
    /// Claim and check fds 3 and 4.
    pub fn from_inherited() -> Result<Self, LayoutError> {
        Ok(BrokerChannels {
            control: inherit(CONTROL_FD)?,
            log: inherit(LOG_FD)?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn place_rejects_stdio_and_duplicates() {
        let mut map = ChildFdMap::new();
        let (a, b) = nix::unistd::pipe().unwrap();
        assert!(matches!(
            map.place(a, 2),
            Err(LayoutError::ReservedTarget { fd: 2 })
        ));
        let (c, _d) = nix::unistd::pipe().unwrap();
        map.place(b, 7).unwrap();
        assert!(matches!(
            map.place(c, 7),
            Err(LayoutError::DuplicateTarget { fd: 7 })
        ));
    }
}
