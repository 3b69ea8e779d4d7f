//! Write throughput of a live session record: poses with guidance metrics.
//!
//! `cargo run -p pinhole-record --example record_throughput [--release] [-- N SECONDS]`
//!
//! 1. burst: N poses and N metrics queued at once (a queue that holds them all), timed
//!    until the writer has committed them: the writer's sustained rate;
//! 2. paced: 1 kHz poses with metrics for SECONDS with the default options: samples
//!    dropped (should be 0) and how far the committed pose lags behind.
//!
//! Prints one JSON object. Not a test: numbers depend on the machine and its load.

use std::time::{Duration, Instant};

use pinhole_record::{CaseRecord, Push, RecorderOptions};
use serde_json::json;

fn metrics(seq: u64) -> serde_json::Value {
    // About the size of a real GuidanceMetrics message.
    json!({
        "schema_version": 1,
        "note": "Not for clinical use: research software, guidance is illustrative only.",
        "version": "0.1.0",
        "seq": seq,
        "timestamp_s": 1.7e9 + seq as f64 * 1e-3,
        "device": "NeedleTipToReference",
        "tip_lps": [12.5, -80.25, 301.0],
        "needle_axis_lps": [0.0, 0.6, 0.8],
        "target_lps": [20.0, -60.0, 330.0],
        "entry_lps": [0.0, -120.0, 250.0],
        "tip_to_target_mm": 37.2,
        "lateral_deviation_mm": 1.4,
        "angle_deg": 2.1,
        "depth_remaining_mm": 36.9,
        "nearest_structure": {"name": "aorta", "group": "great_vessels", "distance_mm": 18.3},
        "risk_distances": [
            {"group": "great_vessels", "distance_mm": 18.3, "clearance_mm": 5.0},
            {"group": "hollow_organs", "distance_mm": 31.0, "clearance_mm": 5.0}
        ],
        "trajectory_hit": null,
        "inside_target": false,
        "inside_volume": true,
        "alert": "ok",
        "alert_reasons": [],
        "plan_line": "plan path"
    })
}

fn pose(i: u64) -> [[f64; 4]; 4] {
    [
        [1.0, 0.0, 0.0, i as f64 * 0.01],
        [0.0, 0.8, -0.6, -80.0],
        [0.0, 0.6, 0.8, 300.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: u64 = args.first().map_or(Ok(50_000), |a| a.parse())?;
    let seconds: u64 = args.get(1).map_or(Ok(5), |a| a.parse())?;
    let site = tempfile::tempdir()?;
    let record = CaseRecord::open(site.path())?;
    let case = record.create_case("throughput", None)?;

    // 1. Burst.
    let capacity = usize::try_from(2 * n + 16)?;
    let options = RecorderOptions {
        queue_capacity: capacity,
        ..RecorderOptions::default()
    };
    let recorder = record.start_session_with(case, &json!({}), options)?;
    let start = Instant::now();
    let mut dropped = 0;
    for i in 0..n {
        let t = i as f64;
        for push in [
            recorder.pose(t, "needle", &pose(i))?,
            recorder.metrics(t, &metrics(i))?,
        ] {
            if let Push::Dropped { dropped_total } = push {
                dropped = dropped_total;
            }
        }
    }
    let queued_s = start.elapsed().as_secs_f64();
    let burst = recorder.finish()?;
    let burst_s = start.elapsed().as_secs_f64();

    // 2. Paced at 1 kHz.
    let recorder = record.start_session(case, &json!({}))?;
    let start = Instant::now();
    let mut max_lag_ms: f64 = 0.0;
    let total = seconds * 1000;
    for i in 0..total {
        if let Some(wait) = Duration::from_millis(i).checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        let t = i as f64;
        let _ = recorder.pose(t, "needle", &pose(i))?;
        let _ = recorder.metrics(t, &metrics(i))?;
        if let Some(last) = recorder.committed().last_pose_t_ms {
            max_lag_ms = max_lag_ms.max(t - last);
        }
    }
    let paced = recorder.finish()?;
    let file_bytes = std::fs::metadata(record.path())?.len();

    let report = json!({
        "note": "Not for clinical use",
        "burst": {
            "poses": burst.committed.poses,
            "metrics": burst.committed.metrics,
            "dropped": dropped.max(burst.dropped),
            "queueing_s": queued_s,
            "seconds": burst_s,
            "poses_per_s_with_metrics": burst.committed.poses as f64 / burst_s,
            "transactions": burst.committed.transactions,
        },
        "paced_1khz": {
            "seconds": seconds,
            "poses": paced.committed.poses,
            "metrics": paced.committed.metrics,
            "dropped": paced.dropped,
            "max_commit_lag_ms": max_lag_ms,
            "transactions": paced.committed.transactions,
        },
        "record_file_bytes": file_bytes,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
