//! Orthanc (Debian's `orthanc` package), a real PACS, as a peer: started on free ports with
//! a temporary configuration (no mock), driven over its REST API by
//! `tests/py/orthanc_peer.py`. `.ci/run` installs it; `PINHOLE_ORTHANC` names another
//! binary.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use dicom_object::open_file;
use pinhole_dicomnet::Event;

use crate::common::*;

/// A running Orthanc, killed on drop.
pub struct Orthanc {
    child: Child,
    pub http_port: u16,
    pub dicom_port: u16,
    _dir: tempfile::TempDir,
}

impl Orthanc {
    /// Starts Orthanc with one modality, `pinhole` = `ae`@127.0.0.1:`port`.
    pub fn start(ae: &str, port: u16) -> Self {
        Self::start_with(ae, port, None)
    }

    /// Starts Orthanc with its DICOMweb plugin (Debian's `orthanc-dicomweb`, or the
    /// library `PINHOLE_ORTHANC_DICOMWEB` names) under `/dicom-web/`.
    pub fn start_with_dicomweb(ae: &str, port: u16) -> Self {
        let plugin = std::env::var("PINHOLE_ORTHANC_DICOMWEB")
            .unwrap_or_else(|_| "/usr/share/orthanc/plugins/libOrthancDicomWeb.so".into());
        assert!(
            Path::new(&plugin).exists(),
            "{plugin} not found: install Debian's orthanc-dicomweb (.ci/run does)"
        );
        Self::start_with(ae, port, Some(&plugin))
    }

    fn start_with(ae: &str, port: u16, dicomweb: Option<&str>) -> Self {
        let binary = std::env::var("PINHOLE_ORTHANC").unwrap_or_else(|_| "Orthanc".into());
        let mut last = String::new();
        // A free port can be taken between probing and Orthanc's bind: try again.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let (http_port, dicom_port) = (free_port(), free_port());
            let config = dir.path().join("orthanc.json");
            let storage = dir.path().join("storage");
            let (http, dicom, port) = (
                http_port.to_string(),
                dicom_port.to_string(),
                port.to_string(),
            );
            let mut args = vec![
                "config",
                config.to_str().unwrap(),
                "--http-port",
                &http,
                "--dicom-port",
                &dicom,
                "--storage",
                storage.to_str().unwrap(),
                "--modality",
                ae,
                "127.0.0.1",
                &port,
            ];
            if let Some(plugin) = dicomweb {
                args.extend(["--dicomweb", plugin]);
            }
            let (code, json) = orthanc_peer(&args);
            assert_eq!(code, 0, "{json}");
            let log = std::fs::File::create(dir.path().join("orthanc.log")).unwrap();
            let child = Command::new(&binary)
                .arg(&config)
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| {
                    panic!("cannot start {binary} ({e}): install Debian's orthanc (.ci/run does)")
                });
            let mut orthanc = Self {
                child,
                http_port,
                dicom_port,
                _dir: dir,
            };
            let (code, json) = orthanc_peer(&["wait", &http_port.to_string()]);
            if code == 0 && orthanc.child.try_wait().unwrap().is_none() {
                return orthanc;
            }
            last = format!(
                "{json}\n{}",
                std::fs::read_to_string(orthanc._dir.path().join("orthanc.log"))
                    .unwrap_or_default()
            );
        }
        panic!("Orthanc did not start: {last}");
    }

    /// Orthanc's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("orthanc.log")).unwrap_or_default()
    }

    pub fn http(&self) -> String {
        self.http_port.to_string()
    }

    /// The DICOMweb root of an Orthanc started with [`Orthanc::start_with_dicomweb`].
    pub fn dicomweb_url(&self) -> String {
        format!("http://127.0.0.1:{}/dicom-web", self.http_port)
    }
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs `tests/py/orthanc_peer.py`; returns its exit code and printed JSON.
pub fn orthanc_peer(args: &[&str]) -> (i32, serde_json::Value) {
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = crate::shared::repo_root().join("tests/py/orthanc_peer.py");
    let out = Command::new(interpreter)
        .arg(script)
        .args(args)
        .output()
        .expect("run tests/py/orthanc_peer.py");
    parse_peer(&args[..args.len().min(2)], out)
}

/// Orthanc's instances: (SOP Instance UID, modality, transfer syntax), sorted.
pub fn orthanc_instances(orthanc: &Orthanc) -> Vec<(String, String, String)> {
    let (code, json) = orthanc_peer(&["instances", &orthanc.http()]);
    assert_eq!(code, 0, "{json}");
    json["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let field = |k: &str| i[k].as_str().unwrap_or_default().to_string();
            (
                field("sop_instance_uid"),
                field("modality"),
                field("transfer_syntax"),
            )
        })
        .collect()
}

fn path_strs(files: &[PathBuf]) -> Vec<&str> {
    files.iter().map(|f| f.to_str().unwrap()).collect()
}

/// The SOP Instance UIDs of the shared series (kept in its file meta groups).
fn series_sop_uids(files: &[PathBuf]) -> Vec<String> {
    let mut uids: Vec<String> = files
        .iter()
        .map(|f| meta_instance(&open_file(f).unwrap()))
        .collect();
    uids.sort();
    uids
}

#[test]
fn orthanc_echoes_and_sends_the_ct_series_to_the_listener() {
    let mut h = Harness::start(|_| {});
    let orthanc = Orthanc::start(AE, h.addr.port());
    let files = ct_files();
    let mut upload = vec!["upload", "--fill-blank-uids"];
    let http = orthanc.http();
    upload.insert(1, &http);
    upload.extend(path_strs(&files));
    let (code, json) = orthanc_peer(&upload);
    assert_eq!(code, 0, "{json}");
    let held = orthanc_instances(&orthanc);
    assert_eq!(
        held.iter().map(|i| i.0.clone()).collect::<Vec<_>>(),
        series_sop_uids(&files)
    );

    // Orthanc's own SCU (DCMTK inside): C-ECHO, then C-STORE of all 20 instances.
    let (code, json) = orthanc_peer(&["send", &http, "pinhole"]);
    assert_eq!(code, 0, "{json}");
    assert_eq!(json["answer"]["FailedInstancesCount"], 0, "{json}");
    let Event::SeriesComplete {
        instances, folder, ..
    } = h.wait_for("SeriesComplete", |e| {
        matches!(e, Event::SeriesComplete { .. })
    })
    else {
        unreachable!()
    };
    assert_eq!(instances, 20);
    h.drain();
    assert!(h.seen.iter().any(|e| matches!(
        e,
        Event::AssociationAccepted { calling_ae, .. } if calling_ae == "ORTHANC"
    )));
    assert!(h.warnings().is_empty(), "{:?}", h.warnings());

    // Every instance arrived with the pixel data bytes of its source file (Orthanc keeps
    // the JPEG 2000 transfer syntax; the listener stores the data set as received).
    for file in &files {
        let source = open_file(file).unwrap();
        let sop = meta_instance(&source);
        let stored = open_file(folder.join(format!("{sop}.dcm"))).unwrap();
        assert_eq!(
            stored.meta().transfer_syntax().trim_end_matches('\0'),
            source.meta().transfer_syntax().trim_end_matches('\0')
        );
        assert!(pixel_data(&stored) == pixel_data(&source), "{sop}");
    }
    h.shutdown();
    assert_no_temporary_files(Path::new(&h.store));

    // Results made on the series as received (real UIDs now) go back: SEG, SR and SC,
    // pushed by pinhole-dicomnet's SCU; Orthanc stores them in the CT's study.
    let results = write_results(&folder, &h.store.with_file_name("results"));
    let config = pinhole_dicomnet::PushConfig::new(
        "PINHOLE",
        "ORTHANC",
        format!("127.0.0.1:{}", orthanc.dicom_port),
    );
    let report = pinhole_dicomnet::push_files(&config, &results, |_| {}).unwrap();
    assert!(
        report
            .files
            .iter()
            .all(|f| matches!(f.outcome, pinhole_dicomnet::Outcome::Success)),
        "{report:#?}"
    );
    let held = orthanc_instances(&orthanc);
    let modalities: Vec<&str> = held.iter().map(|i| i.1.as_str()).collect();
    for modality in ["SEG", "SR", "OT"] {
        assert_eq!(
            modalities.iter().filter(|m| **m == modality).count(),
            1,
            "{held:?}"
        );
    }
    assert_eq!(modalities.iter().filter(|m| **m == "CT").count(), 20);
    let (code, json) = orthanc_peer(&["studies", &http]);
    assert_eq!(code, 0, "{json}");
    // One study holding four series: the CT, the SEG, the SR and the SC.
    assert_eq!(json["studies"].as_array().unwrap().len(), 1, "{json}");
    let series: Vec<&str> = json["studies"][0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["modality"].as_str().unwrap())
        .collect();
    assert_eq!(series.len(), 4, "{json}");
}

/// A SEG (bone: HU > 300), an SR (one point and one length) and an SC (a grey picture) of
/// the series in `series_dir`, written into `out`.
pub fn write_results(series_dir: &Path, out: &Path) -> Vec<PathBuf> {
    use pinhole_io::dicom::{sc, seg, sr};
    std::fs::create_dir_all(out).unwrap();
    let mut files: Vec<PathBuf> = std::fs::read_dir(series_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let ct = pinhole_io::dicom::read_series(
        series_dir,
        &pinhole_io::dicom::DicomOptions::default(),
        &mut |_, _| {},
    )
    .unwrap();
    let hu = ct.volume.to_f32();
    let labels = hu.map(|v| u16::from(v > 300.0));
    let seg_path = out.join("seg.dcm");
    let written = seg::write_segmentation(
        &files,
        &labels,
        &[seg::SegmentSpec::new(1, "bone")],
        &seg::SegOptions::default(),
        &seg_path,
    )
    .unwrap();
    // The series as received has real UIDs: none generated (the SEG joins its study).
    assert!(
        !written.warnings.iter().any(|w| w.contains("UID")),
        "{:?}",
        written.warnings
    );
    let mut group = sr::MeasurementGroup::new("check");
    group.measurements.push(sr::Measurement::new(
        seg::Code::new("410668003", "SCT", "Length"),
        42.5,
        sr::millimeter(),
    ));
    let centre = labels.grid().index_to_world([10.0, 10.0, 5.0]);
    group
        .regions
        .push(sr::Region3d::new(sr::GraphicType3d::Point, vec![centre]));
    let report = sr::MeasurementReport::new(
        seg::Code::new("77477000", "SCT", "Computed Tomography"),
        vec![group],
    );
    let sr_path = out.join("sr.dcm");
    sr::write_measurement_report(&files, &report, &sr::SrOptions::default(), &sr_path).unwrap();
    let picture = sc::RgbPicture::new(256, 128, vec![128; 256 * 128 * 3]);
    let sc_path = out.join("sc.dcm");
    sc::write_secondary_capture(&files, &picture, &sc::ScOptions::default(), &sc_path).unwrap();
    vec![seg_path, sr_path, sc_path]
}
