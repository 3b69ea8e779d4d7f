//! Local refinement by Levenberg–Marquardt on the similarity's least-squares form.
//!
//! Every similarity of [`crate::similarity`] is `1 − ‖r‖² / (2·blocks)` for a residual
//! vector `r` (the fixed image's normalised blocks minus the moving image's), so
//! maximising it is a non-linear least-squares problem. Near the optimum a Gauss–Newton
//! step from the Jacobian of `r` (forward differences: one image per coordinate, rendered
//! as one batch) reaches in a few iterations what a population search needs hundreds of
//! images for. Marquardt's damping keeps the steps safe where the model is poor, and a
//! step is kept only when the exact score improves: the result is never worse than the
//! start.

/// Settings of one refinement.
#[derive(Debug, Clone, PartialEq)]
pub struct LmSettings {
    /// Jacobian evaluations (iterations) at most.
    pub max_iterations: usize,
    /// Forward-difference step per coordinate, in the units of the search space.
    pub step: f64,
    /// Box the points are clamped to, per coordinate (`lo`, `hi`).
    pub bounds: Option<(Vec<f64>, Vec<f64>)>,
    /// Stop once an accepted step is shorter than this (units, Euclidean).
    pub tolerance: f64,
    /// Damped trials per iteration before giving up (each costs one evaluation).
    pub max_trials: usize,
}

impl Default for LmSettings {
    fn default() -> Self {
        Self {
            max_iterations: 8,
            step: 0.01,
            bounds: None,
            tolerance: 0.002,
            max_trials: 4,
        }
    }
}

/// One evaluated point: its score (higher is better) and residual vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub score: f64,
    pub residual: Vec<f32>,
}

/// The best point found and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct LmResult {
    pub best_x: Vec<f64>,
    pub best_score: f64,
    pub evaluations: usize,
    pub iterations: usize,
}

/// Maximises the score from `x0`. `eval` gets a batch of points and returns their
/// evaluations in order (all residuals of one length).
pub fn maximise<E>(
    x0: &[f64],
    settings: &LmSettings,
    mut eval: impl FnMut(&[Vec<f64>]) -> Result<Vec<Evaluation>, E>,
) -> Result<LmResult, E> {
    let n = x0.len();
    let clamp = |x: &mut Vec<f64>| {
        if let Some((lo, hi)) = &settings.bounds {
            for i in 0..n {
                x[i] = x[i].clamp(lo[i], hi[i]);
            }
        }
    };
    let mut x = x0.to_vec();
    clamp(&mut x);
    let mut evaluations = 0;
    let mut current = match eval(std::slice::from_ref(&x))?.pop() {
        Some(e) => e,
        None => {
            return Ok(LmResult {
                best_x: x,
                best_score: f64::NEG_INFINITY,
                evaluations,
                iterations: 0,
            })
        }
    };
    evaluations += 1;
    let mut lambda = 1e-3;
    let mut iterations = 0;
    for _ in 0..settings.max_iterations {
        iterations += 1;
        let (probes, steps) = difference_probes(&x, settings);
        let probed = eval(&probes)?;
        evaluations += probed.len();
        if probed.len() != n
            || probed
                .iter()
                .any(|e| e.residual.len() != current.residual.len())
        {
            break;
        }
        let (a, g) = normal_equations(&current.residual, &probed, &steps);
        let mut accepted = None;
        for _ in 0..settings.max_trials {
            let Some(delta) = damped_step(&a, &g, lambda) else {
                lambda *= 10.0;
                continue;
            };
            let mut trial: Vec<f64> = (0..n).map(|i| x[i] + delta[i]).collect();
            clamp(&mut trial);
            let Some(e) = eval(std::slice::from_ref(&trial))?.pop() else {
                break;
            };
            evaluations += 1;
            if e.score > current.score && e.residual.len() == current.residual.len() {
                let moved = (0..n)
                    .map(|i| (trial[i] - x[i]).powi(2))
                    .sum::<f64>()
                    .sqrt();
                accepted = Some((trial, e, moved));
                break;
            }
            lambda *= 5.0;
        }
        let Some((trial, e, moved)) = accepted else {
            break;
        };
        x = trial;
        current = e;
        lambda = (lambda / 3.0).max(1e-7);
        if moved < settings.tolerance {
            break;
        }
    }
    Ok(LmResult {
        best_x: x,
        best_score: current.score,
        evaluations,
        iterations,
    })
}

/// One forward-difference point per coordinate (backwards where the step would leave the
/// box) and the signed step taken.
fn difference_probes(x: &[f64], settings: &LmSettings) -> (Vec<Vec<f64>>, Vec<f64>) {
    (0..x.len())
        .map(|k| {
            let mut h = settings.step;
            if let Some((lo, hi)) = &settings.bounds {
                if x[k] + h > hi[k] && x[k] - h >= lo[k] {
                    h = -h;
                }
            }
            let mut p = x.to_vec();
            p[k] += h;
            (p, h)
        })
        .unzip()
}

/// `JᵀJ` and `Jᵀr` of the forward-difference Jacobian `J[:, k] = (r_k − r) / h_k`.
fn normal_equations(r: &[f32], probed: &[Evaluation], steps: &[f64]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = probed.len();
    let columns: Vec<Vec<f64>> = probed
        .iter()
        .zip(steps)
        .map(|(e, &h)| {
            e.residual
                .iter()
                .zip(r)
                .map(|(&rk, &r0)| (f64::from(rk) - f64::from(r0)) / h)
                .collect()
        })
        .collect();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>();
    let a = (0..n)
        .map(|i| (0..n).map(|j| dot(&columns[i], &columns[j])).collect())
        .collect();
    let g = columns
        .iter()
        .map(|c| c.iter().zip(r).map(|(x, &y)| x * f64::from(y)).sum())
        .collect();
    (a, g)
}

/// The Marquardt step `(A + λ·diag A) δ = −g`; `None` when the system is singular.
fn damped_step(a: &[Vec<f64>], g: &[f64], lambda: f64) -> Option<Vec<f64>> {
    let n = g.len();
    let trace: f64 = (0..n).map(|i| a[i][i]).sum();
    let floor = (trace / n.max(1) as f64 * 1e-9).max(f64::MIN_POSITIVE);
    let mut m: Vec<Vec<f64>> = a.to_vec();
    for i in 0..n {
        m[i][i] += lambda * a[i][i].max(floor);
    }
    solve(m, g.iter().map(|v| -v).collect())
}

/// Gaussian elimination with partial pivoting.
fn solve(mut m: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        let p = m[pivot][col];
        if p == 0.0 || !p.is_finite() {
            return None;
        }
        m.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..n {
            let f = m[row][col] / m[col][col];
            for k in col..n {
                m[row][k] -= f * m[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let s: f64 = (row + 1..n).map(|k| m[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / m[row][row];
    }
    x.iter().all(|v| v.is_finite()).then_some(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A residual that is non-linear in the parameters (like an image moving under a
    /// pose): the score's maximum is at `truth`.
    fn model(x: &[f64], truth: &[f64]) -> Evaluation {
        let residual: Vec<f32> = (0..40)
            .map(|i| {
                let t = i as f64 * 0.25;
                let f = |p: &[f64]| {
                    (p[0] + t).sin() * (1.0 + 0.3 * p[1]) + 0.2 * p[2] * t.cos() + p[1] * p[2]
                };
                ((f(truth) - f(x)) * 0.1) as f32
            })
            .collect();
        let ss: f64 = residual.iter().map(|&v| f64::from(v).powi(2)).sum();
        Evaluation {
            score: 1.0 - ss,
            residual,
        }
    }

    #[test]
    fn reaches_the_optimum_of_a_nonlinear_least_squares_problem() {
        let truth = [0.3, -0.2, 0.5];
        let settings = LmSettings {
            max_iterations: 30,
            step: 1e-4,
            tolerance: 1e-7,
            ..LmSettings::default()
        };
        let result = maximise(&[0.0, 0.0, 0.0], &settings, |xs| {
            Ok::<_, ()>(xs.iter().map(|x| model(x, &truth)).collect())
        })
        .unwrap();
        for (found, want) in result.best_x.iter().zip(truth) {
            assert!((found - want).abs() < 1e-3, "{:?}", result.best_x);
        }
        assert!(result.best_score > 1.0 - 1e-8);
        assert!(result.iterations < 30, "{} iterations", result.iterations);
    }

    #[test]
    fn never_returns_a_worse_point_and_respects_the_box() {
        let truth = [0.3, -0.2, 0.5];
        let start = [0.05, 0.0, 0.0];
        let start_score = model(&start, &truth).score;
        let settings = LmSettings {
            bounds: Some((vec![-0.1; 3], vec![0.1; 3])),
            ..LmSettings::default()
        };
        let result = maximise(&start, &settings, |xs| {
            assert!(xs.iter().flatten().all(|v| v.abs() <= 0.1 + 1e-12));
            Ok::<_, ()>(xs.iter().map(|x| model(x, &truth)).collect())
        })
        .unwrap();
        assert!(result.best_score >= start_score);
        assert!(result.best_x.iter().all(|v| v.abs() <= 0.1 + 1e-12));
    }

    #[test]
    fn solves_a_small_system_and_refuses_a_singular_one() {
        let x = solve(vec![vec![0.0, 2.0], vec![3.0, 1.0]], vec![4.0, 5.0]).unwrap();
        assert!((x[0] - 1.0).abs() < 1e-12 && (x[1] - 2.0).abs() < 1e-12);
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }
}
