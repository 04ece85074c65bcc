//! duckgate: a WebAssembly-extensible query gateway over DuckDB.
//!
//! One process serves the Node sidecar's routes (`/snapshot`, `/query`,
//! `/health`) over S3-compatible object stores. Start with [`server`] for
//! the route table and [`config`] for every setting.

pub mod admission;
pub mod config;
pub mod error;
pub mod object_cache;
pub mod objects;
pub mod query;
pub mod request;
pub mod server;
pub mod snapshot;
pub mod statement;
