//! `pinhole dicom listen`: the binary receives a real CT series from pynetdicom (the
//! independent peer, `tests/py/dicom_net_peer.py`), prints JSON events, and the stored
//! series reads back as the same volume as the source files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::common::{repo_root, shared_data};
use super::serve::{free_port, http_get_with_status};

/// Kills the listener when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's stream, read on a thread until the child closes it: lines
/// nobody receives any more are read and dropped, never left to fill the pipe or to
/// close it under a child that still writes (regression: the listener's stderr reader
/// stopped after the banner, and the listener's next line then hit a closed pipe).
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let _ = send.send(line);
        }
    });
    receive
}

fn next_matching(
    lines: &mpsc::Receiver<String>,
    what: &str,
    wanted: impl Fn(&str) -> bool,
) -> String {
    loop {
        match lines.recv_timeout(Duration::from_secs(120)) {
            Ok(line) if wanted(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no {what} from `pinhole dicom listen`: {e}"),
        }
    }
}

#[test]
fn dicom_listen_receives_a_series_from_pynetdicom() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("incoming");
    let site = dir.path().join("site");
    let (_running, stdout, port) =
        start_listener(&store, "PINHOLE_T", &["--record", site.to_str().unwrap()]);

    let source = shared_data("dicom-ct-series");
    let mut slices: Vec<_> = std::fs::read_dir(&source)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    slices.sort();
    let python = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let peer = repo_root().join("tests/py/dicom_net_peer.py");
    let echo = Command::new(&python)
        .arg(&peer)
        .args(["echo", "127.0.0.1", &port, "PINHOLE_T"])
        .output()
        .unwrap();
    if !echo.status.success() {
        let events: Vec<String> =
            std::iter::from_fn(|| stdout.recv_timeout(Duration::from_secs(2)).ok()).collect();
        panic!(
            "{}{}\nlistener events: {events:#?}",
            String::from_utf8_lossy(&echo.stdout),
            String::from_utf8_lossy(&echo.stderr)
        );
    }
    let sent = Command::new(&python)
        .arg(&peer)
        .args([
            "store",
            "127.0.0.1",
            &port,
            "PINHOLE_T",
            "--fill-blank-uids",
        ])
        .args(&slices)
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );

    let complete = next_matching(&stdout, "series_complete event", |l| {
        l.contains("\"series_complete\"")
    });
    let event: serde_json::Value = serde_json::from_str(&complete).unwrap();
    assert_eq!(event["instances"].as_u64().unwrap() as usize, slices.len());
    let folder = std::path::PathBuf::from(event["folder"].as_str().unwrap());
    assert!(folder.starts_with(&store), "{folder:?}");

    // --record: the series is in the site's case record, not assigned to a case, with
    // the modality of its files (recorded right after the event is printed).
    let site_arg = site.to_str().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let recorded = loop {
        let listing: serde_json::Value = serde_json::from_str(&super::pinhole_ok(&[
            "cases", "list", "--site", site_arg, "--json",
        ]))
        .unwrap();
        let studies = listing["unassigned_studies"].as_array().unwrap().clone();
        if !studies.is_empty() || std::time::Instant::now() > deadline {
            break studies;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0]["series_uid"], event["series_uid"]);
    assert_eq!(recorded[0]["study_uid"], event["study_uid"]);
    assert_eq!(
        recorded[0]["instances"].as_u64().unwrap() as usize,
        slices.len()
    );
    assert_eq!(recorded[0]["modality"], "CT");
    assert_eq!(recorded[0]["folder"], event["folder"]);
    let text = super::pinhole_ok(&["cases", "list", "--site", site_arg]);
    assert!(
        text.contains("received series not assigned to a case (1)"),
        "{text}"
    );
    // Then given to a case made for it: it leaves the unassigned list for the case.
    let case = super::pinhole_ok(&["cases", "create", "--site", site_arg, "--label", "room 2"]);
    let case = case.trim();
    let series_uid = event["series_uid"].as_str().unwrap();
    let assigned = super::pinhole_ok(&[
        "cases", "assign", case, "--site", site_arg, "--series", series_uid,
    ]);
    assert!(
        assigned.contains(&format!("to case {case} (1 received copy)")),
        "{assigned}"
    );
    let shown: serde_json::Value = serde_json::from_str(&super::pinhole_ok(&[
        "cases", "show", case, "--site", site_arg, "--json",
    ]))
    .unwrap();
    let studies = shown["case"]["studies"].as_array().unwrap();
    assert_eq!(studies.len(), 1, "{shown}");
    assert_eq!(studies[0]["series_uid"], event["series_uid"]);
    let listing: serde_json::Value = serde_json::from_str(&super::pinhole_ok(&[
        "cases", "list", "--site", site_arg, "--json",
    ]))
    .unwrap();
    assert_eq!(listing["unassigned_studies"], serde_json::json!([]));
    let out = super::pinhole(&[
        "cases", "assign", case, "--site", site_arg, "--series", series_uid,
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already belongs to case"));
    // Still serving after writing "recorded series …" to its closed stderr.
    let again = Command::new(&python)
        .arg(&peer)
        .args(["echo", "127.0.0.1", &port, "PINHOLE_T"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // The stored series is the same volume as the source files (the independent
    // check of the voxels is pynetdicom + dicom-rs in crates/dicomnet's tests).
    let info = |path: &std::path::Path| -> serde_json::Value {
        let out = super::pinhole_ok(&["info", path.to_str().unwrap(), "--json"]);
        serde_json::from_str(&out).unwrap()
    };
    let (ours, theirs) = (info(&folder), info(&source));
    for key in [
        "dims",
        "spacing_mm",
        "origin_lps",
        "direction",
        "scalar_type",
        "min",
        "max",
    ] {
        assert_eq!(ours[key], theirs[key], "{key}");
    }
}

#[test]
fn dicom_listen_refuses_to_record_into_a_case_the_record_does_not_hold() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    let out = super::pinhole(&[
        "dicom",
        "listen",
        "--port",
        "0",
        "--store",
        dir.path().join("incoming").to_str().unwrap(),
        "--record",
        site.to_str().unwrap(),
        "--case",
        "7",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no case 7"), "{stderr}");
}

/// Starts `pinhole dicom listen` on a free port with `extra` arguments; its stdout lines,
/// and the port. With `--record` in `extra` its stderr is closed after the banner.
fn start_listener(
    store: &std::path::Path,
    ae: &str,
    extra: &[&str],
) -> (Running, mpsc::Receiver<String>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["dicom", "listen", "--port", "0", "--ae-title", ae, "--json"])
        .args(["--series-quiet-s", "1", "--store", store.to_str().unwrap()])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = child.stderr.take().unwrap();
    let running = Running(child);
    let banner = if extra.contains(&"--record") {
        // Regression: a listener whose stderr reader went away died at its next line on
        // stderr. Read up to the banner, then close the pipe under it: the listener's
        // later lines (the record's, "recorded series …") go nowhere and it goes on.
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains(" on 127.0.0.1:"))
            .expect("no address from `pinhole dicom listen`")
    } else {
        let stderr = lines_of(stderr);
        next_matching(&stderr, "address", |l| l.contains(" on 127.0.0.1:"))
    };
    let port = banner
        .split(" on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();
    (running, stdout, port)
}

#[test]
fn dicom_push_sends_a_series_to_dicom_listen() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("incoming");
    let (_running, events, port) = start_listener(&store, "PINHOLE_P", &[]);
    let to = format!("PINHOLE_P@127.0.0.1:{port}");

    let echo = super::pinhole_ok(&["dicom", "echo", "--to", &to]);
    assert!(
        echo.starts_with(&format!("C-ECHO {to}: success in ")),
        "{echo}"
    );

    // The series folder, and a folder with a stray non-DICOM file (skipped, warned).
    let source = shared_data("dicom-ct-series");
    let extra = dir.path().join("extra");
    std::fs::create_dir_all(extra.join("nested")).unwrap();
    std::fs::write(extra.join("nested/notes.txt"), "not DICOM\n").unwrap();
    let out = super::pinhole(&[
        "dicom",
        "push",
        "--to",
        &to,
        "--fill-blank-uids",
        source.to_str().unwrap(),
        extra.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.trim().starts_with(&format!(
            "20 of 20 file(s) stored by {to} (20 success, 0 warning, 0 failed, 0 not sent)"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: skipped")
            && stderr.contains("notes.txt: not a DICOM Part-10 file"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("blank UIDs filled").count(), 20, "{stderr}");
    let complete = next_matching(&events, "series_complete event", |l| {
        l.contains("\"series_complete\"")
    });
    let event: serde_json::Value = serde_json::from_str(&complete).unwrap();
    assert_eq!(event["instances"], 20);

    // Without --fill-blank-uids the de-identified slices are refused: nonzero exit,
    // a line per file, the summary, and the JSON report with --json.
    let slice = std::fs::read_dir(&source)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let out = super::pinhole(&[
        "dicom",
        "push",
        "--to",
        &to,
        "--json",
        slice.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("blank SOP Class UID") && stderr.contains("1 of 1 file(s) not stored"),
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["total"].as_u64(), report["not_sent"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["files"][0]["outcome"], "not_sent");

    // A malformed destination is refused by the argument parser, naming the form.
    let out = super::pinhole(&[
        "dicom",
        "push",
        "--to",
        "127.0.0.1:104",
        slice.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AE@HOST:PORT"));
}

/// Orthanc (Debian's `orthanc`; `PINHOLE_ORTHANC` names another binary) on free ports,
/// configured by `tests/py/orthanc_peer.py` with one modality, `ae`@127.0.0.1:`port`,
/// and holding the shared CT series; its DICOM and HTTP ports. Killed on drop. With
/// `dicomweb`, its DICOMweb plugin (Debian's `orthanc-dicomweb`) serves `/dicom-web/`.
fn start_orthanc(
    dir: &std::path::Path,
    ae: &str,
    port: u16,
    dicomweb: bool,
) -> (Running, u16, String) {
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (http, dicom) = (free().to_string(), free());
    let peer = |args: &[&str]| {
        orthanc_peer(args);
    };
    let config = dir.join("orthanc.json");
    let storage = dir.join("orthanc-storage");
    let (dicom_text, port_text) = (dicom.to_string(), port.to_string());
    let plugin = std::env::var("PINHOLE_ORTHANC_DICOMWEB")
        .unwrap_or_else(|_| "/usr/share/orthanc/plugins/libOrthancDicomWeb.so".into());
    let mut args = vec![
        "config",
        config.to_str().unwrap(),
        "--http-port",
        &http,
        "--dicom-port",
        &dicom_text,
        "--storage",
        storage.to_str().unwrap(),
        "--modality",
        ae,
        "127.0.0.1",
        &port_text,
    ];
    if dicomweb {
        args.extend(["--dicomweb", &plugin]);
    }
    peer(&args);
    let binary = std::env::var("PINHOLE_ORTHANC").unwrap_or_else(|_| "Orthanc".into());
    let child = Command::new(&binary)
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {binary} ({e}): install Debian's orthanc"));
    let running = Running(child);
    peer(&["wait", &http]);
    let mut upload = vec![
        "upload".to_string(),
        http.clone(),
        "--fill-blank-uids".into(),
    ];
    let source = shared_data("dicom-ct-series");
    for entry in std::fs::read_dir(&source).unwrap() {
        upload.push(entry.unwrap().path().to_str().unwrap().to_string());
    }
    peer(&upload.iter().map(String::as_str).collect::<Vec<_>>());
    (running, dicom, http)
}

/// `tests/py/orthanc_peer.py ARGS` (asserting success): its JSON answer.
fn orthanc_peer(args: &[&str]) -> serde_json::Value {
    let python = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = Command::new(&python)
        .arg(repo_root().join("tests/py/orthanc_peer.py"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "orthanc_peer.py {:?}: {stdout}{}",
        &args[..1],
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or(serde_json::Value::Null)
}

/// The loop against a real PACS: query Orthanc, pull the CT series from it, plan
/// a needle path on the pulled series, write the label map, the plan and its picture as
/// SEG, SR and SC, push them back; Orthanc files them in the study of the series.
#[test]
fn dicom_find_pull_plan_and_push_results_back_to_orthanc() {
    let dir = tempfile::tempdir().unwrap();
    let listener_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (_orthanc, dicom_port, http) = start_orthanc(dir.path(), "PINHOLE_Q", listener_port, false);
    let from = format!("ORTHANC@127.0.0.1:{dicom_port}");

    // Studies, as a table: one row, no patient column.
    let table = super::pinhole_ok(&[
        "dicom",
        "find",
        "--from",
        &from,
        "--calling-ae",
        "PINHOLE_Q",
    ]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].starts_with("StudyInstanceUID"), "{table}");
    assert!(!lines[0].contains("Patient"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row.last(), Some(&"20"), "{table}");
    assert!(row.contains(&"CT"), "{table}");

    // Series, as JSON, matching on the modality.
    let json = super::pinhole_ok(&[
        "dicom",
        "find",
        "--from",
        &from,
        "--calling-ae",
        "PINHOLE_Q",
        "--level",
        "series",
        "--modality",
        "CT",
        "--json",
    ]);
    let found: serde_json::Value = serde_json::from_str(&json).unwrap();
    let matches = found["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{json}");
    assert_eq!(matches[0]["Modality"], "CT");
    assert_eq!(matches[0]["NumberOfSeriesRelatedInstances"], "20");
    assert_eq!(matches[0]["StudyInstanceUID"], row[0]);
    assert!(matches[0].get("PatientName").is_none(), "{json}");
    let series = matches[0]["SeriesInstanceUID"].as_str().unwrap();

    // Pull: the in-process listener receives the 20 instances of the series.
    let store = dir.path().join("pulled");
    let out = super::pinhole(&[
        "dicom",
        "pull",
        "--from",
        &from,
        "--series-uid",
        series,
        "--store",
        store.to_str().unwrap(),
        "--ae-title",
        "PINHOLE_Q",
        "--port",
        &listener_port.to_string(),
        "--bind",
        "127.0.0.1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("20 completed, 0 failed, 0 warning"),
        "{stdout}"
    );
    let folder = store.join(row[0]).join(series);
    assert!(
        stdout.contains(&format!(
            "series folder: {} (20 instance(s))",
            folder.display()
        )),
        "{stdout}"
    );
    let files = std::fs::read_dir(&folder).unwrap().count();
    assert_eq!(files, 20);

    // The same series by C-GET: back on the query's association, no listener.
    let got = dir.path().join("got");
    let out = super::pinhole_ok(&[
        "dicom",
        "pull",
        "--get",
        "--from",
        &from,
        "--series-uid",
        series,
        "--store",
        got.to_str().unwrap(),
        "--ae-title",
        "PINHOLE_Q",
    ]);
    assert!(out.contains("C-GET of series"), "{out}");
    assert!(out.contains("20 completed, 0 failed, 0 warning"), "{out}");
    let got_folder = got.join(row[0]).join(series);
    assert_eq!(std::fs::read_dir(&got_folder).unwrap().count(), 20);
    for entry in std::fs::read_dir(&folder).unwrap() {
        let moved = entry.unwrap().path();
        let by_get = got_folder.join(moved.file_name().unwrap());
        assert_eq!(
            std::fs::read(&moved).unwrap(),
            std::fs::read(&by_get).unwrap()
        );
    }

    // Plan on the pulled series, results as DICOM, pushed back to Orthanc.
    let results = super::dicom_export::plan_and_export(&folder, dir.path());
    let pushed = super::pinhole_ok(&[
        "dicom",
        "push",
        "--to",
        &from,
        "--calling-ae",
        "PINHOLE_Q",
        results.seg.to_str().unwrap(),
        results.sr.to_str().unwrap(),
        results.sc.to_str().unwrap(),
    ]);
    assert!(pushed.contains("3 of 3 file(s) stored"), "{pushed}");
    let index = orthanc_peer(&["studies", &http]);
    let studies = index["studies"].as_array().unwrap();
    assert_eq!(studies.len(), 1, "{index}");
    assert_eq!(studies[0]["study_uid"], row[0]);
    let mut held: Vec<(String, u64)> = studies[0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["modality"].as_str().unwrap().to_string(),
                s["instances"].as_u64().unwrap(),
            )
        })
        .collect();
    held.sort();
    let expected = [("CT", 20), ("OT", 1), ("SEG", 1), ("SR", 1)]
        .map(|(m, n)| (m.to_string(), n))
        .to_vec();
    assert_eq!(held, expected, "{index}");

    // A series the PACS does not hold: nonzero exit, said so.
    let out = super::pinhole(&[
        "dicom",
        "pull",
        "--from",
        &from,
        "--series-uid",
        "1.2.3.4",
        "--store",
        store.to_str().unwrap(),
        "--ae-title",
        "PINHOLE_Q",
        "--port",
        &listener_port.to_string(),
        "--bind",
        "127.0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("has no series 1.2.3.4"), "{stderr}");
}

/// The same loop over DICOMweb (Orthanc's plugin, an independent PS3.18 server):
/// `find`, `pull` and `push` given `http://…/dicom-web` run QIDO-RS, WADO-RS and
/// STOW-RS; the pulled series is voxel for voxel the source, the results land in its
/// study. Options that do not apply are refused with a reason.
#[test]
fn dicom_find_pull_plan_and_push_results_back_over_dicomweb() {
    let dir = tempfile::tempdir().unwrap();
    let (_orthanc, _, http) = start_orthanc(dir.path(), "PINHOLE_W", 1, true);
    let from = format!("http://127.0.0.1:{http}/dicom-web/");

    let table = super::pinhole_ok(&["dicom", "find", "--from", &from]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(!lines[0].contains("Patient"), "{table}");
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(row.last(), Some(&"20"), "{table}");
    let study = row[0];
    let json = super::pinhole_ok(&[
        "dicom",
        "find",
        "--from",
        &from,
        "--level",
        "series",
        "--modality",
        "CT",
        "--json",
    ]);
    let found: serde_json::Value = serde_json::from_str(&json).unwrap();
    let matches = found["matches"].as_array().unwrap();
    assert_eq!(matches.len(), 1, "{json}");
    assert_eq!(matches[0]["StudyInstanceUID"], study);
    assert_eq!(matches[0]["NumberOfSeriesRelatedInstances"], "20");
    assert!(matches[0].get("PatientName").is_none(), "{json}");
    let series = matches[0]["SeriesInstanceUID"].as_str().unwrap();

    // WADO-RS (the study found by QIDO-RS), read back as the source reads.
    let store = dir.path().join("pulled");
    let pulled = super::pinhole_ok(&[
        "dicom",
        "pull",
        "--from",
        &from,
        "--series-uid",
        series,
        "--store",
        store.to_str().unwrap(),
    ]);
    assert!(
        pulled.contains("20 instance(s) stored, 0 refused"),
        "{pulled}"
    );
    let folder = store.join(study).join(series);
    // (Voxel for voxel and byte for byte: pinhole-dicomnet's DICOMweb test.)
    let ours = super::info_json(&folder, &[]);
    let source = super::info_json(&shared_data("dicom-ct-series"), &[]);
    for key in ["dims", "spacing_mm", "ijk_to_lps", "min", "max"] {
        assert_eq!(ours[key], source[key], "{key}");
    }

    // Plan on the pulled series; SEG, SR and SC back by STOW-RS into its study.
    let results = super::dicom_export::plan_and_export(&folder, dir.path());
    let files = [&results.seg, &results.sr, &results.sc].map(|p| p.to_str().unwrap());
    let mut push = vec!["dicom", "push", "--to", &from];
    push.extend(files);
    let pushed = super::pinhole_ok(&push);
    assert!(pushed.contains("3 of 3 file(s) stored"), "{pushed}");
    let index = orthanc_peer(&["studies", &http]);
    let studies = index["studies"].as_array().unwrap();
    assert_eq!(studies.len(), 1, "{index}");
    let mut held: Vec<&str> = studies[0]["series"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["modality"].as_str().unwrap())
        .collect();
    held.sort();
    assert_eq!(held, ["CT", "OT", "SEG", "SR"], "{index}");

    // Refused with reasons: de-identifying over STOW-RS, an unset credential variable,
    // --auth-env with a DIMSE node, credentials in the URL.
    let refused = |args: &[&str], expected: &str| {
        let out = super::pinhole(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    };
    let seg = results.seg.to_str().unwrap();
    refused(
        &["dicom", "push", "--to", &from, "--fill-blank-uids", seg],
        "not offered with a DICOMweb destination",
    );

    // STOW-RS --deidentify: Orthanc holds exactly the instances `pinhole dicom
    // deidentify` writes with the same key (the same new UIDs).
    let identified = dir.path().join("identified");
    super::common::python_json(
        "deidentify_peer.py",
        &[
            "make",
            shared_data("dicom-ct-series").to_str().unwrap(),
            identified.to_str().unwrap(),
        ],
    );
    let key = dir.path().join("key.txt");
    std::fs::write(&key, "a site secret\n").unwrap();
    let report = push_deidentified(&from, &key, &identified);
    let sent: std::collections::BTreeSet<String> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .inspect(|f| assert_eq!(f["deidentified"], true))
        .map(|f| f["sop_instance_uid"].as_str().unwrap().to_string())
        .collect();
    let written = deidentify_into(&key, &identified, &dir.path().join("deid"));
    let expected: std::collections::BTreeSet<String> = super::dicom_export::dicom_tree(&written)
        .iter()
        .map(|p| {
            std::path::Path::new(p)
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(sent, expected);
    let held = orthanc_peer(&["instances", &http]);
    let held: std::collections::BTreeSet<String> = held["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["sop_instance_uid"].as_str().unwrap().to_string())
        .collect();
    assert!(
        expected.is_subset(&held),
        "Orthanc lacks de-identified instances"
    );
    refused(
        &[
            "dicom",
            "find",
            "--from",
            &from,
            "--auth-env",
            "PINHOLE_TEST_UNSET_VARIABLE",
        ],
        "the variable is not set",
    );
    refused(
        &[
            "dicom",
            "find",
            "--from",
            "PACS@127.0.0.1:1",
            "--auth-env",
            "HOME",
        ],
        "apply to a DICOMweb node",
    );
    refused(
        &[
            "dicom",
            "find",
            "--from",
            "http://user:secret@127.0.0.1:1/dicom-web",
        ],
        "credentials in the URL are refused",
    );
}

/// `pinhole dicom deidentify --key-file KEY --out OUT IDENTIFIED`; OUT.
fn deidentify_into(
    key: &std::path::Path,
    identified: &std::path::Path,
    out: &std::path::Path,
) -> std::path::PathBuf {
    super::pinhole_ok(&[
        "dicom",
        "deidentify",
        "--key-file",
        key.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        identified.to_str().unwrap(),
    ]);
    out.to_path_buf()
}

/// `pinhole dicom push --to TO --deidentify --key-file KEY --json IDENTIFIED`, which must
/// store all 20 files de-identified; its JSON report.
fn push_deidentified(
    to: &str,
    key: &std::path::Path,
    identified: &std::path::Path,
) -> serde_json::Value {
    let out = super::pinhole(&[
        "dicom",
        "push",
        "--to",
        to,
        "--deidentify",
        "--key-file",
        key.to_str().unwrap(),
        "--json",
        identified.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("de-identified before sending"), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["succeeded"], 20, "{report}");
    report
}

/// `pinhole dicom push --deidentify`: the listener stores exactly what `pinhole dicom
/// deidentify` writes with the same key (the same files under the same new UIDs, the
/// same layout), with none of the series' identity and its pixel data untouched.
#[test]
fn dicom_push_deidentify_stores_what_dicom_deidentify_writes() {
    let dir = tempfile::tempdir().unwrap();
    let identified = dir.path().join("identified");
    let series = shared_data("dicom-ct-series");
    super::common::python_json(
        "deidentify_peer.py",
        &[
            "make",
            series.to_str().unwrap(),
            identified.to_str().unwrap(),
        ],
    );
    let key = dir.path().join("key.txt");
    std::fs::write(&key, "another site secret\n").unwrap();
    let store = dir.path().join("incoming");
    let (_running, events, port) = start_listener(&store, "PINHOLE_D", &[]);
    let to = format!("PINHOLE_D@127.0.0.1:{port}");
    let report = push_deidentified(&to, &key, &identified);
    assert!(report["files"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["deidentified"] == true));
    next_matching(&events, "series_complete event", |l| {
        l.contains("\"series_complete\"")
    });
    let written = deidentify_into(&key, &identified, &dir.path().join("deid"));
    let stored = super::dicom_export::dicom_tree(&store);
    assert_eq!(stored.len(), 20);
    assert_eq!(stored, super::dicom_export::dicom_tree(&written));
    let peer = super::common::python_json(
        "deidentify_peer.py",
        &[
            "compare",
            identified.to_str().unwrap(),
            store.to_str().unwrap(),
        ],
    );
    assert_eq!(peer["identity_left"], serde_json::json!([]), "{peer}");
    assert_eq!(peer["mismatches"], serde_json::json!([]), "{peer}");
    assert_eq!(peer["pixels_equal"], 20, "{peer}");
    assert_eq!(peer["links_kept"], 19, "{peer}");
}

/// `pinhole dicom listen --feed-control-ct`: a CT series pushed to the listener reaches a
/// running `pinhole serve` as a control scan, which registers it to the planning CT (here
/// the same series, so it must converge) and looks for the needle (there is none).
#[test]
fn dicom_listen_feeds_a_complete_ct_series_to_a_running_session() {
    let dir = tempfile::tempdir().unwrap();
    let series = shared_data("dicom-ct-series");
    let ct = dir.path().join("ct.nii.gz");
    super::pinhole_ok(&["convert", series.to_str().unwrap(), ct.to_str().unwrap()]);
    let info: serde_json::Value = serde_json::from_str(&super::pinhole_ok(&[
        "info",
        ct.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    let centre: Vec<f64> = (0..3)
        .map(|a| {
            info["origin_lps"][a].as_f64().unwrap()
                + info["spacing_mm"][a].as_f64().unwrap()
                    * (info["dims"][a].as_f64().unwrap() - 1.0)
                    / 2.0
        })
        .collect();
    let entry = [centre[0] - 30.0, centre[1] - 60.0, centre[2]];
    let plan = dir.path().join("plan.json");
    std::fs::write(
        &plan,
        serde_json::json!({"target_lps": centre, "paths": [{"entry_lps": entry, "target_lps": centre}]})
            .to_string(),
    )
    .unwrap();
    // A label map on the series' grid (bone and a box) and its table: serve needs them.
    let labels = dir.path().join("labels.nii.gz");
    super::common::python_json(
        "seg_reference.py",
        &[
            "make-labels",
            ct.to_str().unwrap(),
            labels.to_str().unwrap(),
        ],
    );
    let table = dir.path().join("table.csv");
    std::fs::write(
        &table,
        "id,name,r,g,b\n1,bone,241,214,145\n2,target_box,255,0,0\n",
    )
    .unwrap();
    let (igtl, http) = (free_port(), free_port());
    let serve = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args(["serve", "--ct", ct.to_str().unwrap(), "--plan"])
        .arg(&plan)
        .arg("--labels")
        .arg(&labels)
        .arg("--labels-table")
        .arg(&table)
        .args([
            "--igtl-port",
            &igtl.to_string(),
            "--http-port",
            &http.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut serve = Running(serve);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::net::TcpStream::connect(("127.0.0.1", http)).is_err() {
        assert!(
            serve.0.try_wait().unwrap().is_none(),
            "pinhole serve exited"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "pinhole serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(http_get_with_status(http, "/api/control-ct/latest").0, 204);

    let store = dir.path().join("incoming");
    let url = format!("http://127.0.0.1:{http}");
    let (_listener, events, port) =
        start_listener(&store, "PINHOLE_F", &["--feed-control-ct", &url]);
    let to = format!("PINHOLE_F@127.0.0.1:{port}");
    super::pinhole_ok(&[
        "dicom",
        "push",
        "--to",
        &to,
        "--fill-blank-uids",
        series.to_str().unwrap(),
    ]);
    next_matching(&events, "series_complete event", |l| {
        l.contains("\"series_complete\"")
    });
    let latest = loop {
        let (status, body) = http_get_with_status(http, "/api/control-ct/latest");
        if status == 200 {
            let latest: serde_json::Value = serde_json::from_str(&body).unwrap();
            if latest["state"] != "processing" {
                break latest;
            }
        }
        assert!(
            std::time::Instant::now() < deadline + Duration::from_secs(120),
            "no control scan checked: {status} {body}"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(latest["seq"], 1, "{latest}");
    assert_eq!(latest["state"], "done", "{latest}");
    assert_eq!(latest["alignment"]["converged"], true, "{latest}");
    assert_eq!(latest["findings"]["found"], false, "{latest}");
    assert_eq!(
        latest["control_dims"],
        serde_json::json!([512, 512, 20]),
        "{latest}"
    );
}

/// `dicom listen --on-complete`: the shared series pushed to the listener starts a needle
/// plan on the received series as soon as it is complete; the plan and the command's log
/// land beside the series in the store. A series of another modality than the filter
/// runs nothing (the filter here names MR only for a second listener).
/// Pushes the shared series (blank UIDs filled) to the listener at `to`; the series'
/// folder once the listener says it is complete.
fn push_series_until_complete(to: &str, events: &mpsc::Receiver<String>) -> std::path::PathBuf {
    let source = shared_data("dicom-ct-series");
    super::pinhole_ok(&[
        "dicom",
        "push",
        "--to",
        to,
        "--fill-blank-uids",
        source.to_str().unwrap(),
    ]);
    let complete = next_matching(events, "series_complete event", |l| {
        l.contains("\"series_complete\"")
    });
    let event: serde_json::Value = serde_json::from_str(&complete).unwrap();
    std::path::PathBuf::from(event["folder"].as_str().unwrap())
}

/// Where an `--on-complete '… --out {folder}.plan'` command puts its plan, and its log.
fn beside_series(folder: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let name = folder.file_name().unwrap().to_string_lossy().into_owned();
    (
        folder.with_file_name(format!("{name}.plan/plan.json")),
        folder.with_file_name(format!("{name}.on-complete.log")),
    )
}

/// Waits up to 180 s for `plan`; its report, which must hold paths.
fn wait_for_plan(plan: &std::path::Path) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    while !plan.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = std::fs::read_to_string(plan)
        .unwrap_or_else(|e| panic!("no plan at {}: {e}", plan.display()));
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(!report["paths"].as_array().unwrap().is_empty(), "{report}");
    report
}

/// `--on-complete` with `{seg}`: the CT completes first and its command waits; the
/// Segmentation written on the received series (`pinhole dicom seg`, so it references
/// that series) arrives next, and the plan runs on the CT with the SEG's segments as
/// its labels.
#[test]
fn dicom_listen_plans_with_the_segmentation_that_arrives_after_its_ct() {
    let dir = tempfile::tempdir().unwrap();
    super::dicom_export::labels_on_the_series(dir.path(), None);
    let table = super::dicom_export::write_table(dir.path());
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, super::dicom_export::TEST_PROFILE).unwrap();
    let command = format!(
        "'{}' plan needle --ct {{folder}} --labels {{seg}} --procedure liver-biopsy \
         --profile '{}' --target target_box --top 2 --out {{folder}}.plan",
        env!("CARGO_BIN_EXE_pinhole"),
        profile.display()
    );
    let store = dir.path().join("incoming");
    let (_running, events, port) =
        start_listener(&store, "PINHOLE_S", &["--on-complete", &command]);
    let to = format!("PINHOLE_S@127.0.0.1:{port}");
    let folder = push_series_until_complete(&to, &events);
    let (plan, log) = beside_series(&folder);
    // No Segmentation yet: nothing runs.
    std::thread::sleep(Duration::from_secs(3));
    assert!(!plan.exists(), "ran before its Segmentation arrived");

    let seg_out = dir.path().join("seg");
    super::pinhole_ok(&[
        "dicom",
        "seg",
        "--series",
        folder.to_str().unwrap(),
        "--labels",
        dir.path().join("labels.nii.gz").to_str().unwrap(),
        "--labels-table",
        table.to_str().unwrap(),
        "--out",
        seg_out.to_str().unwrap(),
    ]);
    super::pinhole_ok(&[
        "dicom",
        "push",
        "--to",
        &to,
        seg_out.join("segmentation.dcm").to_str().unwrap(),
    ]);
    let report = wait_for_plan(&plan);
    assert!(log.exists(), "{}", log.display());
    // The labels were the received Segmentation, beside the CT in its study.
    assert!(report.to_string().contains(".dcm"), "{report}");
}

#[test]
fn dicom_listen_starts_a_plan_when_a_ct_series_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    super::dicom_export::labels_on_the_series(dir.path(), None);
    let table = super::dicom_export::write_table(dir.path());
    let profile = dir.path().join("profile.toml");
    std::fs::write(&profile, super::dicom_export::TEST_PROFILE).unwrap();
    let command = format!(
        "'{}' plan needle --ct {{folder}} --labels '{}' --labels-table '{}' --procedure \
         liver-biopsy --profile '{}' --target target_box --top 2 --out {{folder}}.plan",
        env!("CARGO_BIN_EXE_pinhole"),
        dir.path().join("labels.nii.gz").display(),
        table.display(),
        profile.display()
    );
    for (modality, plans) in [("CT", true), ("MR", false)] {
        let store = dir.path().join(format!("incoming-{modality}"));
        let (_running, events, port) = start_listener(
            &store,
            "PINHOLE_P",
            &[
                "--on-complete",
                &command,
                "--on-complete-modality",
                modality,
            ],
        );
        let to = format!("PINHOLE_P@127.0.0.1:{port}");
        let folder = push_series_until_complete(&to, &events);
        let (plan, log) = beside_series(&folder);
        if plans {
            wait_for_plan(&plan);
            assert!(log.exists(), "{}", log.display());
        } else {
            // Give the worker the time a plan would take to start, then check nothing ran.
            std::thread::sleep(Duration::from_secs(3));
            assert!(
                !plan.exists() && !log.exists(),
                "ran for a CT with the MR filter"
            );
        }
    }
}
