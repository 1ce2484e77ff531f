//! The [`Message`] trait every IPC message type implements, and [`Received`], a decoded message
//! together with the descriptors that arrived with it.
//!
//! Invariant: a `Message` value that reaches user code from a channel has passed its own
//! [`Message::validate`], and exactly [`Message::fd_count`] descriptors came with it.

use std::fmt::Debug;
use std::os::fd::OwnedFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::validate::ValidationError;

/// A message that can travel over a [`Channel`](crate::Channel).
///
/// Implementations are `match`es over the variants, so adding a variant makes the compiler point
/// at every method that needs an arm.
pub trait Message: Serialize + DeserializeOwned + Debug + Send + 'static {
    /// The wire kind (header field). Unique per variant *and* per channel direction, so a frame
    /// sent on the wrong channel is detected even if its body happened to decode.
    fn kind(&self) -> u16;
    /// A short name for logs and errors.
    fn name(&self) -> &'static str;
    /// How many descriptors travel with this message (may depend on its fields).
    fn fd_count(&self) -> usize;
    /// Check every value (lengths, ranges, counts). Run by the sender before sending and by the
    /// receiver on every message received.
    fn validate(&self) -> Result<(), ValidationError>;
}

/// A message received from a channel, with the descriptors that came in the same packet (in the
/// order the sender passed them).
#[derive(Debug)]
pub struct Received<M> {
    /// The decoded, validated message.
    pub msg: M,
    /// Its descriptors; `fds.len() == msg.fd_count()`.
    pub fds: Vec<OwnedFd>,
}

impl<M> Received<M> {
    /// Split into the message and its descriptors.
    pub fn into_parts(self) -> (M, Vec<OwnedFd>) {
        (self.msg, self.fds)
    }
}

/// The message type of a direction that carries no messages (e.g. parent → child on the log
/// channel). It has no values, so a channel typed with it can neither send nor receive a valid
/// message: any frame arriving in that direction fails to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NoMessage {}

impl Message for NoMessage {
    fn kind(&self) -> u16 {
        match *self {}
    }
    fn name(&self) -> &'static str {
        match *self {}
    }
    fn fd_count(&self) -> usize {
        match *self {}
    }
    fn validate(&self) -> Result<(), ValidationError> {
        match *self {}
    }
}
