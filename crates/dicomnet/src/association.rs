//! One association, on its own thread: negotiation through dicom-ul, then P-DATA
//! fragments reassembled into command sets and data sets, C-ECHO and C-STORE answered.

use std::cell::RefCell;
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::Sender;
use std::time::Instant;

use dicom_ul::association::server::AccessControl;
use dicom_ul::association::ServerAssociation;
use dicom_ul::pdu::{
    AssociationRJ, AssociationRJServiceUserReason, AssociationRJSource, PDataValue, PDataValueType,
    PresentationContextResultReason, UserIdentity,
};
use dicom_ul::{Pdu, ServerAssociationOptions};

use crate::dataset::error_chain;
use crate::dimse::{self, status, Command};
use crate::event::Event;
use crate::listener::Shared;
use crate::sop::{accepted_transfer_syntaxes, STORAGE_SOP_CLASSES, VERIFICATION_SOP_CLASS};
use crate::store::{store_instance, Incoming, Refusal};

/// dicom-ul's access control: the called AE title must be ours, the calling AE title
/// on the allowed list; remembers the calling AE title for the rejection event.
struct Access<'a> {
    shared: &'a Shared,
    calling_ae: RefCell<String>,
}

impl AccessControl for &Access<'_> {
    fn check_access(
        &self,
        this_ae_title: &str,
        calling_ae_title: &str,
        called_ae_title: &str,
        _user_identity: Option<&UserIdentity>,
    ) -> Result<(), AssociationRJServiceUserReason> {
        *self.calling_ae.borrow_mut() = calling_ae_title.to_string();
        if called_ae_title != this_ae_title {
            return Err(AssociationRJServiceUserReason::CalledAETitleNotRecognized);
        }
        if !self.shared.config.calling_ae_permitted(calling_ae_title) {
            return Err(AssociationRJServiceUserReason::CallingAETitleNotRecognized);
        }
        Ok(())
    }
}

/// Serves one connection to its end; every outcome is an event.
pub(crate) fn serve(
    shared: &Shared,
    id: u64,
    stream: TcpStream,
    peer: SocketAddr,
    tx: &Sender<Event>,
) {
    let config = &shared.config;
    let access = Access {
        shared,
        calling_ae: RefCell::new(String::new()),
    };
    let mut options = ServerAssociationOptions::new()
        .ae_access_control(&access)
        .ae_title(config.ae_title.as_str())
        .max_pdu_length(config.max_pdu_bytes)
        .strict(true)
        .promiscuous(false)
        .read_timeout(config.idle_timeout)
        .write_timeout(config.idle_timeout);
    for ts in accepted_transfer_syntaxes() {
        options = options.with_transfer_syntax(ts);
    }
    for uid in STORAGE_SOP_CLASSES {
        options = options.with_abstract_syntax(*uid);
    }
    options = options.with_abstract_syntax(VERIFICATION_SOP_CLASS);
    let association = match options.establish(stream) {
        Ok(association) => association,
        Err(dicom_ul::association::Error::Rejected { association_rj, .. }) => {
            let reason = rejection_reason(&association_rj, &access.calling_ae.borrow(), config);
            let _ = tx.send(Event::AssociationRejected { peer, reason });
            return;
        }
        Err(e) => {
            let _ = tx.send(Event::Warning {
                message: format!(
                    "association from {peer} not established: {}",
                    error_chain(&e)
                ),
            });
            return;
        }
    };
    let calling_ae = access.calling_ae.borrow().clone();
    let _ = tx.send(Event::AssociationAccepted {
        peer,
        calling_ae: calling_ae.clone(),
    });
    let mut receiver = Receiver {
        shared,
        id,
        peer,
        calling_ae,
        tx,
        command: Vec::new(),
        command_context: None,
        pending: None,
    };
    receiver.run(association);
}

fn rejection_reason(
    rj: &AssociationRJ,
    calling_ae: &str,
    config: &crate::ListenerConfig,
) -> String {
    match &rj.source {
        AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CallingAETitleNotRecognized,
        ) => {
            format!("calling AE title {calling_ae:?} not allowed")
        }
        AssociationRJSource::ServiceUser(
            AssociationRJServiceUserReason::CalledAETitleNotRecognized,
        ) => {
            format!(
                "called AE title is not {:?} (calling AE {calling_ae:?})",
                config.ae_title
            )
        }
        other => format!("{other} (calling AE {calling_ae:?})"),
    }
}

/// A C-STORE whose data set is arriving.
struct PendingStore {
    command: Command,
    context_id: u8,
    transfer_syntax: String,
    data: Vec<u8>,
    /// Bytes of data set received (also when discarded).
    received_bytes: u64,
    /// The data set outgrew `max_instance_bytes` or memory: discarded, refused at its end.
    discarded: Option<String>,
}

struct Receiver<'a> {
    shared: &'a Shared,
    id: u64,
    peer: SocketAddr,
    calling_ae: String,
    tx: &'a Sender<Event>,
    /// Command fragments so far, and their presentation context.
    command: Vec<u8>,
    command_context: Option<u8>,
    pending: Option<PendingStore>,
}

/// How an association ended badly.
enum End {
    /// The peer broke the rules: A-ABORT it.
    Protocol(String),
    /// The connection is gone (or the answer could not be sent).
    Broken(String),
}

impl Receiver<'_> {
    fn warn(&self, message: String) {
        let _ = self.tx.send(Event::Warning { message });
    }

    /// What was lost with the association, for the warning.
    fn in_flight(&self) -> String {
        match &self.pending {
            Some(p) => {
                format!(
                "; the instance {} being received ({} bytes so far) was discarded, nothing written",
                p.command.affected_sop_instance_uid.as_deref().unwrap_or("?"),
                p.received_bytes
            )
            }
            None => String::new(),
        }
    }

    fn set_busy(&self, busy: bool) {
        self.shared.lock_series().set_busy(self.id, busy);
    }

    fn run(&mut self, mut association: ServerAssociation<TcpStream>) {
        let who = format!("association with {} ({})", self.calling_ae, self.peer);
        loop {
            let pdu = match association.receive() {
                Ok(pdu) => pdu,
                Err(e) => {
                    if !self.shared.stopping() || self.pending.is_some() {
                        self.warn(format!(
                            "{who} broken: {}{}",
                            error_chain(&e),
                            self.in_flight()
                        ));
                    }
                    return;
                }
            };
            match pdu {
                Pdu::PData { data } => {
                    let outcome = data
                        .into_iter()
                        .try_for_each(|pdv| self.fragment(&mut association, pdv));
                    match outcome {
                        Ok(()) => {}
                        Err(End::Protocol(message)) => {
                            self.warn(format!("{who} aborted: {message}{}", self.in_flight()));
                            let _ = association.abort();
                            return;
                        }
                        Err(End::Broken(message)) => {
                            self.warn(format!("{who} broken: {message}{}", self.in_flight()));
                            return;
                        }
                    }
                }
                Pdu::ReleaseRQ => {
                    if self.pending.is_some() || !self.command.is_empty() {
                        self.warn(format!("{who} released mid-message{}", self.in_flight()));
                    }
                    let _ = association.send(&Pdu::ReleaseRP);
                    return;
                }
                Pdu::AbortRQ { source } => {
                    self.warn(format!(
                        "{who} aborted by the peer ({source:?}){}",
                        self.in_flight()
                    ));
                    return;
                }
                other => {
                    self.warn(format!(
                        "{who} aborted: unexpected {}{}",
                        other.short_description(),
                        self.in_flight()
                    ));
                    let _ = association.abort();
                    return;
                }
            }
        }
    }

    /// One presentation data value.
    fn fragment(
        &mut self,
        association: &mut ServerAssociation<TcpStream>,
        pdv: PDataValue,
    ) -> Result<(), End> {
        let context = association
            .presentation_contexts()
            .iter()
            .find(|pc| {
                pc.id == pdv.presentation_context_id
                    && pc.reason == PresentationContextResultReason::Acceptance
            })
            .ok_or_else(|| {
                End::Protocol(format!(
                    "data on presentation context {} which was not accepted",
                    pdv.presentation_context_id
                ))
            })?;
        let transfer_syntax = context.transfer_syntax.clone();
        match pdv.value_type {
            PDataValueType::Command => {
                if self.pending.is_some() {
                    return Err(End::Protocol(
                        "a command began before the previous data set ended".into(),
                    ));
                }
                if self
                    .command_context
                    .is_some_and(|c| c != pdv.presentation_context_id)
                {
                    return Err(End::Protocol(
                        "command fragments on two presentation contexts".into(),
                    ));
                }
                if self.command.len() + pdv.data.len() > dimse::MAX_COMMAND_BYTES {
                    return Err(End::Protocol(format!(
                        "command set longer than {} bytes",
                        dimse::MAX_COMMAND_BYTES
                    )));
                }
                self.command_context = Some(pdv.presentation_context_id);
                self.command.extend_from_slice(&pdv.data);
                if pdv.is_last {
                    let bytes = std::mem::take(&mut self.command);
                    self.command_context = None;
                    let command = dimse::parse_command(&bytes).map_err(End::Protocol)?;
                    self.command_done(
                        association,
                        command,
                        pdv.presentation_context_id,
                        transfer_syntax,
                    )?;
                }
                Ok(())
            }
            PDataValueType::Data => {
                let max = self.shared.config.max_instance_bytes;
                let pending = self.pending.as_mut().ok_or_else(|| {
                    End::Protocol("data set fragment without a C-STORE command".into())
                })?;
                if pending.context_id != pdv.presentation_context_id {
                    return Err(End::Protocol(
                        "data set fragment on another presentation context than its command".into(),
                    ));
                }
                pending.received_bytes += pdv.data.len() as u64;
                if pending.discarded.is_none() {
                    if pending.received_bytes > max {
                        pending.discarded = Some(format!(
                            "data set larger than max_instance_bytes ({max} bytes)"
                        ));
                    } else if pending.data.try_reserve(pdv.data.len()).is_err() {
                        pending.discarded = Some(format!(
                            "out of memory at {} bytes of data set",
                            pending.received_bytes
                        ));
                    }
                    if pending.discarded.is_some() {
                        pending.data = Vec::new();
                    } else {
                        let mut data = pdv.data;
                        pending.data.append(&mut data);
                    }
                }
                if pdv.is_last {
                    if let Some(pending) = self.pending.take() {
                        self.store(association, pending)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn command_done(
        &mut self,
        association: &mut ServerAssociation<TcpStream>,
        command: Command,
        context_id: u8,
        transfer_syntax: String,
    ) -> Result<(), End> {
        match command.field {
            dimse::C_ECHO_RQ => {
                let response = dimse::echo_response(&command).map_err(End::Broken)?;
                send_command(association, context_id, response)
            }
            dimse::C_STORE_RQ if command.has_data_set => {
                self.set_busy(true);
                self.pending = Some(PendingStore {
                    command,
                    context_id,
                    transfer_syntax,
                    data: Vec::new(),
                    received_bytes: 0,
                    discarded: None,
                });
                Ok(())
            }
            dimse::C_STORE_RQ => Err(End::Protocol("C-STORE-RQ without a data set".into())),
            other => Err(End::Protocol(format!(
                "DIMSE command 0x{other:04X} is not supported (C-STORE and C-ECHO only)"
            ))),
        }
    }

    /// Stores a complete data set and answers the C-STORE-RQ.
    fn store(
        &mut self,
        association: &mut ServerAssociation<TcpStream>,
        pending: PendingStore,
    ) -> Result<(), End> {
        let PendingStore {
            command,
            context_id,
            transfer_syntax,
            data,
            discarded,
            ..
        } = pending;
        let outcome = match discarded {
            Some(why) => Err(Refusal {
                status: status::OUT_OF_RESOURCES,
                message: why,
            }),
            None => {
                let called_ae = self.shared.config.ae_title.as_str();
                let incoming = Incoming {
                    sop_class_uid: command.affected_sop_class_uid.as_deref().unwrap_or(""),
                    sop_instance_uid: command.affected_sop_instance_uid.as_deref().unwrap_or(""),
                    transfer_syntax: &transfer_syntax,
                    calling_ae: &self.calling_ae,
                    called_ae,
                };
                let context_class = association
                    .presentation_contexts()
                    .iter()
                    .find(|pc| pc.id == context_id)
                    .map(|pc| pc.abstract_syntax.trim_end_matches('\0').to_string());
                if context_class.as_deref() != Some(incoming.sop_class_uid) {
                    Err(Refusal {
                        status: status::DATA_SET_MISMATCH,
                        message: format!(
                            "SOP class {} sent on a presentation context for {}",
                            incoming.sop_class_uid,
                            context_class.as_deref().unwrap_or("?")
                        ),
                    })
                } else {
                    store_instance(&self.shared.config.store_dir, &incoming, &data)
                }
            }
        };
        drop(data);
        self.set_busy(false);
        let (status, comment) = match outcome {
            Ok(stored) => {
                self.shared
                    .lock_series()
                    .instance_stored(&stored, self.id, Instant::now());
                let _ = self.tx.send(Event::InstanceStored {
                    study_uid: stored.study_uid,
                    series_uid: stored.series_uid,
                    sop_instance_uid: stored.sop_instance_uid,
                    path: stored.path,
                    bytes: stored.bytes,
                });
                (status::SUCCESS, None)
            }
            Err(refusal) => {
                self.warn(format!(
                    "instance {} from {} ({}) refused with status 0x{:04X}: {}",
                    command
                        .affected_sop_instance_uid
                        .as_deref()
                        .unwrap_or("?")
                        .chars()
                        .take(80)
                        .collect::<String>(),
                    self.calling_ae,
                    self.peer,
                    refusal.status,
                    refusal.message
                ));
                (refusal.status, Some(refusal.message))
            }
        };
        let response =
            dimse::store_response(&command, status, comment.as_deref()).map_err(End::Broken)?;
        send_command(association, context_id, response)
    }
}

impl Drop for Receiver<'_> {
    fn drop(&mut self) {
        if self.pending.is_some() {
            self.set_busy(false);
        }
    }
}

/// Sends a command set in one PDV (responses are a few hundred bytes, far below any
/// PDU limit a peer may announce, 1 KiB at least in practice).
fn send_command(
    association: &mut ServerAssociation<TcpStream>,
    context_id: u8,
    data: Vec<u8>,
) -> Result<(), End> {
    association
        .send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: PDataValueType::Command,
                is_last: true,
                data,
            }],
        })
        .map_err(|e| End::Broken(format!("cannot send the response: {}", error_chain(&e))))
}
