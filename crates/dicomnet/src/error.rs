//! The errors of starting a listener. Problems of one association or one instance never
//! stop the listener: they are answered on the wire (a failure status, an A-ABORT, an
//! A-ASSOCIATE-RJ) and reported as [`crate::Event::Warning`] or
//! [`crate::Event::AssociationRejected`].

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why a listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A [`crate::ListenerConfig`] field out of its range; names the field.
    #[error("invalid listener configuration: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// The storage folder cannot be created or is not a folder.
    #[error("storage folder {}: {source}", path.display())]
    StoreDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The TCP socket cannot be bound (port in use, no permission, ...).
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The operating system refused a thread or a socket operation.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
