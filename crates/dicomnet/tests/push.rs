//! pinhole-dicomnet's C-STORE / C-ECHO SCU (`push_files`, `echo`) against its own
//! listener and against an independent SCP (pynetdicom, `tests/py/dicom_net_peer.py
//! serve`), on the real CT series of `../shared/data`, and its faults.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use dicom_core::{dicom_value, DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, FileMetaTableBuilder, InMemDicomObject};
use dicom_ul::pdu::{AbortRQSource, PDataValueType};
use dicom_ul::Pdu;
use pinhole_dicomnet::push::derived_uid;
use pinhole_dicomnet::{
    echo, push_files, Event, Outcome, PushConfig, PushError, PushEvent, PushReport,
};

use crate::common::*;

const JPEG2000_LOSSLESS: &str = "1.2.840.10008.1.2.4.90";

fn config(addr: impl ToString, called: &str, fill: bool) -> PushConfig {
    let mut config = PushConfig::new("PUSHTEST", called, addr.to_string());
    config.fill_blank_uids = fill;
    config.timeout = Duration::from_secs(60);
    config
}

/// Pushes, collecting the progress events.
fn push(config: &PushConfig, files: &[PathBuf]) -> (Result<PushReport, PushError>, Vec<PushEvent>) {
    let mut events = Vec::new();
    let result = push_files(config, files, |e| events.push(e));
    (result, events)
}

/// The pynetdicom SCP (`dicom_net_peer.py serve`), killed when dropped.
struct Peer {
    child: Child,
    lines: Receiver<String>,
    port: u16,
    _out: tempfile::TempDir,
}

impl Peer {
    fn start(count: usize, extra: &[&str], sources: &[PathBuf]) -> Self {
        let out = tempfile::tempdir().unwrap();
        let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
        let script = crate::shared::repo_root().join("tests/py/dicom_net_peer.py");
        let mut command = Command::new(interpreter);
        command
            .arg(script)
            .args(["serve", "--port", "0", "--ae", "PYSCP"])
            .args(["--count", &count.to_string(), "--timeout", "150"])
            .arg("--out")
            .arg(out.path())
            .args(extra);
        if !sources.is_empty() {
            command.arg("--source").args(sources);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("PINHOLE_DICOM_DEBUG").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("run the pynetdicom peer (tests/py/requirements.txt)");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut peer = Self {
            child,
            lines,
            port: 0,
            _out: out,
        };
        let first = peer.json("its port");
        peer.port = first["port"].as_u64().unwrap() as u16;
        peer
    }

    /// The next JSON line the peer prints.
    fn json(&self, what: &str) -> serde_json::Value {
        let line = self.lines.recv_timeout(WAIT).unwrap_or_else(|e| {
            panic!("dicom_net_peer.py serve printed no {what} ({e}); install tests/py/requirements.txt")
        });
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{what}: {e}: {line}"))
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its final report, once it has what it waited for.
    fn finish(mut self) -> serde_json::Value {
        let json = self.json("final report");
        let _ = self.child.wait();
        json
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn strings(json: &serde_json::Value) -> Vec<String> {
    json.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect()
}

/// The series' Frame of Reference UID (one for all 20 slices).
fn frame_of_reference(files: &[PathBuf]) -> String {
    let uids: BTreeSet<String> = files
        .iter()
        .map(|f| text(&open_file(f).unwrap(), tags::FRAME_OF_REFERENCE_UID))
        .collect();
    assert_eq!(uids.len(), 1, "{uids:?}");
    uids.into_iter().next().unwrap()
}

#[test]
fn push_the_series_to_our_listener_keeps_the_pixel_data_bytes() {
    // A small PDU limit on the receiving side: ~150 fragments per slice.
    let mut ours = Harness::start(|c| c.max_pdu_bytes = 4096);
    let files = ct_files();
    let config = config(ours.addr, AE, true);
    assert!(echo(&config).unwrap() < Duration::from_secs(60));
    let (result, events) = push(&config, &files);
    let report = result.unwrap();
    assert!(report.all_stored(), "{report:#?}");
    assert_eq!(
        (
            report.total,
            report.succeeded,
            report.failed,
            report.not_sent
        ),
        (20, 20, 0, 0)
    );
    assert!(report
        .files
        .iter()
        .all(|f| f.status == Some(0) && f.filled_uids));
    // Never silently: one warning per filled file.
    assert_eq!(report.warnings.len(), 20, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("Study Instance UID 2.25."));
    let sent: Vec<usize> = events
        .iter()
        .filter_map(|e| match e {
            PushEvent::Sent { index, total, .. } => {
                assert_eq!(*total, 20);
                Some(*index)
            }
            _ => None,
        })
        .collect();
    assert_eq!(sent, (0..20).collect::<Vec<_>>());
    assert!(matches!(
        events[0],
        PushEvent::Associated {
            proposed_contexts: 1,
            accepted_contexts: 1,
            peer_max_pdu_bytes: 4096,
            ..
        }
    ));
    assert!(report
        .summary()
        .starts_with("20 of 20 file(s) stored by PINHOLE@127.0.0.1:"));

    let seen = ours.events_until(20, |e| matches!(e, Event::InstanceStored { .. }));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Warning { .. })),
        "{seen:#?}"
    );

    // Each stored file: the source's SOP instance, in the derived study / series, with
    // the same transfer syntax and the same pixel data bytes (offset table, fragments).
    let frame = frame_of_reference(&files);
    let folder = ours
        .store
        .join(derived_uid("study", &frame))
        .join(derived_uid("series", &frame));
    assert_eq!(all_files(&ours.store).len(), 20);
    for file in &files {
        let source = open_file(file).unwrap();
        let sop = meta_instance(&source);
        let stored = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert_eq!(text(&stored, tags::SOP_INSTANCE_UID), sop);
        assert_eq!(text(&stored, tags::SOP_CLASS_UID), uids::CT_IMAGE_STORAGE);
        assert_eq!(
            stored.meta().transfer_syntax().trim_end_matches('\0'),
            JPEG2000_LOSSLESS
        );
        assert!(
            pixel_data(&stored) == pixel_data(&source),
            "{sop}: pixel data differ"
        );
        assert_eq!(
            text(&stored, tags::FRAME_OF_REFERENCE_UID),
            text(&source, tags::FRAME_OF_REFERENCE_UID)
        );
    }
}

#[test]
fn push_to_pynetdicom_gives_the_same_decoded_pixels() {
    let files = ct_files();
    let peer = Peer::start(20, &[], &files);
    let config = config(peer.addr(), "PYSCP", true);
    echo(&config).unwrap();
    let (result, _) = push(&config, &files);
    let report = result.unwrap();
    assert!(report.all_stored(), "{report:#?}");
    assert_eq!(report.succeeded, 20);
    let json = peer.finish();
    assert_eq!(json["timed_out"], false, "{json}");
    assert_eq!(json["echoes"], 1, "{json}");

    // Every SOP instance arrived once, in its own transfer syntax.
    let sources: BTreeSet<String> = files
        .iter()
        .map(|f| meta_instance(&open_file(f).unwrap()))
        .collect();
    let received = strings(&json["received"]);
    assert_eq!(received.len(), 20);
    assert_eq!(received.iter().cloned().collect::<BTreeSet<_>>(), sources);
    assert!(
        strings(&json["transfer_syntaxes"])
            .iter()
            .all(|ts| ts == JPEG2000_LOSSLESS),
        "{json}"
    );
    // The filled UIDs: one study and one series, the derived ones.
    let frame = frame_of_reference(&files);
    assert_eq!(strings(&json["studies"]), [derived_uid("study", &frame)]);
    assert_eq!(strings(&json["series"]), [derived_uid("series", &frame)]);
    // pydicom + pylibjpeg decode the received files to the same arrays as the sources.
    let md5 = |key: &str| -> BTreeMap<String, String> {
        json[key]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    };
    assert_eq!(md5("pixel_md5").len(), 20);
    assert_eq!(md5("pixel_md5"), md5("source_pixel_md5"));
}

#[test]
fn a_rejected_association_is_an_error_naming_the_reason() {
    let mut ours = Harness::start(|_| {});
    let files = ct_files();
    let wrong = config(ours.addr, "SOMEONE", true);
    let (result, events) = push(&wrong, &files[..2]);
    match result {
        Err(PushError::Rejected { reason, peer }) => {
            assert!(
                reason.contains("called AE title not recognized"),
                "{reason}"
            );
            assert!(reason.contains("permanent"), "{reason}");
            assert!(peer.starts_with("SOMEONE@"), "{peer}");
        }
        other => panic!("{other:?}"),
    }
    assert!(events.is_empty(), "{events:?}");
    match echo(&wrong) {
        Err(e @ PushError::Rejected { .. }) => {
            assert!(e.to_string().contains("rejected"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Nobody listening.
    let closed = {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        socket.local_addr().unwrap()
    };
    let (result, _) = push(&config(closed, AE, true), &files[..1]);
    assert!(
        matches!(result, Err(PushError::Association { .. })),
        "{result:?}"
    );
    ours.events_until(
        1,
        |e| matches!(e, Event::AssociationRejected { reason, .. } if reason.contains("called AE")),
    );
}

#[test]
fn an_association_aborted_midway_is_an_error_carrying_the_report() {
    // A peer (dicom-ul's server side) that takes the first data set in full, then
    // answers with an A-ABORT instead of a C-STORE-RSP.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (stream, _) = socket.accept().unwrap();
        let mut association = dicom_ul::ServerAssociationOptions::new()
            .accept_any()
            .with_abstract_syntax(uids::CT_IMAGE_STORAGE)
            .with_transfer_syntax(JPEG2000_LOSSLESS)
            .read_timeout(WAIT)
            .establish(stream)
            .unwrap();
        let mut data_bytes = 0;
        loop {
            let Pdu::PData { data } = association.receive().unwrap() else {
                panic!("P-DATA expected")
            };
            let last = data
                .iter()
                .any(|pdv| matches!(pdv.value_type, PDataValueType::Data) && pdv.is_last);
            data_bytes += data
                .iter()
                .filter(|pdv| matches!(pdv.value_type, PDataValueType::Data))
                .map(|pdv| pdv.data.len())
                .sum::<usize>();
            if last {
                break;
            }
        }
        association
            .send(&Pdu::AbortRQ {
                source: AbortRQSource::ServiceUser,
            })
            .unwrap();
        // Until the SCU closes the connection.
        let _ = association.receive();
        data_bytes
    });
    let files = ct_files();
    let (result, events) = push(&config(addr, "ANY", true), &files[..3]);
    let received = peer.join().unwrap();
    let (reason, report) = match result {
        Err(PushError::Aborted { reason, report, .. }) => (reason, report),
        other => panic!("{other:?}"),
    };
    assert!(
        reason.contains("the peer aborted the association"),
        "{reason}"
    );
    assert_eq!(
        (report.succeeded, report.failed, report.not_sent),
        (0, 1, 2),
        "{report:#?}"
    );
    assert_eq!(report.files[0].outcome, Outcome::Failure);
    assert_eq!(report.files[0].status, None);
    assert_eq!(report.files[0].bytes as usize, received);
    assert!(report.files[1]
        .error
        .as_deref()
        .unwrap()
        .contains("ended before this file was sent"));
    assert_eq!(events.len(), 4, "{events:?}");
}

/// `source` with its blank UIDs filled in (as a Part-10 file at `to`): a slice a PACS
/// would accept as it is.
fn with_uids(source: &Path, to: &Path, series: &str) {
    let mut obj = open_file(source).unwrap();
    let sop = meta_instance(&obj);
    for (tag, value) in [
        (tags::SOP_CLASS_UID, uids::CT_IMAGE_STORAGE),
        (tags::SOP_INSTANCE_UID, sop.as_str()),
        (tags::STUDY_INSTANCE_UID, "1.2.826.0.1.3680043.8.498.71"),
        (tags::SERIES_INSTANCE_UID, series),
    ] {
        obj.put(DataElement::new(tag, VR::UI, dicom_value!(Str, value)));
    }
    obj.write_to_file(to).unwrap();
}

#[test]
fn unreadable_and_blank_uid_files_are_reported_and_the_others_sent() {
    let mut ours = Harness::start(|_| {});
    let files = ct_files();
    let dir = tempfile::tempdir().unwrap();
    let notes = dir.path().join("notes.txt");
    std::fs::write(&notes, "not a DICOM file at all\n").unwrap();
    let missing = dir.path().join("missing.dcm");
    let good: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = dir.path().join(format!("good{i}.dcm"));
            with_uids(&files[i], &path, "1.2.826.0.1.3680043.8.498.72");
            path
        })
        .collect();
    let list = vec![
        notes.clone(),
        good[0].clone(),
        files[5].clone(),
        missing,
        good[1].clone(),
    ];
    let (result, events) = push(&config(ours.addr, AE, false), &list);
    let report = result.unwrap();
    assert!(!report.all_stored());
    assert_eq!(
        (report.succeeded, report.failed, report.not_sent),
        (2, 0, 3),
        "{report:#?}"
    );
    let outcome = |i: usize| report.files[i].outcome;
    let error = |i: usize| report.files[i].error.clone().unwrap_or_default();
    assert_eq!(outcome(0), Outcome::NotSent);
    assert!(
        error(0).contains("not a DICOM Part-10 file"),
        "{}",
        error(0)
    );
    assert_eq!(report.files[0].name, "notes.txt");
    assert_eq!(outcome(2), Outcome::NotSent);
    assert!(
        error(2).contains(
            "blank SOP Class UID, SOP Instance UID, Study Instance UID, Series Instance UID"
        ) && error(2).contains("without identity"),
        "{}",
        error(2)
    );
    // Its SOP instance is known from the file meta group all the same.
    assert_eq!(
        report.files[2].sop_instance_uid.as_deref(),
        Some(meta_instance(&open_file(&files[5]).unwrap()).as_str())
    );
    assert!(error(3).contains("cannot open"), "{}", error(3));
    assert_eq!(
        (outcome(1), outcome(4)),
        (Outcome::Success, Outcome::Success)
    );
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let not_sent = events
        .iter()
        .filter(|e| matches!(e, PushEvent::NotSent { .. }))
        .count();
    assert_eq!(not_sent, 3);
    // The JSON form names the outcome in snake case and leaves the full path out.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["files"][2]["outcome"], "not_sent");
    assert_eq!(json["files"][1]["status"], 0);
    assert!(json["files"][1].get("path").is_none());
    let seen = ours.events_until(2, |e| matches!(e, Event::InstanceStored { .. }));
    assert!(
        !seen.iter().any(|e| matches!(e, Event::Warning { .. })),
        "{seen:#?}"
    );

    // Nothing sendable at all: no association, every file reported.
    let (result, _) = push(&config(ours.addr, AE, false), &[notes, files[0].clone()]);
    let report = result.unwrap();
    assert_eq!(report.not_sent, 2);
}

/// A small uncompressed CT slice (Explicit VR Little Endian), with every UID set.
fn uncompressed_ct(path: &Path) -> String {
    let sop = "1.2.826.0.1.3680043.8.498.73.1";
    let mut obj = InMemDicomObject::new_empty();
    let ui = |obj: &mut InMemDicomObject, tag, value: &str| {
        obj.put(DataElement::new(tag, VR::UI, dicom_value!(Str, value)));
    };
    ui(&mut obj, tags::SOP_CLASS_UID, uids::CT_IMAGE_STORAGE);
    ui(&mut obj, tags::SOP_INSTANCE_UID, sop);
    ui(
        &mut obj,
        tags::STUDY_INSTANCE_UID,
        "1.2.826.0.1.3680043.8.498.73.2",
    );
    ui(
        &mut obj,
        tags::SERIES_INSTANCE_UID,
        "1.2.826.0.1.3680043.8.498.73.3",
    );
    obj.put(DataElement::new(
        tags::MODALITY,
        VR::CS,
        dicom_value!(Str, "CT"),
    ));
    for (tag, value) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, 4),
        (tags::COLUMNS, 4),
        (tags::BITS_ALLOCATED, 16),
        (tags::BITS_STORED, 16),
        (tags::HIGH_BIT, 15),
        (tags::PIXEL_REPRESENTATION, 1),
    ] {
        obj.put(DataElement::new(tag, VR::US, dicom_value!(U16, [value])));
    }
    obj.put(DataElement::new(
        tags::PHOTOMETRIC_INTERPRETATION,
        VR::CS,
        dicom_value!(Str, "MONOCHROME2"),
    ));
    let pixels: Vec<u16> = (0..16).map(|i| i * 100).collect();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(pixels.into()),
    ));
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .media_storage_sop_class_uid(uids::CT_IMAGE_STORAGE)
                .media_storage_sop_instance_uid(sop)
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN),
        )
        .unwrap();
    file.write_to_file(path).unwrap();
    sop.to_string()
}

#[test]
fn a_peer_accepting_only_uncompressed_ct_gets_what_it_accepts() {
    let files = ct_files();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.dcm");
    let plain_sop = uncompressed_ct(&plain);
    let peer = Peer::start(1, &["--only-uncompressed"], &[]);
    let config = config(peer.addr(), "PYSCP", true);

    // Only JPEG 2000 files: the peer accepts no proposed context; every file reported.
    let (result, events) = push(&config, &files[..3]);
    let report = result.unwrap();
    assert_eq!(report.not_sent, 3, "{report:#?}");
    for file in &report.files {
        let error = file.error.as_deref().unwrap();
        assert!(
            error.contains("no accepted presentation context")
                && error.contains(JPEG2000_LOSSLESS)
                && error.contains("no transcoding"),
            "{error}"
        );
    }
    assert!(!events
        .iter()
        .any(|e| matches!(e, PushEvent::Associated { .. })));

    // JPEG 2000 files and an uncompressed one: that one is sent, the others reported.
    let mut list = files[..2].to_vec();
    list.push(plain);
    let (result, events) = push(&config, &list);
    let report = result.unwrap();
    assert_eq!((report.succeeded, report.not_sent), (1, 2), "{report:#?}");
    assert_eq!(report.files[2].outcome, Outcome::Success);
    assert!(!report.files[2].filled_uids);
    for file in &report.files[..2] {
        assert!(file
            .error
            .as_deref()
            .unwrap()
            .contains("no accepted presentation context"));
    }
    assert!(events.iter().any(|e| matches!(
        e,
        PushEvent::Associated {
            proposed_contexts: 2,
            accepted_contexts: 1,
            ..
        }
    )));
    let json = peer.finish();
    assert_eq!(strings(&json["received"]), [plain_sop]);
    assert_eq!(
        strings(&json["transfer_syntaxes"]),
        [uids::EXPLICIT_VR_LITTLE_ENDIAN]
    );
}
