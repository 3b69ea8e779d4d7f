//! Ablation confirmation (`pinhole confirm ablation`): the post-ablation scan registered
//! onto the pre-ablation scan, the ablation zone brought into the pre-ablation frame, and
//! the tumour's coverage and 3-D minimal ablative margin. Writes `confirmation.json`
//! ([`ConfirmationReport`]), `margin.vtk` (the tumour surface with a `margin_mm` scalar
//! for 3D Slicer), `margin.png` and `zone_registered.seg.nrrd`.

use std::path::{Path, PathBuf};

use pinhole_ablation::coverage::patient_side;
use pinhole_ablation::plan::analysis_grid;
use pinhole_intraop::margin::{
    assess_margin, warp_mask, warp_mask_by, MarginAssessment, MarginMap, MarginSettings, Verdict,
    REQUIRED_MARGIN_SOURCE,
};
use pinhole_io::labels::{LabelEntry, LabelTable};
use pinhole_volume::annotate::Canvas;
use pinhole_volume::math::{Vec3, IDENTITY4};
use pinhole_volume::target::{sphere_mask, TargetSpec};
use pinhole_volume::{components, dilate, Grid, Mask, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::control_ct::{load_and_align, Alignment, ControlAlignment, CtRegistrationRequest};
use crate::error::{Error, Result};
use crate::figures::{write_picture, RgbPicture};
use crate::inputs::{load_labels, load_named_labels, InputFile, NotCt, UnnamedLabels};
use crate::limits;
use crate::observe::{step, Observer};
use crate::report::{unversioned, versioned_report, write_folder, Report, DISCLAIMER, VERSION};

/// Around the ablation zone, what the deformable registration leaves out (mm): the
/// enhancing rim and oedema have no counterpart in the pre-ablation scan either.
const ZONE_EXCLUSION_MM: f64 = 5.0;

/// Where the ablation zone comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneInput {
    /// A segmentation of the post-ablation scan (non-zero voxels; any grid).
    File(PathBuf),
    /// Grown in the post-ablation scan from a point inside the zone (LPS mm of the
    /// post-ablation scan): the connected non-enhancing region around it.
    FromTip(Vec3),
}

/// An ablation to confirm.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfirmRequest {
    pub pre_ct: PathBuf,
    pub post_ct: PathBuf,
    /// Tumour in the pre-ablation frame: a label name (needs `labels`), a sphere
    /// `x,y,z,r` (LPS mm), or a mask file (non-zero voxels).
    pub tumor: String,
    pub labels: Option<PathBuf>,
    pub labels_table: Option<String>,
    pub zone: ZoneInput,
    /// Registration: automatic (optionally on an organ of `labels`), a file, or none.
    pub alignment: Alignment,
    /// The minimal ablative margin asked for, mm.
    pub required_margin_mm: f64,
    /// Analysis grid spacing, mm.
    pub grid_mm: f64,
    pub not_ct: NotCt,
}

/// The tumour as assessed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmedTumor {
    pub spec: String,
    pub description: String,
}

/// The zone as assessed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmedZone {
    /// `segmentation` or `grown from a point`.
    pub source: String,
    /// The seed (post-ablation frame) when grown.
    pub seed_post_lps: Option<Vec3>,
    /// The HU threshold the growing used.
    pub threshold_hu: Option<f64>,
}

/// The files written beside `confirmation.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationOutputs {
    pub margin_surface: String,
    pub picture: String,
    pub segmentation: String,
    pub transform: String,
}

/// `confirmation.json`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ConfirmationReport {
    #[serde(default = "unversioned")]
    pub schema_version: u32,
    pub procedure: String,
    pub registration: ControlAlignment,
    pub tumor: ConfirmedTumor,
    pub zone: ConfirmedZone,
    #[serde(flatten)]
    pub margin: MarginAssessment,
    /// Patient side of the thinnest margin, seen from the tumour's centre.
    pub thinnest_side: String,
    /// One sentence: the verdict and the numbers it rests on.
    pub verdict_text: String,
    pub required_margin_source: String,
    pub margin_method: String,
    pub analysis_grid_mm: f64,
    pub outputs: ConfirmationOutputs,
    pub inputs: Vec<InputFile>,
    pub version: String,
    pub note: String,
    #[serde(default)]
    pub warnings: Vec<String>,
}

versioned_report!(ConfirmationReport, "ablation-confirmation", 1);

/// A confirmation with the geometry and picture that go with it.
#[derive(Debug, Clone)]
pub struct ConfirmOutcome {
    pub report: ConfirmationReport,
    pub map: MarginMap,
    /// Tumour covered (1), tumour not covered (2), rest of the zone (3), on the analysis
    /// grid in the pre-ablation frame.
    pub segmentation: Volume<u16>,
    pub picture: RgbPicture,
    /// The deformation in use (pre-ablation frame), if any: written into `post_to_pre.tfm`.
    pub field: Option<pinhole_intraop::deformable::BSplineField>,
}

/// Confirms the ablation.
pub fn run(request: &ConfirmRequest, observer: &dyn Observer) -> Result<ConfirmOutcome> {
    limits::CONFIRM_MARGIN_MM.check(request.required_margin_mm)?;
    limits::ABLATION_GRID_MM.check(request.grid_mm)?;
    let mut scans = load_and_align(
        &CtRegistrationRequest {
            planning_ct: request.pre_ct.clone(),
            control_ct: request.post_ct.clone(),
            alignment: request.alignment.clone(),
            not_ct: request.not_ct,
        },
        observer,
    )?;
    scans.require_converged(
        "the post-ablation scan onto the pre-ablation scan",
        "no margin is reported",
    )?;
    let mut warnings = scans.warnings.clone();
    let (tumor_source, description) = tumor_mask(request, scans.planning.grid(), observer)?;
    let pad_mm = request.required_margin_mm + 12.0;
    let grid = analysis_grid(&tumor_source.region, pad_mm, request.grid_mm)?;
    let tumor = match tumor_source.sphere {
        Some((centre, radius)) => sphere_mask(&grid, centre, radius),
        None => warp_mask(&tumor_source.region, &grid, &IDENTITY4),
    };
    let (zone_post, zone_info) = match &request.zone {
        ZoneInput::File(path) => {
            let labels = load_labels(path, observer)?;
            (
                labels.map(|v| v != 0),
                ConfirmedZone {
                    source: "segmentation".to_owned(),
                    seed_post_lps: None,
                    threshold_hu: None,
                },
            )
        }
        ZoneInput::FromTip(seed) => {
            let (mask, threshold) =
                step(observer, "growing the ablation zone from the tip", || {
                    grow_zone(&scans.control, *seed)
                })?;
            (
                mask,
                ConfirmedZone {
                    source: "grown from a point".to_owned(),
                    seed_post_lps: Some(*seed),
                    threshold_hu: Some(threshold),
                },
            )
        }
    };
    if !zone_post.data().iter().any(|&b| b) {
        return Err(Error::invalid("the ablation zone is empty"));
    }
    // The zone has no counterpart in the pre-ablation scan: the deformation must not pull
    // it onto the tumour, so it (and its rim) is left out of the similarity.
    if scans.deformable_pending() {
        let zone_and_rim = dilate(&zone_post, ZONE_EXCLUSION_MM);
        let before = scans.warnings.len();
        scans.refine_deformable(
            Some((zone_and_rim, "the ablation zone and 5 mm around it")),
            observer,
        )?;
        // Already on the terminal: into the report only.
        warnings.extend_from_slice(&scans.warnings[before..]);
    }
    let echoed = warnings.len();
    warnings.extend(zone_warnings(
        &zone_post,
        scans.control.grid(),
        &tumor,
        |x| scans.planning_to_control(x),
    ));
    let zone = warp_mask_by(&zone_post, &grid, |x| scans.planning_to_control(x));
    let settings = MarginSettings {
        required_mm: request.required_margin_mm,
        ..MarginSettings::default()
    };
    let (margin, map) = step(observer, "measuring the margins", || {
        assess_margin(&tumor, &zone, &settings)
    })?;
    if !zone.data().iter().any(|&b| b) {
        warnings.push(format!(
            "the ablation zone, brought into the pre-ablation frame, does not reach within {pad_mm:.0} mm of the tumour: nothing of the tumour is covered and the margin is more negative than the analysis can measure"
        ));
    }
    if margin.minimal_margin_mm > pad_mm - 1.0 {
        warnings.push(format!(
            "the margin exceeds the {pad_mm:.0} mm the analysis looked at around the tumour: the MAM is at least that"
        ));
    }
    for w in &warnings[echoed..] {
        observer.warn(w);
    }
    let picture = margin_picture(&scans.planning, &tumor, &zone, &margin);
    let segmentation = segmentation(&tumor, &zone)?;
    let mut inputs = vec![
        InputFile::with_role("pre_ct", &request.pre_ct)?,
        InputFile::with_role("post_ct", &request.post_ct)?,
    ];
    if let Some(l) = &request.labels {
        inputs.push(InputFile::with_role("labels", l)?);
    }
    if let ZoneInput::File(p) = &request.zone {
        inputs.push(InputFile::with_role("zone", p)?);
    }
    if Path::new(&request.tumor).is_file() {
        inputs.push(InputFile::with_role("tumor", Path::new(&request.tumor))?);
    }
    if let Alignment::File(p) = &request.alignment {
        inputs.push(InputFile::with_role("registration", p)?);
    }
    let report = ConfirmationReport {
        schema_version: ConfirmationReport::SCHEMA_VERSION,
        procedure: "ablation confirmation".to_owned(),
        registration: scans.alignment.clone(),
        tumor: ConfirmedTumor {
            spec: crate::provenance::recorded_path(Path::new(&request.tumor)),
            description,
        },
        zone: zone_info,
        thinnest_side: patient_side(margin.thinnest_direction_lps),
        verdict_text: verdict_text(&margin),
        required_margin_source: REQUIRED_MARGIN_SOURCE.to_owned(),
        margin_method: "signed distance to the zone surface (exact Euclidean distance transforms, half-voxel corrected, trilinear) at the vertices of the tumour's surface mesh (surface nets), statistics weighted by surface area; the zone brought into the pre-ablation frame through the registration (trilinear fraction >= 0.5)".to_owned(),
        analysis_grid_mm: request.grid_mm,
        margin,
        outputs: ConfirmationOutputs {
            margin_surface: "margin.vtk".to_owned(),
            picture: "margin.png".to_owned(),
            segmentation: "zone_registered.seg.nrrd".to_owned(),
            transform: "post_to_pre.tfm".to_owned(),
        },
        inputs,
        version: VERSION.to_owned(),
        note: format!("{DISCLAIMER} The margin depends on the registration and on the zone's segmentation; check both."),
        warnings,
    };
    Ok(ConfirmOutcome {
        report,
        map,
        segmentation,
        picture,
        field: scans.field,
    })
}

/// The tumour in the pre-ablation frame.
struct TumorSource {
    region: Mask,
    sphere: Option<(Vec3, f64)>,
}

fn tumor_mask(
    request: &ConfirmRequest,
    planning: &Grid,
    observer: &dyn Observer,
) -> Result<(TumorSource, String)> {
    let path = Path::new(&request.tumor);
    if path.is_file() {
        let labels = load_labels(path, observer)?;
        let region = labels.map(|v| v != 0);
        if !region.data().iter().any(|&b| b) {
            return Err(Error::invalid(format!(
                "{}: the tumour mask is empty",
                path.display()
            )));
        }
        return Ok((
            TumorSource {
                region,
                sphere: None,
            },
            format!("mask {}", crate::provenance::recorded_path(path)),
        ));
    }
    let spec: TargetSpec = request.tumor.parse()?;
    if let TargetSpec::Sphere {
        center_lps,
        radius_mm,
    } = spec
    {
        limits::TUMOR_RADIUS_MM.check(radius_mm)?;
        let region = sphere_mask(planning, center_lps, radius_mm);
        if !region.data().iter().any(|&b| b) {
            return Err(Error::invalid(
                "the tumour sphere lies outside the pre-ablation scan",
            ));
        }
        return Ok((
            TumorSource {
                region,
                sphere: Some((center_lps, radius_mm)),
            },
            format!("sphere r = {radius_mm} mm"),
        ));
    }
    let labels_path = request.labels.as_deref().ok_or_else(|| {
        Error::invalid(format!(
            "--tumor {:?} names a label: give --labels (the pre-ablation label map)",
            request.tumor
        ))
    })?;
    let named = load_named_labels(
        labels_path,
        request.labels_table.as_deref(),
        UnnamedLabels::Forbid,
        observer,
    )?;
    let target = spec.resolve(&named.labels, |n| named.table.id_of(n))?;
    Ok((
        TumorSource {
            region: target.region,
            sphere: None,
        },
        target.description,
    ))
}

/// Warnings about what the post-ablation scan cannot show; `pre_to_post` maps a point
/// through the registration in use (rigid, or with its deformation).
fn zone_warnings(
    zone_post: &Mask,
    post: &Grid,
    tumor: &Mask,
    pre_to_post: impl Fn(Vec3) -> Vec3,
) -> Vec<String> {
    let mut warnings = Vec::new();
    let edges = zone_post.scan_edges_touched();
    if !edges.is_empty() {
        warnings.push(format!(
            "the ablation zone touches the post-ablation scan's edge ({}): it may be cut off there, so the margin on that side may be thinner than shown",
            edges.iter().map(|&s| pinhole_volume::volume::side_name(s)).collect::<Vec<_>>().join(", ")
        ));
    }
    let g = tumor.grid();
    let (mut total, mut outside) = (0usize, 0usize);
    for (o, _) in tumor.data().iter().enumerate().filter(|(_, &b)| b) {
        total += 1;
        let p = pre_to_post(g.index_to_world(g.index_of_offset(o).map(|v| v as f64)));
        if post.world_to_voxel(p).is_none() {
            outside += 1;
        }
    }
    if outside > 0 {
        warnings.push(format!(
            "{:.0} % of the tumour lies outside the post-ablation scan: the zone cannot be seen there, the coverage and margin count it as not ablated",
            100.0 * outside as f64 / total.max(1) as f64
        ));
    }
    warnings
}

/// The connected region around `seed` darker than halfway between the seed's HU (median
/// within 3 mm) and the surrounding tissue's (median of a 25–35 mm shell), and not darker
/// than the seed by more than that contrast (fat, gas, air), within 50 mm:
/// opened by 2.5 mm first so that thin bridges into neighbouring dark tissue (fat,
/// bowel, unenhanced vessels) are cut, then closed and hole-filled (gas bubbles and a
/// thin rim do not split it). Works on a box of ±55 mm around the seed.
fn grow_zone(post: &Volume<f32>, seed: Vec3) -> Result<(Mask, f64)> {
    let grid = post.grid();
    if grid.world_to_voxel(seed).is_none() {
        return Err(Error::invalid(
            "--zone-from-tip lies outside the post-ablation scan",
        ));
    }
    let centre_hu = median_in_shell(post, seed, 0.0, 3.0);
    let shell_hu = median_in_shell(post, seed, 25.0, 35.0);
    let (Some(centre_hu), Some(shell_hu)) = (centre_hu, shell_hu) else {
        return Err(Error::invalid(
            "--zone-from-tip: not enough of the scan around the point",
        ));
    };
    if shell_hu - centre_hu < 15.0 {
        return Err(Error::invalid(format!(
            "--zone-from-tip: the point ({centre_hu:.0} HU) is not darker than the tissue around it ({shell_hu:.0} HU): no non-enhancing zone to grow; give the zone as a segmentation (--zone)"
        )));
    }
    let threshold = (centre_hu + shell_hu) / 2.0;
    // Fat, gas and air are darker still: a band as wide below the zone as above it.
    let floor = centre_hu - (shell_hu - centre_hu);
    let local = crop_around(post, seed, 55.0);
    let local_grid = local.grid().clone();
    let candidate = Mask::new(
        local_grid.clone(),
        (0..local_grid.voxel_count())
            .map(|o| {
                let p = local_grid.index_to_world(local_grid.index_of_offset(o).map(|v| v as f64));
                let hu = f64::from(local.data()[o]);
                hu < threshold && hu > floor && pinhole_volume::math::distance(p, seed) <= 50.0
            })
            .collect(),
    )
    .map_err(|e| Error::invalid(e.to_string()))?;
    let opened = pinhole_volume::open(&candidate, 2.5);
    let comps = components::connected_components(&opened, components::Connectivity::Six);
    let label = local_grid
        .world_to_voxel(seed)
        .map(|v| comps.labels.data()[local_grid.offset(v)])
        .unwrap_or(0);
    if label == 0 {
        return Err(Error::invalid(
            "--zone-from-tip: the point is not inside a dark region at least 5 mm across",
        ));
    }
    let region = comps.labels.map(|l| l == label);
    let closed = pinhole_volume::close(&region, 2.0);
    let filled = components::fill_holes(&closed);
    // Back onto the whole post-ablation grid.
    Ok((
        filled.resample(grid, pinhole_volume::Interpolation::Nearest, false),
        threshold,
    ))
}

/// The box of `post` within `half_mm` of `centre` (index-aligned, clamped to the scan).
fn crop_around(volume: &Volume<f32>, centre: Vec3, half_mm: f64) -> Volume<f32> {
    let grid = volume.grid();
    let c = grid.world_to_index(centre);
    let s = grid.spacing_mm();
    let dims = grid.dims();
    let start: [usize; 3] =
        std::array::from_fn(|a| (c[a] - half_mm / s[a]).floor().max(0.0) as usize);
    let end: [usize; 3] = std::array::from_fn(|a| {
        ((c[a] + half_mm / s[a]).ceil().max(0.0) as usize + 1).min(dims[a])
    });
    let extent: [usize; 3] = std::array::from_fn(|a| end[a].saturating_sub(start[a]).max(1));
    volume.crop(start, extent)
}

fn median_in_shell(
    volume: &Volume<f32>,
    centre: Vec3,
    inner_mm: f64,
    outer_mm: f64,
) -> Option<f64> {
    let grid = volume.grid();
    let s = grid.spacing_mm();
    let c = grid.world_to_index(centre);
    let reach: [i64; 3] = std::array::from_fn(|a| (outer_mm / s[a]).ceil() as i64);
    let dims = grid.dims();
    let mut values = Vec::new();
    for dk in -reach[2]..=reach[2] {
        for dj in -reach[1]..=reach[1] {
            for di in -reach[0]..=reach[0] {
                let ijk = [
                    c[0].round() as i64 + di,
                    c[1].round() as i64 + dj,
                    c[2].round() as i64 + dk,
                ];
                if (0..3).any(|a| ijk[a] < 0 || ijk[a] >= dims[a] as i64) {
                    continue;
                }
                let ijk = ijk.map(|v| v as usize);
                let d = pinhole_volume::math::distance(
                    grid.index_to_world(ijk.map(|v| v as f64)),
                    centre,
                );
                if d >= inner_mm && d <= outer_mm {
                    let v = volume.data()[grid.offset(ijk)];
                    if v.is_finite() {
                        values.push(f64::from(v));
                    }
                }
            }
        }
    }
    if values.len() < 5 {
        return None;
    }
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

fn verdict_text(m: &MarginAssessment) -> String {
    match m.verdict {
        Verdict::Sufficient => format!(
            "minimal ablative margin {:.1} mm >= {:.1} mm required: margin sufficient",
            m.minimal_margin_mm, m.required_mm
        ),
        Verdict::InsufficientMargin => format!(
            "minimal ablative margin {:.1} mm < {:.1} mm required: tumour covered but the margin is insufficient ({:.0} % of its surface below {:.1} mm)",
            m.minimal_margin_mm,
            m.required_mm,
            m.area_below
                .iter()
                .find(|a| (a.threshold_mm - m.required_mm).abs() < 1e-9)
                .map_or(f64::NAN, |a| a.percent),
            m.required_mm
        ),
        Verdict::TumorNotCovered => format!(
            "tumour NOT fully covered: {:.1} % of its volume inside the zone, minimal ablative margin {:.1} mm",
            m.coverage_tumor_pct, m.minimal_margin_mm
        ),
    }
}

fn segmentation(tumor: &Mask, zone: &Mask) -> Result<Volume<u16>> {
    let data = tumor
        .data()
        .iter()
        .zip(zone.data())
        .map(|(&t, &z)| match (t, z) {
            (true, true) => 1,
            (true, false) => 2,
            (false, true) => 3,
            (false, false) => 0,
        })
        .collect();
    Volume::new(tumor.grid().clone(), data).map_err(|e| Error::invalid(e.to_string()))
}

fn segment_table() -> LabelTable {
    let mut table = LabelTable::new();
    for (id, name, color) in [
        (1u32, "tumor_covered", [230, 200, 40]),
        (2, "tumor_not_covered", [255, 0, 255]),
        (3, "ablation_zone_registered", [230, 60, 40]),
    ] {
        table.insert(
            id,
            LabelEntry {
                name: name.to_owned(),
                color_rgb: Some(color),
            },
        );
    }
    table
}

/// Axial slice of the pre-ablation scan through the thinnest point: tumour outline in
/// yellow, registered zone in red, the thinnest point as a cyan cross.
fn margin_picture(
    pre: &Volume<f32>,
    tumor: &Mask,
    zone: &Mask,
    m: &MarginAssessment,
) -> RgbPicture {
    let size = 320usize;
    let pixel_mm = 0.3125
        * (tumor.grid().dims()[0] as f64 * tumor.grid().spacing_mm()[0] / 100.0).clamp(1.0, 4.0);
    let centre = m.thinnest_lps;
    let c0 = m.tumor_centroid_lps;
    let half = size as f64 * pixel_mm / 2.0;
    let at = |r: usize, c: usize| -> Vec3 {
        [
            c0[0] - half + (c as f64 + 0.5) * pixel_mm,
            c0[1] - half + (r as f64 + 0.5) * pixel_mm,
            centre[2],
        ]
    };
    let mut rgb = vec![0u8; size * size * 3];
    let mut inside = vec![[false; 2]; size * size];
    for r in 0..size {
        for c in 0..size {
            let p = at(r, c);
            let hu = pre.sample_trilinear(p).unwrap_or(-1000.0);
            let g = (((hu + 160.0) / 400.0).clamp(0.0, 1.0) * 255.0) as u8;
            let o = (r * size + c) * 3;
            rgb[o..o + 3].copy_from_slice(&[g, g, g]);
            inside[r * size + c] = [
                tumor.sample_nearest(p).unwrap_or(false),
                zone.sample_nearest(p).unwrap_or(false),
            ];
        }
    }
    for r in 1..size - 1 {
        for c in 1..size - 1 {
            for (which, colour) in [(1usize, [230u8, 60, 40]), (0, [240, 220, 40])] {
                let v = inside[r * size + c][which];
                let edge = [(r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)]
                    .iter()
                    .any(|&(rr, cc)| inside[rr * size + cc][which] != v);
                if v && edge {
                    let o = (r * size + c) * 3;
                    rgb[o..o + 3].copy_from_slice(&colour);
                }
            }
        }
    }
    let pc = ((centre[0] - (c0[0] - half)) / pixel_mm) as i64;
    let pr = ((centre[1] - (c0[1] - half)) / pixel_mm) as i64;
    for d in -6i64..=6 {
        for (r, c) in [(pr + d, pc), (pr, pc + d)] {
            if (0..size as i64).contains(&r) && (0..size as i64).contains(&c) {
                let o = (r as usize * size + c as usize) * 3;
                rgb[o..o + 3].copy_from_slice(&[40, 230, 255]);
            }
        }
    }
    let mut canvas = Canvas {
        rgb: &mut rgb,
        width: size,
        height: size,
    };
    canvas.orientation_letters([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]);
    canvas.scale_bar(pixel_mm);
    RgbPicture {
        width: size,
        height: size,
        rgb,
    }
}

impl ConfirmOutcome {
    pub const FILES: [&'static str; 5] = [
        "margin.vtk",
        "margin.png",
        "zone_registered.seg.nrrd",
        "post_to_pre.tfm",
        "confirmation.json",
    ];

    /// Writes the files into `out` (the report last).
    pub fn write(&self, out: &Path) -> Result<()> {
        write_folder(out, "confirmation.json", &self.report, |out| {
            pinhole_io::vtk::write_surface(
                &out.join("margin.vtk"),
                &self.map.mesh,
                Some(("margin_mm", &self.map.margin_mm)),
            )?;
            write_picture(&out.join("margin.png"), &self.picture)?;
            pinhole_io::segnrrd::write_segmentation(
                &out.join("zone_registered.seg.nrrd"),
                &self.segmentation,
                &segment_table(),
                true,
            )?;
            crate::control_ct::write_transform_with(
                &out.join("post_to_pre.tfm"),
                &self.report.registration,
                self.field.as_ref(),
            )
        })
    }
}

impl ConfirmationReport {
    /// What the terminal shows.
    pub fn summary(&self) -> Vec<String> {
        let mut lines = crate::control_ct::alignment_summary(&self.registration);
        let m = &self.margin;
        lines.push(format!(
            "tumour {:.2} ml, zone {:.1} ml, tumour covered {:.1} %",
            m.tumor_volume_ml, m.zone_volume_ml, m.coverage_tumor_pct
        ));
        lines.push(format!(
            "margin over the tumour surface: min {:.1} mm ({} side), p5 {:.1}, median {:.1}, p95 {:.1} mm",
            m.minimal_margin_mm, self.thinnest_side, m.margin_percentiles_mm.p5, m.margin_percentiles_mm.p50, m.margin_percentiles_mm.p95
        ));
        lines.push(self.verdict_text.clone());
        lines
    }
}
