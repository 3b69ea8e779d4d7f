//! Querying and retrieving from a PACS: a C-FIND SCU ([`find`]) and a C-MOVE SCU
//! ([`move_series`]) over dicom-ul's client association (synchronous, one association
//! per call), sharing the association setup and the P-DATA fragmenter of
//! [`crate::push`].
//!
//! Queries use the Study Root Query/Retrieve Information Model (the Patient Root one
//! for [`Level::Patient`], which Study Root lacks), proposing Explicit and Implicit VR
//! Little Endian for the identifiers. Every identifier received is walked with
//! [`crate::dataset::scan`] (each claimed length checked against the bytes received)
//! and is at most [`MAX_IDENTIFIER_BYTES`]; at most [`QueryConfig::max_matches`]
//! matches are kept, beyond which the query is cancelled (C-CANCEL) and refused.
//!
//! A C-MOVE asks the peer to send a series with C-STOREs of its own, on an association
//! it opens to the move destination (an AE title the peer must know with its address
//! and port): to receive it here, run a [`crate::Listener`] with that AE title.

use std::collections::BTreeMap;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{uids, StandardDataDictionary};
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries::{
    EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN,
};
use dicom_transfer_syntax_registry::TransferSyntax;
use dicom_ul::pdu::PresentationContextResultReason;
use dicom_ul::ClientAssociation;
use serde::Serialize;

use crate::config::{check_ae_title, DEFAULT_MAX_PDU_BYTES};
use crate::dataset::scan;
use crate::dimse::{self, status_class, StatusClass};
use crate::push::DEFAULT_TIMEOUT;
use crate::scu::{send_bytes, trim_uid, Arrival, EstablishError, Failed, Inbox, Peer};
use crate::store::check_uid;

/// An attribute tag (group, element).
pub use dicom_core::Tag;
/// Attribute tags, to name keys with: `tags::STUDY_INSTANCE_UID`, ...
pub use dicom_dictionary_std::tags;

/// Default bound on the matches of one C-FIND ([`QueryConfig::max_matches`]).
pub const DEFAULT_MAX_MATCHES: usize = 10_000;
/// Largest identifier (one match, or the data set of a C-MOVE response) accepted.
pub const MAX_IDENTIFIER_BYTES: usize = 1 << 20;
/// Longest value of a matching key.
pub const MAX_KEY_CHARS: usize = 1024;
/// Most responses read after a C-CANCEL, waiting for the final one, before the
/// association is aborted instead.
const MAX_RESPONSES_AFTER_CANCEL: usize = 10_000;
/// Most pending C-MOVE responses accepted (one per sub-operation is usual; the counts
/// are 16-bit).
const MAX_MOVE_RESPONSES: usize = 1 << 17;
/// The message ID of the one request of each association.
const MESSAGE_ID: u16 = 1;

/// Where and how to query. Build with [`QueryConfig::new`], change fields, and hand to
/// [`find`] or [`move_series`], which validate it first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryConfig {
    /// This node's AE title (the peer usually accepts queries only from AE titles it
    /// knows).
    pub calling_ae: String,
    /// The peer's AE title.
    pub called_ae: String,
    /// The peer's address, `host:port` (`[v6]:port` for an IPv6 address).
    pub addr: String,
    /// Largest PDU this node receives (offered in the A-ASSOCIATE-RQ).
    pub max_pdu_bytes: u32,
    /// Bound on connecting and on each read or write; a C-MOVE waits at most this long
    /// between two responses (a peer sends one per instance moved).
    pub timeout: Duration,
    /// Most matches one C-FIND keeps; one more cancels the query with an error.
    pub max_matches: usize,
}

impl QueryConfig {
    /// A configuration with [`DEFAULT_MAX_PDU_BYTES`], [`DEFAULT_TIMEOUT`] and
    /// [`DEFAULT_MAX_MATCHES`].
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
            max_matches: DEFAULT_MAX_MATCHES,
        }
    }

    /// Checks every field; the error names the first one out of range.
    pub fn validate(&self) -> Result<(), QueryError> {
        self.scu()
            .validate()
            .map_err(|(field, message)| QueryError::Config { field, message })?;
        if self.max_matches == 0 {
            return Err(QueryError::Config {
                field: "max_matches",
                message: "0: at least one match must be allowed".into(),
            });
        }
        Ok(())
    }

    /// `CALLED@addr`, for messages.
    pub fn peer(&self) -> String {
        self.scu().name()
    }

    fn scu(&self) -> Peer<'_> {
        Peer {
            calling_ae: &self.calling_ae,
            called_ae: &self.called_ae,
            addr: &self.addr,
            max_pdu_bytes: self.max_pdu_bytes,
            timeout: self.timeout,
        }
    }
}

/// The Query/Retrieve Level (0008,0052) of a C-FIND.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    /// Queried on the Patient Root model (Study Root has no patient level).
    Patient,
    Study,
    Series,
    /// Instances ("IMAGE" on the wire).
    Image,
}

impl Level {
    /// The value of Query/Retrieve Level: `PATIENT`, `STUDY`, `SERIES`, `IMAGE`.
    pub fn keyword(self) -> &'static str {
        match self {
            Level::Patient => "PATIENT",
            Level::Study => "STUDY",
            Level::Series => "SERIES",
            Level::Image => "IMAGE",
        }
    }

    /// The C-FIND information model queried at this level.
    pub fn find_model(self) -> &'static str {
        match self {
            Level::Patient => uids::PATIENT_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
            _ => uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_FIND,
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.keyword().to_ascii_lowercase())
    }
}

impl std::str::FromStr for Level {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "patient" => Ok(Level::Patient),
            "study" => Ok(Level::Study),
            "series" => Ok(Level::Series),
            "image" | "instance" => Ok(Level::Image),
            _ => Err(format!(
                "{text:?} is not a query level (patient, study, series, image)"
            )),
        }
    }
}

/// One C-FIND match: the values the peer returned for the keys asked (matching and
/// return keys), as text (multiple values joined by `\`), padding removed. A key the
/// peer left empty or did not return is absent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Match {
    values: BTreeMap<Tag, String>,
}

impl Match {
    pub(crate) fn from_values(values: BTreeMap<Tag, String>) -> Self {
        Self { values }
    }

    /// The value of `tag`; `None` when empty or not returned.
    pub fn get(&self, tag: Tag) -> Option<&str> {
        self.values.get(&tag).map(String::as_str)
    }

    /// Every value returned, by tag.
    pub fn values(&self) -> &BTreeMap<Tag, String> {
        &self.values
    }
}

impl Serialize for Match {
    /// A map from the attribute's keyword (`StudyInstanceUID`; `GGGGEEEE` for a tag
    /// outside the standard dictionary) to its value.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.values.len()))?;
        for (tag, value) in &self.values {
            map.serialize_entry(&keyword(*tag), value)?;
        }
        map.end()
    }
}

/// An attribute's keyword (`StudyInstanceUID`), or `GGGGEEEE` outside the standard
/// dictionary.
pub fn keyword(tag: Tag) -> String {
    StandardDataDictionary
        .by_tag(tag)
        .map(|entry| entry.alias().to_string())
        .unwrap_or_else(|| format!("{:04X}{:04X}", tag.0, tag.1))
}

/// The result of [`move_series`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MoveReport {
    /// "C-MOVE", or "C-GET" ([`get_series`]: the series comes back on the association).
    pub operation: &'static str,
    /// `CALLED@host:port`.
    pub peer: String,
    /// Where the peer was asked to send the series.
    pub destination_ae: String,
    pub study_uid: String,
    pub series_uid: String,
    /// The final C-MOVE-RSP status: 0x0000, or 0xB000 when sub-operations failed or
    /// warned.
    pub status: u16,
    pub status_text: String,
    /// The peer's Error Comment, when it gave one.
    pub comment: Option<String>,
    /// Sub-operations (C-STOREs to the destination) answered with success.
    pub completed: u16,
    /// Sub-operations that failed.
    pub failed: u16,
    /// Sub-operations answered with a warning status.
    pub warning: u16,
    /// Pending responses received before the final one.
    pub pending_responses: usize,
    /// Failed SOP Instance UID List (0008,0058) of the final response, when given.
    pub failed_sop_instances: Vec<String>,
    /// From connecting to the final response.
    pub seconds: f64,
    /// C-GET: the instances written here (C-STORE sub-operations answered with success).
    pub stored: usize,
    /// C-GET: the C-STORE sub-operations refused here, each with why.
    pub refused: Vec<String>,
}

impl MoveReport {
    fn new(
        operation: &'static str,
        config: &QueryConfig,
        destination_ae: &str,
        study_uid: &str,
        series_uid: &str,
    ) -> Self {
        Self {
            operation,
            peer: config.peer(),
            destination_ae: destination_ae.to_string(),
            study_uid: study_uid.to_string(),
            series_uid: series_uid.to_string(),
            status: 0,
            status_text: String::new(),
            comment: None,
            completed: 0,
            failed: 0,
            warning: 0,
            pending_responses: 0,
            failed_sop_instances: Vec::new(),
            seconds: 0.0,
            stored: 0,
            refused: Vec::new(),
        }
    }

    /// True when the peer reports success and no failed or warning sub-operation.
    pub fn all_completed(&self) -> bool {
        self.status == dimse::status::SUCCESS && self.failed == 0 && self.warning == 0
    }

    /// One line: counts, status, time.
    pub fn summary(&self) -> String {
        format!(
            "{} of series {} from {} to {}: {} completed, {} failed, {} warning; status 0x{:04X} ({}) in {:.2} s",
            self.operation,
            self.series_uid,
            self.peer,
            self.destination_ae,
            self.completed,
            self.failed,
            self.warning,
            self.status,
            self.status_text,
            self.seconds
        )
    }
}

/// Why a query or a retrieval failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueryError {
    /// A [`QueryConfig`] field or an argument out of its range; names it.
    #[error("invalid query: {field}: {message}")]
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
    /// The peer does not accept the information model (no presentation context).
    #[error("{peer} does not accept {model} ({uid})")]
    NotSupported {
        peer: String,
        model: &'static str,
        uid: &'static str,
    },
    /// The association was aborted, broken or ended by a malformed response after it
    /// was established (no final status).
    #[error("{operation} with {peer}: {reason}")]
    Protocol {
        peer: String,
        operation: &'static str,
        reason: String,
    },
    /// The final response has a failure status (or 0xFE00, cancelled). `report`: the
    /// sub-operation counts of a C-MOVE.
    #[error(
        "{operation} to {peer} answered with status 0x{status:04X} ({status_text}){}",
        comment_suffix(comment)
    )]
    Status {
        peer: String,
        operation: &'static str,
        status: u16,
        status_text: String,
        /// The peer's Error Comment (0000,0902).
        comment: Option<String>,
        report: Option<Box<MoveReport>>,
    },
    /// More than [`QueryConfig::max_matches`] matches: the query was cancelled.
    #[error("C-FIND to {peer}: more than {limit} matches, query cancelled (C-CANCEL); narrow the query or raise the limit")]
    TooManyMatches { peer: String, limit: usize },
}

fn comment_suffix(comment: &Option<String>) -> String {
    comment
        .as_ref()
        .map(|c| format!(": {c}"))
        .unwrap_or_default()
}

/// What a status code means in a C-FIND-RSP (`move_rsp` false) or C-MOVE-RSP (PS3.4
/// C.4.1.1.4, C.4.2.1.5), falling back on [`dimse::status_text`].
pub fn query_status_text(status: u16, move_rsp: bool) -> &'static str {
    match (status, move_rsp) {
        (0xA700, false) => "refused: out of resources",
        (0xA701, true) => "refused: out of resources (unable to calculate the number of matches)",
        (0xA702, true) => "refused: out of resources (unable to perform sub-operations)",
        (0xA900, _) => "error: identifier does not match SOP class",
        (0xB000, true) => "warning: sub-operations complete, one or more failures or warnings",
        (0xC000..=0xCFFF, _) => "failed: unable to process",
        (0xFE00, false) => "cancelled: matching terminated due to a cancel request",
        (0xFE00, true) => "cancelled: sub-operations terminated due to a cancel request",
        _ => dimse::status_text(status),
    }
}

/// Sends one C-FIND at `level` with the matching `keys` (attribute, value — wildcards
/// `*` `?`, ranges `A-B` and UID lists `U1\U2` as PS3.4 C.2.2.2 allows) and the
/// `return_keys` asked for empty; returns every match in the order received.
///
/// Values must be printable ASCII (no Specific Character Set is sent) of at most
/// [`MAX_KEY_CHARS`] characters, of attributes of the standard dictionary with a text
/// VR; return keys may be any non-sequence attribute of the dictionary.
///
/// Errors: [`QueryError::Config`], [`QueryError::Rejected`],
/// [`QueryError::Association`], [`QueryError::NotSupported`]; a final failure status
/// ([`QueryError::Status`], with the peer's Error Comment), more than
/// [`QueryConfig::max_matches`] matches ([`QueryError::TooManyMatches`], after a
/// C-CANCEL), a malformed or oversized response or a broken association
/// ([`QueryError::Protocol`]).
pub fn find(
    config: &QueryConfig,
    level: Level,
    keys: &[(Tag, String)],
    return_keys: &[Tag],
) -> Result<Vec<Match>, QueryError> {
    config.validate()?;
    let elements = identifier_elements(level, keys, return_keys)?;
    let mut wanted = vec![tags::QUERY_RETRIEVE_LEVEL];
    for tag in keys
        .iter()
        .map(|(t, _)| *t)
        .chain(return_keys.iter().copied())
    {
        if !wanted.contains(&tag) {
            wanted.push(tag);
        }
    }
    let model = level.find_model();
    let model_name = if level == Level::Patient {
        "Patient Root Query/Retrieve Information Model - FIND"
    } else {
        "Study Root Query/Retrieve Information Model - FIND"
    };
    let mut session = Session::open(config, model, model_name, "C-FIND", None)?;
    let limit = config.max_matches;
    let outcome = session.exchange(
        dimse::find_request(MESSAGE_ID, model),
        &elements,
        |session| {
            let mut matches = Vec::new();
            loop {
                let message = session.receive(dimse::C_FIND_RSP)?;
                let response = &message.response;
                match status_class(response.status) {
                    StatusClass::Pending => {
                        let identifier = message.data_set.ok_or_else(|| {
                            Stop::wire("a pending C-FIND-RSP without an identifier".into())
                        })?;
                        if matches.len() == limit {
                            let error = QueryError::TooManyMatches {
                                peer: session.peer.clone(),
                                limit,
                            };
                            // Refused either way; a cancel gone wrong ends in an A-ABORT.
                            return Err(match session.cancel() {
                                Ok(()) => Stop::Answer(error),
                                Err(_) => Stop::Abort(error),
                            });
                        }
                        let scanned = scan(&identifier, &session.ts, &wanted).map_err(|e| {
                            Stop::wire(format!(
                                "malformed identifier in match {}: {e}",
                                matches.len() + 1
                            ))
                        })?;
                        let values = wanted
                            .iter()
                            .filter_map(|&tag| scanned.text(tag).map(|v| (tag, v)))
                            .collect();
                        matches.push(Match { values });
                    }
                    StatusClass::Success => return Ok(matches),
                    _ => return Err(session.final_status(response, false, None)),
                }
            }
        },
    );
    session.close(outcome)
}

/// Sends one C-MOVE of the series `series_uid` of the study `study_uid` (Study Root,
/// level SERIES) to the AE title `destination_ae`, and waits for the final response.
/// `Ok` when the peer ends with success or with a warning (0xB000: some sub-operations
/// failed or warned; see [`MoveReport::all_completed`]).
///
/// Errors: as [`find`]; a final failure status ([`QueryError::Status`], e.g. 0xA801
/// move destination unknown, with the counts so far in `report`).
pub fn move_series(
    config: &QueryConfig,
    destination_ae: &str,
    study_uid: &str,
    series_uid: &str,
) -> Result<MoveReport, QueryError> {
    config.validate()?;
    let bad = |field: &'static str, message: String| QueryError::Config { field, message };
    check_ae_title(destination_ae).map_err(|m| bad("destination_ae", m))?;
    check_uid("Study Instance UID", study_uid).map_err(|m| bad("study_uid", m))?;
    check_uid("Series Instance UID", series_uid).map_err(|m| bad("series_uid", m))?;
    let elements = vec![
        text_element(tags::QUERY_RETRIEVE_LEVEL, VR::CS, Level::Series.keyword()),
        text_element(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        text_element(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
    ];
    let started = Instant::now();
    let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_MOVE;
    let mut session = Session::open(
        config,
        model,
        "Study Root Query/Retrieve Information Model - MOVE",
        "C-MOVE",
        None,
    )?;
    let mut report = MoveReport::new("C-MOVE", config, destination_ae, study_uid, series_uid);
    let outcome = session.exchange(
        dimse::move_request(MESSAGE_ID, model, destination_ae),
        &elements,
        |session| loop {
            let message = session.receive(dimse::C_MOVE_RSP)?;
            if let Some(done) = session.retrieve_response(&message, &mut report, started)? {
                return done;
            }
        },
    );
    session.close(outcome)?;
    Ok(report)
}

/// Presentation contexts one association may carry (their IDs are the odd numbers
/// 1–255).
const MAX_PRESENTATION_CONTEXTS: usize = 128;

/// The SOP classes of a series' instances by an image-level C-FIND; every storage SOP
/// class this node receives when that finds none or fails (a peer without image-level
/// queries).
fn series_sop_classes(config: &QueryConfig, study_uid: &str, series_uid: &str) -> Vec<String> {
    let keys = [
        (tags::STUDY_INSTANCE_UID, study_uid.to_string()),
        (tags::SERIES_INSTANCE_UID, series_uid.to_string()),
    ];
    let mut classes: Vec<String> = find(config, Level::Image, &keys, &[tags::SOP_CLASS_UID])
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.get(tags::SOP_CLASS_UID).map(|c| trim_uid(c).to_string()))
        .filter(|c| check_uid("SOP Class UID", c).is_ok())
        .collect();
    classes.sort();
    classes.dedup();
    if classes.is_empty() {
        classes = crate::sop::STORAGE_SOP_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect();
    }
    classes
}

/// Most C-STORE sub-operations one C-GET may bring (a bound on the loop, far above any
/// series).
const MAX_GET_SUB_OPERATIONS: usize = 100_000;

/// Retrieves one series with a Study Root C-GET: the peer sends its instances back on
/// the same association (this node in the SCP role of every storage SOP class it
/// receives), each checked and written as the listener writes a received instance
/// ([`crate::store::store_instance`]: `store_dir/<study>/<series>/<instance>.dcm`,
/// atomically) and answered; `on_instance` hears of each file written. No listener, no
/// connection back: what a PACS behind a firewall, or one that does not know this node's
/// address, needs.
///
/// The report counts the peer's sub-operations and, in `stored` / `refused`, what was
/// written here. Errors: as [`move_series`].
pub fn get_series(
    config: &QueryConfig,
    study_uid: &str,
    series_uid: &str,
    store_dir: &std::path::Path,
    max_instance_bytes: usize,
    on_instance: &mut dyn FnMut(&crate::store::Stored),
) -> Result<MoveReport, QueryError> {
    config.validate()?;
    let bad = |field: &'static str, message: String| QueryError::Config { field, message };
    check_uid("Study Instance UID", study_uid).map_err(|m| bad("study_uid", m))?;
    check_uid("Series Instance UID", series_uid).map_err(|m| bad("series_uid", m))?;
    let elements = vec![
        text_element(tags::QUERY_RETRIEVE_LEVEL, VR::CS, Level::Series.keyword()),
        text_element(tags::STUDY_INSTANCE_UID, VR::UI, study_uid),
        text_element(tags::SERIES_INSTANCE_UID, VR::UI, series_uid),
    ];
    let started = Instant::now();
    let classes = series_sop_classes(config, study_uid, series_uid);
    let model = uids::STUDY_ROOT_QUERY_RETRIEVE_INFORMATION_MODEL_GET;
    let mut session = Session::open(
        config,
        model,
        "Study Root Query/Retrieve Information Model - GET",
        "C-GET",
        Some(&classes),
    )?;
    let mut report = MoveReport::new("C-GET", config, &config.calling_ae, study_uid, series_uid);
    let outcome = session.exchange(
        dimse::get_request(MESSAGE_ID, model),
        &elements,
        |session| {
            let mut sub_operations = 0;
            loop {
                match session.receive_any(dimse::C_GET_RSP, max_instance_bytes)? {
                    Arrival::Store {
                        context_id,
                        command,
                        data,
                    } => {
                        sub_operations += 1;
                        if sub_operations > MAX_GET_SUB_OPERATIONS {
                            return Err(Stop::wire(format!(
                                "more than {MAX_GET_SUB_OPERATIONS} C-STORE sub-operations"
                            )));
                        }
                        let (status, comment) = session.store(
                            context_id,
                            &command,
                            &data,
                            store_dir,
                            [&config.called_ae, &config.calling_ae],
                        );
                        match (&status, comment) {
                            (Ok(stored), _) => {
                                report.stored += 1;
                                on_instance(stored);
                            }
                            (Err(_), Some(why)) => report.refused.push(why),
                            (Err(_), None) => {}
                        }
                        let code = status
                            .as_ref()
                            .map_or_else(|s| *s, |_| dimse::status::SUCCESS);
                        let comment = report
                            .refused
                            .last()
                            .filter(|_| code != 0)
                            .map(String::as_str);
                        let answer =
                            dimse::store_response(&command, code, comment).map_err(Stop::wire)?;
                        send_bytes(session.live()?, context_id, true, &answer)?;
                    }
                    Arrival::Response(message) => {
                        if let Some(done) =
                            session.retrieve_response(&message, &mut report, started)?
                        {
                            return done;
                        }
                    }
                }
            }
        },
    );
    session.close(outcome)?;
    Ok(report)
}

/// The identifier of a C-FIND: Query/Retrieve Level, the matching keys, the return keys
/// (empty), checked.
fn identifier_elements(
    level: Level,
    keys: &[(Tag, String)],
    return_keys: &[Tag],
) -> Result<Vec<DataElement<InMemDicomObject>>, QueryError> {
    let bad = |field: &'static str, message: String| QueryError::Config { field, message };
    let mut elements = vec![text_element(
        tags::QUERY_RETRIEVE_LEVEL,
        VR::CS,
        level.keyword(),
    )];
    let mut seen = vec![tags::QUERY_RETRIEVE_LEVEL];
    for (tag, value) in keys {
        let vr = key_vr(*tag).map_err(|m| bad("keys", m))?;
        if seen.contains(tag) {
            return Err(bad("keys", format!("{} {tag} given twice", keyword(*tag))));
        }
        if !is_text_vr(vr) {
            return Err(bad(
                "keys",
                format!(
                    "{} {tag} has VR {vr:?}: only attributes with a text VR can be matching keys (ask for it as a return key)",
                    keyword(*tag)
                ),
            ));
        }
        if value.chars().count() > MAX_KEY_CHARS || value.chars().any(|c| !(' '..='~').contains(&c))
        {
            return Err(bad(
                "keys",
                format!(
                    "the value of {} must be printable ASCII of at most {MAX_KEY_CHARS} characters",
                    keyword(*tag)
                ),
            ));
        }
        seen.push(*tag);
        elements.push(text_element(*tag, vr, value));
    }
    for tag in return_keys {
        let vr = key_vr(*tag).map_err(|m| bad("return_keys", m))?;
        if !seen.contains(tag) {
            seen.push(*tag);
            elements.push(DataElement::new(*tag, vr, PrimitiveValue::Empty));
        }
    }
    Ok(elements)
}

/// The VR of a key, when it may be one: a public attribute of the standard dictionary,
/// not a command or file meta element, not Query/Retrieve Level (set by the level), not
/// a sequence (sequence matching is not supported).
fn key_vr(tag: Tag) -> Result<VR, String> {
    if tag.0 < 0x0008 || tag == tags::QUERY_RETRIEVE_LEVEL || tag.0 == 0xFFFE {
        return Err(format!(
            "{tag} cannot be a key (command, file meta, item or Query/Retrieve Level element)"
        ));
    }
    if tag.0 % 2 == 1 {
        return Err(format!(
            "{tag} is a private attribute: not in the standard DICOM dictionary"
        ));
    }
    let entry = StandardDataDictionary
        .by_tag(tag)
        .ok_or_else(|| format!("{tag} is not in the standard DICOM dictionary"))?;
    let vr = entry.vr().relaxed();
    if vr == VR::SQ {
        return Err(format!(
            "{} {tag} is a sequence: sequence matching is not supported",
            entry.alias()
        ));
    }
    Ok(vr)
}

fn is_text_vr(vr: VR) -> bool {
    matches!(
        vr,
        VR::AE
            | VR::AS
            | VR::CS
            | VR::DA
            | VR::DS
            | VR::DT
            | VR::IS
            | VR::LO
            | VR::LT
            | VR::PN
            | VR::SH
            | VR::ST
            | VR::TM
            | VR::UC
            | VR::UI
            | VR::UR
            | VR::UT
    )
}

fn text_element(tag: Tag, vr: VR, value: &str) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, vr, PrimitiveValue::from(value))
}

/// Why an exchange stopped early.
enum Stop {
    /// The association cannot go on: A-ABORT it when `abort`.
    Wire { reason: String, abort: bool },
    /// A well-formed ending (a final failure status; too many matches, the C-CANCEL
    /// answered): release the association and return this.
    Answer(QueryError),
    /// An ending decided here whose wind-down failed: A-ABORT and return this.
    Abort(QueryError),
}

impl Stop {
    fn wire(reason: String) -> Self {
        Stop::Wire {
            reason,
            abort: true,
        }
    }
}

impl From<Failed> for Stop {
    fn from(failed: Failed) -> Self {
        match failed {
            Failed::Local(reason) => Stop::Wire {
                reason,
                abort: true,
            },
            Failed::Wire { reason, abort } => Stop::Wire { reason, abort },
        }
    }
}

/// An association with one accepted presentation context, for one request.
struct Session {
    association: Option<ClientAssociation<TcpStream>>,
    context_id: u8,
    /// The transfer syntax of the identifiers (the accepted context's).
    ts: TransferSyntax,
    inbox: Inbox,
    peer: String,
    operation: &'static str,
    /// Accepted storage contexts (C-GET: the peer's C-STOREs come on them): id and
    /// transfer syntax.
    storage: Vec<(u8, String)>,
}

impl Session {
    /// Associates proposing `model` in Explicit and Implicit VR Little Endian; with
    /// `storage_classes` (a C-GET) also those storage SOP classes with this node in the
    /// SCP role (SCU/SCP Role Selection), in the listener's transfer syntaxes: one
    /// presentation context per class and transfer syntax while that fits the 128
    /// contexts of an association (so the peer can send each instance as stored; Orthanc
    /// 1.10 cannot transcode on a C-GET), else one per class.
    fn open(
        config: &QueryConfig,
        model: &'static str,
        model_name: &'static str,
        operation: &'static str,
        storage_classes: Option<&[String]>,
    ) -> Result<Self, QueryError> {
        let peer = config.peer();
        let mut options = config.scu().options().with_presentation_context(
            model,
            vec![
                uids::EXPLICIT_VR_LITTLE_ENDIAN,
                uids::IMPLICIT_VR_LITTLE_ENDIAN,
            ],
        );
        if let Some(classes) = storage_classes {
            let syntaxes = crate::sop::accepted_transfer_syntaxes();
            // The model's own context is one of the 128.
            let one_per_syntax = classes.len() * syntaxes.len() < MAX_PRESENTATION_CONTEXTS;
            for class in classes {
                let class = class.as_str();
                if one_per_syntax {
                    for ts in &syntaxes {
                        options = options.with_presentation_context(class, vec![*ts]);
                    }
                } else {
                    options = options.with_presentation_context(class, syntaxes.clone());
                }
                options = options.with_role_selection(class, false, true);
            }
        }
        let association = config.scu().establish(options).map_err(|e| match e {
            EstablishError::Rejected(reason) => QueryError::Rejected {
                peer: peer.clone(),
                reason,
            },
            EstablishError::Failed(message) => QueryError::Association {
                peer: peer.clone(),
                message,
            },
        })?;
        let Some(association) = association else {
            return Err(QueryError::NotSupported {
                peer,
                model: model_name,
                uid: model,
            });
        };
        let accepted = association
            .presentation_contexts()
            .iter()
            .find(|pc| trim_uid(&pc.abstract_syntax) == model)
            .map(|pc| (pc.id, trim_uid(&pc.transfer_syntax).to_string()));
        let storage = association
            .presentation_contexts()
            .iter()
            .filter(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .filter(|pc| trim_uid(&pc.abstract_syntax) != model)
            .map(|pc| (pc.id, trim_uid(&pc.transfer_syntax).to_string()))
            .collect();
        let ts = match accepted.as_ref().map(|(_, ts)| ts.as_str()) {
            Some(uids::EXPLICIT_VR_LITTLE_ENDIAN) => Some(EXPLICIT_VR_LITTLE_ENDIAN.erased()),
            Some(uids::IMPLICIT_VR_LITTLE_ENDIAN) => Some(IMPLICIT_VR_LITTLE_ENDIAN.erased()),
            _ => None,
        };
        let (Some((context_id, _)), Some(ts)) = (accepted.clone(), ts) else {
            let _ = association.abort();
            return Err(QueryError::Association {
                peer,
                message: format!(
                    "the peer accepted {model_name} with transfer syntax {:?}, which was not proposed",
                    accepted.map(|(_, ts)| ts).unwrap_or_default()
                ),
            });
        };
        Ok(Self {
            association: Some(association),
            context_id,
            ts,
            inbox: Inbox::default(),
            peer,
            operation,
            storage,
        })
    }

    fn live(&mut self) -> Result<&mut ClientAssociation<TcpStream>, Stop> {
        self.association
            .as_mut()
            .ok_or_else(|| Stop::wire("no association".into()))
    }

    /// The association, the inbox that reads from it and the query's context, borrowed
    /// together for one receive.
    fn channel(&mut self) -> Result<(&mut ClientAssociation<TcpStream>, &mut Inbox, u8), Stop> {
        let association = self
            .association
            .as_mut()
            .ok_or_else(|| Stop::wire("no association".into()))?;
        Ok((association, &mut self.inbox, self.context_id))
    }

    /// Sends the request `command` and the identifier `elements` (in the negotiated
    /// transfer syntax), then runs `answers`.
    fn exchange<T>(
        &mut self,
        command: Result<Vec<u8>, String>,
        elements: &[DataElement<InMemDicomObject>],
        answers: impl FnOnce(&mut Self) -> Result<T, Stop>,
    ) -> Result<T, Stop> {
        let command = command.map_err(Stop::wire)?;
        let mut identifier = Vec::new();
        InMemDicomObject::from_element_iter(elements.iter().cloned())
            .write_dataset_with_ts(&mut identifier, &self.ts)
            .map_err(|e| Stop::wire(format!("cannot encode the identifier: {e}")))?;
        let context_id = self.context_id;
        send_bytes(self.live()?, context_id, true, &command)?;
        send_bytes(self.live()?, context_id, false, &identifier)?;
        answers(self)
    }

    /// The next response `field` to the request, with its identifier when it has one.
    fn receive(&mut self, field: u16) -> Result<crate::scu::Message, Stop> {
        let (association, inbox, context_id) = self.channel()?;
        Ok(inbox.receive(
            association,
            context_id,
            field,
            MESSAGE_ID,
            Some(MAX_IDENTIFIER_BYTES),
        )?)
    }

    /// Takes a C-MOVE-RSP or C-GET-RSP into `report`: `None` while pending, the outcome
    /// once final (success or warning: `Ok`; a failure: its [`QueryError::Status`]).
    fn retrieve_response(
        &self,
        message: &crate::scu::Message,
        report: &mut MoveReport,
        started: Instant,
    ) -> Result<Option<Result<(), Stop>>, Stop> {
        let response = &message.response;
        let counts = response.sub_operations;
        report.completed = counts.completed.unwrap_or(report.completed);
        report.failed = counts.failed.unwrap_or(report.failed);
        report.warning = counts.warning.unwrap_or(report.warning);
        let class = status_class(response.status);
        if class == StatusClass::Pending {
            report.pending_responses += 1;
            if report.pending_responses > MAX_MOVE_RESPONSES {
                return Err(Stop::wire(format!(
                    "more than {MAX_MOVE_RESPONSES} pending {} responses",
                    report.operation
                )));
            }
            return Ok(None);
        }
        if let Some(identifier) = &message.data_set {
            let scanned = scan(identifier, &self.ts, &[tags::FAILED_SOP_INSTANCE_UID_LIST])
                .map_err(|e| {
                    Stop::wire(format!(
                        "malformed {}-RSP identifier: {e}",
                        report.operation
                    ))
                })?;
            report.failed_sop_instances = scanned
                .text(tags::FAILED_SOP_INSTANCE_UID_LIST)
                .map(|list| list.split('\\').map(|u| trim_uid(u).to_string()).collect())
                .unwrap_or_default();
        }
        report.status = response.status;
        report.status_text = query_status_text(response.status, true).to_string();
        report.comment = response.error_comment.clone();
        report.seconds = started.elapsed().as_secs_f64();
        Ok(Some(match class {
            StatusClass::Success | StatusClass::Warning => Ok(()),
            _ => Err(self.final_status(response, true, Some(report.clone()))),
        }))
    }

    /// The next message of a C-GET: the response `field` to the request, or a C-STORE-RQ
    /// with its data set (at most `max_instance_bytes`) on a storage context.
    fn receive_any(&mut self, field: u16, max_instance_bytes: usize) -> Result<Arrival, Stop> {
        let (association, inbox, context_id) = self.channel()?;
        Ok(inbox.receive_any(
            association,
            context_id,
            field,
            MESSAGE_ID,
            MAX_IDENTIFIER_BYTES,
            max_instance_bytes,
        )?)
    }

    /// Writes a C-STORE sub-operation's instance: the stored file, or the status to
    /// answer with and why.
    fn store(
        &self,
        context_id: u8,
        command: &dimse::Command,
        data: &[u8],
        store_dir: &std::path::Path,
        [peer_ae, own_ae]: [&str; 2],
    ) -> (Result<crate::store::Stored, u16>, Option<String>) {
        let Some((_, ts)) = self.storage.iter().find(|(id, _)| *id == context_id) else {
            return (
                Err(dimse::status::CANNOT_UNDERSTAND),
                Some(format!(
                    "C-STORE on presentation context {context_id}, not a storage one"
                )),
            );
        };
        let incoming = crate::store::Incoming {
            sop_class_uid: command
                .affected_sop_class_uid
                .as_deref()
                .unwrap_or_default(),
            sop_instance_uid: command
                .affected_sop_instance_uid
                .as_deref()
                .unwrap_or_default(),
            transfer_syntax: ts,
            // The C-STORE sub-operations' sender is the peer; this node receives them.
            calling_ae: peer_ae,
            called_ae: own_ae,
        };
        match crate::store::store_instance(store_dir, &incoming, data) {
            Ok(stored) => (Ok(stored), None),
            Err(refusal) => (Err(refusal.status), Some(refusal.message)),
        }
    }

    /// Sends a C-CANCEL and reads the responses still coming up to the final one
    /// (their identifiers dropped).
    fn cancel(&mut self) -> Result<(), Stop> {
        let command = dimse::cancel_request(MESSAGE_ID).map_err(Stop::wire)?;
        let context_id = self.context_id;
        send_bytes(self.live()?, context_id, true, &command)?;
        for _ in 0..MAX_RESPONSES_AFTER_CANCEL {
            let message = self.receive(dimse::C_FIND_RSP)?;
            if status_class(message.response.status) != StatusClass::Pending {
                return Ok(());
            }
        }
        Err(Stop::wire(format!(
            "still pending after {MAX_RESPONSES_AFTER_CANCEL} responses following the C-CANCEL"
        )))
    }

    /// The error for a final response with a failure (or cancel) status.
    fn final_status(
        &self,
        response: &dimse::Response,
        move_rsp: bool,
        report: Option<MoveReport>,
    ) -> Stop {
        Stop::Answer(QueryError::Status {
            peer: self.peer.clone(),
            operation: self.operation,
            status: response.status,
            status_text: query_status_text(response.status, move_rsp).to_string(),
            comment: response.error_comment.clone(),
            report: report.map(Box::new),
        })
    }

    /// Releases (or aborts) the association according to `outcome`.
    fn close<T>(mut self, outcome: Result<T, Stop>) -> Result<T, QueryError> {
        let Some(association) = self.association.take() else {
            return outcome.map_err(|stop| self.error(stop));
        };
        match outcome {
            Ok(value) => {
                // The answer is complete: a peer closing the connection before the
                // A-RELEASE-RP changes nothing.
                let _ = association.release();
                Ok(value)
            }
            Err(Stop::Answer(error)) => {
                let _ = association.release();
                Err(error)
            }
            Err(Stop::Abort(error)) => {
                let _ = association.abort();
                Err(error)
            }
            Err(Stop::Wire { reason, abort }) => {
                if abort {
                    let _ = association.abort();
                }
                Err(QueryError::Protocol {
                    peer: self.peer.clone(),
                    operation: self.operation,
                    reason,
                })
            }
        }
    }

    fn error(&self, stop: Stop) -> QueryError {
        match stop {
            Stop::Answer(error) | Stop::Abort(error) => error,
            Stop::Wire { reason, .. } => QueryError::Protocol {
                peer: self.peer.clone(),
                operation: self.operation,
                reason,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> InMemDicomObject {
        InMemDicomObject::read_dataset_with_ts(bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased()).unwrap()
    }

    #[test]
    fn identifiers_carry_the_level_the_keys_and_empty_return_keys() {
        let elements = identifier_elements(
            Level::Series,
            &[
                (tags::MODALITY, "CT".into()),
                (tags::STUDY_INSTANCE_UID, "1.2.3".into()),
            ],
            &[
                tags::SERIES_INSTANCE_UID,
                tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
                tags::MODALITY,
            ],
        )
        .unwrap();
        let mut bytes = Vec::new();
        InMemDicomObject::from_element_iter(elements)
            .write_dataset_with_ts(&mut bytes, &EXPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        let object = read(&bytes);
        let text = |tag| {
            object
                .element(tag)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(text(tags::QUERY_RETRIEVE_LEVEL), "SERIES");
        assert_eq!(text(tags::MODALITY), "CT");
        assert_eq!(text(tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(tags::SERIES_INSTANCE_UID), "");
        let count = object
            .element(tags::NUMBER_OF_SERIES_RELATED_INSTANCES)
            .unwrap();
        assert_eq!(count.vr(), VR::IS);
        assert_eq!(count.value().primitive(), Some(&PrimitiveValue::Empty));
        // Every length is even (values padded), and the length-checked walker reads it.
        assert_eq!(bytes.len() % 2, 0);
        let scanned = scan(
            &bytes,
            &EXPLICIT_VR_LITTLE_ENDIAN.erased(),
            &[tags::STUDY_INSTANCE_UID],
        )
        .unwrap();
        assert_eq!(
            scanned.text(tags::STUDY_INSTANCE_UID).as_deref(),
            Some("1.2.3")
        );
    }

    #[test]
    fn keys_that_cannot_be_sent_are_refused_before_connecting() {
        let refused = |keys: &[(Tag, String)], returns: &[Tag]| match identifier_elements(
            Level::Study,
            keys,
            returns,
        ) {
            Err(QueryError::Config { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        let m = refused(&[(tags::QUERY_RETRIEVE_LEVEL, "IMAGE".into())], &[]);
        assert!(m.contains("cannot be a key"), "{m}");
        let m = refused(&[(Tag(0x0009, 0x0010), "x".into())], &[]);
        assert!(m.contains("not in the standard"), "{m}");
        let m = refused(&[], &[Tag(0x4444, 0x4444)]);
        assert!(m.contains("not in the standard"), "{m}");
        let m = refused(&[(tags::PATIENT_NAME, "MÜLLER".into())], &[]);
        assert!(m.contains("printable ASCII"), "{m}");
        let m = refused(&[(tags::ROWS, "512".into())], &[]);
        assert!(m.contains("text VR"), "{m}");
        let m = refused(
            &[
                (tags::PATIENT_ID, "1".into()),
                (tags::PATIENT_ID, "2".into()),
            ],
            &[],
        );
        assert!(m.contains("twice"), "{m}");
        let m = refused(&[], &[tags::REFERENCED_SERIES_SEQUENCE]);
        assert!(m.contains("sequence"), "{m}");
        let m = refused(&[], &[tags::COMMAND_FIELD]);
        assert!(m.contains("cannot be a key"), "{m}");
    }

    #[test]
    fn levels_configs_and_texts() {
        for (text, level) in [
            ("study", Level::Study),
            ("SERIES", Level::Series),
            ("instance", Level::Image),
            ("patient", Level::Patient),
        ] {
            assert_eq!(text.parse::<Level>().unwrap(), level);
        }
        assert!("exam".parse::<Level>().is_err());
        assert_eq!(Level::Patient.find_model(), "1.2.840.10008.5.1.4.1.2.1.1");
        assert_eq!(Level::Image.find_model(), "1.2.840.10008.5.1.4.1.2.2.1");
        let mut config = QueryConfig::new("PINHOLE", "PACS", "127.0.0.1:104");
        config.validate().unwrap();
        config.max_matches = 0;
        assert!(matches!(
            config.validate(),
            Err(QueryError::Config {
                field: "max_matches",
                ..
            })
        ));
        let mut config = QueryConfig::new("PINHOLE", "", "127.0.0.1:104");
        config.max_matches = 1;
        assert!(matches!(
            config.validate(),
            Err(QueryError::Config {
                field: "called_ae",
                ..
            })
        ));
        assert_eq!(
            query_status_text(0xA801, true),
            "refused: move destination unknown"
        );
        assert_eq!(
            query_status_text(0xC012, false),
            "failed: unable to process"
        );
        assert_eq!(keyword(tags::STUDY_INSTANCE_UID), "StudyInstanceUID");
        assert_eq!(keyword(Tag(0x0009, 0x1001)), "00091001");
        let mut values = BTreeMap::new();
        values.insert(tags::MODALITY, "CT".to_string());
        let json = serde_json::to_string(&Match { values }).unwrap();
        assert_eq!(json, r#"{"Modality":"CT"}"#);
    }

    #[test]
    fn move_arguments_are_checked_before_connecting() {
        // Port 9 (discard) on loopback: never reached, the checks come first.
        let config = QueryConfig::new("PINHOLE", "PACS", "127.0.0.1:9");
        for (args, field) in [
            (("", "1.2", "1.3"), "destination_ae"),
            (("PINHOLE", "../x", "1.3"), "study_uid"),
            (("PINHOLE", "1.2", ""), "series_uid"),
        ] {
            match move_series(&config, args.0, args.1, args.2) {
                Err(QueryError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
