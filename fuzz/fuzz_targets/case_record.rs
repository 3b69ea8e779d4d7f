//! Any file given to the case record (`pinhole-record`) as `pinhole-cases.sqlite`: opened
//! and read (`pinhole cases list|show|export`), or refused with an error, never a panic.
//! The bytes go to a scratch folder of this process; SQLite itself checks the pages, the
//! record checks that the file is its own (application id, schema version) and that a
//! pose blob is 16 f64 before it decodes one.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use pinhole_record::{CaseRecord, FILE_NAME};

fn scratch() -> PathBuf {
    std::env::temp_dir().join(format!("pinhole-fuzz-case-record-{}", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let folder = scratch();
    let _ = std::fs::create_dir_all(&folder);
    let file = folder.join(FILE_NAME);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(folder.join(format!("{FILE_NAME}{suffix}")));
    }
    if std::fs::write(&file, data).is_err() {
        return;
    }
    let Ok(record) = CaseRecord::open_existing(&folder) else {
        return;
    };
    let _ = record.integrity_check();
    let _ = record.unassigned_studies();
    let Ok(cases) = record.list_cases() else {
        return;
    };
    for summary in cases.iter().take(4) {
        let Ok(case) = record.case(summary.id) else {
            continue;
        };
        let _ = record.reports(case.id);
        for session in case.sessions.iter().take(4) {
            let _ = record.session_poses(session.id);
            let _ = record.session_metrics(session.id);
            let _ = record.session_alerts(session.id);
        }
    }
});
