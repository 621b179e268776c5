//! Versioned wire types shared by the device's sync client and the clinic backend, and the
//! canonical form that dose events are hashed, chained and signed in.
//!
//! Everything here is plain data plus pure functions; the HTTP client lives in `sync` and the
//! server in `server`. Paths are under `/api/v1`; a breaking change gets `/api/v2` and new types.

pub mod accounts;
pub mod chain;
pub mod messages;

pub use accounts::{
    ApiTokenIssued, AuditEntry, AuditPage, CreateApiToken, CreateUser, Login, Role, Scope,
    SessionInfo, SetScopes, UserView,
};
pub use chain::{ChainError, ChainRecord, GENESIS_HASH, SignedDoseEvent};
pub use messages::*;

/// Version of the wire format in this module. Sent by devices in every batch.
pub const PROTOCOL_VERSION: u32 = 1;
