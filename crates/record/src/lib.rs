//! The durable case record: what happened in each procedure, kept in one SQLite file per
//! site (`<site>/pinhole-cases.sqlite`) that survives a crash. Not for clinical use.
//!
//! Synchronous (std threads, no async). The file is opened in WAL mode with
//! `synchronous=NORMAL`, `foreign_keys=ON` and a busy timeout, so one process can record a
//! live session while others list and export cases. Its `application_id` marks it as a
//! Pinhole record and its `user_version` is the [`SCHEMA_VERSION`]: a newer version, a
//! file that is not SQLite or another application's database is refused on open and
//! left untouched.
//!
//! # Tables
//!
//! Times are UTC text (`2026-01-31T12:00:00.123Z`, SQLite's clock); `t_ms` is
//! milliseconds since the session started (REAL); JSON columns hold the reports as their
//! producers wrote them.
//!
//! | table | columns |
//! |---|---|
//! | `cases` | `id`, `created_utc`, `label`, `patient_ref` (NULL unless the record was opened with [`CaseRecord::allow_patient_data`]) |
//! | `studies` | received DICOM series: `id`, `case_id` (NULL: not assigned yet), `study_uid`, `series_uid`, `modality`, `folder`, `instances`, `received_utc` |
//! | `reports` | `id`, `case_id`, `kind` (`needle-plan`, `ablation`, …), `json`, `created_utc` |
//! | `sessions` | live guidance sessions: `id`, `case_id`, `started_utc`, `ended_utc` (NULL: still running, or the process died), `description` (JSON), `dropped` (samples the recorder could not queue) |
//! | `poses` | `session_id`, `t_ms`, `tool`, `matrix`: the tool's 4×4 pose in LPS mm (the guidance engine's frame), 16 little-endian f64, row-major (128 bytes) |
//! | `metrics` | `session_id`, `t_ms`, key columns of the guidance metrics (`seq`, `alert`, `tip_to_target_mm`, `lateral_deviation_mm`, `depth_remaining_mm`, `inside_target`; NULL where absent) and the whole `json` |
//! | `alerts` | `id`, `session_id`, `t_ms`, `kind`, `message`; the recorder's own warnings (kind [`DROPPED_ALERT_KIND`]) too |
//! | `control_scans` | `id`, `case_id`, `series_uid`, `result` (JSON), `created_utc` |
//! | `confirmations` | `id`, `case_id`, `kind`, `result` (JSON), `created_utc` |
//!
//! # Durability
//!
//! A [`SessionRecorder`] queues samples (bounded; a full queue drops the sample, counts
//! it, returns the count and records a warning row — never silently) and its writer
//! thread commits one transaction at least every [`RecorderOptions::commit_interval`]
//! (250 ms): a killed process loses at most the samples of the last interval (≤ 1 s),
//! and SQLite's WAL recovery leaves the file consistent. See `docs/case-record.md`.

mod error;
mod export;
mod read;
mod schema;
mod session;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

pub use error::{Error, ErrorKind, Result};
pub use export::{replay_pose, CaseExport, ExportedSession, PoseFile};
pub use pinhole_volume::math::Mat4;
pub use read::{
    CaseDetail, CaseListing, CaseShow, CaseSummary, Confirmation, ControlScan, RecordedAlert,
    RecordedMetrics, RecordedPose, Report, ReportInfo, SessionInfo, StudyInfo,
};
pub use schema::{APPLICATION_ID, BUSY_TIMEOUT, SCHEMA_VERSION};
pub use session::{
    Committed, Push, RecorderOptions, SessionRecorder, SessionSummary, DROPPED_ALERT_KIND,
};

use error::WithPath;
use schema::NOW_UTC;

/// The record's file name inside a site folder.
pub const FILE_NAME: &str = "pinhole-cases.sqlite";
/// Version of the JSON this crate writes (`case.json`, the CLI's `--json`).
pub const JSON_SCHEMA_VERSION: u32 = 1;
/// Carried by every JSON this crate writes.
pub const NOTE: &str = "Not for clinical use: research software.";

pub type CaseId = i64;
pub type SessionId = i64;
pub type ReportId = i64;

/// A received DICOM series, to be recorded with [`CaseRecord::add_study`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewStudy {
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    /// Where the series' files are (kept as text).
    pub folder: PathBuf,
    pub instances: u64,
}

/// One site's case record (a connection to its file).
pub struct CaseRecord {
    conn: Connection,
    path: PathBuf,
    patient_data: bool,
}

impl CaseRecord {
    /// Opens `site_folder/pinhole-cases.sqlite`, creating the folder and the record when
    /// absent. Refuses a newer schema version, a file that is not SQLite and another
    /// application's database (nothing is written to them).
    pub fn open(site_folder: &Path) -> Result<Self> {
        let path = site_folder.join(FILE_NAME);
        std::fs::create_dir_all(site_folder).with_path(&path)?;
        Self::connect(path, true)
    }

    /// Opens an existing record ([`ErrorKind::Missing`] when there is none): for readers
    /// that must not create one.
    pub fn open_existing(site_folder: &Path) -> Result<Self> {
        let path = site_folder.join(FILE_NAME);
        if !path.is_file() {
            return Err(Error::new(path, ErrorKind::Missing));
        }
        Self::connect(path, false)
    }

    fn connect(path: PathBuf, create: bool) -> Result<Self> {
        let conn = schema::connect(&path, create)?;
        Ok(Self {
            conn,
            path,
            patient_data: false,
        })
    }

    /// Allows [`create_case`](Self::create_case) to store a patient reference (default:
    /// refused, and none is stored).
    pub fn allow_patient_data(mut self, allow: bool) -> Self {
        self.patient_data = allow;
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SQLite's `PRAGMA integrity_check` rows: `["ok"]` for a sound file.
    pub fn integrity_check(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare("PRAGMA integrity_check")
            .with_path(&self.path)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .with_path(&self.path)?;
        rows.collect::<rusqlite::Result<Vec<_>>>()
            .with_path(&self.path)
    }

    /// A new case. `patient_ref` is refused unless [`allow_patient_data`](Self::allow_patient_data).
    pub fn create_case(&self, label: &str, patient_ref: Option<&str>) -> Result<CaseId> {
        if patient_ref.is_some() && !self.patient_data {
            return Err(self.error(ErrorKind::PatientDataNotAllowed));
        }
        self.conn
            .execute(
                &format!(
                    "INSERT INTO cases (created_utc, label, patient_ref) VALUES ({NOW_UTC}, ?1, ?2)"
                ),
                params![label, patient_ref],
            )
            .with_path(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Records a received series; `case` may be `None` (not assigned to a case yet).
    pub fn add_study(&self, case: Option<CaseId>, study: &NewStudy) -> Result<i64> {
        if let Some(case) = case {
            self.require_case(case)?;
        }
        let instances = i64::try_from(study.instances)
            .map_err(|_| self.error(ErrorKind::InvalidInput("instance count".into())))?;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO studies (case_id, study_uid, series_uid, modality, folder, \
                     instances, received_utc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, {NOW_UTC})"
                ),
                params![
                    case,
                    study.study_uid,
                    study.series_uid,
                    study.modality,
                    study.folder.to_string_lossy(),
                    instances
                ],
            )
            .with_path(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Assigns the received series `series_uid`, recorded without a case (`pinhole dicom
    /// listen --record` without `--case`), to `case`; returns how many received rows it
    /// assigned (a series received twice is two rows). Refused, changing nothing, when
    /// the case does not exist, when no row of that series is recorded, or when one
    /// already belongs to a case (moving a series between cases is not this call's job).
    pub fn assign_series(&self, case: CaseId, series_uid: &str) -> Result<usize> {
        self.require_case(case)?;
        let tx = self.conn.unchecked_transaction().with_path(&self.path)?;
        let owners: Vec<Option<i64>> = {
            let mut statement = tx
                .prepare("SELECT case_id FROM studies WHERE series_uid = ?1")
                .with_path(&self.path)?;
            let rows = statement
                .query_map([series_uid], |r| r.get::<_, Option<i64>>(0))
                .with_path(&self.path)?;
            rows.collect::<rusqlite::Result<_>>()
                .with_path(&self.path)?
        };
        if owners.is_empty() {
            return Err(self.error(ErrorKind::NotFound(format!(
                "no received series {series_uid} in the record"
            ))));
        }
        if let Some(other) = owners.iter().flatten().next() {
            return Err(self.error(ErrorKind::InvalidInput(format!(
                "series {series_uid} already belongs to case {other}"
            ))));
        }
        let assigned = tx
            .execute(
                "UPDATE studies SET case_id = ?1 WHERE series_uid = ?2 AND case_id IS NULL",
                params![case, series_uid],
            )
            .with_path(&self.path)?;
        tx.commit().with_path(&self.path)?;
        Ok(assigned)
    }

    /// Records a report (`kind`: `needle-plan`, `ablation`, `needle-check`, …).
    pub fn add_report(
        &self,
        case: CaseId,
        kind: &str,
        report: &impl Serialize,
    ) -> Result<ReportId> {
        self.insert_case_json(
            case,
            "INSERT INTO reports (case_id, kind, json, created_utc)",
            kind,
            report,
        )
    }

    /// Records a control scan's result (e.g. `pinhole verify needle`'s report).
    pub fn add_control_scan(
        &self,
        case: CaseId,
        series_uid: &str,
        result: &impl Serialize,
    ) -> Result<i64> {
        self.insert_case_json(
            case,
            "INSERT INTO control_scans (case_id, series_uid, result, created_utc)",
            series_uid,
            result,
        )
    }

    /// Records a confirmation (`kind`: e.g. `ablation`; `pinhole confirm`'s report).
    pub fn add_confirmation(
        &self,
        case: CaseId,
        kind: &str,
        result: &impl Serialize,
    ) -> Result<i64> {
        self.insert_case_json(
            case,
            "INSERT INTO confirmations (case_id, kind, result, created_utc)",
            kind,
            result,
        )
    }

    /// `insert` names the table and its four columns: case, text, JSON, time.
    fn insert_case_json(
        &self,
        case: CaseId,
        insert: &str,
        text: &str,
        value: &impl Serialize,
    ) -> Result<i64> {
        self.require_case(case)?;
        let json = serde_json::to_string(value).with_path(&self.path)?;
        self.conn
            .execute(
                &format!("{insert} VALUES (?1, ?2, ?3, {NOW_UTC})"),
                params![case, text, json],
            )
            .with_path(&self.path)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Starts recording a live session of `case` ([`RecorderOptions::default`]).
    pub fn start_session(
        &self,
        case: CaseId,
        description: &impl Serialize,
    ) -> Result<SessionRecorder> {
        self.start_session_with(case, description, RecorderOptions::default())
    }

    /// [`start_session`](Self::start_session) with the queue and commit interval given.
    pub fn start_session_with(
        &self,
        case: CaseId,
        description: &impl Serialize,
        options: RecorderOptions,
    ) -> Result<SessionRecorder> {
        self.require_case(case)?;
        let json = serde_json::to_string(description).with_path(&self.path)?;
        self.conn
            .execute(
                &format!(
                    "INSERT INTO sessions (case_id, started_utc, description) \
                     VALUES (?1, {NOW_UTC}, ?2)"
                ),
                params![case, json],
            )
            .with_path(&self.path)?;
        let session = self.conn.last_insert_rowid();
        SessionRecorder::start(&self.path, session, options)
    }

    fn require_case(&self, case: CaseId) -> Result<()> {
        let found: Option<i64> = self
            .conn
            .query_row("SELECT id FROM cases WHERE id = ?1", [case], |r| r.get(0))
            .optional()
            .with_path(&self.path)?;
        match found {
            Some(_) => Ok(()),
            None => Err(self.error(ErrorKind::NotFound(format!("no case {case}")))),
        }
    }

    fn error(&self, kind: ErrorKind) -> Error {
        Error::new(&self.path, kind)
    }
}
