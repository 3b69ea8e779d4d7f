//! Atomic output files: every writer in this crate (and every report) writes to a
//! temporary file beside the destination and renames it into place once complete, so a
//! killed or failed run never leaves a half-written file under the final name: the old
//! file stays whole until the new one replaces it in one step.
//!
//! The temporary file is `.<name>.pinhole-tmp.<pid>.<n>` in the destination's folder
//! (same file system, so the rename is atomic on POSIX), removed again when writing
//! fails or the writer is dropped without [`AtomicFile::commit`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result, WithPath};

/// Marks the temporary files of this module (and of a killed run, for clean-up tools).
pub const TEMP_MARKER: &str = ".pinhole-tmp.";

/// Writes `bytes` to `path` atomically (temporary file, then rename).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = AtomicFile::create(path)?;
    file.write_all(bytes).with_path(path)?;
    file.commit()
}

/// A file being written; it appears under its final name only on [`commit`](Self::commit).
pub struct AtomicFile {
    destination: PathBuf,
    temporary: PathBuf,
    writer: Option<BufWriter<File>>,
}

impl AtomicFile {
    /// Creates the temporary file beside `destination`.
    pub fn create(destination: &Path) -> Result<Self> {
        let temporary = temporary_path(destination)?;
        let file = File::create(&temporary).with_path(destination)?;
        Ok(Self {
            destination: destination.to_path_buf(),
            temporary,
            writer: Some(BufWriter::new(file)),
        })
    }

    /// The final name.
    pub fn path(&self) -> &Path {
        &self.destination
    }

    /// Flushes the data and renames the temporary file to the final name.
    pub fn commit(mut self) -> Result<()> {
        let Some(writer) = self.writer.take() else {
            return Err(Error::new(
                &self.destination,
                std::io::Error::other("already committed"),
            ));
        };
        let file = writer
            .into_inner()
            .map_err(|e| Error::new(&self.destination, e.into_error()))?;
        drop(file);
        std::fs::rename(&self.temporary, &self.destination).with_path(&self.destination)
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(std::io::Error::other("file already committed")),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.writer.take().is_some() {
            // Not committed: the destination keeps its previous content (or stays absent).
            let _ = std::fs::remove_file(&self.temporary);
        }
    }
}

/// `.<name>.pinhole-tmp.<pid>.<n>` beside `destination`.
fn temporary_path(destination: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = destination.file_name().ok_or_else(|| {
        Error::new(
            destination,
            crate::ErrorKind::InvalidInput("output path has no file name".into()),
        )
    })?;
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let temporary = format!(
        ".{}{TEMP_MARKER}{}.{n}",
        name.to_string_lossy(),
        std::process::id()
    );
    Ok(destination.with_file_name(temporary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uncommitted_file_leaves_the_old_content_and_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plan.json");
        std::fs::write(&path, b"old").unwrap();
        {
            let mut file = AtomicFile::create(&path).unwrap();
            file.write_all(b"new but unfinished").unwrap();
            file.flush().unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"old");
        }
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
