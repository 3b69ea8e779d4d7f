//! Progress bars on stderr; hidden when stderr is not a terminal.

use indicatif::{ProgressBar, ProgressStyle};

/// A progress callback `(done, total)` driving an indicatif bar named `what`.
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    pub fn new(what: &str) -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.set_message(what.to_string());
        Self { bar }
    }

    /// A spinner for work of unknown length (reading one large file).
    pub fn spinner(what: &str) -> Self {
        let bar = ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        Self { bar }
    }

    pub fn update(&self, done: usize, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
