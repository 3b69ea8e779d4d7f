//! The record's tables and opening a connection: the file is checked to be a Pinhole
//! case record of a version this build reads before anything is written to it.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use crate::error::{Error, ErrorKind, Result, WithPath};

/// Version of the record's tables, kept in SQLite's `user_version`. A record with a
/// higher version is refused.
pub const SCHEMA_VERSION: i64 = 1;

/// SQLite's `application_id` of a Pinhole case record ("PHCR"): another application's
/// database is refused instead of having tables added to it.
pub const APPLICATION_ID: i64 = 0x5048_4352;

/// How long a connection waits for another one's write lock before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The current UTC time as SQLite writes it (`2026-01-31T12:00:00.123Z`).
pub(crate) const NOW_UTC: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The tables (see the crate documentation).
const TABLES: &str = "
CREATE TABLE cases (
    id          INTEGER PRIMARY KEY,
    created_utc TEXT NOT NULL,
    label       TEXT NOT NULL,
    patient_ref TEXT
);
CREATE TABLE studies (
    id           INTEGER PRIMARY KEY,
    case_id      INTEGER REFERENCES cases(id),
    study_uid    TEXT NOT NULL,
    series_uid   TEXT NOT NULL,
    modality     TEXT NOT NULL,
    folder       TEXT NOT NULL,
    instances    INTEGER NOT NULL CHECK (instances >= 0),
    received_utc TEXT NOT NULL
);
CREATE INDEX studies_case ON studies(case_id);
CREATE TABLE reports (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id),
    kind        TEXT NOT NULL,
    json        TEXT NOT NULL CHECK (json_valid(json)),
    created_utc TEXT NOT NULL
);
CREATE INDEX reports_case ON reports(case_id);
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id),
    started_utc TEXT NOT NULL,
    ended_utc   TEXT,
    description TEXT NOT NULL CHECK (json_valid(description)),
    dropped     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_case ON sessions(case_id);
CREATE TABLE poses (
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    t_ms       REAL NOT NULL,
    tool       TEXT NOT NULL,
    matrix     BLOB NOT NULL CHECK (length(matrix) = 128)
);
CREATE INDEX poses_session_t ON poses(session_id, t_ms);
CREATE TABLE metrics (
    session_id           INTEGER NOT NULL REFERENCES sessions(id),
    t_ms                 REAL NOT NULL,
    seq                  INTEGER,
    alert                TEXT,
    tip_to_target_mm     REAL,
    lateral_deviation_mm REAL,
    depth_remaining_mm   REAL,
    inside_target        INTEGER,
    json                 TEXT NOT NULL
);
CREATE INDEX metrics_session_t ON metrics(session_id, t_ms);
CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY,
    session_id INTEGER NOT NULL REFERENCES sessions(id),
    t_ms       REAL NOT NULL,
    kind       TEXT NOT NULL,
    message    TEXT NOT NULL
);
CREATE INDEX alerts_session_t ON alerts(session_id, t_ms);
CREATE TABLE control_scans (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id),
    series_uid  TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (json_valid(result)),
    created_utc TEXT NOT NULL
);
CREATE INDEX control_scans_case ON control_scans(case_id);
CREATE TABLE confirmations (
    id          INTEGER PRIMARY KEY,
    case_id     INTEGER NOT NULL REFERENCES cases(id),
    kind        TEXT NOT NULL,
    result      TEXT NOT NULL CHECK (json_valid(result)),
    created_utc TEXT NOT NULL
);
CREATE INDEX confirmations_case ON confirmations(case_id);
";

/// Maps SQLite's "file is not a database" to [`ErrorKind::NotARecord`].
pub(crate) fn sql_error(path: &Path, e: rusqlite::Error) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
        Error::new(
            path,
            ErrorKind::NotARecord("the file is not an SQLite database; left untouched".into()),
        )
    } else {
        Error::new(path, e)
    }
}

/// Opens the record file (creating the tables in a new or empty file when `create`),
/// checks what it is and sets the connection's pragmas: WAL, `synchronous=NORMAL`,
/// `foreign_keys=ON`, a busy timeout.
pub(crate) fn connect(path: &Path, create: bool) -> Result<Connection> {
    let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    if create {
        flags |= OpenFlags::SQLITE_OPEN_CREATE;
    }
    let mut conn = Connection::open_with_flags(path, flags).map_err(|e| sql_error(path, e))?;
    conn.busy_timeout(BUSY_TIMEOUT).with_path(path)?;
    // Only reads until the file is known to be ours (or empty).
    if !check(&conn, path)? {
        if !create {
            return Err(Error::new(path, ErrorKind::Missing));
        }
        initialise(&mut conn, path)?;
    }
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .with_path(path)?;
    if !mode.eq_ignore_ascii_case("wal") {
        set_wal(&conn, path)?;
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .with_path(path)?;
    conn.pragma_update(None, "foreign_keys", "ON")
        .with_path(path)?;
    conn.set_prepared_statement_cache_capacity(32);
    Ok(conn)
}

/// `true`: a Pinhole record this build reads; `false`: an empty database (no tables, no
/// application id) that can be initialised. Refuses anything else.
fn check(conn: &Connection, path: &Path) -> Result<bool> {
    let app: i64 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
        .map_err(|e| sql_error(path, e))?;
    if app == APPLICATION_ID {
        return match version {
            v if v > SCHEMA_VERSION => Err(Error::new(
                path,
                ErrorKind::NewerSchema {
                    found: v,
                    supported: SCHEMA_VERSION,
                },
            )),
            SCHEMA_VERSION => Ok(true),
            v => Err(Error::new(
                path,
                ErrorKind::NotARecord(format!("unknown case record schema version {v}")),
            )),
        };
    }
    if app == 0 && version == 0 && objects == 0 {
        return Ok(false);
    }
    Err(Error::new(
        path,
        ErrorKind::NotARecord(format!(
            "an SQLite database of another application (application_id {app:#x}, \
             user_version {version}, {objects} schema objects); left untouched"
        )),
    ))
}

fn set_wal(conn: &Connection, path: &Path) -> Result<()> {
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .with_path(path)?;
    if mode.eq_ignore_ascii_case("wal") {
        Ok(())
    } else {
        Err(Error::new(
            path,
            ErrorKind::NotARecord(format!("journal mode {mode} instead of WAL")),
        ))
    }
}

/// Creates the tables in an empty database, in one transaction (another process doing
/// the same at the same time waits, then finds them made).
fn initialise(conn: &mut Connection, path: &Path) -> Result<()> {
    set_wal(conn, path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .with_path(path)?;
    if !check(&tx, path)? {
        tx.execute_batch(TABLES).with_path(path)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)
            .with_path(path)?;
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .with_path(path)?;
    }
    tx.commit().with_path(path)
}
