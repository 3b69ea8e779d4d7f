//! The terminal as the pipelines' observer: progress bars and spinners on stderr
//! (hidden when stderr is not a terminal), warnings and notes on stderr.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use pinhole_pipeline::Observer;

/// Shows one step at a time.
#[derive(Default)]
pub struct Terminal {
    bar: Mutex<Option<ProgressBar>>,
}

impl Terminal {
    fn set(&self, bar: Option<ProgressBar>) {
        if let Ok(mut slot) = self.bar.lock() {
            if let Some(old) = slot.take() {
                old.finish_and_clear();
            }
            *slot = bar;
        }
    }
}

impl Observer for Terminal {
    fn begin(&self, what: &str) {
        let bar = ProgressBar::new_spinner();
        bar.set_message(what.to_string());
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        self.set(Some(bar));
    }

    fn advance(&self, done: usize, total: usize) {
        let Ok(slot) = self.bar.lock() else { return };
        let Some(bar) = slot.as_ref() else { return };
        if bar.length().is_none() {
            let style = ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} ({eta})")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
            bar.set_style(style);
        }
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }

    fn end(&self) {
        self.set(None);
    }

    fn warn(&self, message: &str) {
        self.set(None);
        eprintln!("warning: {message}");
    }

    fn info(&self, message: &str) {
        eprintln!("{message}");
    }
}

/// A line on stderr from a long-running command (`dicom listen`, `serve`); a closed
/// stderr (the terminal gone, a supervisor that stopped reading) must not stop a receiver
/// storing images or a server guiding a needle, so write errors are ignored
/// (`eprintln!` would panic, and with it the thread that wanted to say something).
pub fn note(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}
