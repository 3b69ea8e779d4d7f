//! Candidate rays marched from the target out to the skin on the coarse fields, applying
//! the hard rules on the way.

use rayon::prelude::*;

use pinhole_volume::math::{dot, norm};
use pinhole_volume::Vec3;

use crate::context::{
    dequantize, Cell, CellCache, Lanes, PlanningContext, BODY_THRESHOLD_HU, CELL_LANES,
};
use crate::plan::{score, Candidate, CaudalCheck, Rules, Traced, CLEARANCE_SATURATION_MM};

/// A hard rule a candidate broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Approach,
    AxialAngle,
    MaxLength,
    SkinAngle,
    EntryCaudalTo,
    PleuraCrossings,
    Fissure,
    /// Clearance of risk group `n`.
    Clearance(usize),
    /// Traversal rule `n`.
    Traverse(usize),
}

impl Rule {
    /// Rules that are not per group or per traversal rule, in [`Rule::index`] order.
    const FIXED: [Rule; 7] = [
        Rule::Approach,
        Rule::AxialAngle,
        Rule::MaxLength,
        Rule::SkinAngle,
        Rule::EntryCaudalTo,
        Rule::PleuraCrossings,
        Rule::Fissure,
    ];

    /// How many distinct rules `rules` has (the range of [`Rule::index`]).
    pub(crate) fn count(rules: &Rules) -> usize {
        Self::FIXED.len() + rules.groups.len() + rules.traverse.len()
    }

    /// A dense index of the rule, for counting.
    pub(crate) fn index(self, rules: &Rules) -> usize {
        let fixed = Self::FIXED.len();
        match self {
            Rule::Approach => 0,
            Rule::AxialAngle => 1,
            Rule::MaxLength => 2,
            Rule::SkinAngle => 3,
            Rule::EntryCaudalTo => 4,
            Rule::PleuraCrossings => 5,
            Rule::Fissure => 6,
            Rule::Clearance(g) => fixed + g,
            Rule::Traverse(n) => fixed + rules.groups.len() + n,
        }
    }

    /// The rule of a dense index (the inverse of [`Rule::index`]).
    pub(crate) fn from_index(index: usize, rules: &Rules) -> Rule {
        let fixed = Self::FIXED.len();
        match index {
            i if i < fixed => Self::FIXED[i],
            i if i < fixed + rules.groups.len() => Rule::Clearance(i - fixed),
            i => Rule::Traverse(i - fixed - rules.groups.len()),
        }
    }

    /// The rule's name in `plan.json` (`rejected`, `violations`).
    pub(crate) fn name(self, rules: &Rules) -> String {
        match self {
            Rule::Approach => "approach".into(),
            Rule::AxialAngle => "axial_angle".into(),
            Rule::MaxLength => "max_length".into(),
            Rule::SkinAngle => "skin_angle".into(),
            Rule::EntryCaudalTo => "entry_caudal_to".into(),
            Rule::PleuraCrossings => "pleura_crossings".into(),
            Rule::Fissure => "fissure".into(),
            Rule::Clearance(g) => format!("clearance:{}", rules.groups[g].name),
            Rule::Traverse(n) => format!("traverse:{}", rules.traverse[n].0),
        }
    }
}

/// How a ray's march ended.
enum End {
    Rejected(Rule),
    /// Left the scan before the skin.
    Missed,
    /// Reached the skin (or, evaluating one path, its given length) at `t` mm.
    Exit {
        t_mm: f64,
    },
}

/// One ray's march state.
pub(crate) struct Ray {
    dir: Vec3,
    /// Coarse and fine continuous indices of the target and their change per step.
    c0: Vec3,
    dc: Vec3,
    /// See [`CellExit`].
    cell_exit: CellExit,
    f0: Vec3,
    df: Vec3,
    s: usize,
    /// Smallest value seen per lane of the packed cell (lane 0: body depth, then groups).
    coarse_min: Vec<Lanes>,
    traverse_mm: Vec<f64>,
    capsule_at: Option<Vec3>,
    in_organ_prev: bool,
    lobe_prev: u8,
    in_lung_prev: Option<bool>,
    pleura: u32,
    /// Rules broken, collected only when evaluating one given path.
    violations: Vec<String>,
}

/// Marches rays from one target under one set of rules.
pub(crate) struct Marcher<'a> {
    ctx: &'a PlanningContext,
    rules: &'a Rules,
    target: Vec3,
    step_mm: f64,
    /// `Some(length)`: evaluate one path of that length, collecting every violation.
    stop_mm: Option<f64>,
    limit_mm: f64,
    /// Chunks per packed cell.
    chunks: usize,
    /// Per lane of the packed cell: a value below this breaks the group's clearance
    /// (the clearance rounded up to f32, so `d < clear` ⟺ `f64::from(d) < clearance`;
    /// −∞ for the body lane and padding).
    clear: Vec<Lanes>,
    /// Per lane: the value subtracted to bound how far the ray may jump (see `advance`).
    skip: Vec<Lanes>,
    /// Screen eight rays at a time in SIMD lanes where the CPU allows (same results).
    simd: bool,
    /// Continuous coarse and fine indices of the target.
    target_coarse: Vec3,
    target_fine: Vec3,
    /// Per lane, screening pass: the value subtracted to bound how far the ray may jump
    /// when only rejections matter.
    screen_skip: Vec<Lanes>,
    /// Per lane: the slack added to the smallest value seen so far for the jump bound
    /// (+∞ for the body lane and padding, whose bound is `skip` alone).
    seen_slack: Vec<Lanes>,
    /// Capsule normals of the target organ computed so far, by label voxel.
    capsule_normals: CellCache<Option<Vec3>>,
}

#[cfg(target_arch = "x86_64")]
#[path = "march_avx2.rs"]
mod avx2;

/// Rays per task of the lane-wise screening pass.
#[cfg(target_arch = "x86_64")]
const SIMD_CHUNK: usize = 512;

/// Keeps f32 rounding of the jump bound on the safe side, mm.
const SKIP_ROUNDING_MM: f64 = 1e-3;

/// The smallest f32 not below `v`.
fn f32_at_least(v: f64) -> f32 {
    let r = v as f32;
    if f64::from(r) < v {
        r.next_up()
    } else {
        r
    }
}

impl<'a> Marcher<'a> {
    pub(crate) fn new(
        ctx: &'a PlanningContext,
        rules: &'a Rules,
        target: Vec3,
        stop_mm: Option<f64>,
    ) -> Self {
        let spacing = ctx.coarse.spacing_mm();
        let step_mm = 0.5 * spacing.iter().copied().fold(f64::INFINITY, f64::min);
        // Twice the coarse half-diagonal: how far apart the cell centres of two samples
        // may be beyond the samples' own distance.
        let slack_mm = norm(spacing);
        let chunks = rules.packed.len() / ctx.coarse.voxel_count().max(1);
        let mut clear = vec![[f32::NEG_INFINITY; CELL_LANES]; chunks];
        let mut skip = vec![[0.0f32; CELL_LANES]; chunks];
        let mut seen_slack = vec![[f32::INFINITY; CELL_LANES]; chunks];
        skip[0][0] = f32_at_least(slack_mm + step_mm + SKIP_ROUNDING_MM);
        let mut screen_skip = skip.clone();
        for (g, group) in rules.groups.iter().enumerate() {
            let (k, l) = ((g + 1) / CELL_LANES, (g + 1) % CELL_LANES);
            clear[k][l] = f32_at_least(group.clearance_mm);
            seen_slack[k][l] = f32_at_least(slack_mm + SKIP_ROUNDING_MM);
            screen_skip[k][l] = f32_at_least(group.clearance_mm + slack_mm + SKIP_ROUNDING_MM);
            skip[k][l] = f32_at_least(
                group.clearance_mm + CLEARANCE_SATURATION_MM + slack_mm + SKIP_ROUNDING_MM,
            );
        }
        Self {
            ctx,
            rules,
            target,
            step_mm,
            stop_mm,
            limit_mm: stop_mm.unwrap_or(rules.max_length_mm + step_mm),
            chunks,
            clear,
            skip,
            simd: true,
            target_coarse: ctx.coarse.world_to_index(target),
            target_fine: ctx.labels.grid().world_to_index(target),
            screen_skip,
            seen_slack,
            capsule_normals: CellCache::default(),
        }
    }

    /// Whether to screen in SIMD lanes where the CPU allows (default: yes).
    pub(crate) fn with_simd(mut self, simd: bool) -> Self {
        self.simd = simd;
        self
    }

    fn collect(&self) -> bool {
        self.stop_mm.is_some()
    }

    /// Records `rule` on `ray`; true when the march must stop (screening mode).
    fn fail(&self, ray: &mut Ray, rule: Rule) -> bool {
        if !self.collect() {
            return true;
        }
        let name = rule.name(self.rules);
        if !ray.violations.contains(&name) {
            ray.violations.push(name);
        }
        false
    }

    /// Marches one ray alone.
    pub(crate) fn trace(&self, dir: Vec3) -> Traced {
        let mut ray = match self.start(dir) {
            Ok(ray) => ray,
            Err(rule) => return Traced::Rejected(rule),
        };
        loop {
            if let Some(end) = self.advance::<false>(&mut ray) {
                return self.finish(ray, end);
            }
        }
    }

    /// Marches every direction; results in the order of `dirs`.
    ///
    /// Most candidates are rejected, and a rejected ray needs no score: a first pass
    /// marches for the hard rules alone, jumping wherever no sample could break a
    /// clearance. Only the rays it lets through are marched again in full for their
    /// scores. Both passes stop at the same first event, so every ray ends as if marched
    /// once in full.
    pub(crate) fn trace_all(&self, dirs: &[Vec3], order: &[usize]) -> Vec<Traced> {
        #[cfg(target_arch = "x86_64")]
        if self.simd && avx2::applicable(self) {
            // Chunk by chunk: screen in lanes, then march the chunk's survivors in full, in
            // lanes, while the cells they cross are still in cache. Rays go in `order`
            // (neighbouring directions together, see [`coherent_order`]), so that the
            // lanes of one thread read neighbouring cells.
            let ordered: Vec<Vec3> = order.iter().map(|&i| dirs[i]).collect();
            let marched: Vec<Traced> = ordered
                .par_chunks(SIMD_CHUNK)
                .flat_map_iter(|chunk| self.screen_then_score(chunk))
                .collect();
            let mut traced: Vec<Option<Traced>> =
                std::iter::repeat_with(|| None).take(dirs.len()).collect();
            for (k, t) in marched.into_iter().enumerate() {
                traced[order[k]] = Some(t);
            }
            // Every ray has its result by now; the one-ray march stands in otherwise.
            return traced
                .into_iter()
                .zip(dirs)
                .map(|(t, &dir)| t.unwrap_or_else(|| self.trace(dir)))
                .collect();
        }
        dirs.par_iter()
            .map(|&dir| self.screen(dir).unwrap_or_else(|| self.trace(dir)))
            .collect()
    }

    /// The lane-wise screening pass over `dirs`, then the scoring march of the rays it lets
    /// through; results in the order of `dirs`.
    #[cfg(target_arch = "x86_64")]
    fn screen_then_score(&self, dirs: &[Vec3]) -> Vec<Traced> {
        let screened = avx2::screen(self, dirs);
        let survivors: Vec<Vec3> = screened
            .iter()
            .zip(dirs)
            .filter(|(t, _)| t.is_none())
            .map(|(_, &dir)| dir)
            .collect();
        let mut scored = avx2::trace(self, &survivors).into_iter();
        screened
            .into_iter()
            .zip(dirs)
            .map(|(t, &dir)| {
                t.or_else(|| scored.next())
                    .unwrap_or_else(|| self.trace(dir))
            })
            .collect()
    }

    /// The screening pass of one ray: `Some` when it is rejected, `None` when it reaches
    /// the skin.
    fn screen(&self, dir: Vec3) -> Option<Traced> {
        let mut ray = match self.start(dir) {
            Ok(ray) => ray,
            Err(rule) => return Some(Traced::Rejected(rule)),
        };
        loop {
            match self.advance::<true>(&mut ray) {
                None => continue,
                Some(End::Rejected(rule)) => return Some(Traced::Rejected(rule)),
                Some(End::Missed) => return Some(Traced::Missed),
                Some(End::Exit { .. }) => return None,
            }
        }
    }

    /// Coarse and fine continuous indices of the target and their change per step along
    /// `dir`.
    fn indices(&self, dir: Vec3) -> [Vec3; 4] {
        let ahead = [0, 1, 2].map(|a| self.target[a] + dir[a] * self.step_mm);
        let c1 = self.ctx.coarse.world_to_index(ahead);
        let f1 = self.ctx.labels.grid().world_to_index(ahead);
        let (c0, f0) = (self.target_coarse, self.target_fine);
        [
            c0,
            [0, 1, 2].map(|a| c1[a] - c0[a]),
            f0,
            [0, 1, 2].map(|a| f1[a] - f0[a]),
        ]
    }

    /// The rules that depend on the direction alone and reject `dir`, in order.
    fn direction_rules(&self, dir: Vec3) -> impl Iterator<Item = Rule> {
        let rules = self.rules;
        let approach =
            !rules.approach.is_empty() && !rules.approach.iter().any(|(a, c)| dot(*a, dir) >= *c);
        let axial = rules
            .max_axial_deg
            .is_some_and(|max| dir[2].abs().clamp(0.0, 1.0).asin().to_degrees() > max);
        [(approach, Rule::Approach), (axial, Rule::AxialAngle)]
            .into_iter()
            .filter_map(|(broken, rule)| broken.then_some(rule))
    }

    /// Applies the rules that depend on the direction alone and sets up the march.
    fn start(&self, dir: Vec3) -> Result<Ray, Rule> {
        let [c0, dc, f0, df] = self.indices(dir);
        let mut ray = Ray {
            dir,
            c0,
            dc,
            cell_exit: CellExit::new(dc),
            f0,
            df,
            s: 0,
            coarse_min: vec![[f32::INFINITY; CELL_LANES]; self.chunks],
            traverse_mm: vec![0.0; self.rules.traverse.len()],
            capsule_at: None,
            in_organ_prev: true,
            lobe_prev: 0,
            in_lung_prev: None,
            pleura: 0,
            violations: Vec::new(),
        };
        for rule in self.direction_rules(dir) {
            if self.fail(&mut ray, rule) {
                return Err(rule);
            }
        }
        Ok(ray)
    }

    /// Takes one sample of `ray`; `Some` when its march is over. `SCREEN`: the hard
    /// rules only (no scores, no capsule).
    #[inline]
    fn advance<const SCREEN: bool>(&self, ray: &mut Ray) -> Option<End> {
        let rules = self.rules;
        let step = self.step_mm;
        let t = ray.s as f64 * step;
        if t > self.limit_mm {
            return Some(match self.stop_mm {
                Some(stop) => End::Exit { t_mm: stop },
                None => End::Rejected(Rule::MaxLength),
            });
        }
        let sf = ray.s as f64;
        let cd = self.ctx.coarse.dims();
        // `+ 0.5` then truncation rounds (in range values are >= 0) without a libm call.
        let ci = [0, 1, 2].map(|a| ray.c0[a] + ray.dc[a] * sf + 0.5);
        if (0..3).any(|a| ci[a] < 0.0 || ci[a] >= cd[a] as f64) {
            return Some(match self.stop_mm {
                Some(stop) => End::Exit { t_mm: stop },
                None => End::Missed,
            });
        }
        let co = ci[0] as usize + cd[0] * (ci[1] as usize + cd[1] * ci[2] as usize);
        let cells = &rules.packed[co * self.chunks..(co + 1) * self.chunks];
        if !self.collect() && cells[0][0] == 0 {
            return Some(End::Exit { t_mm: t });
        }
        // Empty-space skipping: the fields are 1-Lipschitz and a sample's value is that of
        // its cell centre, up to half a diagonal away, so a sample `Δ` mm ahead has at
        // least `d - Δ - slack` (slack: twice the half-diagonal). The ray jumps while the
        // samples skipped all stay inside the body and outside every clearance (and,
        // when scoring, above the smallest value seen so far or clearance + saturation,
        // so they could not change the score either), and at least past the samples left
        // in this sample's cell ([`CellExit`]).
        let mut below_clearance = f32::INFINITY;
        let mut jump = f32::INFINITY;
        for (k, cell) in cells.iter().enumerate() {
            let cell = &dequantize(cell);
            // d - c < 0 exactly when d < c (a rounded difference keeps its sign).
            below_clearance = below_clearance.min(lanes_hmin(&lanes_sub(cell, &self.clear[k])));
            let bound = if SCREEN {
                self.screen_skip[k]
            } else {
                let seen = &mut ray.coarse_min[k];
                *seen = lanes_min(seen, cell);
                lanes_min(&lanes_add(seen, &self.seen_slack[k]), &self.skip[k])
            };
            jump = jump.min(lanes_hmin(&lanes_sub(cell, &bound)));
        }
        if below_clearance < 0.0 {
            if let Some(rule) = self.clearance_broken(ray, cells) {
                return Some(End::Rejected(rule));
            }
        }
        let jump = f64::from(jump);
        // Labels are read while a rule needs them: traversal and lung rules all the
        // way, the capsule angle (a score) until the target organ is left.
        let capsule_pending = !SCREEN && rules.needs_labels && ray.capsule_at.is_none();
        if rules.labels_all_the_way || capsule_pending {
            if let Some(rule) = self.read_label(ray, t) {
                return Some(End::Rejected(rule));
            }
        }
        let labels_done = !rules.labels_all_the_way && !capsule_pending;
        if !self.collect() && labels_done {
            // Truncation is the floor here: `jump / step` > 1.
            let jump_samples = if jump > step {
                (jump / step) as usize
            } else {
                1
            };
            let same_cell = same_cell_advance(ray.cell_exit.samples_left(ci));
            ray.s += jump_samples.max(same_cell);
        } else {
            ray.s += 1;
        }
        None
    }

    /// Records the clearances the sample in `cells` breaks, in group order; the first one
    /// when screening.
    fn clearance_broken(&self, ray: &mut Ray, cells: &[Cell]) -> Option<Rule> {
        for (g, group) in self.rules.groups.iter().enumerate() {
            let d = f64::from(dequantize(&cells[(g + 1) / CELL_LANES])[(g + 1) % CELL_LANES]);
            if d < group.clearance_mm && self.fail(ray, Rule::Clearance(g)) {
                return Some(Rule::Clearance(g));
            }
        }
        None
    }

    /// The first risk group whose clearance a packed cell of one chunk breaks.
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn first_broken_clearance(&self, cell: &Cell) -> Option<Rule> {
        let cell = dequantize(cell);
        self.rules
            .groups
            .iter()
            .take(CELL_LANES - 1)
            .enumerate()
            .find(|(g, group)| f64::from(cell[g + 1]) < group.clearance_mm)
            .map(|(g, _)| Rule::Clearance(g))
    }

    /// Reads the label under the sample at `t_mm` for the traversal, capsule and lung
    /// rules; `Some` when a rule rejects the ray.
    fn read_label(&self, ray: &mut Ray, t_mm: f64) -> Option<Rule> {
        let rules = self.rules;
        let fd = self.ctx.labels.grid().dims();
        let sf = ray.s as f64;
        let fi = [0, 1, 2].map(|a| ray.f0[a] + ray.df[a] * sf + 0.5);
        let label = if (0..3).all(|a| fi[a] >= 0.0 && fi[a] < fd[a] as f64) {
            self.ctx.labels.data()
                [fi[0] as usize + fd[0] * (fi[1] as usize + fd[1] * fi[2] as usize)]
        } else {
            0
        };
        for (n, (_, lut, _)) in rules.traverse.iter().enumerate() {
            if lut[label as usize] {
                ray.traverse_mm[n] += self.step_mm;
            }
        }
        let in_organ = rules.organ_lut[label as usize];
        if ray.in_organ_prev && !in_organ && ray.capsule_at.is_none() {
            ray.capsule_at = Some([0, 1, 2].map(|a| self.target[a] + ray.dir[a] * t_mm));
        }
        ray.in_organ_prev = in_organ;
        let lobes = rules.lobes.as_ref()?;
        let lobe = lobes[label as usize];
        let in_lung = lobe != 0;
        if ray.in_lung_prev.is_some_and(|prev| prev != in_lung) {
            ray.pleura += 1;
        }
        ray.in_lung_prev = Some(in_lung);
        if in_lung {
            let crosses_fissure = ray.lobe_prev != 0 && lobe != ray.lobe_prev;
            if rules.avoid_fissures && crosses_fissure && self.fail(ray, Rule::Fissure) {
                return Some(Rule::Fissure);
            }
            ray.lobe_prev = lobe;
        }
        None
    }

    /// Refines the skin crossing on the CT between the last two samples: the CT at three
    /// evenly spaced points brackets the first crossing (independent reads of the same
    /// few cache lines), two bisections narrow it to 1/8 of a step (≈ 0.13 mm), and the
    /// HU values at the bracket's ends place it within by linear interpolation.
    fn refine_entry(&self, dir: Vec3, exit_t_mm: f64) -> f64 {
        const COARSE_POINTS: usize = 2;
        const BISECTIONS: usize = 2;
        if self.collect() || exit_t_mm <= 0.0 {
            return exit_t_mm;
        }
        let lo_t = exit_t_mm - self.step_mm;
        let grid = self.ctx.ct.grid();
        let index_at = |t: f64| grid.world_to_index([0, 1, 2].map(|a| self.target[a] + dir[a] * t));
        let (lo_index, hi_index) = (index_at(lo_t), index_at(exit_t_mm));
        // HU at fraction `f` of the way from the last inside sample to the exit sample.
        let hu = |f: f64| {
            self.ctx
                .ct
                .trilinear_at_index(
                    [0, 1, 2].map(|a| lo_index[a] + (hi_index[a] - lo_index[a]) * f),
                )
                .unwrap_or(-1000.0)
        };
        let threshold = f64::from(BODY_THRESHOLD_HU);
        let fraction = |k: usize| k as f64 / COARSE_POINTS as f64;
        let values: [f64; COARSE_POINTS + 1] = std::array::from_fn(|k| hu(fraction(k)));
        let first_out = (1..=COARSE_POINTS).find(|&k| values[k] <= threshold);
        let (Some(first_out), true) = (first_out, values[0] > threshold) else {
            return exit_t_mm;
        };
        let (mut lo, mut hi) = (fraction(first_out - 1), fraction(first_out));
        let (mut hu_lo, mut hu_hi) = (values[first_out - 1], values[first_out]);
        for _ in 0..BISECTIONS {
            let mid = 0.5 * (lo + hi);
            let hu_mid = hu(mid);
            if hu_mid > threshold {
                (lo, hu_lo) = (mid, hu_mid);
            } else {
                (hi, hu_hi) = (mid, hu_mid);
            }
        }
        // hu_lo > threshold >= hu_hi, so the weight lies in (0, 1].
        let weight = (hu_lo - threshold) / (hu_lo - hu_hi);
        lo_t + self.step_mm * (lo + (hi - lo) * weight)
    }

    /// Applies the rules that need the whole march and scores the candidate.
    fn finish(&self, mut ray: Ray, end: End) -> Traced {
        let exit_t_mm = match end {
            End::Rejected(rule) => return Traced::Rejected(rule),
            End::Missed => return Traced::Missed,
            End::Exit { t_mm } => t_mm,
        };
        let rules = self.rules;
        let dir = ray.dir;
        let entry_t = self.refine_entry(dir, exit_t_mm);
        let entry = [0, 1, 2].map(|a| self.target[a] + dir[a] * entry_t);
        if entry_t > rules.max_length_mm && self.fail(&mut ray, Rule::MaxLength) {
            return Traced::Rejected(Rule::MaxLength);
        }
        let normal = self.ctx.skin_normal(entry).unwrap_or(dir);
        let cos_skin = dot(normal, dir).clamp(-1.0, 1.0);
        let skin_angle_deg = cos_skin.acos().to_degrees();
        if cos_skin < rules.max_skin_cos && self.fail(&mut ray, Rule::SkinAngle) {
            return Traced::Rejected(Rule::SkinAngle);
        }
        let caudal_margin_mm = match &rules.caudal {
            None => None,
            Some(CaudalCheck::Level(z)) => Some(z - entry[2]),
            Some(CaudalCheck::Footprint(floor)) => {
                self.ctx
                    .footprint_margin(floor, &rules.organ_lut, self.target, entry)
            }
        };
        if caudal_margin_mm.is_some_and(|m| m < 0.0) && self.fail(&mut ray, Rule::EntryCaudalTo) {
            return Traced::Rejected(Rule::EntryCaudalTo);
        }
        for n in 0..rules.traverse.len() {
            if ray.traverse_mm[n] < rules.traverse[n].2 && self.fail(&mut ray, Rule::Traverse(n)) {
                return Traced::Rejected(Rule::Traverse(n));
            }
        }
        let pleura_crossings = rules.lobes.as_ref().map(|_| ray.pleura);
        if let (Some(max), Some(p)) = (rules.max_pleura, pleura_crossings) {
            if p > max && self.fail(&mut ray, Rule::PleuraCrossings) {
                return Traced::Rejected(Rule::PleuraCrossings);
            }
        }
        let capsule_angle_deg = ray.capsule_at.and_then(|q| {
            self.ctx
                .capsule_normal(&rules.organ_lut, q, &self.capsule_normals)
                .map(|n| dot(n, dir).abs().clamp(0.0, 1.0).acos().to_degrees())
        });
        let coarse_min: Vec<f64> = (1..=rules.groups.len())
            .map(|k| f64::from(ray.coarse_min[k / CELL_LANES][k % CELL_LANES]))
            .collect();
        let mut cand = Candidate {
            dir,
            entry,
            length_mm: entry_t,
            coarse_min,
            skin_angle_deg,
            capsule_angle_deg,
            traverse_mm: ray.traverse_mm,
            pleura: pleura_crossings,
            caudal_margin_mm,
            score: 0.0,
            violations: ray.violations,
        };
        cand.score = score(rules, &cand);
        Traced::Reached(Box::new(cand))
    }
}

/// Where a ray leaves the coarse cell of its sample, in samples: per axis, with `u` the
/// fractional part of the sample's rounded coarse index (`c0 + dc · s + 0.5`), the
/// samples to the next cell boundary are `u · slope + offset` (`(1 − u) / dc` going up,
/// `u / |dc|` going down, ∞ for `dc = 0`).
///
/// The samples before that boundary read the same cell, so the same values: they can
/// neither end the march nor change a smallest value seen, and the marches skip them.
#[derive(Clone, Copy)]
pub(crate) struct CellExit {
    pub(crate) slope: Vec3,
    pub(crate) offset: Vec3,
}

impl CellExit {
    pub(crate) fn new(dc: Vec3) -> Self {
        let per_axis = |d: f64| {
            if d > 0.0 {
                (-1.0 / d, 1.0 / d)
            } else if d < 0.0 {
                (-1.0 / d, 0.0)
            } else {
                (0.0, f64::INFINITY)
            }
        };
        let axes = dc.map(per_axis);
        Self {
            slope: axes.map(|(slope, _)| slope),
            offset: axes.map(|(_, offset)| offset),
        }
    }

    /// Samples from the one at rounded coarse index `ci` (in the grid) to the cell's
    /// boundary (fractional).
    fn samples_left(&self, ci: Vec3) -> f64 {
        (0..3)
            .map(|a| {
                let u = ci[a] - (ci[a] as usize) as f64;
                u.mul_add(self.slope[a], self.offset[a])
            })
            .fold(f64::INFINITY, f64::min)
    }
}

/// The advance that skips the samples certainly still in the current cell, `samples_left`
/// being the samples to its boundary: at least 1. The margin keeps rounding in the sample
/// positions on the safe side.
pub(crate) fn same_cell_advance(samples_left: f64) -> usize {
    let certain = samples_left * (1.0 - SAME_CELL_MARGIN) - SAME_CELL_MARGIN;
    certain.clamp(0.0, SAME_CELL_MAX) as usize + 1
}

/// Relative and absolute margin of [`same_cell_advance`].
pub(crate) const SAME_CELL_MARGIN: f64 = 1e-6;
/// Cap of [`same_cell_advance`] (a ray parallel to every boundary stays in its cell).
pub(crate) const SAME_CELL_MAX: f64 = 1e9;

/// Indices of `dirs` in Morton order of their octahedral map coordinates: directions
/// close on the sphere mostly end up close in the order.
pub(crate) fn coherent_order(dirs: &[Vec3]) -> Vec<usize> {
    const BITS: u32 = 10;
    let scale = f64::from((1u32 << BITS) - 1);
    let key = |d: &Vec3| -> u64 {
        let l1 = d[0].abs() + d[1].abs() + d[2].abs();
        let (mut u, mut v) = if l1 > 0.0 {
            (d[0] / l1, d[1] / l1)
        } else {
            (0.0, 0.0)
        };
        if d[2] < 0.0 {
            (u, v) = ((1.0 - v.abs()) * u.signum(), (1.0 - u.abs()) * v.signum());
        }
        let q = |x: f64| ((x * 0.5 + 0.5).clamp(0.0, 1.0) * scale) as u32;
        interleave(q(u)) | (interleave(q(v)) << 1)
    };
    let mut order: Vec<(u64, usize)> = dirs.iter().enumerate().map(|(i, d)| (key(d), i)).collect();
    order.sort_unstable();
    order.into_iter().map(|(_, i)| i).collect()
}

/// Spreads the low 16 bits of `x` to the even bits of the result.
fn interleave(x: u32) -> u64 {
    let mut x = u64::from(x & 0xffff);
    x = (x | (x << 8)) & 0x00ff_00ff;
    x = (x | (x << 4)) & 0x0f0f_0f0f;
    x = (x | (x << 2)) & 0x3333_3333;
    (x | (x << 1)) & 0x5555_5555
}

/// Lane-wise minimum (no NaN in the packed fields).
#[inline(always)]
fn lanes_min(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| if b[l] < a[l] { b[l] } else { a[l] })
}

#[inline(always)]
fn lanes_add(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] + b[l])
}

#[inline(always)]
fn lanes_sub(a: &Lanes, b: &Lanes) -> Lanes {
    std::array::from_fn(|l| a[l] - b[l])
}

/// Minimum over the lanes, as a tree the compiler keeps in vector registers.
#[inline(always)]
fn lanes_hmin(v: &Lanes) -> f32 {
    let half: [f32; 4] = std::array::from_fn(|l| if v[l + 4] < v[l] { v[l + 4] } else { v[l] });
    let quarter = [half[0].min(half[2]), half[1].min(half[3])];
    quarter[0].min(quarter[1])
}

#[cfg(test)]
mod tests {
    use super::{same_cell_advance, CellExit};
    use crate::TestRng;

    /// The coarse cell of sample `s`, computed as the marches do.
    fn cell(c0: [f64; 3], dc: [f64; 3], s: usize) -> [usize; 3] {
        [0, 1, 2].map(|a| (c0[a] + dc[a] * s as f64 + 0.5) as usize)
    }

    /// The same-cell skip never passes over a sample in another cell, and stops at most
    /// one sample short of the first one that is (brute force over random rays, axis
    /// parallel ones and steps that land on cell boundaries included).
    #[test]
    fn same_cell_skip_stays_in_the_cell_and_stops_at_its_boundary() {
        let mut rng = TestRng::new(0x9e37_79b9_7f4a_7c15);
        let mut next = || rng.unit();
        const LOOK_AHEAD: usize = 400;
        for case in 0..20_000 {
            let mut c0 = [0, 1, 2].map(|_| 100.0 + 50.0 * next());
            let mut dc = [0, 1, 2].map(|_| next() - 0.5);
            match case % 5 {
                0 => dc[case % 3] = 0.0,
                // Samples exactly on cell boundaries.
                1 => {
                    c0 = c0.map(|c| (c * 8.0).floor() / 8.0);
                    dc = [0.25, -0.5, 0.125];
                }
                2 => dc[1] *= 1e-7,
                _ => {}
            }
            let s = (next() * 80.0) as usize;
            let here = cell(c0, dc, s);
            let ci = [0, 1, 2].map(|a| c0[a] + dc[a] * s as f64 + 0.5);
            let advance = same_cell_advance(CellExit::new(dc).samples_left(ci));
            let first_other = (1..LOOK_AHEAD)
                .find(|&k| cell(c0, dc, s + k) != here)
                .unwrap_or(LOOK_AHEAD);
            assert!(advance >= 1);
            assert!(
                advance <= first_other,
                "case {case}: skipped to {advance}, left the cell at {first_other}"
            );
            assert!(
                advance.min(LOOK_AHEAD) + 1 >= first_other,
                "case {case}: stopped at {advance}, the cell lasts until {first_other}"
            );
        }
    }
}
