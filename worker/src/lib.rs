#![deny(unsafe_code)]
//! The `bulwark-worker` library: the sans-IO OpenVPN engine (`proto`) and the driver that runs it.

pub mod batch;
pub mod driver;
pub mod ipc_signer;
pub mod offload;
pub mod proto;
pub mod queries;
pub mod setup;
pub mod sys;
