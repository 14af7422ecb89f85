//! apura: a real-time election results gateway.
//!
//! The crate follows the data flow of `architecture.md`:
//!
//! - [`model`]: municipalities, offices, candidates, totals, progress; the slug rule.
//! - [`feed`]: the government formats, parsed and validated into the model: the provider's
//!   consolidated files and the authority's own per-city layout ([`feed::tse`]).
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
//! - [`simulate`]: a count-night simulator serving the government feed over HTTP, in either
//!   layout ([`simulate::tse`]).
//! - [`demo`] and [`run`]: the one-process commands.
//!
//! Without the default `service` feature the library is [`model`] and [`feed`] alone (what the
//! fuzz targets of `fuzz/` build).
#![forbid(unsafe_code)]

#[cfg(feature = "service")]
pub mod bus;
#[cfg(feature = "service")]
pub mod demo;
#[cfg(feature = "service")]
pub mod documents;
pub mod feed;
#[cfg(feature = "service")]
pub mod fetch;
#[cfg(feature = "service")]
pub mod gateway;
#[cfg(feature = "service")]
pub mod ingest;
#[cfg(feature = "service")]
pub mod metrics;
pub mod model;
#[cfg(feature = "service")]
pub mod run;
#[cfg(feature = "service")]
pub mod simulate;
