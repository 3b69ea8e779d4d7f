//! Query and pull (`pinhole_dicomnet::query`: C-FIND SCU, C-MOVE SCU) against Orthanc, a
//! real PACS (`crate::orthanc`), and against pynetdicom as a second Query/Retrieve SCP
//! (`tests/py/dicom_net_peer.py qr`), with this crate's listener as the move destination:
//! Orthanc's configuration knows it as the modality `pinhole` = `PINHOLE`@127.0.0.1:port.

use std::path::Path;
use std::time::Duration;

use dicom_dictionary_std::tags;
use dicom_object::open_file;
use pinhole_dicomnet::{find, get_series, move_series, Event, Level, QueryConfig, QueryError};

use crate::common::*;
use crate::orthanc::{orthanc_peer, Orthanc};

/// Orthanc's SCP; the calling AE is the listener's, a modality Orthanc knows (it
/// answers C-FIND and C-MOVE only to those).
fn config(orthanc: &Orthanc) -> QueryConfig {
    let mut config = QueryConfig::new(AE, "ORTHANC", format!("127.0.0.1:{}", orthanc.dicom_port));
    config.timeout = Duration::from_secs(60);
    config
}

/// Uploads the shared series (blank UIDs filled) to Orthanc (REST) and checks what its
/// own index then holds: one study, one CT series of 20 instances; their UIDs.
fn upload_series(orthanc: &Orthanc, files: &[std::path::PathBuf]) -> (String, String) {
    let http = orthanc.http();
    let mut upload = vec!["upload", http.as_str(), "--fill-blank-uids"];
    upload.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (code, json) = orthanc_peer(&upload);
    assert_eq!(code, 0, "{json}");
    let (code, json) = orthanc_peer(&["studies", &http]);
    assert_eq!(code, 0, "{json}");
    let studies = json["studies"].as_array().unwrap();
    assert_eq!(studies.len(), 1, "{json}");
    let series = studies[0]["series"].as_array().unwrap();
    assert_eq!(series.len(), 1, "{json}");
    assert_eq!(series[0]["modality"], "CT");
    assert_eq!(series[0]["instances"], 20);
    (
        studies[0]["study_uid"].as_str().unwrap().to_string(),
        series[0]["series_uid"].as_str().unwrap().to_string(),
    )
}

#[test]
fn orthanc_answers_c_find_and_moves_the_ct_series_to_the_listener() {
    let mut h = Harness::start(|_| {});
    let orthanc = Orthanc::start(AE, h.addr.port());
    let files = ct_files();
    let (study_uid, series_uid) = upload_series(&orthanc, &files);
    let config = config(&orthanc);

    // Study level: exactly that study.
    let studies = find(
        &config,
        Level::Study,
        &[],
        &[
            tags::STUDY_INSTANCE_UID,
            tags::STUDY_DATE,
            tags::MODALITIES_IN_STUDY,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
    )
    .unwrap();
    assert_eq!(studies.len(), 1, "{studies:?}");
    let study = &studies[0];
    assert_eq!(
        study.get(tags::STUDY_INSTANCE_UID),
        Some(study_uid.as_str())
    );
    assert_eq!(study.get(tags::QUERY_RETRIEVE_LEVEL), Some("STUDY"));
    assert_eq!(study.get(tags::MODALITIES_IN_STUDY), Some("CT"));
    assert_eq!(study.get(tags::NUMBER_OF_STUDY_RELATED_SERIES), Some("1"));
    assert_eq!(
        study.get(tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        Some("20")
    );

    // Series level, matching on the study and the modality: one CT series, 20 instances.
    let found = find(
        &config,
        Level::Series,
        &[
            (tags::STUDY_INSTANCE_UID, study_uid.clone()),
            (tags::MODALITY, "CT".into()),
        ],
        &[
            tags::SERIES_INSTANCE_UID,
            tags::SERIES_DESCRIPTION,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ],
    )
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        found[0].get(tags::SERIES_INSTANCE_UID),
        Some(series_uid.as_str())
    );
    assert_eq!(found[0].get(tags::MODALITY), Some("CT"));
    assert_eq!(
        found[0].get(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        Some("20")
    );

    // Keys that match nothing: no match, success.
    for keys in [
        vec![(tags::MODALITY, "MR".to_string())],
        vec![(tags::STUDY_INSTANCE_UID, "1.2.3.4.5.6.7".to_string())],
    ] {
        let none = find(&config, Level::Series, &keys, &[tags::SERIES_INSTANCE_UID]).unwrap();
        assert!(none.is_empty(), "{keys:?}: {none:?}");
    }

    // Image level with room for 5 matches of 20: cancelled, refused; the next query on a
    // new association is answered as before.
    let mut small = config.clone();
    small.max_matches = 5;
    match find(
        &small,
        Level::Image,
        &[
            (tags::STUDY_INSTANCE_UID, study_uid.clone()),
            (tags::SERIES_INSTANCE_UID, series_uid.clone()),
        ],
        &[tags::SOP_INSTANCE_UID],
    ) {
        Err(QueryError::TooManyMatches { limit: 5, .. }) => {}
        other => panic!("{other:?}"),
    }
    let instances = find(
        &config,
        Level::Image,
        &[
            (tags::STUDY_INSTANCE_UID, study_uid.clone()),
            (tags::SERIES_INSTANCE_UID, series_uid.clone()),
        ],
        &[tags::SOP_INSTANCE_UID],
    )
    .unwrap();
    assert_eq!(instances.len(), 20);

    // C-MOVE of the series to the listener: 20 sub-operations completed.
    let report = move_series(&config, AE, &study_uid, &series_uid).unwrap();
    assert_eq!(
        (report.completed, report.failed, report.warning),
        (20, 0, 0),
        "{report:?}"
    );
    assert_eq!(report.status, 0x0000, "{report:?}");
    assert!(report.all_completed());
    let Event::SeriesComplete {
        instances,
        folder,
        series_uid: completed,
        ..
    } = h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { .. })
    })
    else {
        unreachable!()
    };
    assert_eq!((instances, completed.as_str()), (20, series_uid.as_str()));
    h.drain();
    assert_eq!(h.stored().len(), 20);
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());
    // Every instance arrived with the pixel data bytes of its source file.
    for file in &files {
        let source = open_file(file).unwrap();
        let sop = meta_instance(&source);
        let stored = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert_eq!(text(&stored, tags::SERIES_INSTANCE_UID), series_uid);
        assert!(pixel_data(&stored) == pixel_data(&source), "{sop}");
    }

    // A destination Orthanc does not know: its failure status, typed. PS3.4 has 0xA801
    // (move destination unknown) for it; Orthanc 1.10 (Debian's) answers 0xC000 (unable
    // to process), its generic failure, with no Error Comment.
    match move_series(&config, "NOBODY", &study_uid, &series_uid) {
        Err(QueryError::Status {
            operation: "C-MOVE",
            status,
            status_text,
            report: Some(report),
            ..
        }) => {
            assert!(status == 0xA801 || status == 0xC000, "{status:04X}");
            assert_eq!(report.status, status);
            assert!(
                status_text.contains("destination unknown")
                    || status_text.contains("unable to process")
            );
            assert_eq!((report.completed, report.failed), (0, 0), "{report:?}");
        }
        other => panic!("{other:?}"),
    }
    h.shutdown();
    assert_eq!(h.stored().len(), 20, "nothing more arrived");
    assert_no_temporary_files(Path::new(&h.store));
}

/// C-GET from Orthanc: the series comes back on the query's own association (no
/// listener: Orthanc never connects back), 20 sub-operations, every instance written in
/// the listener's layout with its source's pixel data bytes; a series Orthanc does not
/// hold brings nothing.
#[test]
fn orthanc_sends_the_ct_series_back_on_a_c_get() {
    // A modality port nobody listens on: C-GET must not need it.
    let orthanc = Orthanc::start(AE, 1);
    let files = ct_files();
    let (study_uid, series_uid) = upload_series(&orthanc, &files);
    let config = config(&orthanc);
    let store = tempfile::tempdir().unwrap();
    let mut written = Vec::new();
    let report = get_series(
        &config,
        &study_uid,
        &series_uid,
        store.path(),
        1 << 30,
        &mut |s| written.push(s.path.clone()),
    );
    let report = report.unwrap_or_else(|e| panic!("{e:?}\n{}", orthanc.log()));
    assert_eq!(report.operation, "C-GET");
    assert_eq!(
        (
            report.completed,
            report.failed,
            report.warning,
            report.stored
        ),
        (20, 0, 0, 20),
        "{report:?}"
    );
    assert!(report.refused.is_empty(), "{:?}", report.refused);
    assert!(report.all_completed(), "{}", report.summary());
    let folder = store.path().join(&study_uid).join(&series_uid);
    assert_eq!(written.len(), 20);
    assert!(written.iter().all(|p| p.parent() == Some(folder.as_path())));
    for file in &files {
        let source = open_file(file).unwrap();
        let sop = meta_instance(&source);
        let stored = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert_eq!(text(&stored, tags::SERIES_INSTANCE_UID), series_uid);
        assert!(pixel_data(&stored) == pixel_data(&source), "{sop}");
    }
    assert_no_temporary_files(store.path());

    // A series Orthanc does not hold: nothing written; Orthanc 1.10 answers 0xC000.
    match get_series(
        &config,
        &study_uid,
        "1.2.3.4",
        store.path(),
        1 << 30,
        &mut |_| {},
    ) {
        Ok(report) => assert_eq!((report.completed, report.stored), (0, 0), "{report:?}"),
        Err(QueryError::Status {
            operation: "C-GET",
            report: Some(report),
            ..
        }) => assert_eq!((report.completed, report.stored), (0, 0), "{report:?}"),
        Err(other) => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read_dir(&folder).unwrap().count(), 20);
}

/// pynetdicom as the Query/Retrieve SCP (`dicom_net_peer.py qr`), killed when dropped.
struct QrPeer {
    child: std::process::Child,
    port: u16,
}

impl QrPeer {
    fn start(files: &[std::path::PathBuf], move_dest: &str) -> Self {
        use std::io::{BufRead, BufReader};
        let mut args = vec!["qr", "--move-dest", move_dest, "--files"];
        args.extend(files.iter().map(|f| f.to_str().unwrap()));
        let mut command = peer_command(&args);
        command.stderr(std::process::Stdio::null());
        let mut child = command.spawn().expect("run the pynetdicom peer");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let json: serde_json::Value = serde_json::from_str(first.trim()).unwrap_or_else(|e| {
            panic!("dicom_net_peer.py qr printed no port ({e}): {first}; install tests/py/requirements.txt")
        });
        let port = json["port"].as_u64().unwrap() as u16;
        Self { child, port }
    }
}

impl Drop for QrPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same queries and pull against a second, independent SCP: pynetdicom serving the
/// CT series (Study Root C-FIND and C-MOVE, `tests/py/dicom_net_peer.py qr`), this
/// crate's listener as the move destination.
#[test]
fn pynetdicom_answers_c_find_and_moves_the_ct_series_to_the_listener() {
    let mut h = Harness::start(|_| {});
    let files = ct_files();
    let peer = QrPeer::start(&files, &format!("{AE}=127.0.0.1:{}", h.addr.port()));
    let mut config = QueryConfig::new(AE, "PYQR", format!("127.0.0.1:{}", peer.port));
    config.timeout = Duration::from_secs(60);

    let studies = find(
        &config,
        Level::Study,
        &[],
        &[
            tags::STUDY_INSTANCE_UID,
            tags::MODALITIES_IN_STUDY,
            tags::NUMBER_OF_STUDY_RELATED_SERIES,
            tags::NUMBER_OF_STUDY_RELATED_INSTANCES,
        ],
    )
    .unwrap();
    assert_eq!(studies.len(), 1, "{studies:?}");
    assert_eq!(studies[0].get(tags::QUERY_RETRIEVE_LEVEL), Some("STUDY"));
    assert_eq!(studies[0].get(tags::MODALITIES_IN_STUDY), Some("CT"));
    assert_eq!(
        studies[0].get(tags::NUMBER_OF_STUDY_RELATED_SERIES),
        Some("1")
    );
    assert_eq!(
        studies[0].get(tags::NUMBER_OF_STUDY_RELATED_INSTANCES),
        Some("20")
    );
    let study_uid = studies[0].get(tags::STUDY_INSTANCE_UID).unwrap().to_owned();

    let series = find(
        &config,
        Level::Series,
        &[
            (tags::STUDY_INSTANCE_UID, study_uid.clone()),
            (tags::MODALITY, "CT".into()),
        ],
        &[
            tags::SERIES_INSTANCE_UID,
            tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        ],
    )
    .unwrap();
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(
        series[0].get(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        Some("20")
    );
    let series_uid = series[0].get(tags::SERIES_INSTANCE_UID).unwrap().to_owned();
    let none = find(
        &config,
        Level::Series,
        &[(tags::MODALITY, "MR".into())],
        &[tags::SERIES_INSTANCE_UID],
    )
    .unwrap();
    assert!(none.is_empty(), "{none:?}");

    // Image level: the 20 SOP Instance UIDs of the files.
    let instances = find(
        &config,
        Level::Image,
        &[
            (tags::STUDY_INSTANCE_UID, study_uid.clone()),
            (tags::SERIES_INSTANCE_UID, series_uid.clone()),
        ],
        &[tags::SOP_INSTANCE_UID],
    )
    .unwrap();
    let mut found: Vec<String> = instances
        .iter()
        .map(|m| m.get(tags::SOP_INSTANCE_UID).unwrap().to_owned())
        .collect();
    let mut expected: Vec<String> = files
        .iter()
        .map(|f| meta_instance(&open_file(f).unwrap()))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(found, expected);

    let report = move_series(&config, AE, &study_uid, &series_uid).unwrap();
    assert_eq!(
        (report.completed, report.failed, report.warning),
        (20, 0, 0),
        "{report:?}"
    );
    let Event::SeriesComplete {
        instances, folder, ..
    } = h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { .. })
    })
    else {
        unreachable!()
    };
    assert_eq!(instances, 20);
    for file in &files {
        let source = open_file(file).unwrap();
        let sop = meta_instance(&source);
        let stored = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert!(pixel_data(&stored) == pixel_data(&source), "{sop}");
    }

    // A destination pynetdicom does not know: 0xA801 (move destination unknown).
    match move_series(&config, "NOBODY", &study_uid, &series_uid) {
        Err(QueryError::Status {
            operation: "C-MOVE",
            status: 0xA801,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    h.shutdown();
}
