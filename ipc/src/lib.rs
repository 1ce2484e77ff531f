#![deny(unsafe_code)]
//! Typed IPC between Bulwark's processes, with descriptor passing.
//!
//! Transport: `socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC)`. One packet is one message;
//! its descriptors travel in the same `sendmsg` as one `SCM_RIGHTS` control message and are
//! received with `MSG_CMSG_CLOEXEC`. A packet is a 16-byte header ([`frame`]) and a bincode body
//! ([`codec`], the only module that configures bincode). Packets are at most
//! [`MAX_MESSAGE_SIZE`] bytes and carry at most [`MAX_FDS_PER_MESSAGE`] descriptors.
//!
//! Typing: each direction of each channel has its own message type ([`msg`]); a channel end is
//! [`Channel<Tx, Rx>`] (blocking) or [`AsyncChannel<Tx, Rx>`] (tokio) and the two ends of a pair
//! have swapped parameters, so sending in the wrong direction does not compile. Every message type
//! implements [`Message`]: per-variant kind, name, fd count and `validate()`.
//!
//! Receiving: every descriptor becomes an `OwnedFd` the moment `recvmsg` returns; any protocol
//! violation (`MSG_TRUNC`, `MSG_CTRUNC`, bad magic/version, oversize, body-length or fd-count
//! mismatch, undecodable body, trailing bytes, kind mismatch, failed validation) is a
//! [`ProtocolError`] — never a panic — and closes the descriptors. [`fdcheck`] lets a child check
//! what it was handed; [`layout`] fixes which descriptor numbers a child finds its channels on;
//! [`signer_client`] is the worker's thread-safe request/response client for the signer.
//!
//! Unsafe code lives only in [`sys`].

pub mod async_channel;
pub mod channel;
pub mod codec;
pub mod fdcheck;
pub mod frame;
pub mod layout;
pub mod message;
pub mod msg;
pub mod signer_client;
pub mod sys;
pub mod validate;

pub use async_channel::{AsyncChannel, AsyncChannelPair};
pub use channel::{Channel, ChannelError, ChannelPair};
pub use fdcheck::{FdCheckError, FdKind};
pub use frame::{Header, ProtocolError, HEADER_LEN, MAGIC};
pub use layout::{
    BrokerChannels, BrokerControl, ChildFdMap, ChildLog, LayoutError, ParentBrokerControl,
    ParentLog, ParentSigner, ParentWorkerControl, WorkerChannels, WorkerControl, WorkerSigner,
    CONTROL_FD, LOG_FD, SIGNER_FD,
};
pub use message::{Message, NoMessage, Received};
pub use signer_client::{SignerClient, SignerError};
pub use validate::ValidationError;

/// IPC protocol version, carried in every frame header and in the Hello messages. Bump it on any
/// change of the header, the codec configuration, or an existing message's encoding.
pub const PROTOCOL_VERSION: u16 = 7;

/// Largest packet (header + body), in bytes: 256 KiB. CRLs and certificate chains travel in one
/// message, so this bounds them. A unix seqpacket message must also fit in the sender's socket
/// buffer; [`Channel::pair`] sizes it and fails loudly if the system does not allow it.
pub const MAX_MESSAGE_SIZE: usize = 256 * 1024;

/// Largest body, in bytes (the codec's byte limit).
pub const MAX_BODY_SIZE: usize = MAX_MESSAGE_SIZE - HEADER_LEN;

/// Most descriptors in one message.
pub const MAX_FDS_PER_MESSAGE: usize = 16;
