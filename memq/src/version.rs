//! What every binary's `--version` says: the release and the git commit it was built from
//! (`unknown` when the tree had no `.git` and the build was not given `MEMQ_GIT_COMMIT`).

/// The release (the workspace's version).
pub const RELEASE: &str = env!("CARGO_PKG_VERSION");

/// The git commit of the source tree.
pub const COMMIT: &str = env!("MEMQ_GIT_COMMIT");

/// `RELEASE (commit COMMIT)`.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("MEMQ_GIT_COMMIT"),
    ")"
);
