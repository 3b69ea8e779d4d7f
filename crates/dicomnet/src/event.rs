//! What a listener reports, in the order it happened per association.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Serialize;

/// One thing that happened. Serialised as an object with an `"event"` field naming the
/// variant in snake case (`"instance_stored"`, ...), for JSON lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// An association was accepted (A-ASSOCIATE-AC sent).
    AssociationAccepted {
        peer: SocketAddr,
        calling_ae: String,
    },
    /// An association was refused (A-ASSOCIATE-RJ sent, or the connection closed when
    /// even the rejection could not be afforded); `reason` says why.
    AssociationRejected { peer: SocketAddr, reason: String },
    /// An instance was written under its final name (and answered with success).
    InstanceStored {
        study_uid: String,
        series_uid: String,
        sop_instance_uid: String,
        path: PathBuf,
        /// Size of the Part-10 file written.
        bytes: u64,
    },
    /// No instance of this series arrived for `series_quiet` and no association that
    /// sent one is still receiving a data set. `instances` counts the `.dcm` files in
    /// `folder`. A series that receives instances later is reported again.
    SeriesComplete {
        study_uid: String,
        series_uid: String,
        instances: usize,
        folder: PathBuf,
    },
    /// Something went wrong that the listener survived: a refused instance, a broken
    /// or aborted association, a series folder the series reader cannot read.
    Warning { message: String },
}

impl std::fmt::Display for Event {
    /// One line for a terminal.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::AssociationAccepted { peer, calling_ae } => {
                write!(f, "association accepted: {calling_ae} from {peer}")
            }
            Event::AssociationRejected { peer, reason } => {
                write!(f, "association rejected: {peer}: {reason}")
            }
            Event::InstanceStored {
                sop_instance_uid,
                path,
                bytes,
                ..
            } => write!(
                f,
                "stored {sop_instance_uid} ({bytes} bytes) -> {}",
                path.display()
            ),
            Event::SeriesComplete {
                series_uid,
                instances,
                folder,
                ..
            } => write!(
                f,
                "series complete: {series_uid}: {instances} instance(s) in {}",
                folder.display()
            ),
            Event::Warning { message } => write!(f, "warning: {message}"),
        }
    }
}
