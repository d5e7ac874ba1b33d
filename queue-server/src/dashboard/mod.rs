//! What the browser dashboard shows, gathered without HTTP: the [`Sampler`] reads every queue's
//! figures once a second into a [`History`] (the last 15 minutes, with rates), which the page's
//! stats stream and charts serve. It only reads figures; it never changes a queue.
//!
//! The page, its assets and the routes that serve all this are in `http::dashboard`; nothing
//! here knows about axum or the HTTP layer.

mod history;
mod sampler;

pub use history::{History, QueueSeries, RATE_WINDOW, Rates, Window, taken_total};
pub use sampler::{Dashboard, Published, SAMPLE_EVERY, SAMPLES_KEPT, Sampler};
