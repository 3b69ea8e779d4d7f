//! Sending instances to a peer: a C-STORE SCU ([`push_files`]) and a C-ECHO SCU
//! ([`echo`]) over dicom-ul's client association (synchronous, one association per
//! call).
//!
//! Each file is sent as it is stored: the data set bytes after the file meta group are
//! streamed from the file in the file's own transfer syntax (pixel data are never
//! decoded or re-encoded), in P-DATA fragments no longer than the peer's maximum PDU
//! length. One presentation context is proposed per (SOP class, transfer syntax) pair
//! present in the files; a file whose pair the peer refused is reported as not sent
//! (this version does not transcode).
//!
//! Data sets whose identifying UIDs are blank (de-identified data such as the shared
//! test series) are refused unless [`PushConfig::fill_blank_uids`] is set; then, and
//! only then, the data set is re-encoded in the same transfer syntax with the SOP UIDs
//! of its file meta group and Study / Series UIDs derived from its Frame of Reference
//! UID (encapsulated pixel data fragments are kept byte for byte), and the report
//! warns for each such file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::{dicom_value, DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_transfer_syntax_registry::{TransferSyntaxIndex, TransferSyntaxRegistry};
use dicom_ul::{ClientAssociation, ClientAssociationOptions};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{check_ae_title, DEFAULT_MAX_PDU_BYTES};
use crate::dataset::error_chain;
use crate::dimse::{self, status_class, status_text, Response, StatusClass};
use crate::scu::{
    receive_response, send_bytes, send_pdvs, trim_uid, wire, EstablishError, Failed, Peer,
};
use crate::store::check_uid;
use pinhole_io::dicom::deidentify::{deidentify_file, DeidentifiedFile, DeidentifyKey};

/// Default bound on connecting and on each read or write of the association.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Most presentation contexts one association can propose (odd IDs 1..=255).
pub const MAX_PRESENTATION_CONTEXTS: usize = 128;
/// Longest file meta group read (a real one is a few hundred bytes).
const MAX_META_BYTES: u64 = 64 * 1024;

/// Where and how to send. Build with [`PushConfig::new`], change fields, and hand to
/// [`push_files`] or [`echo`], which validate it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// This node's AE title (1–16 characters of the DICOM AE repertoire).
    pub calling_ae: String,
    /// The peer's AE title.
    pub called_ae: String,
    /// The peer's address, `host:port` (`[v6]:port` for an IPv6 address).
    pub addr: String,
    /// Largest PDU this node receives (offered in the A-ASSOCIATE-RQ).
    pub max_pdu_bytes: u32,
    /// Bound on connecting and on each read or write (a peer storing a large instance
    /// must answer within it).
    pub timeout: Duration,
    /// Fill blank SOP Class / Instance, Study and Series Instance UIDs of data sets
    /// (see the module documentation) instead of refusing those files.
    pub fill_blank_uids: bool,
    /// De-identify every data set before it is sent (DICOM PS3.15 basic profile,
    /// `pinhole_io::dicom::deidentify`; UIDs replaced with this key). Deflated files go
    /// as Explicit VR Little Endian.
    pub deidentify: Option<DeidentifyKey>,
}

impl PushConfig {
    /// A configuration with [`DEFAULT_MAX_PDU_BYTES`], [`DEFAULT_TIMEOUT`] and
    /// `fill_blank_uids` off.
    pub fn new(
        calling_ae: impl Into<String>,
        called_ae: impl Into<String>,
        addr: impl Into<String>,
    ) -> Self {
        Self {
            calling_ae: calling_ae.into(),
            called_ae: called_ae.into(),
            addr: addr.into(),
            max_pdu_bytes: DEFAULT_MAX_PDU_BYTES,
            timeout: DEFAULT_TIMEOUT,
            fill_blank_uids: false,
            deidentify: None,
        }
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), PushError> {
        self.scu()
            .validate()
            .map_err(|(field, message)| PushError::Config { field, message })
    }

    /// `CALLED@addr`, for messages.
    pub fn peer(&self) -> String {
        self.scu().name()
    }

    pub(crate) fn scu(&self) -> Peer<'_> {
        Peer {
            calling_ae: &self.calling_ae,
            called_ae: &self.called_ae,
            addr: &self.addr,
            max_pdu_bytes: self.max_pdu_bytes,
            timeout: self.timeout,
        }
    }

    fn options(&self) -> ClientAssociationOptions<'_> {
        self.scu().options()
    }
}

/// A peer written `AE@HOST:PORT` (`AE@[v6]:PORT` for an IPv6 address).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub ae_title: String,
    pub host: String,
    pub port: u16,
}

impl Destination {
    /// `host:port`, as [`PushConfig::addr`] takes it.
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.ae_title, self.host, self.port)
    }
}

impl std::str::FromStr for Destination {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let form = "AE@HOST:PORT, e.g. PACS@10.0.0.5:104";
        // An AE title may hold '@', a host may not: the last '@' separates them.
        let (ae_title, addr) = text
            .rsplit_once('@')
            .ok_or_else(|| format!("{text:?} has no '@' ({form})"))?;
        check_ae_title(ae_title)?;
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?} has no ':PORT' after the host ({form})"))?;
        if host.is_empty() {
            return Err(format!("{text:?} has no host ({form})"));
        }
        if let Some(inner) = host.strip_prefix('[') {
            let ok = inner
                .strip_suffix(']')
                .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok());
            if !ok {
                return Err(format!("{host:?} is not an IPv6 address in brackets"));
            }
        } else if host.contains(':') {
            return Err(format!(
                "{host:?}: write an IPv6 address in brackets (AE@[::1]:104)"
            ));
        } else if let Some(c) = host
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '\\' | '@'))
        {
            return Err(format!("host {host:?} holds {c:?}"));
        }
        let port: u16 = port
            .parse()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {port:?} is not a number in 1..=65535"))?;
        Ok(Self {
            ae_title: ae_title.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Why a push or an echo failed as a whole. Problems of single files are in the
/// [`PushReport`] instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// A [`PushConfig`] field out of its range; names the field.
    #[error("invalid push configuration: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// The peer answered the A-ASSOCIATE-RQ with an A-ASSOCIATE-RJ.
    #[error("association with {peer} rejected: {reason}")]
    Rejected { peer: String, reason: String },
    /// No association: the peer cannot be reached, timed out or broke the protocol.
    #[error("cannot associate with {peer}: {message}")]
    Association { peer: String, message: String },
    /// The association was aborted or broken after it was established; `report` says
    /// which files were answered before, and which were not sent.
    #[error("association with {peer} ended early: {reason} ({} of {} file(s) stored)", report.stored(), report.total)]
    Aborted {
        peer: String,
        reason: String,
        report: Box<PushReport>,
    },
    /// The C-ECHO was answered, but not with success.
    #[error("C-ECHO to {peer} answered with status 0x{status:04X} ({})", status_text(*status))]
    EchoStatus { peer: String, status: u16 },
    /// The C-ECHO got no valid answer.
    #[error("C-ECHO to {peer}: {message}")]
    Echo { peer: String, message: String },
}

/// What became of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Status 0x0000.
    Success,
    /// A warning status (0xB000–0xBFFF, 0x0001, 0x0107, 0x0116): stored, with a remark.
    Warning,
    /// A failure status, or the association ended before the answer.
    Failure,
    /// Never sent: not a readable DICOM file, blank UIDs without
    /// [`PushConfig::fill_blank_uids`], no accepted presentation context, or the
    /// association ended first.
    NotSent,
}

/// One file of a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The file's name (its last path component; folders are often named after the
    /// patient). Callers may replace it with the full path.
    pub name: String,
    /// The file as given (not serialised).
    #[serde(skip)]
    pub path: PathBuf,
    /// From the file meta group.
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    pub transfer_syntax: Option<String>,
    /// The C-STORE-RSP status; `None` when no answer came.
    pub status: Option<u16>,
    /// What the status means, e.g. `"refused: out of resources"`.
    pub status_text: Option<String>,
    pub outcome: Outcome,
    /// The peer's Error Comment (0000,0902), when it gave one.
    pub comment: Option<String>,
    /// Why the file failed or was not sent.
    pub error: Option<String>,
    /// Data set bytes sent.
    pub bytes: u64,
    /// The data set's blank UIDs were filled in ([`PushConfig::fill_blank_uids`]).
    pub filled_uids: bool,
    /// The data set was de-identified before it was sent ([`PushConfig::deidentify`]);
    /// `sop_instance_uid` is then the new UID.
    pub deidentified: bool,
}

impl FileReport {
    pub(crate) fn new(path: &Path) -> Self {
        Self {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| path.display().to_string()),
            path: path.to_path_buf(),
            sop_class_uid: None,
            sop_instance_uid: None,
            transfer_syntax: None,
            status: None,
            status_text: None,
            outcome: Outcome::NotSent,
            comment: None,
            error: None,
            bytes: 0,
            filled_uids: false,
            deidentified: false,
        }
    }
}

/// The result of [`push_files`]: every file, in the order given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PushReport {
    /// `CALLED@host:port`.
    pub peer: String,
    pub calling_ae: String,
    pub files: Vec<FileReport>,
    pub total: usize,
    /// Answered with success.
    pub succeeded: usize,
    /// Answered with a warning status (stored, with a remark).
    pub warned: usize,
    /// Answered with a failure status, or no answer before the association ended.
    pub failed: usize,
    pub not_sent: usize,
    /// From the first file read to the association's release.
    pub seconds: f64,
    /// Data set bytes sent.
    pub bytes_sent: u64,
    /// Everything done that the caller did not ask for in so many words (filled UIDs),
    /// and an unclean release.
    pub warnings: Vec<String>,
}

impl PushReport {
    /// Files the peer answered with success or a warning.
    pub fn stored(&self) -> usize {
        self.succeeded + self.warned
    }

    /// True when every file was stored (success or warning status).
    pub fn all_stored(&self) -> bool {
        self.stored() == self.total
    }

    /// One line: counts, bytes, time.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} file(s) stored by {} ({} success, {} warning, {} failed, {} not sent), {:.1} MB in {:.2} s",
            self.stored(),
            self.total,
            self.peer,
            self.succeeded,
            self.warned,
            self.failed,
            self.not_sent,
            self.bytes_sent as f64 / 1e6,
            self.seconds
        )
    }

    fn count(&mut self, started: Instant) {
        let count = |o: Outcome| self.files.iter().filter(|f| f.outcome == o).count();
        self.total = self.files.len();
        self.succeeded = count(Outcome::Success);
        self.warned = count(Outcome::Warning);
        self.failed = count(Outcome::Failure);
        self.not_sent = count(Outcome::NotSent);
        self.bytes_sent = self.files.iter().map(|f| f.bytes).sum();
        self.seconds = started.elapsed().as_secs_f64();
    }
}

/// Progress of [`push_files`], one event per file (in the order of the files given for
/// those refused before the association, then in that order for the rest).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum PushEvent {
    /// The association is established.
    Associated {
        peer: String,
        proposed_contexts: usize,
        accepted_contexts: usize,
        /// The peer's maximum PDU length (fragments are cut to it).
        peer_max_pdu_bytes: u32,
    },
    /// A file was sent and answered (any status; see `file.outcome`), or the
    /// association ended while it was in flight.
    Sent {
        index: usize,
        total: usize,
        file: FileReport,
    },
    /// A file was not sent; `file.error` says why.
    NotSent {
        index: usize,
        total: usize,
        file: FileReport,
    },
}

/// A file ready to go.
struct Prepared {
    index: usize,
    sop_class_uid: String,
    sop_instance_uid: String,
    transfer_syntax: String,
    /// The data set: its offset in the file and its length.
    offset: u64,
    len: u64,
    preamble: ReadPreamble,
    fill: Option<Fill>,
}

/// The blank UIDs of a data set and what they become.
struct Fill {
    values: Vec<(Tag, &'static str, String)>,
}

/// Sends `files` to the peer of `config` on one association and reports each.
///
/// Files that cannot be sent (not DICOM Part-10, unreadable, blank UIDs without
/// [`PushConfig::fill_blank_uids`], a (SOP class, transfer syntax) pair the peer did
/// not accept) are reported as [`Outcome::NotSent`] and the others are sent.
///
/// Errors: the configuration ([`PushError::Config`]), an A-ASSOCIATE-RJ
/// ([`PushError::Rejected`], with the peer's reason), no association
/// ([`PushError::Association`]), and an association aborted or broken after it was
/// established ([`PushError::Aborted`], carrying the report so far). Any other
/// outcome, partial failures included, is `Ok` with the report.
pub fn push_files(
    config: &PushConfig,
    files: &[PathBuf],
    mut progress: impl FnMut(PushEvent),
) -> Result<PushReport, PushError> {
    config.validate()?;
    let started = Instant::now();
    let total = files.len();
    let mut report = PushReport {
        peer: config.peer(),
        calling_ae: config.calling_ae.clone(),
        files: files.iter().map(|p| FileReport::new(p)).collect(),
        total,
        succeeded: 0,
        warned: 0,
        failed: 0,
        not_sent: 0,
        seconds: 0.0,
        bytes_sent: 0,
        warnings: Vec::new(),
    };
    let mut prepared = Vec::new();
    for (index, path) in files.iter().enumerate() {
        let file = &mut report.files[index];
        match inspect(path, config.fill_blank_uids, file) {
            Ok(mut ready) => {
                ready.index = index;
                if let Some(key) = &config.deidentify {
                    ready.sop_instance_uid = key.map_uid(&ready.sop_instance_uid);
                    file.sop_instance_uid = Some(ready.sop_instance_uid.clone());
                    // Read inflated, so sent as Explicit VR Little Endian.
                    if ready.transfer_syntax == uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN {
                        ready.transfer_syntax = uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned();
                    }
                }
                prepared.push(ready);
            }
            Err(reason) => {
                file.error = Some(reason);
                progress(PushEvent::NotSent {
                    index,
                    total,
                    file: file.clone(),
                });
            }
        }
    }
    if prepared.is_empty() {
        report.count(started);
        return Ok(report);
    }

    // One presentation context per (SOP class, transfer syntax) pair, in order of
    // first appearance; dicom-ul numbers the i-th one 2i + 1.
    let mut pairs: Vec<(String, String)> = Vec::new();
    for p in &prepared {
        let pair = (p.sop_class_uid.clone(), p.transfer_syntax.clone());
        if !pairs.contains(&pair) {
            pairs.push(pair);
        }
    }
    let proposed = &pairs[..pairs.len().min(MAX_PRESENTATION_CONTEXTS)];
    let mut options = config.options();
    for (class, ts) in proposed {
        options = options.with_presentation_context(class.as_str(), vec![ts.as_str()]);
    }
    let accepted_contexts: Vec<Option<u8>>;
    let mut association = match establish(config, options)? {
        Some(association) => {
            // The accepted contexts, by proposal index; one proposed transfer syntax
            // each, so an acceptance naming another breaks the protocol: not used.
            accepted_contexts = proposed
                .iter()
                .enumerate()
                .map(|(i, (_, ts))| {
                    let id = (2 * i + 1) as u8;
                    association
                        .presentation_contexts()
                        .iter()
                        .find(|pc| pc.id == id && trim_uid(&pc.transfer_syntax) == *ts)
                        .map(|pc| pc.id)
                })
                .collect();
            progress(PushEvent::Associated {
                peer: config.peer(),
                proposed_contexts: proposed.len(),
                accepted_contexts: accepted_contexts.iter().flatten().count(),
                peer_max_pdu_bytes: association.acceptor_max_pdu_length(),
            });
            Some(association)
        }
        None => {
            accepted_contexts = vec![None; proposed.len()];
            None
        }
    };
    let context_of = |p: &Prepared| -> Result<u8, String> {
        let position = proposed
            .iter()
            .position(|(class, ts)| *class == p.sop_class_uid && *ts == p.transfer_syntax)
            .ok_or_else(|| {
                format!(
                    "not proposed: more than {MAX_PRESENTATION_CONTEXTS} (SOP class, \
                     transfer syntax) pairs in one push; push this file separately"
                )
            })?;
        accepted_contexts[position].ok_or_else(|| {
            format!(
                "no accepted presentation context for SOP class {} in {}: the peer \
                 refused this pair, and this version sends files in their own transfer \
                 syntax (no transcoding)",
                p.sop_class_uid,
                ts_name(&p.transfer_syntax)
            )
        })
    };

    let mut message_id: u16 = 0;
    let mut queue = prepared.into_iter();
    while let Some(ready) = queue.next() {
        let index = ready.index;
        let target = context_of(&ready).and_then(|id| {
            association
                .as_mut()
                .map(|live| (id, live))
                .ok_or_else(|| "no association".to_string())
        });
        let (context_id, live) = match target {
            Ok(target) => target,
            Err(reason) => {
                let file = &mut report.files[index];
                file.error = Some(reason);
                progress(PushEvent::NotSent {
                    index,
                    total,
                    file: file.clone(),
                });
                continue;
            }
        };
        message_id = message_id.checked_add(1).unwrap_or(1);
        let file = &mut report.files[index];
        let outcome = send_one(
            live,
            context_id,
            message_id,
            &ready,
            config.deidentify.as_ref(),
            file,
        );
        if let (true, Some(fill)) = (file.filled_uids, &ready.fill) {
            report.warnings.push(fill_warning(&file.name, fill));
        }
        match outcome {
            Ok(response) => {
                record_answer(file, &response);
                progress(PushEvent::Sent {
                    index,
                    total,
                    file: file.clone(),
                });
            }
            Err(Failed::Local(reason)) => {
                file.error = Some(reason);
                progress(PushEvent::NotSent {
                    index,
                    total,
                    file: file.clone(),
                });
            }
            Err(Failed::Wire { reason, abort }) => {
                file.outcome = Outcome::Failure;
                file.error = Some(format!(
                    "the association ended before the C-STORE-RSP: {reason}"
                ));
                progress(PushEvent::Sent {
                    index,
                    total,
                    file: file.clone(),
                });
                if let Some(association) = association.take() {
                    if abort {
                        let _ = association.abort();
                    }
                }
                for rest in queue.by_ref() {
                    let file = &mut report.files[rest.index];
                    file.error = Some(format!(
                        "the association ended before this file was sent: {reason}"
                    ));
                    progress(PushEvent::NotSent {
                        index: rest.index,
                        total,
                        file: file.clone(),
                    });
                }
                report.count(started);
                return Err(PushError::Aborted {
                    peer: config.peer(),
                    reason,
                    report: Box::new(report),
                });
            }
        }
    }
    if let Some(association) = association {
        if let Err(e) = association.release() {
            report.warnings.push(format!(
                "the association with {} was not released cleanly: {}",
                config.peer(),
                error_chain(&e)
            ));
        }
    }
    report.count(started);
    Ok(report)
}

/// Sends a C-ECHO on its own association; returns the time from connecting to the
/// C-ECHO-RSP.
pub fn echo(config: &PushConfig) -> Result<Duration, PushError> {
    config.validate()?;
    let started = Instant::now();
    let peer = config.peer();
    let options = config.options().with_presentation_context(
        crate::sop::VERIFICATION_SOP_CLASS,
        vec![uids::IMPLICIT_VR_LITTLE_ENDIAN],
    );
    let Some(mut association) = establish(config, options)? else {
        return Err(PushError::Association {
            peer,
            message: "the peer does not accept the Verification SOP class (C-ECHO)".into(),
        });
    };
    let context_id = association
        .presentation_contexts()
        .first()
        .map(|pc| pc.id)
        .ok_or_else(|| PushError::Association {
            peer: peer.clone(),
            message: "no accepted presentation context".into(),
        })?;
    let failed = |message: String| PushError::Echo {
        peer: peer.clone(),
        message,
    };
    let command = dimse::echo_request(1).map_err(failed)?;
    let outcome = send_bytes(&mut association, context_id, true, &command)
        .and_then(|()| receive_response(&mut association, context_id, dimse::C_ECHO_RSP, 1));
    let response = match outcome {
        Ok(response) => response,
        Err(failure) => {
            let (reason, abort) = match failure {
                Failed::Local(reason) => (reason, true),
                Failed::Wire { reason, abort } => (reason, abort),
            };
            if abort {
                let _ = association.abort();
            }
            return Err(failed(reason));
        }
    };
    let elapsed = started.elapsed();
    let _ = association.release();
    if response.status != dimse::status::SUCCESS {
        return Err(PushError::EchoStatus {
            peer,
            status: response.status,
        });
    }
    Ok(elapsed)
}

/// Establishes the association ([`Peer::establish`]); `None` when the peer accepted
/// none of the proposed presentation contexts.
fn establish(
    config: &PushConfig,
    options: ClientAssociationOptions<'_>,
) -> Result<Option<ClientAssociation<TcpStream>>, PushError> {
    config.scu().establish(options).map_err(|e| match e {
        EstablishError::Rejected(reason) => PushError::Rejected {
            peer: config.peer(),
            reason,
        },
        EstablishError::Failed(message) => PushError::Association {
            peer: config.peer(),
            message,
        },
    })
}

/// A transfer syntax's name and UID, for messages.
fn ts_name(uid: &str) -> String {
    match TransferSyntaxRegistry.get(uid) {
        Some(ts) => format!("{} ({uid})", ts.name()),
        None => uid.to_string(),
    }
}

/// The text of a top-level element, padding removed; `None` when absent or blank.
fn text(object: &DefaultDicomObject, tag: Tag) -> Option<String> {
    let element = object.element_opt(tag).ok().flatten()?;
    let value = element.to_str().ok()?;
    let value = value.trim_matches(['\0', ' ']);
    (!value.is_empty()).then(|| value.to_string())
}

/// Where the data set of a Part-10 file begins: after the preamble (when present),
/// `DICM` and the file meta group, whose elements are walked (explicit VR little
/// endian, every length checked against the bytes read) and whose group length, when
/// given, must agree. Returns the offset and whether the file has a preamble.
fn locate_data_set(file: &mut impl Read, file_len: u64) -> Result<(u64, bool), String> {
    let mut head = Vec::new();
    file.take(128 + 4 + MAX_META_BYTES)
        .read_to_end(&mut head)
        .map_err(|e| format!("cannot read: {e}"))?;
    let whole_file = head.len() as u64 == file_len;
    let (start, preamble) = if head.get(128..132) == Some(b"DICM".as_slice()) {
        (132, true)
    } else if head.starts_with(b"DICM") {
        (4, false)
    } else {
        return Err("not a DICOM Part-10 file (no \"DICM\" after a 128-byte preamble)".into());
    };
    let mut pos = start;
    let mut group_length: Option<(usize, u32)> = None;
    loop {
        let Some(header) = head.get(pos..pos + 8) else {
            return Err(if whole_file {
                "no data set after the file meta group".into()
            } else {
                format!("file meta group longer than {MAX_META_BYTES} bytes")
            });
        };
        let group = u16::from_le_bytes([header[0], header[1]]);
        if group != 0x0002 {
            break;
        }
        let element = u16::from_le_bytes([header[2], header[3]]);
        let long = matches!(
            &header[4..6],
            b"OB"
                | b"OD"
                | b"OF"
                | b"OL"
                | b"OV"
                | b"OW"
                | b"SQ"
                | b"SV"
                | b"UC"
                | b"UN"
                | b"UR"
                | b"UT"
                | b"UV"
        );
        let (header_len, len) = if long {
            let field = head
                .get(pos + 8..pos + 12)
                .ok_or("the file meta group is truncated")?;
            (
                12,
                u32::from_le_bytes([field[0], field[1], field[2], field[3]]),
            )
        } else {
            (8, u32::from(u16::from_le_bytes([header[6], header[7]])))
        };
        let end = (pos + header_len)
            .checked_add(len as usize)
            .filter(|&end| end <= head.len())
            .ok_or_else(|| {
                format!(
                    "file meta group element (0002,{element:04X}) claims {len} bytes beyond the {} read",
                    head.len()
                )
            })?;
        if element == 0x0000 && len == 4 {
            let v = &head[pos + header_len..end];
            group_length = Some((end, u32::from_le_bytes([v[0], v[1], v[2], v[3]])));
        }
        pos = end;
    }
    if pos == start {
        return Err("empty file meta group".into());
    }
    if let Some((after, claimed)) = group_length {
        if after + claimed as usize != pos {
            return Err(format!(
                "the file meta group length says {claimed} bytes but its elements take {}",
                pos - after
            ));
        }
    }
    Ok((pos as u64, preamble))
}

/// What the file meta group of a Part-10 file in memory says.
pub(crate) struct PartMeta {
    pub(crate) sop_class_uid: String,
    pub(crate) sop_instance_uid: String,
    pub(crate) transfer_syntax: String,
    /// Where the data set begins.
    pub(crate) data_set_offset: usize,
}

/// Reads the file meta group of a Part-10 file held in memory (a WADO-RS part): every
/// length checked, the three UIDs required.
pub(crate) fn read_meta(bytes: &[u8]) -> Result<PartMeta, String> {
    let (offset, preamble) = locate_data_set(&mut &bytes[..], bytes.len() as u64)?;
    let start = if preamble { 132 } else { 4 };
    let meta = bytes.get(start..offset as usize).unwrap_or_default();
    let explicit = TransferSyntaxRegistry
        .get(uids::EXPLICIT_VR_LITTLE_ENDIAN)
        .ok_or("explicit VR little endian is unknown to this build")?;
    let scanned = crate::dataset::scan(
        meta,
        explicit,
        &[
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            tags::TRANSFER_SYNTAX_UID,
        ],
    )?;
    let uid = |tag, what: &str| {
        let value = scanned.text(tag).unwrap_or_default();
        check_uid(what, &value)?;
        Ok::<_, String>(value)
    };
    Ok(PartMeta {
        sop_class_uid: uid(
            tags::MEDIA_STORAGE_SOP_CLASS_UID,
            "Media Storage SOP Class UID",
        )?,
        sop_instance_uid: uid(
            tags::MEDIA_STORAGE_SOP_INSTANCE_UID,
            "Media Storage SOP Instance UID",
        )?,
        transfer_syntax: uid(tags::TRANSFER_SYNTAX_UID, "Transfer Syntax UID")?,
        data_set_offset: offset as usize,
    })
}

/// Checks a file as [`push_files`] does before sending it (no blank UIDs filled);
/// fills in what `report` learns. The reason when it cannot be sent.
pub(crate) fn inspect_file(path: &Path, report: &mut FileReport) -> Result<(), String> {
    inspect(path, false, report).map(|_| ())
}

/// Reads a file's meta group and data set head; fills in what `report` learns. The
/// reason when the file cannot be sent.
fn inspect(path: &Path, fill: bool, report: &mut FileReport) -> Result<Prepared, String> {
    let mut file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    let file_len = file
        .metadata()
        .map_err(|e| format!("cannot read: {e}"))?
        .len();
    let (offset, preamble) = locate_data_set(&mut file, file_len)?;
    drop(file);
    let preamble = if preamble {
        ReadPreamble::Always
    } else {
        ReadPreamble::Never
    };
    let object = OpenFileOptions::new()
        .read_preamble(preamble)
        .read_until(tags::PIXEL_DATA)
        .open_file(path)
        .map_err(|e| format!("not a readable DICOM file: {}", error_chain(&e)))?;
    let meta = object.meta();
    let class = trim_uid(meta.media_storage_sop_class_uid()).to_string();
    let instance = trim_uid(meta.media_storage_sop_instance_uid()).to_string();
    let ts = trim_uid(meta.transfer_syntax()).to_string();
    report.sop_class_uid = Some(class.clone()).filter(|u| !u.is_empty());
    report.sop_instance_uid = Some(instance.clone()).filter(|u| !u.is_empty());
    report.transfer_syntax = Some(ts.clone()).filter(|u| !u.is_empty());
    check_uid("the file meta group's Media Storage SOP Class UID", &class)?;
    check_uid(
        "the file meta group's Media Storage SOP Instance UID",
        &instance,
    )?;
    check_uid("the file meta group's Transfer Syntax UID", &ts)?;

    // The data set's own identity must agree with the file meta group's, and be there.
    let in_data = |tag, what: &str, meta_value: &str| match text(&object, tag) {
        Some(value) if value != meta_value => Err(format!(
            "the data set's {what} {} differs from the file meta group's {meta_value}",
            value.chars().take(80).collect::<String>()
        )),
        value => Ok(value),
    };
    let data_class = in_data(tags::SOP_CLASS_UID, "SOP Class UID", &class)?;
    let data_instance = in_data(tags::SOP_INSTANCE_UID, "SOP Instance UID", &instance)?;
    let study = text(&object, tags::STUDY_INSTANCE_UID);
    let series = text(&object, tags::SERIES_INSTANCE_UID);
    let mut blank = Vec::new();
    if data_class.is_none() {
        blank.push((tags::SOP_CLASS_UID, "SOP Class UID"));
    }
    if data_instance.is_none() {
        blank.push((tags::SOP_INSTANCE_UID, "SOP Instance UID"));
    }
    if study.is_none() {
        blank.push((tags::STUDY_INSTANCE_UID, "Study Instance UID"));
    }
    if series.is_none() {
        blank.push((tags::SERIES_INSTANCE_UID, "Series Instance UID"));
    }
    let names = |b: &[(Tag, &str)]| b.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ");
    let fill = if blank.is_empty() {
        None
    } else if !fill {
        return Err(format!(
            "blank {} in the data set: a receiving archive would store it without identity; not sent (fill_blank_uids, `--fill-blank-uids`, fills them from the file meta group and the Frame of Reference UID)",
            names(&blank)
        ));
    } else {
        if TransferSyntaxRegistry.get(&ts).is_none() {
            return Err(format!(
                "blank {} in the data set, which cannot be filled: transfer syntax {ts} is unknown to this build",
                names(&blank)
            ));
        }
        let frame_of_reference = text(&object, tags::FRAME_OF_REFERENCE_UID);
        let mut values = Vec::new();
        for (tag, name) in blank {
            let value = match tag {
                tags::SOP_CLASS_UID => class.clone(),
                tags::SOP_INSTANCE_UID => instance.clone(),
                _ => {
                    let seed = frame_of_reference.as_deref().ok_or_else(|| {
                        format!(
                            "blank {name} in the data set and no Frame of Reference UID to derive it from: not sent"
                        )
                    })?;
                    let kind = if tag == tags::STUDY_INSTANCE_UID {
                        "study"
                    } else {
                        "series"
                    };
                    derived_uid(kind, seed)
                }
            };
            values.push((tag, name, value));
        }
        Some(Fill { values })
    };
    Ok(Prepared {
        index: 0,
        sop_class_uid: class,
        sop_instance_uid: instance,
        transfer_syntax: ts,
        offset,
        len: file_len.saturating_sub(offset),
        preamble,
        fill,
    })
}

/// A deterministic UID for the `kind` ("study", "series") of the data sets sharing the
/// Frame of Reference UID `seed`: `2.25.` and the decimal of 128 bits of SHA-256
/// (UUID version 8 and variant bits set, as PS3.5 §B.2 expects of a 2.25 UID).
pub fn derived_uid(kind: &str, seed: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"pinhole-dicomnet fill_blank_uids\0")
        .chain_update(kind.as_bytes())
        .chain_update([0u8])
        .chain_update(seed.as_bytes())
        .finalize();
    pinhole_io::dicom::derived::uid_from_hash(&digest)
}

/// The report's warning for a file whose blank UIDs were filled.
fn fill_warning(name: &str, fill: &Fill) -> String {
    let values: Vec<String> = fill
        .values
        .iter()
        .map(|(_, what, value)| format!("{what} {value}"))
        .collect();
    format!(
        "{name}: blank UIDs filled before sending (SOP UIDs from the file meta group, Study / Series UIDs derived from the Frame of Reference UID): {}",
        values.join(", ")
    )
}

/// Sends one file's C-STORE-RQ and data set and reads the C-STORE-RSP.
fn send_one(
    association: &mut ClientAssociation<TcpStream>,
    context_id: u8,
    message_id: u16,
    ready: &Prepared,
    deidentify: Option<&DeidentifyKey>,
    report: &mut FileReport,
) -> Result<Response, Failed> {
    // Everything that can fail locally fails before the command goes out.
    let (mut source, len): (Box<dyn Read>, u64) = match (ready.fill.as_ref(), deidentify) {
        (None, None) => {
            let mut file =
                File::open(&report.path).map_err(|e| Failed::Local(format!("cannot open: {e}")))?;
            let len = file
                .metadata()
                .map_err(|e| Failed::Local(format!("cannot read: {e}")))?
                .len();
            if len != ready.offset + ready.len {
                return Err(Failed::Local(format!(
                    "the file changed size since it was read ({} -> {len} bytes)",
                    ready.offset + ready.len
                )));
            }
            file.seek(SeekFrom::Start(ready.offset))
                .map_err(|e| Failed::Local(format!("cannot read: {e}")))?;
            let reader = std::io::BufReader::with_capacity(256 * 1024, file);
            (Box::new(reader), ready.len)
        }
        (fill, key) => {
            let bytes =
                rewritten_data_set(&report.path, ready, fill, key).map_err(Failed::Local)?;
            report.filled_uids = fill.is_some();
            report.deidentified = key.is_some();
            let len = bytes.len() as u64;
            (Box::new(std::io::Cursor::new(bytes)), len)
        }
    };
    let command = dimse::store_request(message_id, &ready.sop_class_uid, &ready.sop_instance_uid)
        .map_err(Failed::Local)?;
    send_bytes(association, context_id, true, &command)?;
    let max_pdu = association.acceptor_max_pdu_length();
    send_pdvs(
        association.inner_stream(),
        context_id,
        false,
        &mut source,
        len,
        max_pdu,
    )
    .map_err(|e| wire(e.to_string(), true))?;
    report.bytes = len;
    receive_response(association, context_id, dimse::C_STORE_RSP, message_id)
}

/// The data set of `path` with the blank UIDs of `fill` filled in and then de-identified
/// with `key` (either may be absent), re-encoded in the transfer syntax it is sent in
/// (encapsulated pixel data fragments are written back as read). A file that is only
/// de-identified is read through `pinhole-io`'s checked parse.
fn rewritten_data_set(
    path: &Path,
    ready: &Prepared,
    fill: Option<&Fill>,
    key: Option<&DeidentifyKey>,
) -> Result<Vec<u8>, String> {
    let Some(fill) = fill else {
        let key = key.ok_or("nothing to rewrite")?;
        let done = deidentify_file(path, key).map_err(|e| format!("cannot de-identify: {e}"))?;
        return done.data_set_bytes();
    };
    let mut object = OpenFileOptions::new()
        .read_preamble(ready.preamble)
        .open_file(path)
        .map_err(|e| format!("cannot read the whole file: {}", error_chain(&e)))?;
    for (tag, _, value) in &fill.values {
        object.put(DataElement::new(
            *tag,
            VR::UI,
            dicom_value!(Str, value.as_str()),
        ));
    }
    if let Some(key) = key {
        let done = DeidentifiedFile::new(object.into_inner(), ready.transfer_syntax.clone(), key);
        return done.data_set_bytes();
    }
    let ts = TransferSyntaxRegistry
        .get(&ready.transfer_syntax)
        .ok_or_else(|| format!("transfer syntax {} is unknown", ready.transfer_syntax))?;
    let mut bytes = Vec::new();
    object.write_dataset_with_ts(&mut bytes, ts).map_err(|e| {
        format!(
            "cannot re-encode the data set with its UIDs filled: {}",
            error_chain(&e)
        )
    })?;
    Ok(bytes)
}

/// Records a C-STORE-RSP in the file's report.
fn record_answer(file: &mut FileReport, response: &Response) {
    let status = response.status;
    file.status = Some(status);
    file.status_text = Some(status_text(status).to_string());
    file.comment = response.error_comment.clone();
    file.outcome = match status_class(status) {
        StatusClass::Success => Outcome::Success,
        StatusClass::Warning => Outcome::Warning,
        StatusClass::Failure | StatusClass::Cancel | StatusClass::Pending => Outcome::Failure,
    };
    if file.outcome == Outcome::Failure {
        file.error = Some(match &response.error_comment {
            Some(comment) => format!("status 0x{status:04X} ({}): {comment}", status_text(status)),
            None => format!("status 0x{status:04X} ({})", status_text(status)),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_parse_with_clear_errors() {
        let d: Destination = "PACS@10.0.0.5:104".parse().unwrap();
        assert_eq!(
            (d.ae_title.as_str(), d.addr()),
            ("PACS", "10.0.0.5:104".into())
        );
        assert_eq!(d.to_string(), "PACS@10.0.0.5:104");
        let d: Destination = "A@B@host.example:11112".parse().unwrap();
        assert_eq!(
            (d.ae_title.as_str(), d.host.as_str()),
            ("A@B", "host.example")
        );
        let d: Destination = "PACS@[::1]:104".parse().unwrap();
        assert_eq!(d.addr(), "[::1]:104");
        for (bad, says) in [
            ("10.0.0.5:104", "no '@'"),
            ("@10.0.0.5:104", "1 to 16"),
            ("SEVENTEEN_CHARS_X@h:104", "1 to 16"),
            ("BAD\\AE@h:104", "backslash"),
            ("BAD\tAE@h:104", "printable"),
            ("PACS@host", "no ':PORT'"),
            ("PACS@:104", "no host"),
            ("PACS@h:0", "1..=65535"),
            ("PACS@h:70000", "1..=65535"),
            ("PACS@h:x", "1..=65535"),
            ("PACS@::1:104", "brackets"),
            ("PACS@[nope]:104", "IPv6"),
            ("PACS@a b:104", "holds"),
        ] {
            let err = bad.parse::<Destination>().unwrap_err();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
    }

    #[test]
    fn configuration_fields_are_checked() {
        let good = PushConfig::new("PINHOLE", "PACS", "127.0.0.1:104");
        good.validate().unwrap();
        type Change = fn(&mut PushConfig);
        let cases: [(&str, Change); 5] = [
            ("calling_ae", |c| c.calling_ae = String::new()),
            ("called_ae", |c| c.called_ae = "X".repeat(17)),
            ("addr", |c| c.addr = " ".into()),
            ("max_pdu_bytes", |c| c.max_pdu_bytes = 10),
            ("timeout", |c| c.timeout = Duration::ZERO),
        ];
        for (field, change) in cases {
            let mut c = good.clone();
            change(&mut c);
            match c.validate() {
                Err(PushError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn derived_uids_are_deterministic_valid_and_distinct() {
        let study = derived_uid("study", "1.2.3");
        assert_eq!(study, derived_uid("study", "1.2.3"));
        assert_ne!(study, derived_uid("series", "1.2.3"));
        assert_ne!(study, derived_uid("study", "1.2.4"));
        assert!(study.starts_with("2.25."), "{study}");
        check_uid("derived", &study).unwrap();
        let value: u128 = study["2.25.".len()..].parse().unwrap();
        // UUID version 8, RFC 4122 variant.
        assert_eq!((value >> 76) & 0xF, 8);
        assert_eq!((value >> 62) & 0x3, 2);
    }

    /// Explicit VR little-endian element with a 2-byte length.
    fn element(group: u16, element: u16, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&element.to_le_bytes());
        out.extend_from_slice(vr);
        if matches!(vr, b"OB") {
            out.extend_from_slice(&[0, 0]);
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        } else {
            out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        }
        out.extend_from_slice(value);
        out
    }

    fn part10(preamble: bool, group_length_delta: i64, meta_extra: &[u8]) -> Vec<u8> {
        let mut meta = element(2, 1, b"OB", &[0, 1]);
        meta.extend(element(2, 0x10, b"UI", b"1.2.840.10008.1.2.1\0"));
        meta.extend_from_slice(meta_extra);
        let mut out = if preamble { vec![0u8; 128] } else { Vec::new() };
        out.extend_from_slice(b"DICM");
        let claimed = (meta.len() as i64 + group_length_delta) as u32;
        out.extend(element(2, 0, b"UL", &claimed.to_le_bytes()));
        out.extend(meta);
        out.extend(element(8, 0x18, b"UI", b"1.2.3\0"));
        out
    }

    fn locate(bytes: &[u8]) -> Result<(u64, bool), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.dcm");
        std::fs::write(&path, bytes).unwrap();
        let mut file = File::open(&path).unwrap();
        locate_data_set(&mut file, bytes.len() as u64)
    }

    #[test]
    fn the_data_set_starts_after_the_walked_meta_group() {
        let with = part10(true, 0, &[]);
        let data_start = with.len() - 14;
        assert_eq!(locate(&with).unwrap(), (data_start as u64, true));
        let without = part10(false, 0, &[]);
        assert_eq!(locate(&without).unwrap(), (data_start as u64 - 128, false));
        let err = locate(&part10(true, 4, &[])).unwrap_err();
        assert!(err.contains("group length"), "{err}");
        let err = locate(b"hello, not dicom at all").unwrap_err();
        assert!(err.contains("not a DICOM"), "{err}");
        // An element claiming more than the file holds.
        let mut huge = part10(true, 0, &[]);
        huge.truncate(132 + 12);
        huge.extend_from_slice(&[2, 0, 1, 0, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF]);
        let err = locate(&huge).unwrap_err();
        assert!(err.contains("claims"), "{err}");
        // Only a meta group.
        let meta_only = &with[..data_start];
        let err = locate(meta_only).unwrap_err();
        assert!(err.contains("no data set"), "{err}");
    }
}
