//! `memq`: the wire types of the memq-rs HTTP contract and an async client for it.
//!
//! Everything that talks to a queue server goes through this crate: the `producer` and
//! `consumer` binaries, the black-box tests of `queue-server`, and the server itself, which
//! serializes the same [`types`] it documents.
//!
//! A short tour:
//! - [`types`]: `Message`, `Lease`, `QueueStats`, `Stats`, `EnqueueResult`, `ApiError`, ... exactly
//!   as they travel as JSON (kuard's field names, camelCase).
//! - [`client::Client`]: one method per route (`create_queue`, `enqueue`, `enqueue_batch`,
//!   `dequeue`, `ack`, `nack`, `extend`, ...), returning typed errors that keep the server's
//!   error code and message.
//! - [`duration`]: the duration syntax shared by the query strings and the command lines
//!   (`30`, `1.5`, `500ms`, `30s`, `2m`, `1m30s`).
//! - [`name`]: the queue-name rule.
//! - [`retry`]: retrying a request with backoff until a deadline, for the command-line tools.
//! - `access` (features `cli` and `client`): the tools' `--token`, `--token-file`, `--ca-cert`.
//! - [`token`]: the bearer token, fixed or followed in a file (a mounted Secret) as it rotates.
//! - [`version`]: the release and git commit every binary's `--version` says.

#[cfg(all(feature = "cli", feature = "client"))]
pub mod access;
#[cfg(feature = "client")]
pub mod client;
pub mod duration;
pub mod limits;
#[cfg(feature = "cli")]
pub mod logging;
pub mod name;
#[cfg(feature = "client")]
pub mod retry;
#[cfg(feature = "openapi")]
pub mod schema;
#[cfg(feature = "client")]
pub mod token;
pub mod types;
pub mod version;

#[cfg(feature = "client")]
pub use client::{Client, DequeueOptions, Dequeued, EnqueueOptions, Error, trust_ca_file};
#[cfg(feature = "client")]
pub use token::{TokenFileError, TokenSource};
pub use types::*;

/// Path under which the queue API lives on a server (kuard's MemQ base path).
pub const BASE_PATH: &str = "/memq/server";

/// The default server URL of the command-line tools.
pub const DEFAULT_SERVER: &str = "http://localhost:8080/memq/server";
