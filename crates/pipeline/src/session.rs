//! Building a live guidance session (`pinhole serve`, the demo): the guidance engine
//! from a needle plan or a target, and the web viewer's scene (volumes as in-memory
//! NIfTI, label colours, plan and route lines, overlays, the DRR scene). Reports are
//! used as types, in process or read back from their files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use pinhole_guidance::engine::DEFAULT_TARGET_RADIUS_MM;
use pinhole_guidance::scene::{DrrScene, LabelColor, Line, LineIntegrals, OverlayVolume, Viewer};
use pinhole_guidance::{PlanSource, Session, SessionInputs, TargetZone};
use pinhole_io::labels::LabelTable;
use pinhole_io::AnyVolume;
use pinhole_volume::math::Mat4;
use pinhole_volume::target::TargetSpec;
use pinhole_volume::Volume;

use crate::error::{OrInvalid, Result};
use crate::inputs::{
    check_unnamed, labels_of, load, unnamed_label_name, unnamed_warning, UnnamedLabels,
    DEFAULT_LABEL_TABLE,
};
use crate::needle::unnamed_risk_group;
use crate::needle::PlanPaths;
use crate::observe::Observer;
use crate::vessel::RouteReport;

/// Organs outlined on the viewer's DRRs when present.
const DRR_ORGANS: [&str; 5] = [
    "liver",
    "kidney_left",
    "kidney_right",
    "aorta",
    "thyroid_gland",
];

/// What guidance aims at.
#[derive(Debug, Clone)]
pub enum GuidancePlan {
    /// A needle plan: guidance along its best path, with its risk groups.
    Needle(Box<PlanPaths>),
    /// Only a target: `label[:centroid|:deepest|:lower-pole|:lower-pole-cortex]`,
    /// `x,y,z` or `x,y,z,r` (LPS mm).
    Target(String),
}

/// The data of a live session, loaded.
pub struct SessionData<'a> {
    pub ct: &'a AnyVolume,
    pub labels: &'a Volume<u16>,
    pub table: &'a LabelTable,
    pub plan: GuidancePlan,
    /// `ReferenceToRAS` of the tracker, if known.
    pub registration: Option<Mat4>,
    /// Labelled voxels the table does not name: refuse (default) or avoid them (an
    /// `unnamed_labels` risk group, 3 mm clearance).
    pub unnamed_labels: UnnamedLabels,
    /// Reported as given.
    pub inputs: SessionInputs,
}

/// What the web viewer shows besides the guided plan.
#[derive(Default)]
pub struct ViewerContent {
    pub title: String,
    /// More needle plans whose paths are drawn (the guided plan's always are).
    pub plans: Vec<PlanPaths>,
    pub routes: Vec<RouteReport>,
    /// Volumes drawn over the CT (e.g. an ablation zone), by file.
    pub overlays: Vec<PathBuf>,
    /// Render the viewer's DRRs on the GPU (falls back to the CPU with a warning).
    pub gpu: bool,
    /// When the risk distance fields are computed: `Background` lets a server answer
    /// within seconds of start (updates say which groups are still pending).
    pub risk_fields: pinhole_guidance::FieldTiming,
}

/// Builds the guidance session (distance transforms: seconds on a full CT) with the
/// viewer's scene.
pub fn build(
    data: &SessionData,
    content: &ViewerContent,
    observer: &dyn Observer,
) -> Result<Session> {
    build_with(data, content, true, observer)
}

/// [`build`] without the viewer's scene (no volumes or DRRs prepared): the guidance
/// engine alone, as the Python bindings use it.
pub fn build_guidance(data: &SessionData, observer: &dyn Observer) -> Result<Session> {
    build_with(data, &ViewerContent::default(), false, observer)
}

fn build_with(
    data: &SessionData,
    content: &ViewerContent,
    with_viewer: bool,
    observer: &dyn Observer,
) -> Result<Session> {
    // Warnings for `/api/session` as well as the terminal.
    let mut warnings = Vec::new();
    let mut warn = |text: String| {
        observer.warn(&text);
        warnings.push(text);
    };
    if !data.labels.grid().same_geometry(data.ct.grid(), 1e-3) {
        warn(
            "the label map and the CT have different geometry; guidance uses the label grid".into(),
        );
    }
    let mut names: BTreeMap<u32, String> = data
        .table
        .iter()
        .map(|(id, e)| (id, e.name.clone()))
        .collect();
    let labels_path = Path::new(data.inputs.labels.as_deref().unwrap_or("the label map"));
    let unnamed = check_unnamed(
        data.labels,
        data.table,
        data.inputs
            .labels_table
            .as_deref()
            .unwrap_or(DEFAULT_LABEL_TABLE),
        labels_path,
        data.unnamed_labels,
    )?;
    let mut source = plan_source(&data.plan, data.labels, data.table, &mut warn)?;
    if !unnamed.is_empty() {
        names.extend(
            unnamed
                .iter()
                .map(|&(id, _)| (u32::from(id), unnamed_label_name(id))),
        );
        avoid_unnamed(&mut source, &unnamed);
        warn(unnamed_warning(
            &unnamed,
            "guidance treats them as risk structures (group unnamed_labels, 3 mm clearance)",
        ));
    }
    let mut plans: Vec<&PlanPaths> = Vec::new();
    if let GuidancePlan::Needle(plan) = &data.plan {
        plans.push(plan);
    }
    plans.extend(&content.plans);
    let viewer = if with_viewer {
        Some(viewer(data, content, &plans, observer)?)
    } else {
        None
    };
    let mut session = Session::with_timing(
        data.ct.grid(),
        data.labels.clone(),
        names,
        source,
        data.registration,
        data.inputs.clone(),
        content.risk_fields,
    );
    session.viewer = viewer;
    for absent in &session.description.warnings {
        observer.warn(absent);
    }
    warnings.append(&mut session.description.warnings);
    session.description.warnings = warnings;
    Ok(session)
}

fn plan_source(
    plan: &GuidancePlan,
    labels: &Volume<u16>,
    table: &LabelTable,
    warn: &mut dyn FnMut(String),
) -> Result<PlanSource> {
    let text = match plan {
        GuidancePlan::Needle(plan) => return Ok(PlanSource::Plan(plan.planned_needle())),
        GuidancePlan::Target(text) => text,
    };
    let spec: TargetSpec = text.parse()?;
    let target = spec.resolve(labels, |n| table.id_of(n))?;
    let zone = match &spec {
        TargetSpec::Label { .. } => TargetZone::Mask(Box::new(target.region.clone())),
        TargetSpec::Sphere {
            center_lps,
            radius_mm,
        } => TargetZone::Sphere {
            center_lps: *center_lps,
            radius_mm: *radius_mm,
        },
        TargetSpec::Point(p) => TargetZone::Sphere {
            center_lps: *p,
            radius_mm: DEFAULT_TARGET_RADIUS_MM,
        },
    };
    warn(
        "only a target given: no planned line, so lateral deviation and angle are reported as null"
            .into(),
    );
    Ok(PlanSource::Target {
        target_lps: target.point_lps,
        zone,
        label_id: target.label_id,
        description: target.description,
        risk_groups: None,
    })
}

/// Adds the `unnamed_labels` risk group to the session's groups (the default set when
/// the plan has none).
fn avoid_unnamed(source: &mut PlanSource, unnamed: &[(u16, usize)]) {
    let groups = match source {
        PlanSource::Plan(p) => &mut p.risk_groups,
        PlanSource::Target { risk_groups, .. } => risk_groups,
    };
    groups
        .get_or_insert_with(pinhole_guidance::default_risk_groups)
        .push(unnamed_risk_group(unnamed));
}

/// The web viewer's scene.
fn viewer(
    data: &SessionData,
    content: &ViewerContent,
    plans: &[&PlanPaths],
    observer: &dyn Observer,
) -> Result<Viewer> {
    let mut viewer = Viewer {
        title: content.title.clone(),
        ..Viewer::default()
    };
    let present = pinhole_volume::label_stats(data.labels);
    viewer.labels = present
        .keys()
        .map(|&id| LabelColor {
            id,
            name: data.table.name(id).unwrap_or("?").to_string(),
            color: data.table.color_of(id),
        })
        .collect();
    for plan in plans {
        viewer.lines.extend(plan_lines(plan));
    }
    viewer.lines.extend(content.routes.iter().map(route_line));
    for overlay in &content.overlays {
        add_overlay(&mut viewer, overlay, observer)?;
    }
    let organs: Vec<(u16, [u8; 3])> = DRR_ORGANS
        .iter()
        .filter_map(|n| data.table.id_of(n))
        .filter(|id| present.contains_key(id))
        .filter_map(|id| Some((u16::try_from(id).ok()?, data.table.color_of(id))))
        .collect();
    // The served volumes and the DRR scene are independent: made side by side (the
    // server starts answering that much sooner).
    let lines = viewer.lines.clone();
    let ((ct_file, labels_file), drr) = rayon::join(
        || rayon::join(|| served_ct(data.ct), || served_labels(data.labels)),
        || {
            let mu = pinhole_io::with_volume!(data.ct, v => {
                pinhole_xray::Attenuation::default().mu_volume(v)
            });
            let accelerated = if content.gpu {
                gpu_renderer(&mu, observer)
            } else {
                None
            };
            DrrScene::new(mu, data.labels, &organs, lines, accelerated)
        },
    );
    add_file(&mut viewer, "ct.nii.gz", ct_file?);
    add_file(&mut viewer, "labels.nii.gz", labels_file?);
    viewer.drr = Some(drr);
    Ok(viewer)
}

/// The CT as the viewer loads it: HU as int16 NIfTI.
fn served_ct(ct: &AnyVolume) -> Result<Vec<u8>> {
    let ct_hu = AnyVolume::from(ct.to_volume::<i16>());
    Ok(pinhole_io::nifti::to_gzip_bytes(&ct_hu, "ct.nii.gz")?)
}

/// The label map as the viewer loads it: int16 NIfTI marked as a label map.
fn served_labels(labels: &Volume<u16>) -> Result<Vec<u8>> {
    let labels = AnyVolume::from(labels.map(|v| i16::try_from(v).unwrap_or(i16::MAX)));
    Ok(pinhole_io::nifti::label_map_to_gzip_bytes(
        &labels,
        "labels.nii.gz",
    )?)
}

/// A needle plan's paths as viewer lines (the first is the best).
pub fn plan_lines(plan: &PlanPaths) -> Vec<Line> {
    let procedure = &plan.procedure;
    plan.paths
        .iter()
        .enumerate()
        .map(|(n, p)| Line {
            name: if n == 0 {
                format!("{procedure} #1 (best)")
            } else {
                format!("{procedure} #{}", n + 1)
            },
            kind: if n == 0 { "plan" } else { "alternative" }.into(),
            points_lps: vec![p.entry_lps, p.target_lps],
            length_mm: Some(p.length_mm()),
        })
        .collect()
}

/// A vessel route as a viewer line.
pub fn route_line(route: &RouteReport) -> Line {
    Line {
        name: format!("route {}", route.vessels.join(" → ")),
        kind: "route".into(),
        points_lps: route.route.points_lps.clone(),
        length_mm: Some(route.length_mm),
    }
}

/// Serves any volume Pinhole reads (e.g. an ablation `zone.seg.nrrd`) as a 0/1 NIfTI
/// mask, which every viewer colours the same way.
fn add_overlay(viewer: &mut Viewer, path: &Path, observer: &dyn Observer) -> Result<()> {
    let stem = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('.').next())
        .filter(|n| !n.is_empty())
        .or_invalid(|| format!("{}: no file name", path.display()))?
        .to_string();
    let volume = load(path, None, observer)?.volume;
    let mask = AnyVolume::from(volume.to_f32().map(|v| u8::from(v != 0.0)));
    let name = format!("{stem}.nii.gz");
    add_file(
        viewer,
        &name,
        pinhole_io::nifti::to_gzip_bytes(&mask, &name)?,
    );
    viewer.overlays.push(OverlayVolume {
        url: format!("/data/{name}"),
        name,
        opacity: 0.5,
    });
    Ok(())
}

fn add_file(viewer: &mut Viewer, name: &str, bytes: Vec<u8>) {
    let content_type = "application/octet-stream";
    viewer
        .files
        .insert(name.to_string(), (content_type, Arc::from(bytes)));
}

/// The wgpu DRR renderer (GPU_DRR_SAMPLES samples per ray), or `None` with a warning.
#[cfg(feature = "gpu")]
fn gpu_renderer(mu: &Volume<f32>, observer: &dyn Observer) -> Option<Box<dyn LineIntegrals>> {
    let made = pinhole_gpu::GpuContext::new().and_then(|ctx| pinhole_gpu::GpuDrr::new(&ctx, mu));
    match made {
        Ok(drr) => Some(Box::new(GpuLineIntegrals(drr))),
        Err(err) => {
            observer.warn(&format!("--gpu: {err}; the viewer's DRRs use the CPU"));
            None
        }
    }
}

#[cfg(not(feature = "gpu"))]
fn gpu_renderer(_mu: &Volume<f32>, observer: &dyn Observer) -> Option<Box<dyn LineIntegrals>> {
    observer.warn("--gpu: this build has no GPU support; the viewer's DRRs use the CPU");
    None
}

#[cfg(feature = "gpu")]
const GPU_DRR_SAMPLES: usize = 500;

#[cfg(feature = "gpu")]
struct GpuLineIntegrals(pinhole_gpu::GpuDrr);

#[cfg(feature = "gpu")]
impl LineIntegrals for GpuLineIntegrals {
    fn name(&self) -> &str {
        "gpu"
    }
    fn render(&self, projection: &pinhole_xray::Projection) -> Result<pinhole_xray::Image, String> {
        self.0
            .render(projection, GPU_DRR_SAMPLES)
            .map_err(|e| e.to_string())
    }
}

/// Reads the CT and label map of a session (the labels as a label map), checking the CT
/// ([`crate::inputs::check_ct`]): the warning `/api/session` must carry when the check
/// was overridden comes third.
pub fn load_volumes(
    ct: &Path,
    labels: &Path,
    not_ct: crate::inputs::NotCt,
    observer: &dyn Observer,
) -> Result<(AnyVolume, Volume<u16>, Option<String>)> {
    let (ct_loaded, labels_volume) =
        rayon::join(|| load(ct, None, observer), || load(labels, None, observer));
    let ct_loaded = ct_loaded?;
    let warning = crate::inputs::check_ct(ct, &ct_loaded, not_ct, observer)?;
    Ok((
        ct_loaded.volume,
        labels_of(labels_volume?.volume, labels)?,
        warning,
    ))
}
