//! Intraprocedural CT: `pinhole register-ct` (control scan onto the planning scan),
//! `pinhole verify needle` (the needle in a control scan against the plan) and
//! `pinhole confirm ablation` (coverage and minimal ablative margin).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use pinhole_pipeline::confirm::{ConfirmOutcome, ConfirmRequest, ZoneInput};
use pinhole_pipeline::control_ct::{
    Alignment, CtRegistrationOutcome, CtRegistrationRequest, OrganFocus,
};
use pinhole_pipeline::verify::{NeedleCheckOutcome, NeedleCheckRequest};
use pinhole_pipeline::{Observer, DISCLAIMER};

/// How the second scan is placed in the first one's frame.
#[derive(Args, Clone)]
pub struct AlignmentArgs {
    /// A known transform instead of registering (ITK .tfm or 4x4 text, Slicer's
    /// to-parent convention: second scan -> first scan).
    #[arg(long, conflicts_with_all = ["same_frame", "organ"])]
    registration: Option<PathBuf>,
    /// The scans share their frame: no registration.
    #[arg(long, conflicts_with = "organ")]
    same_frame: bool,
    /// Register on this organ of the planning label map (--labels) only, e.g. liver.
    #[arg(long, requires = "labels")]
    organ: Option<String>,
    /// Margin around --organ that the registration also uses, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 20.0)]
    organ_margin_mm: f64,
    /// After the rigid registration, deform --organ (and its margin) with a B-spline
    /// (breathing, the needle's push); the transform file becomes an ITK composite
    /// (rigid + B-spline) that Slicer reads. `verify needle` brings the needle across
    /// through it.
    #[arg(long, requires = "organ")]
    deformable: bool,
    /// Go on when a scan does not look like a CT in HU (recorded in the report).
    #[arg(long)]
    allow_non_ct: bool,
}

impl AlignmentArgs {
    fn alignment(
        &self,
        labels: Option<&Path>,
        labels_table: Option<&str>,
    ) -> anyhow::Result<Alignment> {
        Ok(if let Some(path) = &self.registration {
            Alignment::File(path.clone())
        } else if self.same_frame {
            Alignment::Identity
        } else {
            let organ = match (&self.organ, labels) {
                (Some(organ), Some(labels)) => {
                    pinhole_pipeline::limits::ORGAN_MARGIN_MM.check(self.organ_margin_mm)?;
                    Some(OrganFocus {
                        labels: labels.to_path_buf(),
                        labels_table: labels_table.map(str::to_owned),
                        organ: organ.clone(),
                        margin_mm: self.organ_margin_mm,
                        deformable: self.deformable,
                    })
                }
                _ => None,
            };
            Alignment::Register { organ }
        })
    }
}

#[derive(Args)]
pub struct RegisterCtArgs {
    /// The planning CT (the fixed scan).
    #[arg(long)]
    planning_ct: PathBuf,
    /// The control CT (the scan that is moved onto the planning CT).
    #[arg(long)]
    control_ct: PathBuf,
    /// Planning label map (for --organ).
    #[arg(long)]
    labels: Option<PathBuf>,
    /// Label table: totalseg-v2 (default), totalseg-v1, a CSV or a Slicer colour table.
    #[arg(long)]
    labels_table: Option<String>,
    #[command(flatten)]
    alignment: AlignmentArgs,
    /// Output folder: ct_registration.json, control_to_planning.tfm, registration.png.
    #[arg(long)]
    out: PathBuf,
}

pub fn register_ct(args: &RegisterCtArgs, terminal: &dyn Observer) -> anyhow::Result<()> {
    super::marking_failure(&args.out, "register-ct", || {
        let request = CtRegistrationRequest {
            planning_ct: args.planning_ct.clone(),
            control_ct: args.control_ct.clone(),
            alignment: args
                .alignment
                .alignment(args.labels.as_deref(), args.labels_table.as_deref())?,
            not_ct: super::not_ct_policy(args.alignment.allow_non_ct),
        };
        super::refuse_overwriting_inputs(
            &[
                Some(&args.planning_ct),
                Some(&args.control_ct),
                args.labels.as_deref(),
                args.alignment.registration.as_deref(),
            ],
            &super::folder_files(&args.out, &CtRegistrationOutcome::FILES),
        )?;
        let outcome = pinhole_pipeline::control_ct::run(&request, terminal)?;
        outcome.write(&args.out)?;
        finish(&outcome.report.summary(), &args.out);
        if !outcome.report.alignment.converged {
            anyhow::bail!("the registration did not converge (the report says why)");
        }
        Ok(())
    })
}

fn finish(summary: &[String], out: &Path) {
    for line in summary {
        println!("{line}");
    }
    println!("wrote {}", out.display());
    println!("{DISCLAIMER}");
}

/// `pinhole verify ...`.
#[derive(Subcommand)]
pub enum VerifyCommand {
    /// Find the needle in a control CT and measure it against the plan, with a correction.
    Needle(Box<VerifyNeedleArgs>),
}

#[derive(Args)]
pub struct VerifyNeedleArgs {
    /// The needle plan (plan.json of `pinhole plan needle`, or {"target_lps", "paths"}).
    #[arg(long)]
    plan: PathBuf,
    #[arg(long)]
    planning_ct: PathBuf,
    #[arg(long)]
    control_ct: PathBuf,
    /// Planning label map: what the needle's line would cross.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[arg(long)]
    labels_table: Option<String>,
    #[command(flatten)]
    alignment: AlignmentArgs,
    /// Output folder: needle_check.json, needle_check.png, needle_check.mrk.json,
    /// control_to_planning.tfm.
    #[arg(long)]
    out: PathBuf,
}

pub fn verify(command: &VerifyCommand, terminal: &dyn Observer) -> anyhow::Result<()> {
    let VerifyCommand::Needle(args) = command;
    super::marking_failure(&args.out, "verify needle", || {
        let request = NeedleCheckRequest {
            plan: args.plan.clone(),
            planning_ct: args.planning_ct.clone(),
            control_ct: args.control_ct.clone(),
            labels: args.labels.clone(),
            labels_table: args.labels_table.clone(),
            alignment: args
                .alignment
                .alignment(args.labels.as_deref(), args.labels_table.as_deref())?,
            not_ct: super::not_ct_policy(args.alignment.allow_non_ct),
        };
        super::refuse_overwriting_inputs(
            &[
                Some(&args.plan),
                Some(&args.planning_ct),
                Some(&args.control_ct),
                args.labels.as_deref(),
                args.alignment.registration.as_deref(),
            ],
            &super::folder_files(&args.out, &NeedleCheckOutcome::FILES),
        )?;
        let outcome = pinhole_pipeline::verify::run(&request, terminal)?;
        outcome.write(&args.out)?;
        finish(&outcome.report.summary(), &args.out);
        Ok(())
    })
}

/// `pinhole confirm ...`.
#[derive(Subcommand)]
pub enum ConfirmCommand {
    /// Coverage and 3-D minimal ablative margin of a tumour by the ablation zone, after
    /// registering the post-ablation scan onto the pre-ablation scan.
    Ablation(Box<ConfirmAblationArgs>),
}

#[derive(Args)]
pub struct ConfirmAblationArgs {
    #[arg(long)]
    pre_ct: PathBuf,
    /// Tumour in the pre-ablation scan: a label name (with --labels), x,y,z,r (LPS mm)
    /// or a mask file.
    #[arg(long, allow_hyphen_values = true)]
    tumor: String,
    /// Pre-ablation label map.
    #[arg(long)]
    labels: Option<PathBuf>,
    #[arg(long)]
    labels_table: Option<String>,
    #[arg(long)]
    post_ct: PathBuf,
    /// Ablation zone segmented on the post-ablation scan (non-zero voxels).
    #[arg(
        long,
        required_unless_present = "zone_from_tip",
        conflicts_with = "zone_from_tip"
    )]
    zone: Option<PathBuf>,
    /// Grow the zone from this point of the post-ablation scan (x,y,z LPS mm): the
    /// connected non-enhancing region around it.
    #[arg(long, value_parser = super::parse_point, allow_hyphen_values = true)]
    zone_from_tip: Option<[f64; 3]>,
    #[command(flatten)]
    alignment: AlignmentArgs,
    /// Minimal ablative margin required, mm.
    #[arg(value_parser = super::finite, long, default_value_t = pinhole_intraop::margin::DEFAULT_REQUIRED_MARGIN_MM)]
    margin_mm: f64,
    /// Analysis grid spacing, mm.
    #[arg(value_parser = super::finite, long, default_value_t = 0.5)]
    grid_mm: f64,
    /// Output folder: confirmation.json, margin.vtk, margin.png,
    /// zone_registered.seg.nrrd, post_to_pre.tfm.
    #[arg(long)]
    out: PathBuf,
}

pub fn confirm(command: &ConfirmCommand, terminal: &dyn Observer) -> anyhow::Result<()> {
    let ConfirmCommand::Ablation(args) = command;
    super::marking_failure(&args.out, "confirm ablation", || {
        let zone = match (&args.zone, args.zone_from_tip) {
            (Some(path), _) => ZoneInput::File(path.clone()),
            (None, Some(seed)) => ZoneInput::FromTip(seed),
            (None, None) => anyhow::bail!("give --zone or --zone-from-tip"),
        };
        let request = ConfirmRequest {
            pre_ct: args.pre_ct.clone(),
            post_ct: args.post_ct.clone(),
            tumor: args.tumor.clone(),
            labels: args.labels.clone(),
            labels_table: args.labels_table.clone(),
            zone,
            alignment: args
                .alignment
                .alignment(args.labels.as_deref(), args.labels_table.as_deref())?,
            required_margin_mm: args.margin_mm,
            grid_mm: args.grid_mm,
            not_ct: super::not_ct_policy(args.alignment.allow_non_ct),
        };
        let tumor_file = Path::new(&args.tumor);
        super::refuse_overwriting_inputs(
            &[
                Some(&args.pre_ct),
                Some(&args.post_ct),
                args.labels.as_deref(),
                args.zone.as_deref(),
                tumor_file.is_file().then_some(tumor_file),
                args.alignment.registration.as_deref(),
            ],
            &super::folder_files(&args.out, &ConfirmOutcome::FILES),
        )?;
        let outcome = pinhole_pipeline::confirm::run(&request, terminal)?;
        outcome.write(&args.out)?;
        finish(&outcome.report.summary(), &args.out);
        Ok(())
    })
}
