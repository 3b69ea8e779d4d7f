//! What the listener's tests share: a running listener and its events, the pynetdicom
//! peer, the real CT series and small readers of stored files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use pinhole_dicomnet::{Event, Listener, ListenerConfig, ListenerHandle};

use crate::shared;

/// Bound on every wait for an event (never reached when things work).
pub const WAIT: Duration = Duration::from_secs(60);
pub const AE: &str = "PINHOLE";

/// The 20 CT slices (JPEG 2000 lossless), sorted by name.
pub fn ct_files() -> Vec<PathBuf> {
    let dir = shared::shared_data("dicom-ct-series");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert_eq!(files.len(), 20, "{}", dir.display());
    files
}

/// A running listener, its events and its storage folder.
pub struct Harness {
    pub handle: Option<ListenerHandle>,
    pub addr: SocketAddr,
    pub events: Receiver<Event>,
    /// Every event taken from `events` so far.
    pub seen: Vec<Event>,
    pub store: PathBuf,
    pub _tmp: tempfile::TempDir,
}

impl Harness {
    pub fn start(change: impl FnOnce(&mut ListenerConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("outer/store");
        let mut config = ListenerConfig::new(AE, "127.0.0.1:0".parse().unwrap(), &store);
        config.series_quiet = Duration::from_secs(1);
        config.idle_timeout = Duration::from_secs(20);
        change(&mut config);
        let listener = Listener::bind(config).unwrap();
        let addr = listener.local_addr();
        assert_ne!(addr.port(), 0);
        let (tx, events) = mpsc::channel();
        let handle = listener
            .spawn(move |event| {
                let _ = tx.send(event);
            })
            .unwrap();
        Self {
            handle: Some(handle),
            addr,
            events,
            seen: Vec::new(),
            store,
            _tmp: tmp,
        }
    }

    /// Waits (at most [`WAIT`]) for an event matching `want`; earlier ones are kept in
    /// `seen`.
    pub fn wait_for(&mut self, what: &str, want: impl Fn(&Event) -> bool) -> Event {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return event;
                    }
                }
                Err(_) => panic!("no {what} event within {WAIT:?}; seen: {:#?}", self.seen),
            }
        }
    }

    /// Waits (at most [`WAIT`]) until `count` events match `want` (events reach the
    /// callback on the listener's own thread, maybe after a push returned); returns the
    /// events taken meanwhile, also kept in `seen`.
    pub fn events_until(&mut self, count: usize, want: impl Fn(&Event) -> bool) -> Vec<Event> {
        let deadline = Instant::now() + WAIT;
        let mut taken = Vec::new();
        while taken.iter().filter(|e| want(e)).count() < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(event) => taken.push(event),
                Err(e) => panic!("{count} events expected ({e}); seen: {taken:#?}"),
            }
        }
        taken.extend(self.events.try_iter());
        self.seen.extend(taken.iter().cloned());
        taken
    }

    /// Takes the events already delivered.
    pub fn drain(&mut self) {
        while let Ok(event) = self.events.try_recv() {
            self.seen.push(event);
        }
    }

    pub fn stored(&self) -> Vec<&Event> {
        self.seen
            .iter()
            .filter(|e| matches!(e, Event::InstanceStored { .. }))
            .collect()
    }

    pub fn warnings(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn port(&self) -> String {
        self.addr.port().to_string()
    }

    pub fn shutdown(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown();
        }
        self.drain();
    }
}

/// Runs the pynetdicom peer; returns its exit code and printed JSON.
pub fn peer(args: &[&str]) -> (i32, serde_json::Value) {
    let out = peer_command(args)
        .output()
        .expect("run the pynetdicom peer");
    parse_peer(args, out)
}

pub fn peer_command(args: &[&str]) -> Command {
    let interpreter = std::env::var("PINHOLE_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = shared::repo_root().join("tests/py/dicom_net_peer.py");
    let mut command = Command::new(interpreter);
    command
        .arg(script)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

pub fn parse_peer(args: &[&str], out: std::process::Output) -> (i32, serde_json::Value) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "dicom_net_peer.py {:?}: no JSON ({e}); install tests/py/requirements.txt\nstdout: {stdout}\nstderr: {}",
            &args[..args.len().min(5)],
            String::from_utf8_lossy(&out.stderr)
        )
    });
    if std::env::var_os("PINHOLE_DICOM_DEBUG").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code().unwrap_or(-1), json)
}

/// Instances the peer resent on a new association because pynetdicom lost their
/// C-STORE-RSP (see `store` in `tests/py/dicom_net_peer.py`).
pub fn retries(json: &serde_json::Value) -> usize {
    json["retried"].as_array().map_or(0, Vec::len)
}

/// The listener's warnings, less one "aborted by the peer" per peer retry: each retry
/// follows pynetdicom's own A-ABORT of the association whose response it lost.
pub fn warnings_beyond_peer_retries(h: &Harness, retries: usize) -> Vec<String> {
    let mut allowed = retries;
    h.warnings()
        .into_iter()
        .filter(|w| {
            let peer_abort = w.contains("aborted by the peer") && !w.contains("discarded");
            if peer_abort && allowed > 0 {
                allowed -= 1;
                false
            } else {
                true
            }
        })
        .collect()
}

pub fn statuses(json: &serde_json::Value) -> Vec<i64> {
    json["statuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_i64().unwrap())
        .collect()
}

pub fn store_args<'a>(h: &'a str, port: &'a str, files: &'a [PathBuf]) -> Vec<&'a str> {
    let mut args = vec!["store", h, port, AE, "--fill-blank-uids"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    args
}

/// Every file under `dir`, recursively.
pub fn all_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

pub fn assert_no_temporary_files(dir: &Path) {
    let temporary: Vec<PathBuf> = all_files(dir)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("tmp"))
        .collect();
    assert!(temporary.is_empty(), "temporary files left: {temporary:?}");
}

pub fn text(obj: &DefaultDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_matches(['\0', ' '])
        .to_string()
}

/// PixelData as byte chunks: the value, or the offset table and each fragment.
pub fn pixel_data(obj: &DefaultDicomObject) -> Vec<Vec<u8>> {
    match obj.element(tags::PIXEL_DATA).unwrap().value() {
        Value::Primitive(p) => vec![p.to_bytes().into_owned()],
        value => {
            let table: Vec<u8> = value
                .offset_table()
                .unwrap()
                .iter()
                .flat_map(|x| x.to_le_bytes())
                .collect();
            let mut chunks = vec![table];
            chunks.extend(value.fragments().unwrap().iter().cloned());
            chunks
        }
    }
}

/// The SOP Instance UID of the file meta group (the shared series' data sets have blank
/// UIDs: this one names the instance).
pub fn meta_instance(obj: &DefaultDicomObject) -> String {
    obj.meta()
        .media_storage_sop_instance_uid()
        .trim_end_matches('\0')
        .to_string()
}
