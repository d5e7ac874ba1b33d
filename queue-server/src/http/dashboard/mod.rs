//! The browser dashboard's routes: the page at `/` with its script and style (embedded in the
//! binary, no third-party files), the token check, the live stats stream (server-sent events)
//! and the recent history behind the page's charts, all read from [`crate::dashboard`].
//!
//! The page steers queues through the queue API like any other client, with the same token.

pub(crate) mod page;
pub(crate) mod stream;
