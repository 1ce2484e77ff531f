#![deny(unsafe_code)]
//! Bulwark management broker library (`bulwark-mgmt`).
//!
//! Serves the OpenVPN 2.6 management protocol (byte-compatible in server mode) to many
//! clients at once, with per-connection roles, redaction and audit, and renders OpenVPN status
//! output. Modules:
//! * [`model`] — serialisable data (status snapshot, histories, events).
//! * [`status`] — status v1/v2/v3 rendering.
pub mod access;
pub mod backend;
pub mod cmdline;
pub mod commands;
pub mod hub;
pub mod model;
pub mod notify;
pub mod serve;
pub mod session;
pub mod status;

#[cfg(test)]
mod golden_status_tests;
#[cfg(test)]
mod replay_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod testutil;
