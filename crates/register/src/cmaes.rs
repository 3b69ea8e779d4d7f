//! A compact CMA-ES (Hansen's (μ/μ_w, λ) with rank-one and rank-μ covariance updates and
//! cumulative step-size adaptation) that evaluates each generation as one batch, so the
//! DRRs of a generation are rendered together.

/// Deterministic generator (SplitMix64) with Gaussian samples (Box–Muller).
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
    spare: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self {
            state: seed ^ 0x9E37_79B9_7F4A_7C15,
            spare: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Standard normal.
    pub fn normal(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let u1 = self.uniform().max(1e-300);
        let u2 = self.uniform();
        let r = (-2.0 * u1.ln()).sqrt();
        let (s, c) = (2.0 * std::f64::consts::PI * u2).sin_cos();
        self.spare = Some(r * s);
        r * c
    }

    /// Poisson sample with mean `lambda` (Knuth below 30, normal approximation above).
    pub fn poisson(&mut self, lambda: f64) -> f64 {
        if lambda <= 0.0 {
            return 0.0;
        }
        if lambda < 30.0 {
            let l = (-lambda).exp();
            let (mut k, mut p) = (0.0, 1.0);
            loop {
                p *= self.uniform();
                if p <= l {
                    return k;
                }
                k += 1.0;
            }
        }
        (lambda + lambda.sqrt() * self.normal()).round().max(0.0)
    }
}

/// Settings of one CMA-ES run.
#[derive(Debug, Clone, PartialEq)]
pub struct CmaesSettings {
    /// Initial step size (in the units of the search space).
    pub sigma: f64,
    /// Population per generation (λ).
    pub population: usize,
    pub max_generations: usize,
    /// Stop when σ times the largest axis of the search distribution falls below this.
    pub tolerance: f64,
    /// Box the samples are clamped to, per coordinate (`lo`, `hi`).
    pub bounds: Option<(Vec<f64>, Vec<f64>)>,
    pub seed: u64,
}

/// The best point found and how many evaluations it took.
#[derive(Debug, Clone, PartialEq)]
pub struct CmaesResult {
    pub best_x: Vec<f64>,
    pub best_f: f64,
    /// The final distribution mean.
    pub mean: Vec<f64>,
    pub evaluations: usize,
    pub generations: usize,
}

/// Minimises `f`, which gets a whole generation of points and returns their values.
pub fn minimize<E>(
    x0: &[f64],
    settings: &CmaesSettings,
    mut f: impl FnMut(&[Vec<f64>]) -> Result<Vec<f64>, E>,
) -> Result<CmaesResult, E> {
    let n = x0.len();
    let nf = n as f64;
    let lambda = settings.population.max(4);
    let mu = lambda / 2;
    let raw: Vec<f64> = (0..mu)
        .map(|i| (mu as f64 + 0.5).ln() - ((i + 1) as f64).ln())
        .collect();
    let wsum: f64 = raw.iter().sum();
    let w: Vec<f64> = raw.iter().map(|v| v / wsum).collect();
    let mueff = 1.0 / w.iter().map(|v| v * v).sum::<f64>();
    let cc = (4.0 + mueff / nf) / (nf + 4.0 + 2.0 * mueff / nf);
    let cs = (mueff + 2.0) / (nf + mueff + 5.0);
    let c1 = 2.0 / ((nf + 1.3).powi(2) + mueff);
    let cmu = (1.0 - c1).min(2.0 * (mueff - 2.0 + 1.0 / mueff) / ((nf + 2.0).powi(2) + mueff));
    let damps = 1.0 + 2.0 * (((mueff - 1.0) / (nf + 1.0)).sqrt() - 1.0).max(0.0) + cs;
    let chi_n = nf.sqrt() * (1.0 - 1.0 / (4.0 * nf) + 1.0 / (21.0 * nf * nf));

    let mut rng = Rng::new(settings.seed);
    let mut mean = x0.to_vec();
    let mut sigma = settings.sigma;
    let mut c = identity(n);
    let mut pc = vec![0.0; n];
    let mut ps = vec![0.0; n];
    let mut best_x = x0.to_vec();
    let mut best_f = f64::INFINITY;
    let mut evaluations = 0;
    let mut generations = 0;
    for g in 0..settings.max_generations {
        let (b, d) = eigen_symmetric(&c);
        let d: Vec<f64> = d.iter().map(|v| v.max(1e-20).sqrt()).collect();
        let mut xs = Vec::with_capacity(lambda);
        for _ in 0..lambda {
            let z: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            let mut x: Vec<f64> = (0..n)
                .map(|i| mean[i] + sigma * (0..n).map(|k| b[i][k] * d[k] * z[k]).sum::<f64>())
                .collect();
            if let Some((lo, hi)) = &settings.bounds {
                for i in 0..n {
                    x[i] = x[i].clamp(lo[i], hi[i]);
                }
            }
            xs.push(x);
        }
        let values = f(&xs)?;
        evaluations += xs.len();
        generations = g + 1;
        let mut order: Vec<usize> = (0..lambda).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        if values[order[0]] < best_f {
            best_f = values[order[0]];
            best_x = xs[order[0]].clone();
        }
        let old = mean.clone();
        mean = (0..n)
            .map(|i| (0..mu).map(|k| w[k] * xs[order[k]][i]).sum())
            .collect();
        let yw: Vec<f64> = (0..n).map(|i| (mean[i] - old[i]) / sigma).collect();
        // C^{-1/2} y_w = B D^{-1} Bᵀ y_w
        let bt_y: Vec<f64> = (0..n)
            .map(|k| (0..n).map(|i| b[i][k] * yw[i]).sum::<f64>() / d[k])
            .collect();
        let c_inv_sqrt_y: Vec<f64> = (0..n)
            .map(|i| (0..n).map(|k| b[i][k] * bt_y[k]).sum())
            .collect();
        let ks = (cs * (2.0 - cs) * mueff).sqrt();
        for i in 0..n {
            ps[i] = (1.0 - cs) * ps[i] + ks * c_inv_sqrt_y[i];
        }
        let ps_norm = ps.iter().map(|v| v * v).sum::<f64>().sqrt();
        let hsig = ps_norm / (1.0 - (1.0 - cs).powi(2 * (g as i32 + 1))).sqrt()
            < (1.4 + 2.0 / (nf + 1.0)) * chi_n;
        let hs = if hsig { 1.0 } else { 0.0 };
        let kc = (cc * (2.0 - cc) * mueff).sqrt();
        for i in 0..n {
            pc[i] = (1.0 - cc) * pc[i] + hs * kc * yw[i];
        }
        let ys: Vec<Vec<f64>> = (0..mu)
            .map(|k| (0..n).map(|i| (xs[order[k]][i] - old[i]) / sigma).collect())
            .collect();
        let keep = 1.0 - c1 - cmu + (1.0 - hs) * c1 * cc * (2.0 - cc);
        for i in 0..n {
            for j in 0..n {
                let rank_mu: f64 = (0..mu).map(|k| w[k] * ys[k][i] * ys[k][j]).sum();
                c[i][j] = keep * c[i][j] + c1 * pc[i] * pc[j] + cmu * rank_mu;
            }
        }
        sigma *= ((cs / damps) * (ps_norm / chi_n - 1.0)).exp();
        let max_axis = d.iter().copied().fold(0.0, f64::max);
        if sigma * max_axis < settings.tolerance {
            break;
        }
    }
    Ok(CmaesResult {
        best_x,
        best_f,
        mean,
        evaluations,
        generations,
    })
}

fn identity(n: usize) -> Vec<Vec<f64>> {
    (0..n)
        .map(|i| (0..n).map(|j| if i == j { 1.0 } else { 0.0 }).collect())
        .collect()
}

/// Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: `(B, d)` with
/// the eigenvectors in the columns of `B`.
pub fn eigen_symmetric(m: &[Vec<f64>]) -> (Vec<Vec<f64>>, Vec<f64>) {
    let n = m.len();
    let mut a: Vec<Vec<f64>> = m
        .iter()
        .enumerate()
        .map(|(i, row)| (0..n).map(|j| 0.5 * (row[j] + m[j][i])).collect())
        .collect();
    let mut v = identity(n);
    for _sweep in 0..50 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i][j] * a[i][j])
            .sum();
        if off < 1e-30 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q][q] - a[p][p]) / (2.0 * a[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let cs = 1.0 / (t * t + 1.0).sqrt();
                let sn = t * cs;
                for k in 0..n {
                    let (akp, akq) = (a[k][p], a[k][q]);
                    a[k][p] = cs * akp - sn * akq;
                    a[k][q] = sn * akp + cs * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p][k], a[q][k]);
                    a[p][k] = cs * apk - sn * aqk;
                    a[q][k] = sn * apk + cs * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k][p], v[k][q]);
                    v[k][p] = cs * vkp - sn * vkq;
                    v[k][q] = sn * vkp + cs * vkq;
                }
            }
        }
    }
    let d = (0..n).map(|i| a[i][i]).collect();
    (v, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_reconstructs_the_matrix() {
        let m = vec![
            vec![4.0, 1.0, 0.5],
            vec![1.0, 3.0, -0.2],
            vec![0.5, -0.2, 2.0],
        ];
        let (b, d) = eigen_symmetric(&m);
        for i in 0..3 {
            for j in 0..3 {
                let r: f64 = (0..3).map(|k| b[i][k] * d[k] * b[j][k]).sum();
                assert!((r - m[i][j]).abs() < 1e-10);
            }
        }
    }

    #[test]
    fn finds_the_minimum_of_an_ill_conditioned_quadratic() {
        let target = [1.0, -2.0, 0.5, 3.0, 0.0, -1.0];
        let scales = [1.0, 10.0, 0.1, 3.0, 1.0, 0.3];
        let settings = CmaesSettings {
            sigma: 1.0,
            population: 12,
            max_generations: 400,
            tolerance: 1e-8,
            bounds: None,
            seed: 7,
        };
        let r = minimize(&[0.0; 6], &settings, |xs| {
            Ok::<_, ()>(
                xs.iter()
                    .map(|x| {
                        (0..6)
                            .map(|i| (scales[i] * (x[i] - target[i])).powi(2))
                            .sum()
                    })
                    .collect(),
            )
        })
        .unwrap();
        for i in 0..6 {
            assert!((r.best_x[i] - target[i]).abs() < 1e-4, "{r:?}");
        }
    }
}
