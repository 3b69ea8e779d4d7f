//! `pinhole cases list|show|export`: a site's case record (`pinhole-record`,
//! `<site>/pinhole-cases.sqlite`), read only. Not for clinical use.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pinhole_record::{CaseDetail, CaseListing, CaseRecord, CaseShow, CaseSummary, StudyInfo};

/// The first line of every human output.
const NOT_FOR_CLINICAL_USE: &str = "NOT FOR CLINICAL USE";

#[derive(Subcommand)]
pub enum CasesCommand {
    /// List the cases of a site's record, oldest first.
    List(ListArgs),
    /// One case: received series, reports, live sessions with their sample counts,
    /// control scans and confirmations.
    Show(ShowArgs),
    /// Write one case as files: case.json (the case, its reports, its sessions) and per
    /// session poses.csv (`pinhole replay`'s CSV) and metrics.jsonl.
    Export(ExportArgs),
    /// Create a case (no patient data: a label only) and print its id; the record file is
    /// created when the site folder has none.
    Create(CreateArgs),
    /// Assign a received series (`pinhole dicom listen --record` without `--case`; see
    /// `cases list`) to a case.
    Assign(AssignArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    site: SiteArg,
    /// What the case is called at the site (e.g. "liver RFA 2026-12-05 room 2"); no
    /// patient name or ID.
    #[arg(long)]
    label: String,
}

#[derive(Args)]
pub struct AssignArgs {
    /// The case id (`pinhole cases list`).
    id: i64,
    #[command(flatten)]
    site: SiteArg,
    /// SeriesInstanceUID of the received series (`pinhole cases list` shows the unassigned
    /// ones).
    #[arg(long)]
    series: String,
}

#[derive(Args)]
pub struct SiteArg {
    /// The site folder holding pinhole-cases.sqlite.
    #[arg(long)]
    site: PathBuf,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    site: SiteArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ShowArgs {
    /// The case id (`pinhole cases list`).
    id: i64,
    #[command(flatten)]
    site: SiteArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct ExportArgs {
    /// The case id (`pinhole cases list`).
    id: i64,
    #[command(flatten)]
    site: SiteArg,
    /// Folder to write into (created when absent; an earlier export's files are replaced).
    #[arg(long)]
    out: PathBuf,
}

pub fn run(command: &CasesCommand) -> anyhow::Result<()> {
    match command {
        CasesCommand::List(args) => list(args),
        CasesCommand::Show(args) => show(args),
        CasesCommand::Export(args) => export(args),
        CasesCommand::Create(args) => create(args),
        CasesCommand::Assign(args) => assign(args),
    }
}

fn create(args: &CreateArgs) -> anyhow::Result<()> {
    let label = args.label.trim();
    if label.is_empty() {
        anyhow::bail!(
            "--label is empty: give the case a name the site recognises (no patient data)"
        );
    }
    let record = CaseRecord::open(&args.site.site)?;
    let id = record.create_case(label, None)?;
    println!("{id}");
    eprintln!(
        "created case {id} \"{label}\" in {}",
        record.path().display()
    );
    Ok(())
}

fn assign(args: &AssignArgs) -> anyhow::Result<()> {
    let record = open(&args.site)?;
    let rows = record.assign_series(args.id, args.series.trim())?;
    println!(
        "assigned series {} to case {} ({rows} received {})",
        args.series.trim(),
        args.id,
        if rows == 1 { "copy" } else { "copies" }
    );
    Ok(())
}

/// Opens an existing record (never creates one).
fn open(site: &SiteArg) -> anyhow::Result<CaseRecord> {
    Ok(CaseRecord::open_existing(&site.site)?)
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let record = open(&args.site)?;
    let cases = record.list_cases()?;
    let unassigned = record.unassigned_studies()?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&CaseListing::new(cases, unassigned))?
        );
    } else {
        print!("{}", list_text(record.path(), &cases));
        print!("{}", unassigned_text(&unassigned));
    }
    Ok(())
}

fn list_text(path: &Path, cases: &[CaseSummary]) -> String {
    let mut text = format!(
        "Pinhole cases in {} — {NOT_FOR_CLINICAL_USE}\n",
        path.display()
    );
    if cases.is_empty() {
        text.push_str("no cases\n");
        return text;
    }
    text.push_str(&format!(
        "{:>5}  {:<24}  {:>7}  {:>7}  {:>8}  label\n",
        "id", "created (UTC)", "studies", "reports", "sessions"
    ));
    for c in cases {
        text.push_str(&format!(
            "{:>5}  {:<24}  {:>7}  {:>7}  {:>8}  {}\n",
            c.id, c.created_utc, c.studies, c.reports, c.sessions, c.label
        ));
    }
    text
}

fn unassigned_text(studies: &[StudyInfo]) -> String {
    if studies.is_empty() {
        return String::new();
    }
    let mut text = format!(
        "received series not assigned to a case ({}):\n",
        studies.len()
    );
    for s in studies {
        text.push_str(&study_line(s));
    }
    text
}

/// One received series, as `show` and `list` print it.
fn study_line(s: &StudyInfo) -> String {
    format!(
        "  {:<4} series {}  {} instances  received {}  {}\n",
        s.modality, s.series_uid, s.instances, s.received_utc, s.folder
    )
}

fn show(args: &ShowArgs) -> anyhow::Result<()> {
    let record = open(&args.site)?;
    let case = record.case(args.id)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&CaseShow::new(case))?);
    } else {
        print!("{}", show_text(record.path(), &case));
    }
    Ok(())
}

fn show_text(path: &Path, case: &CaseDetail) -> String {
    let mut t = format!("Pinhole case {} — {NOT_FOR_CLINICAL_USE}\n", case.id);
    t.push_str(&format!("label:    {}\n", case.label));
    t.push_str(&format!("created:  {}\n", case.created_utc));
    if let Some(patient) = &case.patient_ref {
        t.push_str(&format!("patient:  {patient}\n"));
    }
    t.push_str(&format!("record:   {}\n", path.display()));
    t.push_str(&format!("studies ({}):\n", case.studies.len()));
    for s in &case.studies {
        t.push_str(&study_line(s));
    }
    t.push_str(&format!("reports ({}):\n", case.reports.len()));
    for r in &case.reports {
        t.push_str(&format!(
            "  #{:<4} {:<20} {}\n",
            r.id, r.kind, r.created_utc
        ));
    }
    t.push_str(&format!("sessions ({}):\n", case.sessions.len()));
    for s in &case.sessions {
        let ended = s
            .ended_utc
            .as_deref()
            .unwrap_or("(not finished: running, or interrupted)");
        t.push_str(&format!(
            "  #{:<4} {} → {}: {} poses, {} metrics, {} alerts, {} dropped\n",
            s.id, s.started_utc, ended, s.poses, s.metrics, s.alerts, s.dropped
        ));
    }
    t.push_str(&format!("control scans ({}):\n", case.control_scans.len()));
    for c in &case.control_scans {
        t.push_str(&format!(
            "  #{:<4} series {}  {}\n",
            c.id, c.series_uid, c.created_utc
        ));
    }
    t.push_str(&format!("confirmations ({}):\n", case.confirmations.len()));
    for c in &case.confirmations {
        t.push_str(&format!(
            "  #{:<4} {:<20} {}\n",
            c.id, c.kind, c.created_utc
        ));
    }
    t
}

fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let record = open(&args.site)?;
    let export = record.export_case(args.id, &args.out)?;
    println!(
        "Pinhole case {} export — {NOT_FOR_CLINICAL_USE}",
        export.case.id
    );
    println!("wrote {}", args.out.join("case.json").display());
    for session in &export.sessions {
        for file in &session.pose_files {
            println!(
                "wrote {} ({} poses{})",
                args.out.join(&file.file).display(),
                file.poses,
                if file.tool.is_empty() {
                    String::new()
                } else {
                    format!(", tool {}", file.tool)
                }
            );
        }
        println!("wrote {}", args.out.join(&session.metrics_file).display());
    }
    Ok(())
}
