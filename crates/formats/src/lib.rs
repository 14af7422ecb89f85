//! The formats of an election night, parsed and validated into one model; no I/O, no runtime.
//!
//! - [`model`]: municipalities, offices, candidates, totals, progress; the slug rule.
//! - [`feed`]: the government formats, parsed and validated into the model: the provider's
//!   consolidated files and the authority's own per-city layout ([`feed::tse`]).
//!
//! What the service (`apura`), the simulator (`apura-simulate`) and the fuzz targets (`fuzz/`)
//! share. Its dependencies are serde, serde_json and thiserror alone, so the fuzz build
//! (instrumented) compiles it in seconds.
#![forbid(unsafe_code)]

pub mod feed;
pub mod model;
