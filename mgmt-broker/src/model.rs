//! Data model shared between the broker and the rest of Bulwark.
//!
//! Everything here is plain data, `serde`-serialisable, and travels over IPC from the parent to the
//! broker: the [`StatusSnapshot`] (what `status N` and the `--status` file render), the history
//! entries for `state`/`log`/`echo` ([`StateEntry`], [`LogRecord`], [`EchoEntry`]) and the
//! real-time events ([`MgmtEvent`]) the broker turns into `>STATE:`, `>LOG:`, `>CLIENT:` ...
//! notifications.
//!
//! Invariants:
//! * Times are Unix seconds (UTC). Human-readable columns are rendered in local time using the
//!   snapshot's `utc_offset_secs` (the broker is chrooted and cannot read the zone database; the
//!   parent supplies the offset in effect when it built the snapshot).
//! * Environment blocks ([`EnvBlock`]) are kept in **emission order** (OpenVPN emits most recently
//!   set variable first); the broker never reorders them, it only filters.
//! * [`StatusJson`] is the versioned JSON form of a snapshot (`schema` = [`STATUS_JSON_SCHEMA`]).
//!   Fields are only ever added in a compatible way; an incompatible change bumps the schema name.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Errors produced by this module.
#[derive(Debug, Error)]
pub enum ModelError {
    /// Serialising a status snapshot to JSON failed.
    #[error("cannot serialise status snapshot to JSON: {0}")]
    JsonEncode(#[source] serde_json::Error),
    /// A JSON document could not be parsed as a status snapshot.
    #[error("cannot parse status JSON: {0}")]
    JsonDecode(#[source] serde_json::Error),
    /// A JSON document carried an unknown schema identifier.
    #[error("unsupported status JSON schema {found:?} (expected {expected:?})")]
    JsonSchema {
        /// The schema found in the document.
        found: String,
        /// The schema this build understands.
        expected: &'static str,
    },
}

pub use bulwark_ipc::msg::mgmt::{
    ClientEntry, ClientEventKind, EchoEntry, EnvBlock, GlobalStats, LogFlags, LogRecord, MgmtEvent,
    RealAddr, RouteEntry, RouteKey, StateEntry, StatusSnapshot, TransportProto,
};

/// Identifier of the JSON status schema produced by [`StatusJson`].
pub const STATUS_JSON_SCHEMA: &str = "bulwark.status.v1";

/// Versioned JSON document form of a [`StatusSnapshot`].
///
/// ```json
/// {"schema":"bulwark.status.v1","snapshot":{"title":"...","updated":1795334294, ...}}
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusJson {
    /// Always [`STATUS_JSON_SCHEMA`].
    pub schema: String,
    /// The snapshot.
    pub snapshot: StatusSnapshot,
}

impl StatusJson {
    /// Serialise a snapshot into the versioned JSON form.
    pub fn encode(snapshot: &StatusSnapshot) -> Result<String, ModelError> {
        let doc = StatusJson {
            schema: STATUS_JSON_SCHEMA.to_string(),
            snapshot: snapshot.clone(),
        };
        serde_json::to_string(&doc).map_err(ModelError::JsonEncode)
    }

    /// Parse the versioned JSON form, rejecting unknown schemas.
    pub fn decode(text: &str) -> Result<StatusSnapshot, ModelError> {
        let doc: StatusJson = serde_json::from_str(text).map_err(ModelError::JsonDecode)?;
        if doc.schema != STATUS_JSON_SCHEMA {
            return Err(ModelError::JsonSchema {
                found: doc.schema,
                expected: STATUS_JSON_SCHEMA,
            });
        }
        Ok(doc.snapshot)
    }
}
