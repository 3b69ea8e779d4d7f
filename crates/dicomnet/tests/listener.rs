//! The listener against pynetdicom (`tests/py/dicom_net_peer.py`) and hand-made faulty
//! clients, on the real CT series of `../shared/data`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use dicom_core::{dicom_value, DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{open_file, InMemDicomObject};
use dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN;
use dicom_transfer_syntax_registry::TransferSyntaxIndex;
use dicom_ul::pdu::{
    AbortRQSource, AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed,
    UserVariableItem,
};
use dicom_ul::Pdu;
use pinhole_dicomnet::Event;

use crate::common::*;
use crate::shared;

#[test]
fn pynetdicom_echo_and_store_of_the_ct_series() {
    let mut h = Harness::start(|_| {});
    let port = h.port();
    let (code, json) = peer(&["echo", "127.0.0.1", &port, AE]);
    assert_eq!((code, statuses(&json)), (0, vec![0]), "{json}");

    let files = ct_files();
    let started = Instant::now();
    let (code, json) = peer(&store_args("127.0.0.1", &port, &files));
    h.drain();
    assert_eq!(code, 0, "{json}\n{:#?}", h.seen);
    assert_eq!(statuses(&json), vec![0; 20]);
    eprintln!("20 slices stored in {:?}", started.elapsed());

    let complete = h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { .. })
    });
    let Event::SeriesComplete {
        instances, folder, ..
    } = complete
    else {
        unreachable!()
    };
    assert_eq!(instances, 20);
    h.drain();
    assert_eq!(h.stored().len(), 20 + retries(&json), "{:#?}", h.seen);
    assert!(h.seen.iter().any(|e| matches!(
        e,
        Event::AssociationAccepted { calling_ae, .. } if calling_ae == "PYNETDICOM"
    )));
    let series_complete = h
        .seen
        .iter()
        .filter(|e| matches!(e, Event::SeriesComplete { .. }))
        .count();
    assert_eq!(series_complete, 1);
    let unexpected = warnings_beyond_peer_retries(&h, retries(&json));
    assert!(unexpected.is_empty(), "{unexpected:?}");

    // Each stored file: same SOP instance and identical pixel data bytes as its source,
    // in the layout <study>/<series>/<sop>.dcm, with a file meta group.
    for file in &files {
        let source = open_file(file).unwrap();
        // The shared series is de-identified with blank UIDs in its data sets: the SOP
        // instance is the file meta group's (the peer filled the data set's from it).
        let sop = meta_instance(&source);
        let path = folder.join(format!("{sop}.dcm"));
        let stored = open_file(&path).unwrap();
        assert_eq!(text(&stored, tags::SOP_INSTANCE_UID), sop);
        assert_eq!(
            stored
                .meta()
                .media_storage_sop_instance_uid()
                .trim_end_matches('\0'),
            sop
        );
        assert_eq!(
            stored.meta().transfer_syntax().trim_end_matches('\0'),
            source.meta().transfer_syntax().trim_end_matches('\0')
        );
        assert_eq!(
            folder,
            h.store
                .join(text(&stored, tags::STUDY_INSTANCE_UID))
                .join(text(&stored, tags::SERIES_INSTANCE_UID))
        );
        assert!(
            pixel_data(&stored) == pixel_data(&source),
            "{sop}: pixel data differ"
        );
    }
    assert_no_temporary_files(&h.store);

    // The series reader gives the same volume from the received folder as from the original.
    let options = pinhole_io::dicom::DicomOptions::default();
    let original = pinhole_io::dicom::read_series(
        &shared::shared_data("dicom-ct-series"),
        &options,
        &mut |_, _| {},
    )
    .unwrap();
    let received = pinhole_io::dicom::read_series(&folder, &options, &mut |_, _| {}).unwrap();
    assert_eq!(received.volume.grid().dims(), original.volume.grid().dims());
    assert_eq!(received.volume.grid(), original.volume.grid());
    assert!(received.volume == original.volume, "voxel values differ");
    h.shutdown();
}

#[test]
fn three_concurrent_pynetdicom_stores() {
    let mut h = Harness::start(|_| {});
    let port = h.port();
    let files = ct_files();
    let subsets = [&files[0..7], &files[7..14], &files[14..20]];
    let children: Vec<_> = subsets
        .iter()
        .map(|subset| {
            let args = store_args("127.0.0.1", &port, subset);
            (subset.len(), peer_command(&args).spawn().unwrap())
        })
        .collect();
    let mut peer_retries = 0;
    for (n, child) in children {
        let (code, json) = parse_peer(&["store"], child.wait_with_output().unwrap());
        assert_eq!(code, 0, "{json}");
        assert_eq!(statuses(&json).len(), n);
        peer_retries += retries(&json);
    }
    let Event::SeriesComplete { instances, .. } = h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { .. })
    }) else {
        unreachable!()
    };
    assert_eq!(instances, 20);
    h.drain();
    assert_eq!(h.stored().len(), 20 + peer_retries);
    let accepted = h
        .seen
        .iter()
        .filter(|e| matches!(e, Event::AssociationAccepted { .. }))
        .count();
    assert_eq!(accepted, 3 + peer_retries);

    // A duplicate replaces the stored file atomically and is reported again.
    let (code, _) = peer(&store_args("127.0.0.1", &port, &files[..2]));
    assert_eq!(code, 0);
    let dcm = all_files(&h.store)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "dcm"))
        .count();
    assert_eq!(dcm, 20);
    assert_no_temporary_files(&h.store);
    h.shutdown();
}

// ---- hand-made clients ----

/// A raw association: A-ASSOCIATE-RQ for CT storage (JPEG 2000 lossless and explicit VR
/// little endian) and Verification, sent through a plain socket.
struct RawClient {
    stream: TcpStream,
}

impl RawClient {
    fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        Self { stream }
    }

    fn send(&mut self, pdu: &Pdu) {
        let mut bytes = Vec::new();
        dicom_ul::write_pdu(&mut bytes, pdu).unwrap();
        self.stream.write_all(&bytes).unwrap();
    }

    fn receive(&mut self) -> Pdu {
        let mut header = [0u8; 6];
        self.stream.read_exact(&mut header).unwrap();
        let len = u32::from_be_bytes(header[2..6].try_into().unwrap()) as usize;
        let mut bytes = header.to_vec();
        bytes.resize(6 + len, 0);
        self.stream.read_exact(&mut bytes[6..]).unwrap();
        dicom_ul::read_pdu(&bytes[..], 1 << 20, false)
            .unwrap()
            .unwrap()
    }

    /// Sends the A-ASSOCIATE-RQ and returns the answer.
    fn associate(addr: SocketAddr, calling: &str) -> (Self, Pdu) {
        let mut client = Self::connect(addr);
        client.send(&Pdu::AssociationRQ(AssociationRQ {
            protocol_version: 1,
            calling_ae_title: calling.into(),
            called_ae_title: AE.into(),
            application_context_name: "1.2.840.10008.3.1.1.1".into(),
            presentation_contexts: vec![
                PresentationContextProposed {
                    id: 1,
                    abstract_syntax: uids::CT_IMAGE_STORAGE.into(),
                    transfer_syntaxes: vec![
                        "1.2.840.10008.1.2.4.90".into(),
                        uids::EXPLICIT_VR_LITTLE_ENDIAN.into(),
                    ],
                },
                PresentationContextProposed {
                    id: 3,
                    abstract_syntax: uids::VERIFICATION.into(),
                    transfer_syntaxes: vec![uids::IMPLICIT_VR_LITTLE_ENDIAN.into()],
                },
            ],
            user_variables: vec![UserVariableItem::MaxLength(16_384)],
        }));
        let answer = client.receive();
        (client, answer)
    }

    /// An accepted association.
    fn accepted(addr: SocketAddr) -> Self {
        let (client, answer) = Self::associate(addr, "RAWSCU");
        assert!(matches!(answer, Pdu::AssociationAC(_)), "{answer:?}");
        client
    }

    fn pdv(&mut self, value_type: PDataValueType, is_last: bool, data: Vec<u8>) {
        self.send(&Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: 1,
                value_type,
                is_last,
                data,
            }],
        });
    }

    /// A whole data set in fragments below the listener's PDU limit.
    fn data_set(&mut self, bytes: &[u8]) {
        let chunks: Vec<&[u8]> = bytes.chunks(8000).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            self.pdv(PDataValueType::Data, i + 1 == chunks.len(), chunk.to_vec());
        }
    }

    /// C-STORE-RQ command for `sop_instance`.
    fn store_command(&mut self, sop_instance: &str) {
        let command = InMemDicomObject::command_from_element_iter([
            DataElement::new(
                tags::AFFECTED_SOP_CLASS_UID,
                VR::UI,
                dicom_value!(Str, uids::CT_IMAGE_STORAGE),
            ),
            DataElement::new(tags::COMMAND_FIELD, VR::US, dicom_value!(U16, [0x0001])),
            DataElement::new(tags::MESSAGE_ID, VR::US, dicom_value!(U16, [1])),
            DataElement::new(tags::PRIORITY, VR::US, dicom_value!(U16, [0])),
            DataElement::new(tags::COMMAND_DATA_SET_TYPE, VR::US, dicom_value!(U16, [0])),
            DataElement::new(
                tags::AFFECTED_SOP_INSTANCE_UID,
                VR::UI,
                dicom_value!(Str, sop_instance),
            ),
        ]);
        let mut bytes = Vec::new();
        command
            .write_dataset_with_ts(&mut bytes, &IMPLICIT_VR_LITTLE_ENDIAN.erased())
            .unwrap();
        self.pdv(PDataValueType::Command, true, bytes);
    }

    /// The status of the C-STORE-RSP that comes next.
    fn store_status(&mut self) -> u16 {
        let Pdu::PData { data } = self.receive() else {
            panic!("no P-DATA")
        };
        let obj = InMemDicomObject::read_dataset_with_ts(
            data[0].data.as_slice(),
            &IMPLICIT_VR_LITTLE_ENDIAN.erased(),
        )
        .unwrap();
        obj.element(tags::STATUS).unwrap().to_int::<u16>().unwrap()
    }
}

/// The data set bytes (after the file meta group) of a source slice and its SOP
/// instance UID (the file meta group's). With `fill`, the blank UIDs of the
/// de-identified data set are filled in: SOP class / instance from the file meta
/// group, made-up Study / Series UIDs.
fn data_set_of(file: &Path, fill: bool) -> (Vec<u8>, String) {
    let mut obj = open_file(file).unwrap();
    let sop = meta_instance(&obj);
    if fill {
        for (tag, value) in [
            (tags::SOP_CLASS_UID, uids::CT_IMAGE_STORAGE),
            (tags::SOP_INSTANCE_UID, sop.as_str()),
            (tags::STUDY_INSTANCE_UID, "1.2.826.0.1.3680043.8.498.11"),
            (tags::SERIES_INSTANCE_UID, "1.2.826.0.1.3680043.8.498.12"),
        ] {
            obj.put(DataElement::new(tag, VR::UI, dicom_value!(Str, value)));
        }
    }
    let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(obj.meta().transfer_syntax())
        .unwrap();
    let mut bytes = Vec::new();
    obj.write_dataset_with_ts(&mut bytes, ts).unwrap();
    (bytes, sop)
}

#[test]
fn faults_are_survived_and_leave_no_partial_files() {
    let mut h = Harness::start(|_| {});
    let files = ct_files();
    let (data_set, sop) = data_set_of(&files[0], true);
    let (blank_data_set, _) = data_set_of(&files[0], false);
    let final_names = |h: &Harness| {
        all_files(&h.store)
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&sop))
            .count()
    };

    // Peer killed mid-transfer: command and part of the data set, then the socket closes.
    let mut client = RawClient::accepted(h.addr);
    client.store_command(&sop);
    client.pdv(PDataValueType::Data, false, data_set[..4000].to_vec());
    drop(client);
    let warning = h.wait_for("broken", |e| matches!(e, Event::Warning { .. }));
    assert!(format!("{warning:?}").contains("discarded"), "{warning:?}");

    // A-ABORT mid-transfer.
    let mut client = RawClient::accepted(h.addr);
    client.store_command(&sop);
    client.pdv(PDataValueType::Data, false, data_set[..4000].to_vec());
    client.send(&Pdu::AbortRQ {
        source: AbortRQSource::ServiceUser,
    });
    h.wait_for(
        "aborted",
        |e| matches!(e, Event::Warning { message } if message.contains("aborted by the peer")),
    );

    // Garbage after the association: a PDU header claiming ~4 GiB (refused before any
    // allocation), then noise.
    let mut client = RawClient::accepted(h.addr);
    client
        .stream
        .write_all(&[0x04, 0x00, 0xFF, 0xFF, 0xFF, 0xF0, 1, 2, 3, 4, 5, 6, 7, 8])
        .unwrap();
    h.wait_for("garbage", |e| {
        matches!(e, Event::Warning { message } if message.contains("RAWSCU") && message.contains("broken"))
    });
    drop(client);

    // Garbage instead of an A-ASSOCIATE-RQ.
    let mut client = RawClient::connect(h.addr);
    client
        .stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    h.wait_for(
        "not established",
        |e| matches!(e, Event::Warning { message } if message.contains("not established")),
    );
    drop(client);

    // A malformed data set, complete: refused with 0xC000, the association goes on.
    let mut client = RawClient::accepted(h.addr);
    client.store_command(&sop);
    let mut bad = data_set[..600].to_vec();
    bad.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ]);
    bad.extend_from_slice(&[0u8; 64]);
    client.pdv(PDataValueType::Data, true, bad);
    assert_eq!(client.store_status(), 0xC000);
    // The de-identified data set as it is: no Study Instance UID for the layout.
    client.store_command(&sop);
    client.data_set(&blank_data_set);
    assert_eq!(client.store_status(), 0xC000);
    // A SOP instance UID in the data set that differs from the command's.
    client.store_command("1.2.3.4");
    client.data_set(&data_set);
    assert_eq!(client.store_status(), 0xC000);
    // Then the whole slice, in fragments: stored.
    client.store_command(&sop);
    client.data_set(&data_set);
    assert_eq!(client.store_status(), 0x0000);
    client.send(&Pdu::ReleaseRQ);
    assert!(matches!(client.receive(), Pdu::ReleaseRP));
    h.wait_for("stored", |e| matches!(e, Event::InstanceStored { .. }));
    assert_eq!(final_names(&h), 1);

    // The listener still serves pynetdicom.
    let port = h.port();
    let (code, json) = peer(&store_args("127.0.0.1", &port, &files[1..3]));
    assert_eq!(code, 0, "{json}");
    // (The peer derives other Study / Series UIDs than the raw client's: two series.)
    h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { instances: 2, .. })
    });
    h.shutdown();
    assert_no_temporary_files(&h.store);
    let warnings = h.warnings();
    assert!(
        warnings.iter().any(|w| w.contains("0xC000")),
        "{warnings:?}"
    );
}

#[test]
fn disallowed_peers_calling_titles_and_extra_associations_are_rejected() {
    // Peer address not on the list.
    let mut h = Harness::start(|c| c.allowed_peers = Some(vec!["10.255.255.1".parse().unwrap()]));
    let (code, json) = peer(&["echo", "127.0.0.1", &h.port(), AE]);
    assert_eq!(code, 3, "{json}");
    assert_eq!(json["rejected"], true, "{json}");
    h.wait_for("rejected", |e| {
        matches!(e, Event::AssociationRejected { reason, .. } if reason.contains("peer address"))
    });
    h.shutdown();

    // Calling AE titles.
    let mut h = Harness::start(|c| c.calling_ae_allowed = Some(vec!["GOODSCU".into()]));
    let port = h.port();
    let (code, json) = peer(&["echo", "127.0.0.1", &port, AE, "--calling", "BADSCU"]);
    assert_eq!(
        (code, &json["rejected"]),
        (3, &serde_json::json!(true)),
        "{json}"
    );
    h.wait_for(
        "rejected",
        |e| matches!(e, Event::AssociationRejected { reason, .. } if reason.contains("BADSCU")),
    );
    let (code, json) = peer(&["echo", "127.0.0.1", &port, AE, "--calling", "GOODSCU"]);
    assert_eq!((code, statuses(&json)), (0, vec![0]), "{json}");
    // A called AE title that is not ours.
    let (code, _) = peer(&[
        "echo",
        "127.0.0.1",
        &port,
        "SOMEONE",
        "--calling",
        "GOODSCU",
    ]);
    assert_eq!(code, 3);
    h.wait_for(
        "rejected",
        |e| matches!(e, Event::AssociationRejected { reason, .. } if reason.contains("called AE")),
    );
    h.shutdown();

    // One association at most: a second one is rejected while the first is open.
    let mut h = Harness::start(|c| c.max_associations = 1);
    let port = h.port();
    let first = RawClient::accepted(h.addr);
    let (code, json) = peer(&["echo", "127.0.0.1", &port, AE]);
    assert_eq!(
        (code, &json["rejected"]),
        (3, &serde_json::json!(true)),
        "{json}"
    );
    h.wait_for("rejected", |e| {
        matches!(e, Event::AssociationRejected { reason, .. } if reason.contains("no resources"))
    });
    drop(first);
    h.wait_for("first ends", |e| matches!(e, Event::Warning { .. }));
    // The slot frees once the first association's thread has ended.
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, json) = peer(&["echo", "127.0.0.1", &port, AE]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{json}");
        std::thread::sleep(Duration::from_millis(100));
    }
    h.shutdown();
}

#[test]
fn unsafe_uids_are_refused_and_nothing_is_written_outside_the_store() {
    let mut h = Harness::start(|_| {});
    let files = ct_files();
    let port = h.port();
    let mut args = store_args("127.0.0.1", &port, &files[..1]);
    args.extend(["--sop-instance-uid", "../../evil"]);
    let (code, json) = peer(&args);
    assert_eq!(code, 1, "{json}");
    let status = statuses(&json)[0];
    assert!(status == 0xC000 || status == 0xA900, "{json}");
    h.wait_for(
        "refused",
        |e| matches!(e, Event::Warning { message } if message.contains("evil")),
    );
    h.shutdown();
    // Nothing at all was written, in the store or around it.
    let root = h.store.parent().unwrap().parent().unwrap();
    let written = all_files(root);
    assert!(written.is_empty(), "{written:?}");
    assert!(h.stored().is_empty());
}
