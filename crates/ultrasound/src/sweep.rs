//! Probe sweeps: the poses of a freehand-like sweep around a start pose, for simulated
//! tracked sequences (`pinhole us sweep`) and reconstruction tests.
//!
//! A sweep of `n` frames is centred on the start pose: frame `k` sits at the offset
//! `o_k = k − (n − 1)/2` steps (`n = 5`: −2, −1, 0, 1, 2; `n = 4`: −1.5, −0.5, 0.5, 1.5),
//! so the frames are symmetric about the start and an odd sweep contains it.
//!
//! * [`SweepMotion::Translate`]: the transducer slides along `direction_lps` (normalised)
//!   by `o_k · step_mm`; beam and array keep their directions.
//! * [`SweepMotion::Tilt`]: the transducer rocks about its array axis through the centre
//!   of its face: the beam turns by `o_k · step_deg` about the lateral axis (right-handed),
//!   so a positive angle turns it towards `lateral × beam` (the image plane's normal, as
//!   [`crate::ImagePlane`] defines it for a simulated frame); the centre and the array stay.
//!
//! # Guarantees
//! * Every returned pose has a unit beam and a unit lateral axis orthogonal to it (the
//!   start's lateral made orthogonal to its beam, as [`crate::Simulator`] does), so it is
//!   accepted by the simulator.
//! * Refused with a typed [`SweepError`]: a frame count outside `1..=`[`MAX_SWEEP_FRAMES`],
//!   non-finite values, a zero or non-finite direction, parallel beam and lateral axes, a
//!   zero step, a translation step above [`MAX_STEP_MM`], a tilt step above
//!   [`MAX_TILT_STEP_DEG`] or a tilt sweep wider than ±[`MAX_TILT_HALF_SPAN_DEG`].

use pinhole_volume::math::{cross, dot, norm, Vec3};

use crate::simulate::ProbePose;

/// Most frames in a sweep (a bit over 5 minutes at 30 frames per second).
pub const MAX_SWEEP_FRAMES: usize = 10_000;
/// Largest translation between two frames (mm).
pub const MAX_STEP_MM: f64 = 100.0;
/// Largest tilt between two frames (degrees).
pub const MAX_TILT_STEP_DEG: f64 = 45.0;
/// Largest tilt of the first and last frames from the start pose (degrees): the beam never
/// turns past the transducer face.
pub const MAX_TILT_HALF_SPAN_DEG: f64 = 90.0;

/// Smallest `|beam × lateral|` (unit vectors) accepted, as [`crate::Simulator`].
const PARALLEL_TOLERANCE: f64 = 1e-3;

/// How the probe moves between frames.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SweepMotion {
    /// Slide along `direction_lps` (need not be unit length) by `step_mm` per frame.
    Translate { direction_lps: Vec3, step_mm: f64 },
    /// Rotate the beam about the lateral axis through the transducer centre by `step_deg`
    /// per frame (positive: towards `lateral × beam`).
    Tilt { step_deg: f64 },
}

/// Why a sweep was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SweepError {
    #[error("a sweep needs 1 to {MAX_SWEEP_FRAMES} frames, got {frames}")]
    FrameCount { frames: usize },
    #[error("{name} must be finite, got {value}")]
    NonFinite { name: &'static str, value: f64 },
    #[error("{name} must not be zero, got {value:?}")]
    ZeroVector { name: &'static str, value: Vec3 },
    #[error("lateral_lps {lateral:?} is parallel to beam_lps {beam:?}")]
    ParallelAxes { beam: Vec3, lateral: Vec3 },
    #[error("{name} = {value} is out of range: expected {expected}")]
    OutOfRange {
        name: &'static str,
        value: f64,
        expected: &'static str,
    },
}

/// The poses of a sweep of `frames` frames centred on `start` (see the module docs).
pub fn sweep_poses(
    start: &ProbePose,
    motion: &SweepMotion,
    frames: usize,
) -> Result<Vec<ProbePose>, SweepError> {
    if !(1..=MAX_SWEEP_FRAMES).contains(&frames) {
        return Err(SweepError::FrameCount { frames });
    }
    let (beam, lateral) = axes(start)?;
    let half = (frames as f64 - 1.0) / 2.0;
    let offsets = (0..frames).map(|k| k as f64 - half);
    match *motion {
        SweepMotion::Translate {
            direction_lps,
            step_mm,
        } => {
            let direction = unit("direction_lps", direction_lps)?;
            check_step("step_mm", step_mm, MAX_STEP_MM, "0 < |step_mm| ≤ 100")?;
            Ok(offsets
                .map(|o| ProbePose {
                    centre_lps: std::array::from_fn(|a| {
                        start.centre_lps[a] + o * step_mm * direction[a]
                    }),
                    beam_lps: beam,
                    lateral_lps: lateral,
                })
                .collect())
        }
        SweepMotion::Tilt { step_deg } => {
            check_step(
                "step_deg",
                step_deg,
                MAX_TILT_STEP_DEG,
                "0 < |step_deg| ≤ 45",
            )?;
            let half_span_deg = half * step_deg.abs();
            if half_span_deg > MAX_TILT_HALF_SPAN_DEG {
                return Err(SweepError::OutOfRange {
                    name: "tilt half span (degrees)",
                    value: half_span_deg,
                    expected: "(frames − 1)/2 · |step_deg| ≤ 90",
                });
            }
            // beam ⟂ lateral, both unit: Rodrigues reduces to b cos θ + (l × b) sin θ.
            let towards = cross(lateral, beam);
            Ok(offsets
                .map(|o| {
                    let (s, c) = (o * step_deg).to_radians().sin_cos();
                    ProbePose {
                        centre_lps: start.centre_lps,
                        beam_lps: std::array::from_fn(|a| c * beam[a] + s * towards[a]),
                        lateral_lps: lateral,
                    }
                })
                .collect())
        }
    }
}

/// The start's unit beam and unit lateral (made orthogonal to the beam), checked.
fn axes(start: &ProbePose) -> Result<(Vec3, Vec3), SweepError> {
    for (name, v) in [
        ("centre_lps", start.centre_lps),
        ("beam_lps", start.beam_lps),
        ("lateral_lps", start.lateral_lps),
    ] {
        for value in v {
            finite(name, value)?;
        }
    }
    let beam = unit("beam_lps", start.beam_lps)?;
    let lateral = unit("lateral_lps", start.lateral_lps)?;
    if norm(cross(beam, lateral)) < PARALLEL_TOLERANCE {
        return Err(SweepError::ParallelAxes {
            beam: start.beam_lps,
            lateral: start.lateral_lps,
        });
    }
    let along = dot(lateral, beam);
    let rest: Vec3 = std::array::from_fn(|a| lateral[a] - along * beam[a]);
    Ok((beam, unit("lateral_lps", rest)?))
}

fn finite(name: &'static str, value: f64) -> Result<f64, SweepError> {
    if value.is_finite() {
        Ok(value)
    } else {
        Err(SweepError::NonFinite { name, value })
    }
}

fn unit(name: &'static str, v: Vec3) -> Result<Vec3, SweepError> {
    for value in v {
        finite(name, value)?;
    }
    let n = norm(v);
    if n > 0.0 && n.is_finite() {
        Ok(v.map(|x| x / n))
    } else {
        Err(SweepError::ZeroVector { name, value: v })
    }
}

fn check_step(
    name: &'static str,
    value: f64,
    max: f64,
    expected: &'static str,
) -> Result<(), SweepError> {
    finite(name, value)?;
    if value == 0.0 || value.abs() > max {
        return Err(SweepError::OutOfRange {
            name,
            value,
            expected,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Vec3, b: Vec3, tol: f64) -> bool {
        (0..3).all(|i| (a[i] - b[i]).abs() <= tol)
    }

    fn start() -> ProbePose {
        ProbePose {
            centre_lps: [10.0, -20.0, 30.0],
            // Posterior and superior (3-4-5), not unit length.
            beam_lps: [0.0, 3.0, 4.0],
            // Left, with a component along the beam that must be removed.
            lateral_lps: [2.0, 0.6, 0.8],
        }
    }

    #[test]
    fn a_translation_is_centred_with_closed_form_endpoints() {
        let motion = SweepMotion::Translate {
            direction_lps: [0.0, 0.0, 2.0],
            step_mm: 1.5,
        };
        let poses = sweep_poses(&start(), &motion, 5).unwrap();
        assert_eq!(poses.len(), 5);
        assert!(close(poses[0].centre_lps, [10.0, -20.0, 27.0], 1e-12));
        assert!(close(poses[2].centre_lps, [10.0, -20.0, 30.0], 1e-12));
        assert!(close(poses[4].centre_lps, [10.0, -20.0, 33.0], 1e-12));
        for p in &poses {
            assert!(close(p.beam_lps, [0.0, 0.6, 0.8], 1e-12));
            // The lateral made orthogonal to the beam: (2, 0.6, 0.8) − 1·(0, 0.6, 0.8).
            assert!(close(p.lateral_lps, [1.0, 0.0, 0.0], 1e-12));
        }
        // Even count: offsets ±0.5 and ±1.5 steps, none at the start.
        let motion = SweepMotion::Translate {
            direction_lps: [-3.0, 0.0, 4.0],
            step_mm: 2.0,
        };
        let poses = sweep_poses(&start(), &motion, 4).unwrap();
        // First: 1.5 steps of 2 mm = 3 mm back along (−0.6, 0, 0.8).
        assert!(close(poses[0].centre_lps, [11.8, -20.0, 27.6], 1e-12));
        assert!(close(poses[1].centre_lps, [10.6, -20.0, 29.2], 1e-12));
        assert!(close(poses[3].centre_lps, [8.2, -20.0, 32.4], 1e-12));
        // One frame: the start itself.
        let one = sweep_poses(&start(), &motion, 1).unwrap();
        assert!(close(one[0].centre_lps, start().centre_lps, 0.0));
    }

    #[test]
    fn a_tilt_turns_the_beam_about_the_lateral_axis_through_the_centre() {
        let poses = sweep_poses(&start(), &SweepMotion::Tilt { step_deg: 10.0 }, 5).unwrap();
        let beam0 = [0.0, 0.6, 0.8];
        let lateral = [1.0, 0.0, 0.0];
        // lateral × beam0 = (0, −0.8, 0.6): where a positive tilt turns the beam.
        let normal = [0.0, -0.8, 0.6];
        for (k, p) in poses.iter().enumerate() {
            let angle = (k as f64 - 2.0) * 10f64.to_radians();
            assert!(close(p.centre_lps, start().centre_lps, 0.0), "centre stays");
            assert!(close(p.lateral_lps, lateral, 1e-12), "array stays");
            assert!((norm(p.beam_lps) - 1.0).abs() < 1e-12);
            assert!(dot(p.beam_lps, lateral).abs() < 1e-12, "beam ⟂ array");
            assert!(
                (dot(p.beam_lps, beam0) - angle.cos()).abs() < 1e-12,
                "frame {k}"
            );
            assert!(
                (dot(p.beam_lps, normal) - angle.sin()).abs() < 1e-12,
                "frame {k}"
            );
        }
        // The last frame by hand: 20° towards the normal.
        let (s, c) = 20f64.to_radians().sin_cos();
        assert!(close(
            poses[4].beam_lps,
            [0.0, 0.6 * c - 0.8 * s, 0.8 * c + 0.6 * s],
            1e-12
        ));
        // A negative step runs the sweep the other way.
        let back = sweep_poses(&start(), &SweepMotion::Tilt { step_deg: -10.0 }, 5).unwrap();
        assert!(close(back[0].beam_lps, poses[4].beam_lps, 1e-12));
    }

    #[test]
    fn bad_sweeps_are_refused_with_typed_errors() {
        let tilt = SweepMotion::Tilt { step_deg: 1.0 };
        assert_eq!(
            sweep_poses(&start(), &tilt, 0),
            Err(SweepError::FrameCount { frames: 0 })
        );
        assert_eq!(
            sweep_poses(&start(), &tilt, MAX_SWEEP_FRAMES + 1),
            Err(SweepError::FrameCount {
                frames: MAX_SWEEP_FRAMES + 1
            })
        );
        let fine = SweepMotion::Translate {
            direction_lps: [1.0, 0.0, 0.0],
            step_mm: 0.01,
        };
        assert_eq!(
            sweep_poses(&start(), &fine, MAX_SWEEP_FRAMES).map(|p| p.len()),
            Ok(MAX_SWEEP_FRAMES)
        );
        assert!(matches!(
            sweep_poses(&start(), &SweepMotion::Tilt { step_deg: 30.0 }, 8),
            Err(SweepError::OutOfRange { .. })
        ));
        assert!(sweep_poses(&start(), &SweepMotion::Tilt { step_deg: 30.0 }, 7).is_ok());
        for step_deg in [0.0, 46.0, f64::NAN] {
            assert!(sweep_poses(&start(), &SweepMotion::Tilt { step_deg }, 3).is_err());
        }
        let slide = |direction_lps, step_mm| SweepMotion::Translate {
            direction_lps,
            step_mm,
        };
        assert!(matches!(
            sweep_poses(&start(), &slide([0.0; 3], 1.0), 3),
            Err(SweepError::ZeroVector {
                name: "direction_lps",
                ..
            })
        ));
        assert!(matches!(
            sweep_poses(&start(), &slide([1.0, 0.0, 0.0], 0.0), 3),
            Err(SweepError::OutOfRange {
                name: "step_mm",
                ..
            })
        ));
        assert!(matches!(
            sweep_poses(&start(), &slide([1.0, 0.0, 0.0], 101.0), 3),
            Err(SweepError::OutOfRange {
                name: "step_mm",
                ..
            })
        ));
        assert!(matches!(
            sweep_poses(&start(), &slide([f64::INFINITY, 0.0, 0.0], 1.0), 3),
            Err(SweepError::NonFinite { .. })
        ));
        let mut parallel = start();
        parallel.lateral_lps = [0.0, -6.0, -8.0];
        assert!(matches!(
            sweep_poses(&parallel, &tilt, 3),
            Err(SweepError::ParallelAxes { .. })
        ));
        let mut nan = start();
        nan.centre_lps[1] = f64::NAN;
        assert!(matches!(
            sweep_poses(&nan, &tilt, 3),
            Err(SweepError::NonFinite {
                name: "centre_lps",
                ..
            })
        ));
    }
}
