//! `docs/schemas/*.schema.json` are generated from the report types: this test fails when
//! a report type changes without its published schema. `PINHOLE_BLESS=1` rewrites them.

use std::collections::BTreeSet;

use pinhole_pipeline::schemas;

use crate::shared::repo_root;

#[test]
fn published_schemas_equal_the_report_types() {
    let dir = repo_root().join("docs/schemas");
    let bless = std::env::var_os("PINHOLE_BLESS").is_some();
    if bless {
        std::fs::create_dir_all(&dir).unwrap();
    }
    let mut expected_files = BTreeSet::new();
    let mut stale = Vec::new();
    for (file, schema) in schemas::all() {
        let path = dir.join(&file);
        let text = schemas::to_file_text(&schema);
        if bless {
            std::fs::write(&path, &text).unwrap();
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(file.clone());
        }
        expected_files.insert(file);
    }
    assert!(
        stale.is_empty(),
        "docs/schemas out of date for {stale:?}: run PINHOLE_BLESS=1 cargo test -p pinhole-pipeline --test integration schemas"
    );
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".schema.json"))
        .collect();
    assert_eq!(
        present, expected_files,
        "docs/schemas holds a schema no report type generates"
    );
}

#[test]
fn every_report_schema_has_its_version_and_requires_the_disclaimer() {
    for (file, schema) in schemas::all() {
        let value = serde_json::to_value(&schema).unwrap();
        let required: Vec<&str> = value["required"]
            .as_array()
            .unwrap_or_else(|| panic!("{file}: no required fields"))
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        // Optional on reading (files written before versioning read as version 0).
        assert!(
            value["properties"]["schema_version"].is_object(),
            "{file}: no schema_version"
        );
        assert!(
            required.contains(&"note") || required.contains(&"disclaimer"),
            "{file}: the disclaimer must be required ({required:?})"
        );
    }
}
