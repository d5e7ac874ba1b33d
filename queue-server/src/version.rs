//! What this build is and what stored data it reads and writes: `queue-server --version` and the
//! `memq_build_info` gauge of `/metrics`.

use crate::store::journal::{DATA_FORMAT, OLDEST_DATA_FORMAT};
use crate::store::{OLDEST_REDIS_LAYOUT, REDIS_LAYOUT};

/// `--version`'s text: the release and commit, then the stored formats.
pub fn long() -> String {
    format!(
        "{}\ndata directory (--data-dir): writes format {DATA_FORMAT}, reads formats {OLDEST_DATA_FORMAT} to {DATA_FORMAT}\nRedis key layout (--redis): writes layout {REDIS_LAYOUT}, reads layouts {OLDEST_REDIS_LAYOUT} to {REDIS_LAYOUT}",
        memq::version::VERSION
    )
}

/// The labels of `memq_build_info`.
pub fn labels() -> [(&'static str, String); 4] {
    [
        ("version", memq::version::RELEASE.to_string()),
        ("commit", memq::version::COMMIT.to_string()),
        ("data_format", DATA_FORMAT.to_string()),
        ("redis_layout", REDIS_LAYOUT.to_string()),
    ]
}
