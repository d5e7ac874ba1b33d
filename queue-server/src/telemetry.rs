//! Log setup: tracing with `RUST_LOG` filtering, text for people or JSON for collectors.

use crate::config::LogFormat;

/// Default filter: `info`, without kube's own line per failed API call (an ERROR from its HTTP
/// trace layer): the server logs each failure once, with what it was doing.
const DEFAULT_FILTER: &str = "info,kube_client::client::builder=off";

/// Installs the global subscriber; `RUST_LOG` overrides the default filter.
pub fn init(format: LogFormat) {
    memq::logging::init(format, DEFAULT_FILTER);
}
