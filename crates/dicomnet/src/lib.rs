//! `pinhole-dicomnet`: a DICOM receiver — C-STORE SCP and C-ECHO SCP — over dicom-rs's
//! `dicom-ul` (synchronous; std threads, no async runtime). NOT FOR CLINICAL USE.
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
//!
//! Not done: C-FIND, C-MOVE, C-GET, storage commitment, TLS, DICOMweb.

mod association;
pub mod config;
pub mod dataset;
pub mod dimse;
pub mod error;
pub mod event;
mod listener;
mod series;
pub mod sop;
pub mod store;

pub use config::ListenerConfig;
pub use error::{Error, Result};
pub use event::Event;
pub use listener::{Listener, ListenerHandle};
