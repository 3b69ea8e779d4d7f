//! `pinhole-dicomnet`: a DICOM receiver — C-STORE SCP and C-ECHO SCP — sender —
//! C-STORE SCU and C-ECHO SCU ([`push`]) — and query / retrieve client — C-FIND SCU and
//! C-MOVE SCU ([`query`]) — over dicom-rs's `dicom-ul` (synchronous; std threads, no
//! async runtime). NOT FOR CLINICAL USE.
//!
//! ```no_run
//! use pinhole_dicomnet::{Listener, ListenerConfig};
//! let config = ListenerConfig::new("PINHOLE", "127.0.0.1:11112".parse()?, "incoming");
//! let listener = Listener::bind(config)?;
//! let handle = listener.spawn(|event| println!("{event}"))?;
//! // ... later
//! handle.shutdown();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Guarantees:
//! * **Negotiation** (dicom-ul): the called AE title must be [`ListenerConfig::ae_title`],
//!   the calling AE title and the peer address on their allowed lists when given;
//!   abstract syntaxes: [`sop::STORAGE_SOP_CLASSES`] and Verification; transfer
//!   syntaxes: [`sop::accepted_transfer_syntaxes`]. At most
//!   [`ListenerConfig::max_associations`] associations at once, one std thread each;
//!   more are answered with an A-ASSOCIATE-RJ (transient, local limit exceeded).
//! * **Bounded memory**: no PDU longer than [`ListenerConfig::max_pdu_bytes`] is
//!   accepted (dicom-ul's strict mode checks the PDU header before reading the body);
//!   a data set is kept only up to [`ListenerConfig::max_instance_bytes`]; command
//!   sets and data sets are walked with every claimed length checked against the bytes
//!   actually received before dicom-rs allocates anything ([`dataset::scan`]).
//! * **Storage**: each instance becomes `store_dir/<StudyInstanceUID>/<SeriesInstanceUID>/
//!   <SOPInstanceUID>.dcm`, a Part-10 file (file meta group from the command's SOP
//!   class / instance UIDs and the negotiated transfer syntax, then the data set bytes as
//!   received), written to a hidden temporary file beside it, synced and renamed; only
//!   then is success (0x0000) answered. UIDs used in paths must be digits and dots
//!   (≤ 64 characters); anything else is refused with 0xC000 and nothing is written.
//!   A duplicate SOP instance replaces the old file atomically.
//! * **Faults** (malformed data set, broken connection, A-ABORT, timeout after
//!   [`ListenerConfig::idle_timeout`] of silence): the instance in flight is dropped,
//!   nothing appears under a final name, instances already answered stay, other and
//!   later associations are served; each fault is an [`Event::Warning`].
//! * **Series**: [`Event::SeriesComplete`] once no instance of a series arrived for
//!   [`ListenerConfig::series_quiet`]; CT / MR / PET series are then listed with
//!   `pinhole_io::dicom::list_series` and a warning follows when that fails.
//! * **Push** ([`push_files`], [`echo`]): one association, one presentation context per
//!   (SOP class, transfer syntax) pair of the files; each data set is sent exactly as
//!   stored after its file meta group (never decoded or transcoded) in P-DATA
//!   fragments within the peer's maximum PDU length, and every file is reported with
//!   its C-STORE-RSP status or why it was not sent (not DICOM, no accepted context,
//!   blank identifying UIDs). Blank UIDs are filled only when
//!   [`PushConfig::fill_blank_uids`] asks for it, with a warning per file; an
//!   A-ASSOCIATE-RJ or an association ending early is an error naming the peer's
//!   reason (with the report so far).
//! * **Query and pull** ([`find`], [`move_series`]): Study Root C-FIND (Patient Root at
//!   the patient level) and C-MOVE on one association each, the push's association
//!   setup and fragmenter, identifiers in Explicit or Implicit VR Little Endian; every
//!   response identifier is at most [`query::MAX_IDENTIFIER_BYTES`] and walked with
//!   [`dataset::scan`]; at most [`QueryConfig::max_matches`] matches, one more sends a
//!   C-CANCEL and fails with [`QueryError::TooManyMatches`]; a final failure status is
//!   [`QueryError::Status`] with the status, the peer's Error Comment and, for a
//!   C-MOVE, the sub-operation counts.
//!
//! * **DICOMweb** ([`web`]): QIDO-RS search, WADO-RS retrieval of a series into the
//!   listener's folder layout (parts split while they stream, each checked and written
//!   as a received instance), STOW-RS storage of Part-10 files with a report per file.
//!
//! * **C-GET** ([`get_series`]): the series back on the query's association, this node
//!   in the SCP role of the series' SOP classes, each instance stored as the listener
//!   stores one.
//!
//! Not done: storage commitment, transcoding, TLS for DIMSE.

mod association;
pub mod config;
pub mod dataset;
pub mod dimse;
pub mod error;
pub mod event;
mod listener;
pub mod push;
pub mod query;
mod scu;
mod series;
pub mod sop;
pub mod store;
pub mod web;

pub use config::ListenerConfig;
pub use error::{Error, Result};
pub use event::Event;
pub use listener::{Listener, ListenerHandle};
pub use push::{
    echo, push_files, Destination, FileReport, Outcome, PushConfig, PushError, PushEvent,
    PushReport,
};
pub use query::{find, get_series, move_series, Level, Match, MoveReport, QueryConfig, QueryError};
pub use web::{RetrieveReport, StoreReport, WebConfig, WebError};
