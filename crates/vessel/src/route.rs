//! Catheter routes through a vessel tree made of several labels.
//!
//! The graph is built on the union of the chosen vessel labels, so a route crosses from
//! one label to the next wherever they touch (their junction). The route is the
//! centredness-weighted shortest path (see [`crate::centerline`]) between the access and
//! the target, refined to a smooth sub-voxel centerline whose every point stays inside
//! the union (nearest voxel and trilinear mask).

use std::str::FromStr;

use pinhole_volume::anatomy::{vessel_kind, VesselKind};
use pinhole_volume::{LabelAim, TargetSpec, Vec3, Volume};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::centerline::{polish, Centerline, CenterlineOptions};
use crate::error::{Result, VesselError};
use crate::geom::{bending, dist};
use crate::graph::VoxelGraph;
use crate::measure::measure_mask;

/// Where a route starts or ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// The free end of a vessel label: its voxel farthest (along the vessels) from where
    /// it joins the other labels. Written `name` or `name:end`.
    LabelEnd(String),
    /// A point of a label: `name:centroid` or `name:deepest` (the shared target syntax).
    LabelPoint(TargetSpec),
    /// A point `x,y,z` (LPS mm), snapped to the nearest vessel voxel.
    Point(Vec3),
    /// The narrowest point (smallest inscribed-sphere diameter) of a label's centerline:
    /// `narrowest:name`.
    Narrowest(String),
}

impl FromStr for Endpoint {
    type Err = VesselError;
    fn from_str(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(name) = text.strip_prefix("narrowest:") {
            if name.is_empty() {
                return Err(VesselError::BadEndpoint {
                    spec: text.into(),
                    reason: "narrowest: needs a label name".into(),
                });
            }
            return Ok(Self::Narrowest(name.to_string()));
        }
        if let Some(name) = text.strip_suffix(":end") {
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(VesselError::BadEndpoint {
                    spec: text.into(),
                    reason: "expected label:end".into(),
                });
            }
            return Ok(Self::LabelEnd(name.to_string()));
        }
        Ok(match text.parse::<TargetSpec>()? {
            TargetSpec::Label {
                name,
                aim: LabelAim::Auto,
            } => Self::LabelEnd(name),
            spec @ TargetSpec::Label { .. } => Self::LabelPoint(spec),
            TargetSpec::Point(p) => Self::Point(p),
            TargetSpec::Sphere { center_lps, .. } => Self::Point(center_lps),
        })
    }
}

/// Route options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RouteOptions {
    pub centerline: CenterlineOptions,
    /// A point endpoint farther than this from every vessel voxel is an error, mm.
    pub snap_limit_mm: f64,
    /// Scale at which turning angle and curvature are measured, mm (default 5 mm: the
    /// bends a catheter follows, not the voxel-scale wobble of a segmentation).
    pub bend_step_mm: f64,
}

impl Default for RouteOptions {
    fn default() -> Self {
        Self {
            centerline: CenterlineOptions::default(),
            snap_limit_mm: 10.0,
            bend_step_mm: 5.0,
        }
    }
}

/// One vessel passed by the route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Passage {
    pub vessel: String,
    pub label_id: u32,
    pub start_arc_mm: f64,
    pub end_arc_mm: f64,
}

/// A planned route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Route {
    pub from: String,
    pub to: String,
    pub from_lps: Vec3,
    pub to_lps: Vec3,
    pub length_mm: f64,
    /// Vessels in the order passed.
    pub vessels: Vec<String>,
    pub passages: Vec<Passage>,
    /// Smallest inscribed-sphere diameter along the route, mm.
    pub min_diameter_mm: f64,
    pub min_diameter_arc_mm: f64,
    pub min_diameter_point_lps: Vec3,
    /// Sum of the direction changes along the route, deg: the route smoothed over
    /// ± `bend_step_mm` and measured every `bend_step_mm` (catheter scale).
    pub turning_angle_deg: f64,
    pub max_curvature_per_mm: f64,
    pub max_curvature_point_lps: Vec3,
    /// Length / straight distance − 1.
    pub tortuosity: f64,
    pub points_lps: Vec<Vec3>,
    pub radius_mm: Vec<f64>,
    pub arc_mm: Vec<f64>,
    /// The vessel label at every point.
    pub vessel_per_point: Vec<String>,
}

/// The vessel labels a route may use, with a graph on their union.
pub struct VesselMap<'a> {
    labels: &'a Volume<u16>,
    vessels: Vec<(u32, String)>,
    pub(crate) graph: VoxelGraph,
    /// Label id per graph node.
    pub(crate) node_label: Vec<u32>,
}

impl<'a> VesselMap<'a> {
    /// `vessels`: (id, name) of the labels forming the tree.
    pub fn new(labels: &'a Volume<u16>, vessels: Vec<(u32, String)>) -> Result<Self> {
        let ids: Vec<u16> = vessels
            .iter()
            .filter_map(|(id, _)| u16::try_from(*id).ok())
            .collect();
        let union = labels.map(|v| v != 0 && ids.contains(&v));
        let graph = VoxelGraph::new(&union, "union of the vessel labels", false).map_err(|_| {
            VesselError::NoVesselLabels {
                names: vessels.iter().map(|v| v.1.clone()).collect(),
            }
        })?;
        let node_label = (0..graph.len() as u32)
            .map(|n| labels.sample_nearest(graph.world(n)).map_or(0, u32::from))
            .collect();
        Ok(Self {
            labels,
            vessels,
            graph,
            node_label,
        })
    }

    pub fn vessels(&self) -> &[(u32, String)] {
        &self.vessels
    }

    pub fn name_of(&self, id: u32) -> String {
        self.vessels
            .iter()
            .find(|v| v.0 == id)
            .map_or_else(|| format!("label {id}"), |v| v.1.clone())
    }

    fn id_of(&self, name: &str) -> Result<u32> {
        self.vessels
            .iter()
            .find(|v| v.1 == name)
            .map(|v| v.0)
            .ok_or_else(|| VesselError::UnknownLabel(name.to_string()))
    }

    fn nodes_of(&self, id: u32) -> impl Fn(u32) -> bool + '_ {
        move |n| self.node_label[n as usize] == id
    }

    /// Resolves an endpoint to a node, a description and whether its end is a free
    /// vessel end (trimmed and extended to the lumen's end).
    fn resolve(
        &self,
        spec: &Endpoint,
        text: &str,
        opts: &RouteOptions,
    ) -> Result<(u32, String, bool)> {
        let g = &self.graph;
        match spec {
            Endpoint::LabelEnd(name) => {
                let id = self.id_of(name)?;
                let in_label = self.nodes_of(id);
                let empty = || VesselError::EmptyLabel {
                    name: name.clone(),
                    id,
                };
                let mut junction = Vec::new();
                for n in 0..g.len() as u32 {
                    if in_label(n) {
                        continue;
                    }
                    let mut touches = false;
                    g.for_neighbours(n, |m, _| touches |= in_label(m));
                    if touches {
                        junction.push(n);
                    }
                }
                let node = if junction.is_empty() {
                    let seed = g.deepest(&in_label).ok_or_else(empty)?;
                    g.centred_end(&g.geodesic(&[seed]), &in_label)
                } else {
                    g.centred_end(&g.geodesic(&junction), &in_label)
                }
                .ok_or_else(empty)?;
                Ok((node, format!("{name} (free end)"), true))
            }
            Endpoint::LabelPoint(target) => {
                let TargetSpec::Label { name, .. } = target else {
                    return Err(VesselError::BadEndpoint {
                        spec: text.into(),
                        reason: "not a label".into(),
                    });
                };
                let id = self.id_of(name)?;
                let resolved = target.resolve(self.labels, |n| self.id_of(n).ok())?;
                let (node, _) = g
                    .nearest_node(resolved.point_lps, self.nodes_of(id))
                    .ok_or(VesselError::EmptyLabel {
                        name: name.clone(),
                        id,
                    })?;
                Ok((node, resolved.description, false))
            }
            Endpoint::Point(p) => {
                let (node, d) = g
                    .nearest_node(*p, |_| true)
                    .ok_or(VesselError::NoVesselLabels { names: vec![] })?;
                if d > opts.snap_limit_mm {
                    return Err(VesselError::PointOffVessel {
                        spec: text.into(),
                        point_lps: *p,
                        distance_mm: d,
                        limit_mm: opts.snap_limit_mm,
                    });
                }
                Ok((
                    node,
                    format!("point ({:.1}, {:.1}, {:.1}) LPS mm", p[0], p[1], p[2]),
                    false,
                ))
            }
            Endpoint::Narrowest(name) => {
                let id = self.id_of(name)?;
                let mask = self.labels.map(|v| u32::from(v) == id);
                let m = measure_mask(&mask, name, &opts.centerline, None)?;
                let total = m.centerline.length_mm();
                let best = m
                    .stations
                    .iter()
                    .filter(|s| s.arc_mm >= s.d_mis_mm && s.arc_mm <= total - s.d_mis_mm)
                    .min_by(|a, b| a.d_mis_mm.total_cmp(&b.d_mis_mm))
                    .or_else(|| {
                        m.stations
                            .iter()
                            .min_by(|a, b| a.d_mis_mm.total_cmp(&b.d_mis_mm))
                    })
                    .ok_or(VesselError::TooShort {
                        what: name.clone(),
                        points: 0,
                    })?;
                let (node, _) = g.nearest_node(best.point_lps, self.nodes_of(id)).ok_or(
                    VesselError::EmptyLabel {
                        name: name.clone(),
                        id,
                    },
                )?;
                Ok((
                    node,
                    format!(
                        "{name} narrowest point (inscribed diameter {:.1} mm at {:.0} mm along it)",
                        best.d_mis_mm, best.arc_mm
                    ),
                    false,
                ))
            }
        }
    }

    /// Plans a route from `from` to `to` (their texts name them in reports and errors).
    pub fn route(&self, from: &str, to: &str, opts: &RouteOptions) -> Result<Route> {
        let (from_spec, to_spec) = (from.parse::<Endpoint>()?, to.parse::<Endpoint>()?);
        let (a, from_desc, extend_a) = self.resolve(&from_spec, from, opts)?;
        let (b, to_desc, extend_b) = self.resolve(&to_spec, to, opts)?;
        let g = &self.graph;
        let (dist_to, parent) = g.dijkstra(&[a], |u, v, l| g.centred_cost(u, v, l), Some(b));
        if !dist_to[b as usize].is_finite() {
            return Err(VesselError::Unreachable {
                from: from_desc,
                to: to_desc,
            });
        }
        let nodes = VoxelGraph::trace(&parent, b);
        let line = polish(g, &nodes, [extend_a, extend_b], &opts.centerline, "route")?;
        Ok(self.describe(line, from_desc, to_desc, opts))
    }

    fn describe(&self, line: Centerline, from: String, to: String, opts: &RouteOptions) -> Route {
        let pts = &line.points_lps;
        let arc = line.arc_mm();
        let n = pts.len();
        let length_mm = arc[n - 1];
        let ids: Vec<u32> = pts
            .iter()
            .map(|&p| self.labels.sample_nearest(p).map_or(0, u32::from))
            .collect();
        // Runs of one label; a run shorter than 1 mm between two runs of the same label
        // is partial-volume noise at a junction and joins its neighbours.
        let mut runs: Vec<(u32, usize, usize)> = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            match runs.last_mut() {
                Some(r) if r.0 == id => r.2 = i,
                _ => runs.push((id, i, i)),
            }
        }
        let mut k = 1;
        while k + 1 < runs.len() {
            let short = arc[runs[k].2] - arc[runs[k].1] < 1.0;
            if short && runs[k - 1].0 == runs[k + 1].0 {
                runs[k - 1].2 = runs[k + 1].2;
                runs.drain(k..=k + 1);
            } else {
                k += 1;
            }
        }
        let passages: Vec<Passage> = runs
            .iter()
            .map(|&(id, s, e)| Passage {
                vessel: self.name_of(id),
                label_id: id,
                start_arc_mm: arc[s],
                end_arc_mm: arc[e],
            })
            .collect();
        // The minimal diameter ignores the ends' own inscribed spheres (a free end's
        // radius falls to zero at the lumen's end).
        let in_body =
            |i: usize| arc[i] >= line.radius_mm[0] && arc[i] <= length_mm - line.radius_mm[n - 1];
        let imin = (0..n)
            .filter(|&i| in_body(i))
            .min_by(|&x, &y| line.radius_mm[x].total_cmp(&line.radius_mm[y]))
            .unwrap_or(0);
        // Bends at catheter scale: the route smoothed over ± bend_step_mm, then measured
        // every bend_step_mm.
        let spacing = if n > 1 {
            length_mm / (n - 1) as f64
        } else {
            1.0
        };
        let half = (opts.bend_step_mm / spacing.max(1e-6)).round() as usize;
        let bend = bending(&crate::geom::smooth(pts, half), opts.bend_step_mm);
        let chord = dist(pts[0], pts[n - 1]);
        Route {
            from,
            to,
            from_lps: pts[0],
            to_lps: pts[n - 1],
            length_mm,
            vessels: passages.iter().map(|p| p.vessel.clone()).collect(),
            passages,
            min_diameter_mm: 2.0 * line.radius_mm[imin],
            min_diameter_arc_mm: arc[imin],
            min_diameter_point_lps: pts[imin],
            turning_angle_deg: bend.turning_angle_deg,
            max_curvature_per_mm: bend.max_curvature_per_mm,
            max_curvature_point_lps: pts[bend.max_curvature_index],
            tortuosity: if chord > 0.0 {
                length_mm / chord - 1.0
            } else {
                0.0
            },
            vessel_per_point: ids.iter().map(|&id| self.name_of(id)).collect(),
            arc_mm: arc,
            points_lps: line.points_lps,
            radius_mm: line.radius_mm,
        }
    }
}

/// Whether a label name is venous rather than arterial ([`pinhole_volume::anatomy`]).
pub fn is_venous(name: &str) -> bool {
    vessel_kind(name) == Some(VesselKind::Vein)
}

/// Whether a label name is a single kind of vessel (artery or vein) a route may follow
/// by default; mixed labels (`hepatic_vessel`) must be named with `--vessels`.
pub fn is_vessel(name: &str) -> bool {
    matches!(
        vessel_kind(name),
        Some(VesselKind::Artery | VesselKind::Vein)
    )
}
