//! DICOMweb against a real server: Orthanc with Debian's `orthanc-dicomweb` plugin
//! (an independent PS3.18 implementation), started on free ports. The shared CT series
//! goes in by STOW-RS, is found by QIDO-RS, comes back by WADO-RS voxel for voxel, and
//! results made on it (SEG, SR, SC) go back by STOW-RS into its study.

use std::path::PathBuf;

use dicom_dictionary_std::tags;
use dicom_object::open_file;
use pinhole_dicomnet::web::{self, WebConfig, WebError};
use pinhole_dicomnet::{Level, Outcome};

use crate::common::*;
use crate::orthanc::{orthanc_instances, orthanc_peer, write_results, Orthanc};

fn read_volume(dir: &std::path::Path) -> pinhole_io::dicom::DicomSeries {
    pinhole_io::dicom::read_series(
        dir,
        &pinhole_io::dicom::DicomOptions::default(),
        &mut |_, _| {},
    )
    .unwrap()
}

#[test]
fn dicomweb_stores_finds_and_retrieves_with_orthanc() {
    let orthanc = Orthanc::start_with_dicomweb(AE, 1);
    let config = WebConfig::new(orthanc.dicomweb_url());
    let tmp = tempfile::tempdir().unwrap();

    // The shared series has blank UIDs in its data sets: copies with them filled.
    let filled = tmp.path().join("filled");
    let mut args = vec!["fill", filled.to_str().unwrap()];
    let files = ct_files();
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let (code, json) = orthanc_peer(&args);
    assert_eq!(code, 0, "{json}");
    let mut to_store: Vec<PathBuf> = json["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| PathBuf::from(f.as_str().unwrap()))
        .collect();
    let not_dicom = tmp.path().join("notes.txt");
    std::fs::write(&not_dicom, "not DICOM").unwrap();
    to_store.push(not_dicom);

    // STOW-RS in requests of at most 2 MB (several requests), one report per file.
    let mut small = config.clone();
    small.max_request_bytes = 2_000_000;
    let mut heard = 0;
    let report = web::store_files(&small, &to_store, None, &mut |_| heard += 1).unwrap();
    assert_eq!(heard, 21);
    assert_eq!(
        (report.total, report.succeeded, report.not_sent),
        (21, 20, 1),
        "{report:#?}"
    );
    assert!(report.requests > 1, "{}", report.summary());
    let refused = &report.files[20];
    assert_eq!(refused.outcome, Outcome::NotSent);
    assert!(refused
        .error
        .as_deref()
        .unwrap()
        .contains("not a DICOM Part-10 file"));
    let held = orthanc_instances(&orthanc);
    assert_eq!(held.len(), 20);
    assert!(held.iter().all(|i| i.1 == "CT"));

    // QIDO-RS: the study, then its CT series with 20 instances.
    let studies = web::search(&config, Level::Study, &[], &[tags::STUDY_INSTANCE_UID]).unwrap();
    assert_eq!(studies.len(), 1);
    let study_uid = studies[0]
        .get(tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_string();
    let keys = [
        (tags::STUDY_INSTANCE_UID, study_uid.clone()),
        (tags::MODALITY, "CT".to_string()),
    ];
    let include = [
        tags::SERIES_INSTANCE_UID,
        tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
    ];
    let series = web::search(&config, Level::Series, &keys, &include).unwrap();
    assert_eq!(series.len(), 1);
    assert_eq!(
        series[0].get(tags::NUMBER_OF_SERIES_RELATED_INSTANCES),
        Some("20")
    );
    let series_uid = series[0]
        .get(tags::SERIES_INSTANCE_UID)
        .unwrap()
        .to_string();
    let mr = [(tags::MODALITY, "MR".to_string())];
    assert!(web::search(&config, Level::Series, &mr, &[])
        .unwrap()
        .is_empty());
    let mut one = config.clone();
    one.max_matches = 1;
    let all_studies_again = web::search(&one, Level::Study, &[], &[]).unwrap();
    assert_eq!(all_studies_again.len(), 1);

    // WADO-RS: the series into the listener's layout, read back voxel for voxel.
    let store = tmp.path().join("store");
    let mut stored = Vec::new();
    let retrieved = web::retrieve_series(&config, &study_uid, &series_uid, &store, &mut |s| {
        stored.push(s.path.clone())
    })
    .unwrap();
    assert_eq!(retrieved.stored, 20, "{}", retrieved.summary());
    assert!(retrieved.refused.is_empty(), "{:?}", retrieved.refused);
    let folder = store.join(&study_uid).join(&series_uid);
    assert!(stored.iter().all(|p| p.parent() == Some(folder.as_path())));
    let source = read_volume(&filled);
    let back = read_volume(&folder);
    assert_eq!(back.volume.grid(), source.volume.grid());
    assert_eq!(back.volume.to_f32().data(), source.volume.to_f32().data());
    // Asked for in its stored transfer syntax (`transfer-syntax=*`): the JPEG 2000
    // pixel data bytes of every source file, untouched.
    for file in std::fs::read_dir(&filled).unwrap() {
        let source = open_file(file.unwrap().path()).unwrap();
        let sop = meta_instance(&source);
        let back = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert_eq!(
            back.meta().transfer_syntax(),
            source.meta().transfer_syntax()
        );
        assert!(pixel_data(&back) == pixel_data(&source), "{sop}");
    }
    assert_no_temporary_files(&store);

    // Results on the retrieved series go back by STOW-RS into the CT's study.
    let results = write_results(&folder, &tmp.path().join("results"));
    let report = web::store_files(&config, &results, None, &mut |_| {}).unwrap();
    assert!(report.all_stored(), "{report:#?}");
    let held = orthanc_instances(&orthanc);
    for modality in ["SEG", "SR", "OT"] {
        assert_eq!(
            held.iter().filter(|i| i.1 == modality).count(),
            1,
            "{held:?}"
        );
    }
    let (code, json) = orthanc_peer(&["studies", &orthanc.http()]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["studies"].as_array().unwrap().len(), 1, "{json}");

    // A series the server does not hold: its HTTP error, naming the URL.
    let err =
        web::retrieve_series(&config, &study_uid, "1.2.3.4", &store, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, WebError::Status { status: 404, url, .. } if url.contains("1.2.3.4")),
        "{err}"
    );
}

/// Nothing listening: a transport error naming the URL, not a hang or a panic.
#[test]
fn dicomweb_without_a_server_is_a_transport_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = WebConfig::new(format!("http://127.0.0.1:{port}/dicom-web"));
    config.timeout = std::time::Duration::from_secs(5);
    let err = web::search(&config, Level::Study, &[], &[]).unwrap_err();
    assert!(
        matches!(&err, WebError::Transport { url, .. } if url.ends_with("/studies")),
        "{err}"
    );
}

/// HTTPS with a site's own certificate authority (`tests/py/https_peer.py`: a CA and a
/// server certificate for 127.0.0.1 it signs): trusted when the CA is given as
/// `trusted_certificates_pem`, refused (unknown issuer) with the Mozilla roots.
#[test]
fn dicomweb_over_https_trusts_the_sites_own_certificate_authority() {
    use std::io::BufRead;
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("site-ca.pem");
    let python = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut child = std::process::Command::new(python)
        .arg(crate::shared::repo_root().join("tests/py/https_peer.py"))
        .arg(&cert)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = serde_json::from_str::<serde_json::Value>(&line).unwrap()["port"]
        .as_u64()
        .unwrap();
    let url = format!("https://127.0.0.1:{port}/dicom-web");
    let mut trusted = WebConfig::new(&url);
    trusted.trusted_certificates_pem = Some(std::fs::read(&cert).unwrap());
    let found = web::search(&trusted, Level::Study, &[], &[]);
    let mozilla = web::search(&WebConfig::new(&url), Level::Study, &[], &[]);
    let mut not_pem = WebConfig::new(&url);
    not_pem.trusted_certificates_pem = Some(b"not a certificate".to_vec());
    let refused = web::search(&not_pem, Level::Study, &[], &[]);
    let _ = child.kill();
    let _ = child.wait();
    let found = found.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].get(tags::STUDY_INSTANCE_UID), Some("1.2.3.4.5"));
    let err = mozilla.unwrap_err();
    assert!(matches!(err, WebError::Transport { .. }), "{err}");
    assert!(
        err.to_string().to_ascii_lowercase().contains("certificate")
            || err.to_string().to_ascii_lowercase().contains("issuer"),
        "{err}"
    );
    assert!(
        matches!(
            refused,
            Err(WebError::Config {
                field: "trusted_certificates_pem",
                ..
            })
        ),
        "{refused:?}"
    );
}
