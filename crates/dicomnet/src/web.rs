//! DICOMweb client (DICOM PS3.18): QIDO-RS search for studies and series, WADO-RS
//! retrieval of one series into the listener's folder layout, STOW-RS storage of
//! Part-10 files. Synchronous (ureq, HTTP/1.1, TLS by rustls with the Mozilla roots, or
//! with a site's own certificate authority: [`WebConfig::trusted_certificates_pem`]).
//! NOT FOR CLINICAL USE.
//!
//! Guarantees:
//! * **Credentials** never appear in a URL, a message or a report: a base URL with a
//!   user name or password is refused; the `Authorization` header comes from
//!   [`WebConfig::authorization`] only.
//! * **Search** ([`search`]): `GET {base}/studies` or `{base}/series` with the matching
//!   keys as query parameters, `includefield` for the return keys and `limit` one
//!   above [`WebConfig::max_matches`] (more matches fail with
//!   [`WebError::TooManyMatches`]); the DICOM JSON answer (at most
//!   [`MAX_SEARCH_RESPONSE_BYTES`]) becomes [`Match`]es like a C-FIND's.
//! * **Retrieve** ([`retrieve_series`]): `GET {base}/studies/{study}/series/{series}`
//!   as `multipart/related; type="application/dicom"` in the stored transfer syntax;
//!   parts are split while they stream (one instance in memory at a time, at most
//!   [`WebConfig::max_instance_bytes`]), each checked like a C-STORE's data set and
//!   written atomically to `store/<study>/<series>/<instance>.dcm` by
//!   [`crate::store::store_instance`]. A part that is not a DICOM instance is
//!   reported and skipped; an instance of another series is refused.
//! * **Store** ([`store_files`]): the files are checked as [`crate::push_files`] checks
//!   them (Part-10, identity in the data set agreeing with the file meta group) and
//!   sent as they are (or de-identified with a key, as `push_files` does) in
//!   `POST {base}/studies` requests of at most
//!   [`WebConfig::max_request_bytes`]; every file is reported with what the server's
//!   answer (ReferencedSOPSequence, FailedSOPSequence with its FailureReason) says of
//!   it, or why it was not sent.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use serde::Serialize;
use serde_json::Value;

use crate::push::{inspect_file, FileReport, Outcome};
use crate::query::{keyword, Level, Match};
use crate::store::{check_uid, store_instance, Incoming, Stored};
use pinhole_io::dicom::deidentify::{deidentify_file, DeidentifyKey};

/// Largest QIDO-RS answer read.
pub const MAX_SEARCH_RESPONSE_BYTES: u64 = 64 << 20;
/// Largest STOW-RS answer read.
const MAX_STORE_RESPONSE_BYTES: u64 = 16 << 20;
/// Largest header block of one multipart part.
const MAX_PART_HEADER_BYTES: usize = 16 << 10;
/// Content type of a DICOM part.
const DICOM_PART: &str = "application/dicom";

/// Where and how to reach a DICOMweb service.
#[derive(Debug, Clone)]
pub struct WebConfig {
    /// The service root, e.g. `http://pacs:8042/dicom-web` (no trailing slash needed).
    pub base_url: String,
    /// The `Authorization` header's value (`Basic …`, `Bearer …`); never printed.
    pub authorization: Option<String>,
    /// Bound on connecting, on the wait for an answer and on each read or write.
    pub timeout: Duration,
    /// Most matches accepted from a search.
    pub max_matches: usize,
    /// Largest instance accepted from a retrieval.
    pub max_instance_bytes: u64,
    /// Largest STOW-RS request body (one file larger than this goes alone).
    pub max_request_bytes: u64,
    /// PEM certificates to trust for `https://` instead of the Mozilla roots (a site's
    /// own certificate authority); `None`: the Mozilla roots.
    pub trusted_certificates_pem: Option<Vec<u8>>,
}

impl WebConfig {
    /// A configuration with the defaults: 30 s timeout, 1,000 matches, 1 GiB
    /// instances, 64 MiB requests.
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into().trim_end_matches('/').to_string(),
            authorization: None,
            timeout: Duration::from_secs(30),
            max_matches: crate::query::DEFAULT_MAX_MATCHES,
            max_instance_bytes: 1 << 30,
            max_request_bytes: 64 << 20,
            trusted_certificates_pem: None,
        }
    }

    /// Checks every field; the first problem names its field.
    pub fn validate(&self) -> Result<(), WebError> {
        let config = |field, message: String| WebError::Config { field, message };
        let rest = self
            .base_url
            .strip_prefix("http://")
            .or_else(|| self.base_url.strip_prefix("https://"))
            .ok_or_else(|| {
                config(
                    "base_url",
                    format!("{:?} is not an http:// or https:// URL", self.base_url),
                )
            })?;
        let authority = rest.split('/').next().unwrap_or_default();
        if authority.is_empty() {
            return Err(config("base_url", "no host".into()));
        }
        if authority.contains('@') {
            return Err(config(
                "base_url",
                "credentials in the URL are refused (they would be printed); give an \
                 Authorization header instead"
                    .into(),
            ));
        }
        if self.base_url.contains(['?', '#']) {
            return Err(config("base_url", "no query or fragment allowed".into()));
        }
        if self.timeout.is_zero() {
            return Err(config("timeout", "0".into()));
        }
        if self.max_matches == 0 {
            return Err(config("max_matches", "0".into()));
        }
        if self.max_instance_bytes == 0 || self.max_request_bytes == 0 {
            return Err(config("max_instance_bytes / max_request_bytes", "0".into()));
        }
        self.trusted_roots()?;
        Ok(())
    }

    /// The certificates of [`WebConfig::trusted_certificates_pem`]; at least one when
    /// given.
    fn trusted_roots(&self) -> Result<Option<Vec<ureq::tls::Certificate<'static>>>, WebError> {
        let Some(pem) = &self.trusted_certificates_pem else {
            return Ok(None);
        };
        let mut certificates = Vec::new();
        for item in ureq::tls::parse_pem(pem) {
            match item {
                Ok(ureq::tls::PemItem::Certificate(certificate)) => certificates.push(certificate),
                Ok(_) => {}
                Err(e) => {
                    return Err(WebError::Config {
                        field: "trusted_certificates_pem",
                        message: format!("not PEM: {e}"),
                    })
                }
            }
        }
        if certificates.is_empty() {
            return Err(WebError::Config {
                field: "trusted_certificates_pem",
                message: "no certificate in the PEM text".into(),
            });
        }
        Ok(Some(certificates))
    }

    fn agent(&self) -> ureq::Agent {
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Ok(Some(roots)) = self.trusted_roots() {
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&roots));
        }
        ureq::Agent::config_builder()
            .tls_config(tls.build())
            .timeout_connect(Some(self.timeout))
            .timeout_recv_response(Some(self.timeout))
            .timeout_per_read(Some(self.timeout))
            .timeout_per_write(Some(self.timeout))
            .http_status_as_error(false)
            .user_agent("pinhole-dicomnet (not for clinical use)")
            .build()
            .into()
    }

    fn authorize<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.authorization {
            Some(value) => request.header("Authorization", value),
            None => request,
        }
    }
}

/// Why a DICOMweb operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebError {
    /// A [`WebConfig`] field or an argument out of its range; names it.
    #[error("invalid DICOMweb request: {field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    /// No answer: the server cannot be reached, TLS failed, a timeout.
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    /// The server answered with an HTTP error; `body`: the start of its explanation.
    #[error("{url} answered HTTP {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    /// The answer is not what PS3.18 describes.
    #[error("{url}: {message}")]
    Malformed { url: String, message: String },
    /// More matches than [`WebConfig::max_matches`].
    #[error("{url}: more than {limit} matches; narrow the query")]
    TooManyMatches { url: String, limit: usize },
    /// An instance could not be stored locally.
    #[error("{}: {message}", path.display())]
    Store { path: PathBuf, message: String },
}

/// Searches (QIDO-RS) at the study or series level: `keys` are matching keys (value
/// as in a C-FIND: wildcards `*` `?` allowed), `include` the attributes wanted back.
pub fn search(
    config: &WebConfig,
    level: Level,
    keys: &[(Tag, String)],
    include: &[Tag],
) -> Result<Vec<Match>, WebError> {
    config.validate()?;
    let resource = match level {
        Level::Study => "studies",
        Level::Series => "series",
        other => {
            return Err(WebError::Config {
                field: "level",
                message: format!("{other} searches are not offered (study, series)"),
            })
        }
    };
    let url = format!("{}/{resource}", config.base_url);
    let mut request = config
        .agent()
        .get(&url)
        .header("Accept", "application/dicom+json");
    for (tag, value) in keys {
        request = request.query(keyword(*tag), value);
    }
    for tag in include {
        request = request.query("includefield", format!("{:04X}{:04X}", tag.0, tag.1));
    }
    request = request.query("limit", (config.max_matches + 1).to_string());
    let mut response = config
        .authorize(request)
        .call()
        .map_err(|e| transport(&url, e))?;
    let status = response.status().as_u16();
    if status == 204 {
        return Ok(Vec::new()); // no matches
    }
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_SEARCH_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| transport(&url, e))?;
    if status != 200 {
        return Err(status_error(&url, status, &body));
    }
    let matches = parse_matches(&body).map_err(|message| WebError::Malformed {
        url: url.clone(),
        message,
    })?;
    if matches.len() > config.max_matches {
        return Err(WebError::TooManyMatches {
            url,
            limit: config.max_matches,
        });
    }
    Ok(matches)
}

fn transport(url: &str, error: ureq::Error) -> WebError {
    WebError::Transport {
        url: url.to_string(),
        message: error.to_string(),
    }
}

fn status_error(url: &str, status: u16, body: &[u8]) -> WebError {
    let text: String = String::from_utf8_lossy(body)
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(300)
        .collect();
    WebError::Status {
        url: url.to_string(),
        status,
        body: text.trim().to_string(),
    }
}

/// DICOM JSON (PS3.18 F.2) objects → matches: every top-level attribute with a value,
/// as text (several values joined by `\`, a person name by its alphabetic form).
fn parse_matches(body: &[u8]) -> Result<Vec<Match>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not DICOM JSON: {e}"))?;
    let objects = value
        .as_array()
        .ok_or("not DICOM JSON: expected an array of objects")?;
    objects.iter().map(json_match).collect()
}

fn json_match(object: &Value) -> Result<Match, String> {
    let map = object
        .as_object()
        .ok_or("not DICOM JSON: an array element is not an object")?;
    let mut values = BTreeMap::new();
    for (key, attribute) in map {
        let tag = parse_tag(key).ok_or_else(|| format!("not DICOM JSON: key {key:?}"))?;
        if let Some(text) = json_text(attribute) {
            values.insert(tag, text);
        }
    }
    Ok(Match::from_values(values))
}

fn parse_tag(key: &str) -> Option<Tag> {
    if key.len() != 8 {
        return None;
    }
    let group = u16::from_str_radix(&key[..4], 16).ok()?;
    let element = u16::from_str_radix(&key[4..], 16).ok()?;
    Some(Tag(group, element))
}

/// The text of one DICOM JSON attribute; `None` without values (or for sequences and
/// bulk data).
fn json_text(attribute: &Value) -> Option<String> {
    let values = attribute.get("Value")?.as_array()?;
    let parts: Vec<String> = values
        .iter()
        .filter_map(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Object(name) => name
                .get("Alphabetic")
                .and_then(Value::as_str)
                .map(str::to_string),
            _ => None,
        })
        .collect();
    let text = parts.join("\\");
    let text = text.trim_matches(['\0', ' ']);
    (!text.is_empty()).then(|| text.to_string())
}

/// The result of [`retrieve_series`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetrieveReport {
    pub url: String,
    pub study_uid: String,
    pub series_uid: String,
    /// Instances written (a duplicate replaces its file and counts again).
    pub stored: usize,
    /// Parts refused, each with why.
    pub refused: Vec<String>,
    pub bytes: u64,
    pub seconds: f64,
}

impl RetrieveReport {
    /// One line: counts, bytes, time.
    pub fn summary(&self) -> String {
        format!(
            "WADO-RS of series {} from {}: {} instance(s) stored, {} refused, {:.1} MB in {:.2} s",
            self.series_uid,
            self.url,
            self.stored,
            self.refused.len(),
            self.bytes as f64 / 1e6,
            self.seconds
        )
    }
}

/// Retrieves one series (WADO-RS) into `store_dir/<study>/<series>/<instance>.dcm`,
/// calling `on_instance` after each file is written.
pub fn retrieve_series(
    config: &WebConfig,
    study_uid: &str,
    series_uid: &str,
    store_dir: &Path,
    on_instance: &mut dyn FnMut(&Stored),
) -> Result<RetrieveReport, WebError> {
    config.validate()?;
    for (field, uid) in [("study_uid", study_uid), ("series_uid", series_uid)] {
        check_uid(field, uid).map_err(|message| WebError::Config { field, message })?;
    }
    let started = Instant::now();
    let url = format!(
        "{}/studies/{study_uid}/series/{series_uid}",
        config.base_url
    );
    let request = config.agent().get(&url).header(
        "Accept",
        "multipart/related; type=\"application/dicom\"; transfer-syntax=*",
    );
    let mut response = config
        .authorize(request)
        .call()
        .map_err(|e| transport(&url, e))?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 10)
            .read_to_vec()
            .unwrap_or_default();
        return Err(status_error(&url, status, &body));
    }
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let malformed = |message: String| WebError::Malformed {
        url: url.clone(),
        message,
    };
    let boundary = multipart_boundary(&content_type).map_err(malformed)?;
    let mut report = RetrieveReport {
        url: url.clone(),
        study_uid: study_uid.to_string(),
        series_uid: series_uid.to_string(),
        stored: 0,
        refused: Vec::new(),
        bytes: 0,
        seconds: 0.0,
    };
    let reader = response.body_mut().with_config().reader();
    let mut parts = Multipart::new(reader, &boundary, config.max_instance_bytes);
    while let Some(part) = parts.next_part().map_err(malformed)? {
        report.bytes += part.body.len() as u64;
        match store_part(store_dir, &part, series_uid) {
            Ok(stored) => {
                report.stored += 1;
                on_instance(&stored);
            }
            Err(PartError::Refused(why)) => report.refused.push(why),
            Err(PartError::Local(message)) => {
                return Err(WebError::Store {
                    path: store_dir.to_path_buf(),
                    message,
                })
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

enum PartError {
    /// The part is not a DICOM instance of the series: skipped, reported.
    Refused(String),
    /// The instance could not be written here: the retrieval stops.
    Local(String),
}

/// Checks one part and writes it as the listener writes a received instance.
fn store_part(store_dir: &Path, part: &Part, series_uid: &str) -> Result<Stored, PartError> {
    let refused = |why: String| PartError::Refused(format!("part {}: {why}", part.index));
    if let Some(kind) = &part.content_type {
        if !kind.to_ascii_lowercase().starts_with(DICOM_PART) {
            return Err(refused(format!("content type {kind}, not {DICOM_PART}")));
        }
    }
    let meta = crate::push::read_meta(&part.body).map_err(refused)?;
    let data = part.body.get(meta.data_set_offset..).unwrap_or_default();
    let incoming = Incoming {
        sop_class_uid: &meta.sop_class_uid,
        sop_instance_uid: &meta.sop_instance_uid,
        transfer_syntax: &meta.transfer_syntax,
        calling_ae: "DICOMWEB",
        called_ae: "PINHOLE",
    };
    let stored = store_instance(store_dir, &incoming, data).map_err(|refusal| {
        if refusal.status == crate::dimse::status::OUT_OF_RESOURCES {
            PartError::Local(refusal.message)
        } else {
            refused(refusal.message)
        }
    })?;
    if stored.series_uid != series_uid {
        let _ = std::fs::remove_file(&stored.path);
        return Err(refused(format!(
            "instance {} belongs to series {}, not the one asked for",
            stored.sop_instance_uid, stored.series_uid
        )));
    }
    Ok(stored)
}

/// The `boundary` parameter of a `multipart/related` content type.
fn multipart_boundary(content_type: &str) -> Result<String, String> {
    let mut pieces = content_type.split(';');
    let media = pieces.next().unwrap_or_default().trim();
    if !media.eq_ignore_ascii_case("multipart/related") {
        return Err(format!(
            "content type {content_type:?}, not multipart/related"
        ));
    }
    for piece in pieces {
        if let Some((name, value)) = piece.split_once('=') {
            if name.trim().eq_ignore_ascii_case("boundary") {
                let value = value.trim().trim_matches('"');
                if value.is_empty() || value.len() > 70 {
                    return Err(format!("multipart boundary {value:?}"));
                }
                return Ok(value.to_string());
            }
        }
    }
    Err("multipart/related without a boundary".into())
}

/// One part of a multipart body.
struct Part {
    /// 1-based.
    index: usize,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// Splits a `multipart/related` body (RFC 2046 §5.1) while it is read: at most one
/// part in memory, each at most `max_part_bytes`.
struct Multipart<R> {
    reader: R,
    /// `CRLF--boundary`.
    delimiter: Vec<u8>,
    buffer: Vec<u8>,
    max_part_bytes: u64,
    parts: usize,
    finished: bool,
    eof: bool,
}

const READ_CHUNK: usize = 256 << 10;

impl<R: Read> Multipart<R> {
    fn new(reader: R, boundary: &str, max_part_bytes: u64) -> Self {
        // A CRLF before the first delimiter makes it look like every other.
        Self {
            reader,
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            buffer: b"\r\n".to_vec(),
            max_part_bytes,
            parts: 0,
            finished: false,
            eof: false,
        }
    }

    /// Reads more bytes; `false` at the end of the body.
    fn fill(&mut self) -> Result<bool, String> {
        if self.eof {
            return Ok(false);
        }
        let start = self.buffer.len();
        self.buffer.resize(start + READ_CHUNK, 0);
        let read = loop {
            match self.reader.read(&mut self.buffer[start..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buffer.truncate(start);
                    return Err(format!("reading the multipart body: {e}"));
                }
            }
        };
        self.buffer.truncate(start + read);
        self.eof = read == 0;
        Ok(read > 0)
    }

    /// The position of the delimiter in the buffer, reading until it is there.
    fn find_delimiter(&mut self, from: usize, limit: u64) -> Result<usize, String> {
        let mut searched = from;
        loop {
            if let Some(at) = memchr::memmem::find(&self.buffer[searched..], &self.delimiter) {
                return Ok(searched + at);
            }
            // The delimiter may straddle what has been read and what comes next.
            searched = self
                .buffer
                .len()
                .saturating_sub(self.delimiter.len())
                .max(from);
            if (self.buffer.len() - from) as u64 > limit {
                return Err(format!("a part exceeds {limit} bytes"));
            }
            if !self.fill()? {
                return Err("the multipart body ends inside a part".into());
            }
        }
    }

    /// The next part, or `None` after the closing delimiter.
    fn next_part(&mut self) -> Result<Option<Part>, String> {
        if self.finished {
            return Ok(None);
        }
        if self.parts == 0 {
            // Skip the preamble up to the first delimiter.
            let at = self.find_delimiter(0, MAX_PART_HEADER_BYTES as u64)?;
            self.buffer.drain(..at);
        }
        // The buffer starts with the delimiter; then `--` (the end) or the rest of the
        // delimiter line.
        while self.buffer.len() < self.delimiter.len() + 2 {
            if !self.fill()? {
                return Err("the multipart body ends after a delimiter".into());
            }
        }
        let after = self.delimiter.len();
        if &self.buffer[after..after + 2] == b"--" {
            self.finished = true;
            return Ok(None);
        }
        let headers_end = loop {
            if let Some(at) = memchr::memmem::find(&self.buffer[after..], b"\r\n\r\n") {
                break after + at;
            }
            if self.buffer.len() > after + MAX_PART_HEADER_BYTES {
                return Err("part headers longer than 16 KiB".into());
            }
            if !self.fill()? {
                return Err("the multipart body ends inside part headers".into());
            }
        };
        let headers = String::from_utf8_lossy(&self.buffer[after..headers_end]).into_owned();
        let content_type = headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        });
        let body_start = headers_end + 4;
        let body_end = self.find_delimiter(body_start, self.max_part_bytes)?;
        if (body_end - body_start) as u64 > self.max_part_bytes {
            return Err(format!("a part exceeds {} bytes", self.max_part_bytes));
        }
        let body = self.buffer[body_start..body_end].to_vec();
        self.buffer.drain(..body_end);
        self.parts += 1;
        Ok(Some(Part {
            index: self.parts,
            content_type,
            body,
        }))
    }
}

/// The result of [`store_files`]: every file, in the order given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoreReport {
    pub url: String,
    pub files: Vec<FileReport>,
    pub total: usize,
    pub succeeded: usize,
    /// Stored with a warning (the server's WarningReason or HTTP 202).
    pub warned: usize,
    pub failed: usize,
    pub not_sent: usize,
    pub requests: usize,
    pub bytes_sent: u64,
    pub seconds: f64,
}

impl StoreReport {
    /// Files the server stored (with or without a warning).
    pub fn stored(&self) -> usize {
        self.succeeded + self.warned
    }

    pub fn all_stored(&self) -> bool {
        self.stored() == self.total
    }

    /// One line: counts, bytes, time.
    pub fn summary(&self) -> String {
        format!(
            "{} of {} file(s) stored by {} (STOW-RS, {} request(s): {} success, {} warning, {} failed, {} not sent), {:.1} MB in {:.2} s",
            self.stored(),
            self.total,
            self.url,
            self.requests,
            self.succeeded,
            self.warned,
            self.failed,
            self.not_sent,
            self.bytes_sent as f64 / 1e6,
            self.seconds
        )
    }
}

/// Stores `files` (STOW-RS) in requests of at most [`WebConfig::max_request_bytes`];
/// `on_file` hears of each file once its request is answered (or it was refused
/// before). Errors: the configuration, and a request without an answer
/// ([`WebError::Transport`], with nothing said of the files of later requests) or
/// answered with an HTTP error other than 409 (all failed) or 202 (some failed).
pub fn store_files(
    config: &WebConfig,
    files: &[PathBuf],
    deidentify: Option<&DeidentifyKey>,
    on_file: &mut dyn FnMut(&FileReport),
) -> Result<StoreReport, WebError> {
    config.validate()?;
    let started = Instant::now();
    let url = format!("{}/studies", config.base_url);
    let mut reports: Vec<FileReport> = Vec::with_capacity(files.len());
    let mut batch: Vec<(usize, Vec<u8>)> = Vec::new();
    let mut batch_bytes = 0u64;
    let mut requests = 0;
    for path in files {
        let mut report = FileReport::new(path);
        let index = reports.len();
        match inspect_file(path, &mut report)
            .and_then(|()| file_bytes(path, deidentify, &mut report))
        {
            Ok(bytes) => {
                if !batch.is_empty() && batch_bytes + bytes.len() as u64 > config.max_request_bytes
                {
                    send_batch(config, &url, &mut batch, &mut reports, on_file)?;
                    requests += 1;
                    batch_bytes = 0;
                }
                batch_bytes += bytes.len() as u64;
                report.bytes = bytes.len() as u64;
                batch.push((index, bytes));
                reports.push(report);
            }
            Err(why) => {
                report.error = Some(why);
                on_file(&report);
                reports.push(report);
            }
        }
    }
    if !batch.is_empty() {
        send_batch(config, &url, &mut batch, &mut reports, on_file)?;
        requests += 1;
    }
    let count = |o: Outcome| reports.iter().filter(|f| f.outcome == o).count();
    Ok(StoreReport {
        url,
        total: reports.len(),
        succeeded: count(Outcome::Success),
        warned: count(Outcome::Warning),
        failed: count(Outcome::Failure),
        not_sent: count(Outcome::NotSent),
        requests,
        bytes_sent: reports
            .iter()
            .filter(|f| f.outcome != Outcome::NotSent)
            .map(|f| f.bytes)
            .sum(),
        seconds: started.elapsed().as_secs_f64(),
        files: reports,
    })
}

/// The bytes a file is sent as: as stored, or de-identified (PS3.15 basic profile,
/// `pinhole_io::dicom::deidentify`) with its new SOP Instance UID in the report.
fn file_bytes(
    path: &Path,
    deidentify: Option<&DeidentifyKey>,
    report: &mut FileReport,
) -> Result<Vec<u8>, String> {
    let Some(key) = deidentify else {
        return std::fs::read(path).map_err(|e| format!("cannot read: {e}"));
    };
    let done = deidentify_file(path, key).map_err(|e| format!("cannot de-identify: {e}"))?;
    report.sop_instance_uid = Some(done.sop_instance_uid());
    report.deidentified = true;
    done.part10_bytes()
}

/// A boundary that does not occur in any of the files.
fn boundary_for(batch: &[(usize, Vec<u8>)]) -> String {
    let mut n = 0u64;
    loop {
        let boundary = format!("pinhole-stow-{n:016x}");
        let delimiter = format!("\r\n--{boundary}");
        if batch
            .iter()
            .all(|(_, bytes)| memchr::memmem::find(bytes, delimiter.as_bytes()).is_none())
        {
            return boundary;
        }
        n += 0x9E37_79B9_7F4A_7C15;
    }
}

fn send_batch(
    config: &WebConfig,
    url: &str,
    batch: &mut Vec<(usize, Vec<u8>)>,
    reports: &mut [FileReport],
    on_file: &mut dyn FnMut(&FileReport),
) -> Result<(), WebError> {
    let boundary = boundary_for(batch);
    let mut body = Vec::with_capacity(batch.iter().map(|(_, b)| b.len() + 128).sum());
    for (_, bytes) in batch.iter() {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Type: {DICOM_PART}\r\n\r\n").as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let request = config
        .agent()
        .post(url)
        .header(
            "Content-Type",
            format!("multipart/related; type=\"{DICOM_PART}\"; boundary={boundary}"),
        )
        .header("Accept", "application/dicom+json");
    let mut response = config
        .authorize(request)
        .send(&body[..])
        .map_err(|e| transport(url, e))?;
    let status = response.status().as_u16();
    let answer = response
        .body_mut()
        .with_config()
        .limit(MAX_STORE_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|e| transport(url, e))?;
    if !matches!(status, 200 | 202 | 409) {
        return Err(status_error(url, status, &answer));
    }
    let outcome = parse_store_answer(&answer).map_err(|message| WebError::Malformed {
        url: url.to_string(),
        message,
    })?;
    for (index, _) in batch.drain(..) {
        let report = &mut reports[index];
        let instance = report.sop_instance_uid.clone().unwrap_or_default();
        report.status = Some(status);
        if let Some(reason) = outcome.failed.get(&instance) {
            report.outcome = Outcome::Failure;
            report.status_text = Some(failure_text(*reason).to_string());
            report.error = Some(format!(
                "refused by the server (FailureReason 0x{reason:04X}: {})",
                failure_text(*reason)
            ));
        } else if let Some(warning) = outcome.stored.get(&instance) {
            report.outcome = if warning.is_some() || status == 202 {
                Outcome::Warning
            } else {
                Outcome::Success
            };
            report.status_text = warning.map(|w| format!("warning 0x{w:04X}"));
        } else {
            report.outcome = Outcome::Failure;
            report.error = Some(format!(
                "the server's answer (HTTP {status}) does not name this instance"
            ));
        }
        on_file(report);
    }
    Ok(())
}

/// What a STOW-RS answer says: instances stored (with a WarningReason, if any) and
/// instances that failed (with their FailureReason).
#[derive(Debug, Default, PartialEq)]
struct StoreAnswer {
    stored: BTreeMap<String, Option<u16>>,
    failed: BTreeMap<String, u16>,
}

/// Parses the Store Instances Response Module (PS3.18 10.5.3) in DICOM JSON.
fn parse_store_answer(body: &[u8]) -> Result<StoreAnswer, String> {
    let mut answer = StoreAnswer::default();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(answer);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| format!("not DICOM JSON: {e}"))?;
    // Some servers wrap the object in an array.
    let object = match &value {
        Value::Array(items) => items.first().unwrap_or(&Value::Null),
        other => other,
    };
    let items = |tag: Tag| -> Vec<&Value> {
        object
            .get(format!("{:04X}{:04X}", tag.0, tag.1))
            .and_then(|a| a.get("Value"))
            .and_then(Value::as_array)
            .map(|v| v.iter().collect())
            .unwrap_or_default()
    };
    let text = |item: &Value, tag: Tag| {
        item.get(format!("{:04X}{:04X}", tag.0, tag.1))
            .and_then(json_text)
    };
    let number = |item: &Value, tag: Tag| {
        item.get(format!("{:04X}{:04X}", tag.0, tag.1))
            .and_then(|a| a.get("Value"))
            .and_then(Value::as_array)
            .and_then(|v| v.first())
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok())
    };
    for item in items(tags::REFERENCED_SOP_SEQUENCE) {
        if let Some(uid) = text(item, tags::REFERENCED_SOP_INSTANCE_UID) {
            answer
                .stored
                .insert(uid, number(item, tags::WARNING_REASON));
        }
    }
    for item in items(tags::FAILED_SOP_SEQUENCE) {
        if let Some(uid) = text(item, tags::REFERENCED_SOP_INSTANCE_UID) {
            answer
                .failed
                .insert(uid, number(item, tags::FAILURE_REASON).unwrap_or(0xC000));
        }
    }
    Ok(answer)
}

/// PS3.18 Table 10.5.3-2 / PS3.4 failure reasons.
fn failure_text(reason: u16) -> &'static str {
    match reason {
        0xA700..=0xA7FF => "refused: out of resources",
        0xA900..=0xA9FF => "error: data set does not match SOP class",
        0xC000..=0xCFFF => "error: cannot understand",
        0x0110 => "processing failure",
        0x0122 => "SOP class not supported",
        0x0111 => "duplicate SOP instance",
        _ => "failed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_is_checked_and_never_carries_credentials() {
        assert!(WebConfig::new("http://pacs:8042/dicom-web/")
            .validate()
            .is_ok());
        assert_eq!(
            WebConfig::new("http://pacs:8042/dicom-web/").base_url,
            "http://pacs:8042/dicom-web"
        );
        for bad in [
            "ftp://pacs/dicom-web",
            "http://user:secret@pacs/dicom-web",
            "https:///dicom-web",
            "http://pacs/dicom-web?x=1",
        ] {
            let err = WebConfig::new(bad).validate().unwrap_err().to_string();
            assert!(!err.contains("secret"), "{err}");
            assert!(err.contains("base_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn dicom_json_becomes_matches() {
        let body = br#"[{"0020000D": {"vr": "UI", "Value": ["1.2.3"]},
            "00100010": {"vr": "PN", "Value": [{"Alphabetic": "Doe^Jane"}]},
            "00201208": {"vr": "IS", "Value": [20]},
            "00080061": {"vr": "CS", "Value": ["CT", "SEG"]},
            "00081030": {"vr": "LO"}}]"#;
        let matches = parse_matches(body).unwrap();
        assert_eq!(matches.len(), 1);
        let m = &matches[0];
        assert_eq!(m.get(tags::STUDY_INSTANCE_UID), Some("1.2.3"));
        assert_eq!(m.get(tags::PATIENT_NAME), Some("Doe^Jane"));
        assert_eq!(m.get(tags::NUMBER_OF_STUDY_RELATED_INSTANCES), Some("20"));
        assert_eq!(m.get(tags::MODALITIES_IN_STUDY), Some("CT\\SEG"));
        assert_eq!(m.get(tags::STUDY_DESCRIPTION), None);
        assert!(parse_matches(b"").unwrap().is_empty());
        assert!(parse_matches(b"{}").is_err());
        assert!(parse_matches(br#"[{"nothex!": {}}]"#).is_err());
    }

    #[test]
    fn boundaries_are_read_from_the_content_type() {
        assert_eq!(
            multipart_boundary("multipart/related; type=\"application/dicom\"; boundary=\"ab-1\"")
                .unwrap(),
            "ab-1"
        );
        assert_eq!(
            multipart_boundary("Multipart/Related;boundary=xyz;type=application/dicom").unwrap(),
            "xyz"
        );
        assert!(multipart_boundary("application/dicom").is_err());
        assert!(multipart_boundary("multipart/related; type=application/dicom").is_err());
    }

    /// Each part's content type and body.
    type Parts = Vec<(Option<String>, Vec<u8>)>;

    fn parts_of(body: &[u8], limit: u64) -> Result<Parts, String> {
        // Read one byte at a time: every delimiter straddles reads somewhere.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut multipart = Multipart::new(Trickle(body), "B1", limit);
        let mut out = Vec::new();
        while let Some(part) = multipart.next_part()? {
            out.push((part.content_type, part.body));
        }
        Ok(out)
    }

    #[test]
    fn multipart_bodies_split_into_their_parts() {
        let body = b"preamble\r\n--B1\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n--B\r\n\r\n--B1\r\ncontent-type: text/plain\r\n\r\n\r\n--B1--\r\nepilogue";
        let parts = parts_of(body, 100).unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].0.as_deref(), Some("application/dicom"));
        assert_eq!(parts[0].1, b"first\r\n--B\r\n");
        assert_eq!(parts[1].0.as_deref(), Some("text/plain"));
        assert!(parts[1].1.is_empty());
        // Without a preamble, the first delimiter opens the body.
        let parts = parts_of(b"--B1\r\n\r\nx\r\n--B1--", 100).unwrap();
        assert_eq!(parts, vec![(None, b"x".to_vec())]);
        // Truncated bodies, oversized parts.
        assert!(parts_of(b"--B1\r\n\r\nabc", 100).is_err());
        assert!(parts_of(b"--B1\r\n\r\n0123456789\r\n--B1--", 5)
            .unwrap_err()
            .contains("exceeds"));
        assert!(parts_of(b"no delimiter at all", 100).is_err());
    }

    #[test]
    fn store_answers_name_stored_and_failed_instances() {
        let body = br#"{"00081199": {"vr": "SQ", "Value": [
              {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
               "00081155": {"vr": "UI", "Value": ["1.2.3.1"]}},
              {"00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
               "00081196": {"vr": "US", "Value": [45056]}}]},
            "00081198": {"vr": "SQ", "Value": [
              {"00081155": {"vr": "UI", "Value": ["1.2.3.3"]},
               "00081197": {"vr": "US", "Value": [272]}}]}}"#;
        let answer = parse_store_answer(body).unwrap();
        assert_eq!(answer.stored.get("1.2.3.1"), Some(&None));
        assert_eq!(answer.stored.get("1.2.3.2"), Some(&Some(0xB000)));
        assert_eq!(answer.failed.get("1.2.3.3"), Some(&0x0110));
        assert!(parse_store_answer(b"not json").is_err());
    }
}
