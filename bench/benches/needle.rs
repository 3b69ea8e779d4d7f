//! Criterion benches of the needle planner on the chest CT (`../shared/data/chest-ct`,
//! or `$PINHOLE_DATA/chest-ct`): a full kidney-biopsy plan with 40,000 candidates on a
//! warm context, a replan after moving the target 5 mm, and the cold path (context +
//! first plan). `cargo bench -p pinhole-bench --bench needle`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use pinhole_io::labels::LabelTable;
use pinhole_io::open::{read_volume, ReadOptions};
use pinhole_plan_needle::{PlanOptions, PlanningContext, Profile};
use pinhole_volume::TargetSpec;

fn data() -> PathBuf {
    std::env::var_os("PINHOLE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/data"))
        .join("chest-ct")
}

fn needle(c: &mut Criterion) {
    let dir = data();
    let read = |name: &str| {
        read_volume(&dir.join(name), &ReadOptions::default(), &mut |_, _| {})
            .expect("chest CT data")
            .volume
    };
    let ct = read("ct.nii.gz").to_f32();
    let labels = read("labels.nii.gz").to_labels().expect("labels");
    let table = LabelTable::from_csv(&dir.join("structures.csv")).expect("table");
    let entries: Vec<(u32, String)> = table.iter().map(|(id, e)| (id, e.name.clone())).collect();
    let profile = Profile::builtin("kidney-biopsy").expect("profile");
    let spec: TargetSpec = "kidney_cyst_left".parse().expect("spec");
    let options = PlanOptions::default();

    let mut group = c.benchmark_group("needle");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.bench_function("cold: context + first plan, 40k candidates", |b| {
        b.iter(|| {
            let ctx = PlanningContext::new(ct.clone(), labels.clone()).expect("context");
            let target = spec
                .resolve(ctx.labels(), |n| table.id_of(n))
                .expect("target");
            ctx.plan(&profile, &entries, &target, &options)
                .expect("plan")
        })
    });
    let ctx = PlanningContext::new(ct.clone(), labels.clone()).expect("context");
    let target = spec
        .resolve(ctx.labels(), |n| table.id_of(n))
        .expect("target");
    ctx.plan(&profile, &entries, &target, &options)
        .expect("plan");
    group.bench_function("full plan, 40k candidates, warm context", |b| {
        b.iter(|| {
            ctx.plan(&profile, &entries, &target, &options)
                .expect("plan")
        })
    });
    let mut moved = target.clone();
    moved.point_lps[1] += 5.0;
    group.bench_function("replan after moving the target 5 mm", |b| {
        b.iter(|| {
            ctx.plan(&profile, &entries, &moved, &options)
                .expect("plan")
        })
    });
    group.finish();
}

criterion_group!(benches, needle);
criterion_main!(benches);
