//! The git commit of the source tree, for every binary's `--version` (`memq::version`): from
//! `git` when the tree is a checkout, else from `MEMQ_GIT_COMMIT` (a container build copies the
//! tree without `.git` and passes the commit in), else `unknown`. Never fails the build.

use std::process::Command;

/// `git ARGS` in this crate's directory, trimmed, when git runs and succeeds.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=MEMQ_GIT_COMMIT");
    let commit = match git(&["rev-parse", "HEAD"]) {
        Some(commit) => {
            // Built again when HEAD moves: HEAD itself, and the branch it names: its own file,
            // or, while it is packed, the packed refs and the folder a commit writes it to.
            // Only paths that exist: cargo runs a build script whose watched path is missing
            // every time.
            let mut watch = Vec::new();
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                watch.push(format!("{dir}/HEAD"));
            }
            let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"]);
            if let (Some(common), Some(branch)) = (common, git(&["symbolic-ref", "-q", "HEAD"])) {
                let own = format!("{common}/{branch}");
                if std::path::Path::new(&own).exists() {
                    watch.push(own);
                } else {
                    watch.push(format!("{common}/packed-refs"));
                    watch.push(format!("{common}/refs/heads"));
                }
            }
            for path in watch {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
            commit
        }
        None => std::env::var("MEMQ_GIT_COMMIT")
            .ok()
            .filter(|c| !c.trim().is_empty())
            .unwrap_or_else(|| "unknown".into()),
    };
    println!("cargo:rustc-env=MEMQ_GIT_COMMIT={}", commit.trim());
}
