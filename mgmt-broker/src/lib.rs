#![deny(unsafe_code)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::field_reassign_with_default))]
//! Bulwark management broker library (`bulwark-mgmt`).
//!
//! Serves the OpenVPN 2.6 management protocol — byte-compatible with OpenVPN 2.6.14 in server
//! mode — to many clients at once, with per-connection roles, redaction and audit, and renders
//! OpenVPN status output (v1/v2/v3) plus a versioned JSON form.
//!
//! Modules:
//! * [`model`] — serialisable data: [`model::StatusSnapshot`], history entries, and
//!   [`model::MgmtEvent`] (what the parent sends the broker in real time).
//! * [`status`] — status rendering (`LineEnding::Lf` for the file, `CrLf` for `status N`).
//! * [`backend`] — the request/response interface to the daemon ([`backend::Backend`]), with
//!   [`backend::ChannelBackend`] for IPC wiring and an in-memory fake for tests.
//! * [`access`] — roles, admission, redaction, audit records.
//! * [`cmdline`] — input framing and the management lexer.
//! * [`commands`] / [`notify`] / [`session`] — command dispatch, notification encoders, one
//!   client session.
//! * [`hub`] — shared state: histories, persistent settings, fan-out, output to the parent.
//! * [`serve`] — listeners, accept loops, event pump, status-file task.
//!
//! Wiring (for the integrator, in `main.rs` after the sandbox is up):
//! ```text
//! let (backend, calls) = ChannelBackend::new(64);           // drain `calls` -> IPC to parent
//! let (hub, outputs) = Hub::new(EngineConfig { .. }, Arc::new(backend), system_clock());
//!                                                           // ship `outputs` (audit + logs) to parent
//! let listeners = fds.into_iter().map(|fd| Listener::from_fd(fd, policy)).collect()?;
//! serve(hub, listeners, events_rx /* broadcast of MgmtEvent */, shutdown_rx).await?;
//! ```
//! The parent must not forward [`hub::BrokerOutput::Log`] records back to the broker.

pub mod access;
pub mod backend;
pub mod capture;
pub mod cmdline;
pub mod commands;
pub mod hub;
pub mod metrics;
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
