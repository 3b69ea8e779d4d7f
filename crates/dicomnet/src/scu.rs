//! What the SCUs share ([`crate::push`], [`crate::query`]): the association's settings
//! and its establishment over dicom-ul, this crate's own P-DATA fragmenter, and reading
//! DIMSE messages (a command set and, when it says so, a data set) with every length
//! bounded.

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dicom_ul::pdu::{
    AssociationRJ, AssociationRJResult, AssociationRJSource, PDataValue, PDataValueType,
};
use dicom_ul::{ClientAssociation, ClientAssociationOptions, Pdu};

use crate::config::{check_ae_title, MAX_PDU_BYTES, MIN_PDU_BYTES};
use crate::dataset::error_chain;
use crate::dimse::{self, Response};

/// Largest P-DATA fragment sent, whatever the peer accepts (bounds the send buffer).
const MAX_FRAGMENT_BYTES: usize = 1 << 20;
/// PDV item length field, presentation context ID and message control header.
const PDV_HEADER_BYTES: u32 = 6;

/// The settings of an association this node requests (borrowed from a
/// [`crate::PushConfig`] or a [`crate::query::QueryConfig`]).
pub(crate) struct Peer<'a> {
    pub calling_ae: &'a str,
    pub called_ae: &'a str,
    pub addr: &'a str,
    pub max_pdu_bytes: u32,
    pub timeout: Duration,
}

impl<'a> Peer<'a> {
    /// Checks every field; `(field, message)` for the first one out of range.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        check_ae_title(self.calling_ae).map_err(|m| ("calling_ae", m))?;
        check_ae_title(self.called_ae).map_err(|m| ("called_ae", m))?;
        if self.addr.trim().is_empty() {
            return Err(("addr", "empty address (host:port)".into()));
        }
        if !(MIN_PDU_BYTES..=MAX_PDU_BYTES).contains(&self.max_pdu_bytes) {
            return Err((
                "max_pdu_bytes",
                format!(
                    "{} is outside {MIN_PDU_BYTES}..={MAX_PDU_BYTES}",
                    self.max_pdu_bytes
                ),
            ));
        }
        if self.timeout < Duration::from_millis(100) {
            return Err((
                "timeout",
                format!("{:?} is shorter than 100 ms", self.timeout),
            ));
        }
        Ok(())
    }

    /// `CALLED@addr`, for messages.
    pub fn name(&self) -> String {
        format!("{}@{}", self.called_ae, self.addr)
    }

    /// Options with the AE titles, the maximum PDU length, strict PDU checks and the
    /// timeouts; the caller adds the presentation contexts.
    pub fn options(&self) -> ClientAssociationOptions<'a> {
        ClientAssociationOptions::new()
            .calling_ae_title(self.calling_ae)
            .called_ae_title(self.called_ae)
            .max_pdu_length(self.max_pdu_bytes)
            .strict(true)
            .connection_timeout(self.timeout)
            .read_timeout(self.timeout)
            .write_timeout(self.timeout)
    }

    /// Establishes the association; `None` when the peer accepted none of the proposed
    /// presentation contexts (dicom-ul has aborted it then).
    pub fn establish(
        &self,
        options: ClientAssociationOptions<'_>,
    ) -> Result<Option<ClientAssociation<TcpStream>>, EstablishError> {
        match options.establish(self.addr) {
            Ok(mut association) => {
                let _ = association.inner_stream().set_nodelay(true);
                Ok(Some(association))
            }
            Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
                Err(EstablishError::Rejected(rejection_text(&association_rj)))
            }
            Err(dicom_ul::association::Error::NoAcceptedPresentationContexts { .. }) => Ok(None),
            Err(e) => Err(EstablishError::Failed(error_chain(&e))),
        }
    }
}

/// Why no association was established.
pub(crate) enum EstablishError {
    /// An A-ASSOCIATE-RJ, with the peer's reason.
    Rejected(String),
    /// Unreachable, timed out, or a protocol error.
    Failed(String),
}

/// The peer's reason for an A-ASSOCIATE-RJ, e.g. "called AE title not recognized
/// (permanent, from the service user)".
fn rejection_text(rj: &AssociationRJ) -> String {
    let result = match rj.result {
        AssociationRJResult::Permanent => "permanent",
        AssociationRJResult::Transient => "transient",
    };
    let from = match rj.source {
        AssociationRJSource::ServiceUser(_) => "the service user",
        AssociationRJSource::ServiceProviderASCE(_) => "the service provider (ACSE)",
        AssociationRJSource::ServiceProviderPresentation(_) => {
            "the service provider (presentation)"
        }
    };
    format!("{} ({result}, from {from})", rj.source)
}

/// A UID as found in a PDU or a data element, without its padding.
pub(crate) fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

/// Why a message did not get its answer.
pub(crate) enum Failed {
    /// Nothing was sent for it; the association goes on.
    Local(String),
    /// The association cannot go on; `abort`: send an A-ABORT (this side broke off).
    Wire { reason: String, abort: bool },
}

pub(crate) fn wire(reason: String, abort: bool) -> Failed {
    Failed::Wire { reason, abort }
}

/// A failure while streaming fragments: reading the source or writing the socket.
pub(crate) enum StreamError {
    Read(std::io::Error),
    Write(std::io::Error),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::Read(e) => write!(f, "reading the file failed mid-transfer: {e}"),
            StreamError::Write(e) => write!(f, "sending failed: {e}"),
        }
    }
}

/// Writes `len` bytes of `source` as P-DATA-TF PDUs of one PDV each, on presentation
/// context `context_id`, no PDU longer than `max_pdu` (the peer's maximum PDU length);
/// the last PDV is marked last. (dicom-ul's `PDataWriter` is not used: its `write`
/// returns `Ok(0)` when called with its buffer exactly full, which `write_all` turns
/// into an error whenever a chunk boundary meets a PDU boundary.)
pub(crate) fn send_pdvs(
    out: &mut impl Write,
    context_id: u8,
    command: bool,
    source: &mut impl Read,
    len: u64,
    max_pdu: u32,
) -> Result<(), StreamError> {
    let chunk = (max_pdu.saturating_sub(PDV_HEADER_BYTES) as usize).clamp(1, MAX_FRAGMENT_BYTES);
    let first = usize::try_from(len).map_or(chunk, |len| len.min(chunk));
    let mut buffer = vec![0u8; 12 + first];
    let mut remaining = len;
    loop {
        let n = usize::try_from(remaining).map_or(chunk, |r| r.min(chunk));
        let last = remaining == n as u64;
        if buffer.len() < 12 + n {
            buffer.resize(12 + n, 0);
        }
        source
            .read_exact(&mut buffer[12..12 + n])
            .map_err(StreamError::Read)?;
        let pdu_len = (n as u32) + PDV_HEADER_BYTES;
        let item_len = (n as u32) + 2;
        buffer[0] = 0x04;
        buffer[1] = 0x00;
        buffer[2..6].copy_from_slice(&pdu_len.to_be_bytes());
        buffer[6..10].copy_from_slice(&item_len.to_be_bytes());
        buffer[10] = context_id;
        buffer[11] = u8::from(command) | if last { 0x02 } else { 0x00 };
        out.write_all(&buffer[..12 + n])
            .map_err(StreamError::Write)?;
        remaining -= n as u64;
        if last {
            break;
        }
    }
    out.flush().map_err(StreamError::Write)
}

/// Sends an encoded message part held in memory (a command set, an identifier).
pub(crate) fn send_bytes(
    association: &mut ClientAssociation<TcpStream>,
    context_id: u8,
    command: bool,
    bytes: &[u8],
) -> Result<(), Failed> {
    let max_pdu = association.acceptor_max_pdu_length();
    send_pdvs(
        association.inner_stream(),
        context_id,
        command,
        &mut &bytes[..],
        bytes.len() as u64,
        max_pdu,
    )
    .map_err(|e| wire(e.to_string(), true))
}

/// One DIMSE message received: the response command set and, when it announced one,
/// the data set (the identifier of a C-FIND / C-MOVE response).
pub(crate) struct Message {
    pub response: Response,
    pub data_set: Option<Vec<u8>>,
}

/// The response command set `command`, which must be `field` answering `message_id`.
fn expected_response(command: &[u8], field: u16, message_id: u16) -> Result<Response, Failed> {
    let response = dimse::parse_response(command).map_err(|e| wire(e, true))?;
    if response.field != field || response.message_id_being_responded_to != message_id {
        return Err(wire(
            format!(
                "expected command 0x{field:04X} answering message {message_id}, got 0x{:04X} answering {}",
                response.field, response.message_id_being_responded_to
            ),
            true,
        ));
    }
    Ok(response)
}

/// What arrives on a C-GET association.
pub(crate) enum Arrival {
    /// The response to the request (pending or final), with its identifier.
    Response(Message),
    /// A C-STORE-RQ sub-operation and its data set, on a storage context.
    Store {
        context_id: u8,
        command: dimse::Command,
        data: Vec<u8>,
    },
}

/// PDVs received and not yet read: a P-DATA-TF PDU may carry the end of one message
/// part and the start of the next.
#[derive(Default)]
pub(crate) struct Inbox {
    pending: VecDeque<PDataValue>,
}

impl Inbox {
    /// The next PDV, receiving a PDU when none is pending.
    fn next(
        &mut self,
        association: &mut ClientAssociation<TcpStream>,
    ) -> Result<PDataValue, Failed> {
        loop {
            if let Some(pdv) = self.pending.pop_front() {
                return Ok(pdv);
            }
            let pdu = association
                .receive()
                .map_err(|e| wire(format!("no response: {}", error_chain(&e)), false))?;
            match pdu {
                Pdu::PData { data } => self.pending.extend(data),
                Pdu::AbortRQ { source } => {
                    return Err(wire(
                        format!("the peer aborted the association ({source:?})"),
                        false,
                    ));
                }
                Pdu::ReleaseRQ => {
                    return Err(wire(
                        "the peer asked to release the association before answering".into(),
                        true,
                    ));
                }
                other => {
                    return Err(wire(
                        format!("unexpected {} from the peer", other.short_description()),
                        true,
                    ));
                }
            }
        }
    }

    /// Reads the response command set `field` to `message_id` on `context_id` (its
    /// fragments may span PDUs), length-checked ([`dimse::parse_response`]); then, when
    /// `max_data_set_bytes` is given and the command announces a data set, the data
    /// set, refused beyond that many bytes. With `None` a data set is not expected
    /// (C-STORE-RSP, C-ECHO-RSP) and one arriving is a protocol error.
    pub fn receive(
        &mut self,
        association: &mut ClientAssociation<TcpStream>,
        context_id: u8,
        field: u16,
        message_id: u16,
        max_data_set_bytes: Option<usize>,
    ) -> Result<Message, Failed> {
        let command = self.part(
            association,
            context_id,
            PDataValueType::Command,
            dimse::MAX_COMMAND_BYTES,
        )?;
        let response = expected_response(&command, field, message_id)?;
        let data_set = match max_data_set_bytes {
            Some(max) if response.has_data_set => {
                Some(self.part(association, context_id, PDataValueType::Data, max)?)
            }
            _ => None,
        };
        Ok(Message { response, data_set })
    }

    /// The next message of a C-GET: a response command set `field` to `message_id` on
    /// `context_id` (its identifier, if any, at most `max_identifier_bytes`), or a
    /// C-STORE-RQ on another context with its data set (at most `max_data_bytes`).
    pub fn receive_any(
        &mut self,
        association: &mut ClientAssociation<TcpStream>,
        context_id: u8,
        field: u16,
        message_id: u16,
        max_identifier_bytes: usize,
        max_data_bytes: usize,
    ) -> Result<Arrival, Failed> {
        let (on, command) = self.part_on(
            association,
            None,
            PDataValueType::Command,
            dimse::MAX_COMMAND_BYTES,
        )?;
        if on == context_id {
            let response = expected_response(&command, field, message_id)?;
            let data_set = if response.has_data_set {
                Some(self.part(
                    association,
                    context_id,
                    PDataValueType::Data,
                    max_identifier_bytes,
                )?)
            } else {
                None
            };
            return Ok(Arrival::Response(Message { response, data_set }));
        }
        let request = dimse::parse_command(&command).map_err(|e| wire(e, true))?;
        if request.field != dimse::C_STORE_RQ || !request.has_data_set {
            return Err(wire(
                format!(
                    "expected a C-STORE-RQ with a data set on presentation context {on}, got command 0x{:04X}",
                    request.field
                ),
                true,
            ));
        }
        let data = self.part(association, on, PDataValueType::Data, max_data_bytes)?;
        Ok(Arrival::Store {
            context_id: on,
            command: request,
            data,
        })
    }

    /// The fragments of one command set or data set, up to the one marked last.
    fn part(
        &mut self,
        association: &mut ClientAssociation<TcpStream>,
        context_id: u8,
        kind: PDataValueType,
        max_bytes: usize,
    ) -> Result<Vec<u8>, Failed> {
        self.part_on(association, Some(context_id), kind, max_bytes)
            .map(|(_, bytes)| bytes)
    }

    /// As [`Inbox::part`]; with `None` on the context of its first fragment (returned).
    fn part_on(
        &mut self,
        association: &mut ClientAssociation<TcpStream>,
        context_id: Option<u8>,
        kind: PDataValueType,
        max_bytes: usize,
    ) -> Result<(u8, Vec<u8>), Failed> {
        let mut context_id = context_id;
        let what = match kind {
            PDataValueType::Command => "command set",
            PDataValueType::Data => "data set",
        };
        let mut bytes = Vec::new();
        loop {
            let pdv = self.next(association)?;
            if pdv.value_type != kind {
                return Err(wire(
                    match kind {
                        PDataValueType::Command => {
                            "the peer sent a data set where a response command set was due".into()
                        }
                        PDataValueType::Data => {
                            "the peer sent a command set where the announced data set was due"
                                .into()
                        }
                    },
                    true,
                ));
            }
            let expected = *context_id.get_or_insert(pdv.presentation_context_id);
            if pdv.presentation_context_id != expected {
                return Err(wire(
                    format!(
                        "a message came on presentation context {}, expected {expected}",
                        pdv.presentation_context_id
                    ),
                    true,
                ));
            }
            if bytes.len() + pdv.data.len() > max_bytes {
                return Err(wire(
                    format!("response {what} longer than {max_bytes} bytes"),
                    true,
                ));
            }
            bytes.extend_from_slice(&pdv.data);
            if pdv.is_last {
                return Ok((expected, bytes));
            }
        }
    }
}

/// Reads the response command set `field` to `message_id` on `context_id`; a data set
/// is not expected ([`Inbox::receive`] with `None`).
pub(crate) fn receive_response(
    association: &mut ClientAssociation<TcpStream>,
    context_id: u8,
    field: u16,
    message_id: u16,
) -> Result<Response, Failed> {
    Inbox::default()
        .receive(association, context_id, field, message_id, None)
        .map(|message| message.response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The PDVs of a P-DATA-TF byte stream: (context, control header, data).
    fn pdvs(mut bytes: &[u8]) -> Vec<(u8, u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            assert_eq!(bytes[0], 0x04);
            let pdu_len = u32::from_be_bytes(bytes[2..6].try_into().unwrap()) as usize;
            let item_len = u32::from_be_bytes(bytes[6..10].try_into().unwrap()) as usize;
            assert_eq!(item_len + 4, pdu_len, "one PDV per PDU");
            out.push((bytes[10], bytes[11], bytes[12..6 + pdu_len].to_vec()));
            bytes = &bytes[6 + pdu_len..];
        }
        out
    }

    #[test]
    fn fragments_fit_the_peer_pdu_and_mark_the_last() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        // 1018 − 6 = 1012 bytes per fragment; also an exact multiple of it.
        for len in [0usize, 1, 1012, 2024, 10_000] {
            let mut wire = Vec::new();
            send_pdvs(&mut wire, 5, false, &mut &data[..len], len as u64, 1018)
                .ok()
                .unwrap();
            let got = pdvs(&wire);
            assert_eq!(got.len(), len.div_ceil(1012).max(1), "{len}");
            for (i, (context, control, chunk)) in got.iter().enumerate() {
                assert_eq!(*context, 5);
                assert!(chunk.len() <= 1012);
                let last = i + 1 == got.len();
                assert_eq!(*control, if last { 0x02 } else { 0x00 }, "{len} #{i}");
            }
            let joined: Vec<u8> = got.into_iter().flat_map(|(_, _, c)| c).collect();
            assert_eq!(joined, &data[..len]);
        }
        let mut wire = Vec::new();
        send_pdvs(&mut wire, 1, true, &mut &data[..100], 100, 16_384)
            .ok()
            .unwrap();
        assert_eq!(pdvs(&wire)[0].1, 0x03, "last command fragment");
        // A source shorter than announced is a read error, not a short message.
        let mut wire = Vec::new();
        assert!(matches!(
            send_pdvs(&mut wire, 1, false, &mut &data[..10], 20, 16_384),
            Err(StreamError::Read(_))
        ));
    }
}
