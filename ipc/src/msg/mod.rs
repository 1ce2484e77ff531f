//! The message types of every channel, one file per channel.
//!
//! | channel | parent → child | child → parent | mode | fds |
//! |---|---|---|---|---|
//! | worker control ([`control`]) | [`ParentToWorker`] | [`WorkerToParent`] | async (blocking during bootstrap) | `Init`: TUN + transport sockets |
//! | broker control ([`broker`]) | [`ParentToBroker`] | [`BrokerToParent`] | async (blocking during bootstrap) | `Init`: management listeners |
//! | log ([`log`]) | [`NoMessage`](crate::NoMessage) | [`LogRecord`] | async | none |
//! | signer ([`signer`]) | [`SignResponse`] | [`SignRequest`] | blocking request/response | none |
//!
//! Kind numbers are unique across all channels (high byte = channel, low byte = variant), so a
//! frame delivered to the wrong channel is rejected even if its body happens to decode.
//!
//! Adding a variant: add it to the enum, give it the next free kind constant, and add an arm to
//! each `match` in its `Message` impl (the compiler lists them); give it a real `validate()`.

pub mod broker;
pub mod clients;
pub mod common;
pub mod control;
pub mod engine;
pub mod log;
pub mod mgmt;
pub mod signer;
pub mod worker_config;

pub use broker::{
    BrokerConfig, BrokerInit, BrokerReconfigure, BrokerToParent, MgmtSettings, ParentToBroker,
    StatusFileSpec, StatusFormat,
};
pub use common::{FdRole, MAX_FD_ROLES, MAX_REASON_LEN};
pub use control::{ParentToWorker, WorkerInit, WorkerToParent, MAX_CRL_PEM_LEN};
pub use log::{LogOrigin, LogRecord, Severity, MAX_LOG_MESSAGE_LEN};
pub use signer::{
    SignFailure, SignRequest, SignResponse, MAX_SIGNATURE_LEN, MAX_SIGN_MESSAGE_LEN,
    SUPPORTED_SIGNATURE_SCHEMES,
};
pub use worker_config::{SeccompMode, WorkerConfig};
