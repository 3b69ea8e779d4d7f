//! How a pipeline tells its caller what it is doing: progress of long steps and
//! warnings. The CLI shows bars and prints warnings on the terminal; tests and bindings
//! may stay quiet. Warnings that concern a result are also in its report.

/// Receives progress and warnings; every method has a no-op default.
pub trait Observer: Sync {
    /// A long step starts (`what`: "reading ct.nii.gz", "planning").
    fn begin(&self, _what: &str) {}
    /// Progress of the current step, when its length is known.
    fn advance(&self, _done: usize, _total: usize) {}
    /// The current step ended.
    fn end(&self) {}
    /// Something the user must know (also written into the report where it applies).
    fn warn(&self, _message: &str) {}
    /// A line of information (what was written, what was found).
    fn info(&self, _message: &str) {}
}

/// An observer that ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct Quiet;

impl Observer for Quiet {}

/// Runs `f` as one named step of `observer` (ended also when `f` fails).
pub fn step<T>(observer: &dyn Observer, what: &str, f: impl FnOnce() -> T) -> T {
    observer.begin(what);
    let out = f();
    observer.end();
    out
}
