//! Reading the record: case lists, a case's details, a session's samples.

use rusqlite::{params, OptionalExtension, Row};
use serde::{Deserialize, Serialize};

use crate::error::{ErrorKind, Result, WithPath};
use crate::session::matrix_from_blob;
use crate::{CaseId, CaseRecord, Mat4, ReportId, SessionId, JSON_SCHEMA_VERSION, NOTE};

/// One line of [`CaseRecord::list_cases`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseSummary {
    pub id: CaseId,
    pub created_utc: String,
    pub label: String,
    pub studies: u64,
    pub reports: u64,
    pub sessions: u64,
}

/// A received series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StudyInfo {
    pub id: i64,
    pub case_id: Option<CaseId>,
    pub study_uid: String,
    pub series_uid: String,
    pub modality: String,
    pub folder: String,
    pub instances: u64,
    pub received_utc: String,
}

/// A report without its JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportInfo {
    pub id: ReportId,
    pub kind: String,
    pub created_utc: String,
}

/// A report with its JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub id: ReportId,
    pub case_id: CaseId,
    pub kind: String,
    pub created_utc: String,
    pub json: serde_json::Value,
}

/// A live session and how much it recorded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    pub id: SessionId,
    pub case_id: CaseId,
    pub started_utc: String,
    /// `None`: still running, or the process died before finishing it.
    pub ended_utc: Option<String>,
    pub description: serde_json::Value,
    pub poses: u64,
    pub metrics: u64,
    pub alerts: u64,
    /// Samples the recorder dropped (queue full).
    pub dropped: u64,
}

/// A control scan's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlScan {
    pub id: i64,
    pub series_uid: String,
    pub result: serde_json::Value,
    pub created_utc: String,
}

/// A confirmation's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confirmation {
    pub id: i64,
    pub kind: String,
    pub result: serde_json::Value,
    pub created_utc: String,
}

/// Everything recorded about one case (sessions as counts; their samples through
/// [`CaseRecord::session_poses`] and friends).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseDetail {
    pub id: CaseId,
    pub created_utc: String,
    pub label: String,
    /// Present only in records that allow patient data and were given one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patient_ref: Option<String>,
    pub studies: Vec<StudyInfo>,
    pub reports: Vec<ReportInfo>,
    pub sessions: Vec<SessionInfo>,
    pub control_scans: Vec<ControlScan>,
    pub confirmations: Vec<Confirmation>,
}

/// A recorded pose: the tool's 4×4 in LPS mm, row-major.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedPose {
    pub t_ms: f64,
    pub tool: String,
    pub matrix_lps: Mat4,
}

/// Recorded guidance metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedMetrics {
    pub t_ms: f64,
    pub metrics: serde_json::Value,
}

/// A recorded alert.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedAlert {
    pub t_ms: f64,
    pub kind: String,
    pub message: String,
}

/// `pinhole cases list --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseListing {
    pub schema_version: u32,
    pub note: String,
    pub cases: Vec<CaseSummary>,
    /// Received series not assigned to a case (`pinhole dicom listen --record` without
    /// `--case`).
    #[serde(default)]
    pub unassigned_studies: Vec<StudyInfo>,
}

/// `pinhole cases show --json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseShow {
    pub schema_version: u32,
    pub note: String,
    pub case: CaseDetail,
}

impl CaseListing {
    pub fn new(cases: Vec<CaseSummary>, unassigned_studies: Vec<StudyInfo>) -> Self {
        Self {
            schema_version: JSON_SCHEMA_VERSION,
            note: NOTE.to_owned(),
            cases,
            unassigned_studies,
        }
    }
}

impl CaseShow {
    pub fn new(case: CaseDetail) -> Self {
        Self {
            schema_version: JSON_SCHEMA_VERSION,
            note: NOTE.to_owned(),
            case,
        }
    }
}

fn count(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn json_column(row: &Row<'_>, index: usize) -> rusqlite::Result<serde_json::Value> {
    let text: String = row.get(index)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(index, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl CaseRecord {
    /// Every case, oldest first, with counts.
    pub fn list_cases(&self) -> Result<Vec<CaseSummary>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT c.id, c.created_utc, c.label, \
                 (SELECT count(*) FROM studies s WHERE s.case_id = c.id), \
                 (SELECT count(*) FROM reports r WHERE r.case_id = c.id), \
                 (SELECT count(*) FROM sessions s WHERE s.case_id = c.id) \
                 FROM cases c ORDER BY c.id",
            )
            .with_path(&self.path)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(CaseSummary {
                    id: r.get(0)?,
                    created_utc: r.get(1)?,
                    label: r.get(2)?,
                    studies: count(r.get(3)?),
                    reports: count(r.get(4)?),
                    sessions: count(r.get(5)?),
                })
            })
            .with_path(&self.path)?;
        rows.collect::<rusqlite::Result<_>>().with_path(&self.path)
    }

    /// One case with its studies, reports (without their JSON), sessions (with sample
    /// counts), control scans and confirmations.
    pub fn case(&self, id: CaseId) -> Result<CaseDetail> {
        let head: Option<(String, String, Option<String>)> = self
            .conn
            .query_row(
                "SELECT created_utc, label, patient_ref FROM cases WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .with_path(&self.path)?;
        let Some((created_utc, label, patient_ref)) = head else {
            return Err(self.error(ErrorKind::NotFound(format!("no case {id}"))));
        };
        Ok(CaseDetail {
            id,
            created_utc,
            label,
            patient_ref,
            studies: self.rows(
                "SELECT id, case_id, study_uid, series_uid, modality, folder, instances, \
                 received_utc FROM studies WHERE case_id = ?1 ORDER BY id",
                id,
                |r| {
                    Ok(StudyInfo {
                        id: r.get(0)?,
                        case_id: r.get(1)?,
                        study_uid: r.get(2)?,
                        series_uid: r.get(3)?,
                        modality: r.get(4)?,
                        folder: r.get(5)?,
                        instances: count(r.get(6)?),
                        received_utc: r.get(7)?,
                    })
                },
            )?,
            reports: self.rows(
                "SELECT id, kind, created_utc FROM reports WHERE case_id = ?1 ORDER BY id",
                id,
                |r| {
                    Ok(ReportInfo {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        created_utc: r.get(2)?,
                    })
                },
            )?,
            sessions: self.rows(
                "SELECT s.id, s.case_id, s.started_utc, s.ended_utc, s.description, \
                 (SELECT count(*) FROM poses p WHERE p.session_id = s.id), \
                 (SELECT count(*) FROM metrics m WHERE m.session_id = s.id), \
                 (SELECT count(*) FROM alerts a WHERE a.session_id = s.id), \
                 s.dropped FROM sessions s WHERE s.case_id = ?1 ORDER BY s.id",
                id,
                |r| {
                    Ok(SessionInfo {
                        id: r.get(0)?,
                        case_id: r.get(1)?,
                        started_utc: r.get(2)?,
                        ended_utc: r.get(3)?,
                        description: json_column(r, 4)?,
                        poses: count(r.get(5)?),
                        metrics: count(r.get(6)?),
                        alerts: count(r.get(7)?),
                        dropped: count(r.get(8)?),
                    })
                },
            )?,
            control_scans: self.rows(
                "SELECT id, series_uid, result, created_utc FROM control_scans \
                 WHERE case_id = ?1 ORDER BY id",
                id,
                |r| {
                    Ok(ControlScan {
                        id: r.get(0)?,
                        series_uid: r.get(1)?,
                        result: json_column(r, 2)?,
                        created_utc: r.get(3)?,
                    })
                },
            )?,
            confirmations: self.rows(
                "SELECT id, kind, result, created_utc FROM confirmations \
                 WHERE case_id = ?1 ORDER BY id",
                id,
                |r| {
                    Ok(Confirmation {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        result: json_column(r, 2)?,
                        created_utc: r.get(3)?,
                    })
                },
            )?,
        })
    }

    /// Received series not assigned to a case.
    pub fn unassigned_studies(&self) -> Result<Vec<StudyInfo>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, study_uid, series_uid, modality, folder, instances, received_utc \
                 FROM studies WHERE case_id IS NULL ORDER BY id",
            )
            .with_path(&self.path)?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StudyInfo {
                    id: r.get(0)?,
                    case_id: None,
                    study_uid: r.get(1)?,
                    series_uid: r.get(2)?,
                    modality: r.get(3)?,
                    folder: r.get(4)?,
                    instances: count(r.get(5)?),
                    received_utc: r.get(6)?,
                })
            })
            .with_path(&self.path)?;
        rows.collect::<rusqlite::Result<_>>().with_path(&self.path)
    }

    /// One report with its JSON.
    pub fn report(&self, id: ReportId) -> Result<Report> {
        self.conn
            .query_row(
                "SELECT id, case_id, kind, created_utc, json FROM reports WHERE id = ?1",
                [id],
                |r| {
                    Ok(Report {
                        id: r.get(0)?,
                        case_id: r.get(1)?,
                        kind: r.get(2)?,
                        created_utc: r.get(3)?,
                        json: json_column(r, 4)?,
                    })
                },
            )
            .optional()
            .with_path(&self.path)?
            .ok_or_else(|| self.error(ErrorKind::NotFound(format!("no report {id}"))))
    }

    /// A case's reports with their JSON, oldest first.
    pub fn reports(&self, case: CaseId) -> Result<Vec<Report>> {
        self.rows(
            "SELECT id, case_id, kind, created_utc, json FROM reports WHERE case_id = ?1 \
             ORDER BY id",
            case,
            |r| {
                Ok(Report {
                    id: r.get(0)?,
                    case_id: r.get(1)?,
                    kind: r.get(2)?,
                    created_utc: r.get(3)?,
                    json: json_column(r, 4)?,
                })
            },
        )
    }

    /// A session's poses in time order (for replay).
    pub fn session_poses(&self, session: SessionId) -> Result<Vec<RecordedPose>> {
        let mut poses = Vec::new();
        self.for_each_pose_of(session, None, |p| {
            poses.push(p);
            Ok(())
        })?;
        Ok(poses)
    }

    /// Calls `f` with each pose of `session` (of `tool` only, when given) in time order,
    /// without holding them all.
    pub(crate) fn for_each_pose_of(
        &self,
        session: SessionId,
        tool: Option<&str>,
        mut f: impl FnMut(RecordedPose) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT t_ms, tool, matrix FROM poses \
                 WHERE session_id = ?1 AND (?2 IS NULL OR tool = ?2) ORDER BY t_ms, rowid",
            )
            .with_path(&self.path)?;
        let mut rows = stmt.query(params![session, tool]).with_path(&self.path)?;
        while let Some(row) = rows.next().with_path(&self.path)? {
            let blob: Vec<u8> = row.get(2).with_path(&self.path)?;
            let matrix_lps = matrix_from_blob(&blob).ok_or_else(|| {
                self.error(ErrorKind::NotARecord(format!(
                    "a pose matrix of {} bytes",
                    blob.len()
                )))
            })?;
            f(RecordedPose {
                t_ms: row.get(0).with_path(&self.path)?,
                tool: row.get(1).with_path(&self.path)?,
                matrix_lps,
            })?;
        }
        Ok(())
    }

    /// A session's guidance metrics in time order.
    pub fn session_metrics(&self, session: SessionId) -> Result<Vec<RecordedMetrics>> {
        self.rows(
            "SELECT t_ms, json FROM metrics WHERE session_id = ?1 ORDER BY t_ms, rowid",
            session,
            |r| {
                Ok(RecordedMetrics {
                    t_ms: r.get(0)?,
                    metrics: json_column(r, 1)?,
                })
            },
        )
    }

    /// A session's alerts in time order (the recorder's own warnings included).
    pub fn session_alerts(&self, session: SessionId) -> Result<Vec<RecordedAlert>> {
        self.rows(
            "SELECT t_ms, kind, message FROM alerts WHERE session_id = ?1 ORDER BY t_ms, id",
            session,
            |r| {
                Ok(RecordedAlert {
                    t_ms: r.get(0)?,
                    kind: r.get(1)?,
                    message: r.get(2)?,
                })
            },
        )
    }

    /// Rows of a query with one id parameter.
    fn rows<T>(
        &self,
        sql: &str,
        id: i64,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare(sql).with_path(&self.path)?;
        let rows = stmt.query_map([id], map).with_path(&self.path)?;
        rows.collect::<rusqlite::Result<_>>().with_path(&self.path)
    }
}
