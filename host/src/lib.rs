//! duckgate: a WebAssembly-extensible query gateway over DuckDB.
//!
//! One process serves the Node sidecar's routes (`/snapshot`, `/query`,
//! `/health`) over S3-compatible object stores, and owns a live DuckDB of
//! telemetry fed over OTLP ([`live`]). Start with [`server`] for the route
//! table and [`config`] for every setting.

pub mod admission;
pub mod cancel;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod live;
pub mod object_cache;
pub mod objects;
pub mod plugins;
pub mod query;
pub mod request;
pub mod server;
pub mod snapshot;
pub mod statement;
