//! `pinhole-bench needle CT LABELS CSV PROCEDURE TARGET [REPEATS] [CANDIDATES]`: times
//! the needle planner on one case and prints JSON: the per-volume context, the first
//! plan (which computes the clearance fields), warm full plans (median) and replans
//! after moving the target 5 mm (median, six directions in turn).

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use pinhole_io::labels::LabelTable;
use pinhole_plan_needle::{PlanOptions, PlanningContext, Profile};
use pinhole_volume::TargetSpec;

/// CPU seconds (user + system, all threads) of this process so far, from
/// `/proc/self/stat` (Linux; 0 elsewhere). Under a loaded machine the wall time of a
/// 2-thread run inflates; the CPU time does not.
fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|r| r.1) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command name: state is field 0, utime field 11, stime field 12 (ticks).
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let get = |i: usize, what: &str| args.get(i).context(what.to_string());
    let ct_path = Path::new(get(0, "CT")?);
    let labels_path = Path::new(get(1, "LABELS")?);
    let table = LabelTable::load(get(2, "CSV")?)?;
    let profile = Profile::builtin(get(3, "PROCEDURE")?)?;
    let spec: TargetSpec = get(4, "TARGET")?.parse()?;
    let repeats: usize = args.get(5).map(|r| r.parse()).transpose()?.unwrap_or(7);
    let candidates: usize = args
        .get(6)
        .map(|r| r.parse())
        .transpose()?
        .unwrap_or(40_000);
    let ct = super::load(ct_path)?.to_f32();
    let labels = super::load(labels_path)?
        .to_labels()
        .context("not a label map")?;
    let entries: Vec<(u32, String)> = table.iter().map(|(id, e)| (id, e.name.clone())).collect();

    let start = Instant::now();
    let ctx = PlanningContext::new(ct, labels)?;
    let context_s = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let target = spec.resolve(ctx.labels(), |n| table.id_of(n))?;
    let target = ctx.aim(&profile, target);
    let options = PlanOptions {
        candidates,
        ..PlanOptions::default()
    };
    let first = ctx.plan(&profile, &entries, &target, &options)?;
    let first_plan_s = start.elapsed().as_secs_f64();
    let mut warm = Vec::new();
    let cpu0 = cpu_s();
    for _ in 0..repeats {
        let start = Instant::now();
        let plan = ctx.plan(&profile, &entries, &target, &options)?;
        warm.push(start.elapsed().as_secs_f64());
        std::hint::black_box(plan);
    }
    let warm_cpu_s = (cpu_s() - cpu0) / repeats.max(1) as f64;
    let moves = [
        [5.0, 0.0, 0.0],
        [-5.0, 0.0, 0.0],
        [0.0, 5.0, 0.0],
        [0.0, -5.0, 0.0],
        [0.0, 0.0, 5.0],
        [0.0, 0.0, -5.0],
    ];
    let mut replan = Vec::new();
    let cpu0 = cpu_s();
    for n in 0..repeats.max(6) {
        let m = moves[n % moves.len()];
        let mut moved = target.clone();
        moved.point_lps = [0, 1, 2].map(|a| target.point_lps[a] + m[a]);
        let start = Instant::now();
        let plan = ctx.plan(&profile, &entries, &moved, &options);
        replan.push(start.elapsed().as_secs_f64());
        std::hint::black_box(plan.ok());
    }
    let replan_cpu_s = (cpu_s() - cpu0) / repeats.max(6) as f64;
    let out = serde_json::json!({
        "warm_plan_cpu_s": warm_cpu_s, "replan_cpu_s": replan_cpu_s,
        "op": "needle", "procedure": profile.name, "candidates": candidates,
        "target_lps": target.point_lps,
        "context_s": context_s, "first_plan_s": first_plan_s,
        "cold_total_s": context_s + first_plan_s,
        "warm_plan_median_s": median(warm), "replan_5mm_median_s": median(replan),
        "feasible": first.feasible, "rejected": first.rejected,
        "coarse_dims": ctx.coarse_grid().dims(), "coarse_spacing_mm": ctx.coarse_grid().spacing_mm(),
        "threads": rayon::current_num_threads(),
    });
    println!("{out}");
    Ok(())
}
