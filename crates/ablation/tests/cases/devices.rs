//! The shipped example table (numbers from shared/reference/vessel_ablation.md §4a).

use pinhole_ablation::devices::{DeviceTable, Modality};
use pinhole_ablation::AblationError;

#[test]
fn builtin_table_rows_interpolation_and_errors() {
    let t = DeviceTable::builtin().unwrap();
    assert!(t.devices.iter().all(|d| d.example && !d.source.is_empty()));
    let z = t.lookup("emprint-example", 100.0, 10.0).unwrap();
    assert_eq!(z.modality, Modality::Microwave);
    assert!(!z.interpolated);
    assert_eq!(
        (
            z.zone.long_axis_mm,
            z.zone.short_axis_mm,
            z.zone.beyond_tip_mm
        ),
        (42.0, 36.0, 9.5)
    );
    let mid = t.lookup("emprint-example", 100.0, 6.25).unwrap();
    assert!(mid.interpolated);
    assert!((mid.zone.long_axis_mm - 39.0).abs() < 1e-9);
    assert!((mid.zone.short_axis_mm - 35.0).abs() < 1e-9);
    assert!((mid.zone.beyond_tip_mm - 8.0).abs() < 1e-9);
    assert!(matches!(
        t.lookup("nope", 100.0, 10.0),
        Err(AblationError::UnknownDevice { .. })
    ));
    assert!(matches!(
        t.lookup("emprint-example", 90.0, 10.0),
        Err(AblationError::NoZoneForPower { .. })
    ));
    assert!(matches!(
        t.lookup("emprint-example", 100.0, 12.0),
        Err(AblationError::TimeOutsideTable { .. })
    ));
    let bad = "[[device]]\nname='x'\nmodality='microwave'\nsource='me'\n[[device.zone]]\npower_w=10\nminutes=1\nlong_axis_mm=10\nshort_axis_mm=10\nbeyond_tip_mm=20\n";
    let err = DeviceTable::parse(bad, "my.toml").unwrap_err();
    assert!(
        err.to_string().contains("my.toml") && err.to_string().contains("beyond_tip_mm"),
        "{err}"
    );
}
