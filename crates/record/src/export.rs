//! A case as files: `case.json` (the case, its reports with their JSON, its sessions)
//! and, per session, `session-<id>/poses.csv` in `pinhole replay`'s CSV format
//! (`pinhole_io::pose_csv`: `NeedleTipToReference` in RAS, t in seconds) and
//! `session-<id>/metrics.jsonl`. Every file is written atomically; `case.json` last.

use std::io::Write;
use std::path::Path;

use pinhole_io::atomic::AtomicFile;
use pinhole_io::pose_csv::{self, TimedPose};
use pinhole_volume::math::swap_lps_ras;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, WithPath};
use crate::read::{CaseDetail, RecordedAlert, RecordedPose, Report};
use crate::{CaseId, CaseRecord, SessionId, JSON_SCHEMA_VERSION, NOTE};

/// Poses converted and written per block (the writer's text per block).
const BLOCK: usize = 4096;

/// One tool's poses of a session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoseFile {
    pub tool: String,
    /// Relative to the export folder.
    pub file: String,
    pub poses: u64,
}

/// A session's files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedSession {
    pub id: SessionId,
    /// `poses.csv` when the session has one tool; `poses-<n>-<tool>.csv` each otherwise.
    pub pose_files: Vec<PoseFile>,
    /// One JSON object a line: `{"t_ms": …, "metrics": {…}}`.
    pub metrics_file: String,
    pub alerts: Vec<RecordedAlert>,
}

/// `case.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CaseExport {
    pub schema_version: u32,
    pub note: String,
    /// How the pose files are written.
    pub pose_format: String,
    pub case: CaseDetail,
    pub reports: Vec<Report>,
    pub sessions: Vec<ExportedSession>,
}

/// The pose in replay CSV terms: `NeedleTipToReference` in RAS (the guidance engine's
/// LPS pose is F · RAS · F, F = diag(−1, −1, 1, 1), its own inverse), t in seconds.
pub fn replay_pose(pose: &RecordedPose) -> TimedPose {
    TimedPose {
        t_s: pose.t_ms / 1000.0,
        matrix: swap_lps_ras(&pose.matrix_lps),
    }
}

/// A tool name as a file-name part.
fn file_part(tool: &str) -> String {
    let part: String = tool
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if part.is_empty() {
        "tool".into()
    } else {
        part
    }
}

impl CaseRecord {
    /// Writes case `id` into `out` (created when absent; files of an earlier export are
    /// replaced) and returns what `case.json` holds.
    pub fn export_case(&self, id: CaseId, out: &Path) -> Result<CaseExport> {
        let case = self.case(id)?;
        let reports = self.reports(id)?;
        std::fs::create_dir_all(out).map_err(|e| self.io_error(out, e))?;
        let mut sessions = Vec::with_capacity(case.sessions.len());
        for session in &case.sessions {
            sessions.push(self.export_session(session.id, out)?);
        }
        let export = CaseExport {
            schema_version: JSON_SCHEMA_VERSION,
            note: NOTE.to_owned(),
            pose_format: "pinhole replay CSV (pinhole_io::pose_csv): t in s, \
                          NeedleTipToReference 4x4 row-major, RAS mm"
                .to_owned(),
            case,
            reports,
            sessions,
        };
        let mut text = serde_json::to_string_pretty(&export).with_path(&self.path)?;
        text.push('\n');
        pinhole_io::atomic::write_atomic(&out.join("case.json"), text.as_bytes())
            .with_path(&self.path)?;
        Ok(export)
    }

    fn export_session(&self, session: SessionId, out: &Path) -> Result<ExportedSession> {
        let folder_name = format!("session-{session}");
        let folder = out.join(&folder_name);
        std::fs::create_dir_all(&folder).map_err(|e| self.io_error(&folder, e))?;
        let tools = self.session_tools(session)?;
        let mut pose_files = Vec::with_capacity(tools.len());
        for (n, tool) in tools.iter().enumerate() {
            let name = if tools.len() == 1 {
                "poses.csv".to_owned()
            } else {
                format!("poses-{}-{}.csv", n + 1, file_part(tool))
            };
            let poses = self.write_pose_csv(session, tool, &folder.join(&name))?;
            pose_files.push(PoseFile {
                tool: tool.clone(),
                file: format!("{folder_name}/{name}"),
                poses,
            });
        }
        if tools.is_empty() {
            // An empty replay file, so that every session has one.
            let name = "poses.csv";
            pinhole_io::atomic::write_atomic(&folder.join(name), pose_csv::to_text(&[]).as_bytes())
                .with_path(&self.path)?;
            pose_files.push(PoseFile {
                tool: String::new(),
                file: format!("{folder_name}/{name}"),
                poses: 0,
            });
        }
        let metrics_name = "metrics.jsonl";
        self.write_metrics(session, &folder.join(metrics_name))?;
        Ok(ExportedSession {
            id: session,
            pose_files,
            metrics_file: format!("{folder_name}/{metrics_name}"),
            alerts: self.session_alerts(session)?,
        })
    }

    /// The tools of a session, in the order they first appear.
    fn session_tools(&self, session: SessionId) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT tool FROM poses WHERE session_id = ?1 GROUP BY tool ORDER BY min(rowid)",
            )
            .with_path(&self.path)?;
        let rows = stmt
            .query_map([session], |r| r.get(0))
            .with_path(&self.path)?;
        rows.collect::<rusqlite::Result<_>>().with_path(&self.path)
    }

    /// Streams one tool's poses into a replay CSV, block by block through
    /// [`pose_csv::to_text`] (its header once).
    fn write_pose_csv(&self, session: SessionId, tool: &str, path: &Path) -> Result<u64> {
        let mut file = AtomicFile::create(path).with_path(&self.path)?;
        let mut block: Vec<TimedPose> = Vec::with_capacity(BLOCK);
        let mut written = 0u64;
        let mut flush = |block: &mut Vec<TimedPose>, first: bool| -> Result<()> {
            let text = pose_csv::to_text(block);
            let body = if first {
                text.as_str()
            } else {
                text.get(pose_csv::HEADER.len()..).unwrap_or("")
            };
            file.write_all(body.as_bytes())
                .map_err(|e| self.io_error(path, e))?;
            written += block.len() as u64;
            block.clear();
            Ok(())
        };
        let mut first = true;
        self.for_each_pose_of(session, Some(tool), |pose| {
            block.push(replay_pose(&pose));
            if block.len() == BLOCK {
                flush(&mut block, first)?;
                first = false;
            }
            Ok(())
        })?;
        if first || !block.is_empty() {
            flush(&mut block, first)?;
        }
        file.commit().with_path(&self.path)?;
        Ok(written)
    }

    fn write_metrics(&self, session: SessionId, path: &Path) -> Result<()> {
        let mut file = AtomicFile::create(path).with_path(&self.path)?;
        let mut stmt = self
            .conn
            .prepare("SELECT t_ms, json FROM metrics WHERE session_id = ?1 ORDER BY t_ms, rowid")
            .with_path(&self.path)?;
        let mut rows = stmt.query([session]).with_path(&self.path)?;
        while let Some(row) = rows.next().with_path(&self.path)? {
            let t_ms: f64 = row.get(0).with_path(&self.path)?;
            let json: String = row.get(1).with_path(&self.path)?;
            let t = serde_json::to_string(&t_ms).with_path(&self.path)?;
            writeln!(file, "{{\"t_ms\":{t},\"metrics\":{json}}}")
                .map_err(|e| self.io_error(path, e))?;
        }
        file.commit().with_path(&self.path)
    }

    /// An error writing an export file: names that file.
    fn io_error(&self, file: &Path, e: std::io::Error) -> Error {
        Error::new(&self.path, pinhole_io::Error::new(file, e))
    }
}
