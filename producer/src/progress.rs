//! What a person watching sees: bars with rate and ETA on a terminal; nothing but log and
//! summary lines elsewhere (a pod's log has no use for redraws).

use std::time::Duration;

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// A bar that is either drawn on stderr or hidden (but still counts).
#[derive(Debug, Clone)]
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar for loading `total` items (a spinner when the total is unknown, e.g. stdin).
    pub fn loading(total: Option<u64>, visible: bool) -> Self {
        let bar = match total {
            Some(total) => ProgressBar::with_draw_target(Some(total), target(visible)).with_style(
                style("{prefix} [{bar:32}] {human_pos}/{human_len} items  {rate}  ETA {eta}"),
            ),
            None => ProgressBar::with_draw_target(None, target(visible)).with_style(style(
                "{prefix} {spinner} {human_pos} items  {rate}  {elapsed}",
            )),
        };
        bar.set_prefix("loading");
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// A bar for items being worked off, from `total` left to none.
    pub fn following(total: u64, visible: bool) -> Self {
        let bar = ProgressBar::with_draw_target(Some(total), target(visible)).with_style(style(
            "{prefix} [{bar:32}] {human_pos}/{human_len} done  {rate}  ETA {eta}  {msg}",
        ));
        bar.set_prefix("working");
        bar.enable_steady_tick(Duration::from_millis(200));
        Self { bar }
    }

    /// Counts `n` more items.
    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    /// Shows the items still left (following bar): grows the total if work was added meanwhile.
    pub fn set_left(&self, left: u64, msg: String) {
        let len = self.bar.length().unwrap_or(0);
        let done = self.bar.position();
        if done + left > len {
            self.bar.set_length(done + left);
        }
        let len = self.bar.length().unwrap_or(0);
        self.bar.set_position(len.saturating_sub(left));
        self.bar.set_message(msg);
    }

    /// Draws the final state and leaves it on screen; the total becomes what was really
    /// counted (an estimate includes empty lines that were skipped).
    pub fn finish(&self) {
        self.bar.set_length(self.bar.position());
        self.bar.finish();
        if !self.bar.is_hidden() {
            // The bar leaves the cursor at its end; what is printed next starts a line of its own.
            eprintln!();
        }
    }
}

fn target(visible: bool) -> ProgressDrawTarget {
    if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    }
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a typo would show in every run, so fall back rather than fail.
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
        // indicatif's {per_sec} shows four decimals of items per second; whole items read better.
        .with_key(
            "rate",
            |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{}/s", HumanCount(state.per_sec().round() as u64));
            },
        )
}
