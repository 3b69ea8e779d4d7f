//! `pinhole dicom listen`: the binary receives a real CT series from pynetdicom (the
//! independent peer, `tests/py/dicom_net_peer.py`), prints JSON events, and the stored
//! series reads back as the same volume as the source files.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::common::{repo_root, shared_data};

/// Kills the listener when the test ends, passed or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The lines of a child's stream, read on a thread.
fn lines_of(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_pinhole"))
        .args([
            "dicom",
            "listen",
            "--port",
            "0",
            "--ae-title",
            "PINHOLE_T",
            "--json",
        ])
        .args(["--series-quiet-s", "1", "--store", store.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let stderr = lines_of(child.stderr.take().unwrap());
    let _running = Running(child);
    let banner = next_matching(&stderr, "address", |l| l.contains(" on 127.0.0.1:"));
    let port = banner
        .split(" on 127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap()
        .to_string();

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
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );
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
