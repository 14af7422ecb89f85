//! apura: a real-time election results gateway (the service crate of the workspace).
//!
//! The crate follows the data flow of `docs/design.md`:
//!
//! - [`model`] and [`feed`] (from `apura-formats`): the model and the government formats.
//! - [`fetch`]: conditional GET of feed files over HTTP(S), `file://` or a plain path, within a
//!   request budget where the upstream needs one ([`fetch::throttle`]).
//! - [`documents`]: the model sliced into topic documents and roll-ups (canonical JSON drafts).
//! - [`ingest`]: the poll → parse → slice → diff → publish cycle, from consolidated files or
//!   from the authority's per-city files ([`ingest::tse`]); with Redis, one leader at a time
//!   ([`ingest::leader`]).
//! - [`bus`]: the seam between ingest and gateways; embedded (in-process) or Redis
//!   ([`bus::redis`]: every key, the channel, the lock).
//! - [`gateway`]: the topic hub and the SSE, WebSocket and JSON GET endpoints; the scaled
//!   gateway process in [`gateway::command`].
//! - [`simulate`] (from `apura-simulate`): the count-night simulator behind `apura simulate` and
//!   `apura demo`.
//! - [`demo`] and [`run`]: the one-process commands.
#![forbid(unsafe_code)]

pub use apura_formats::{feed, model};
pub use apura_simulate as simulate;

pub mod bus;
pub mod demo;
pub mod documents;
pub mod fetch;
pub mod gateway;
pub mod ingest;
pub mod metrics;
pub mod run;

/// Lock `m` even when a thread panicked while holding it: every state behind these mutexes is
/// left whole between statements, so one panicking holder never takes the others down with it.
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
