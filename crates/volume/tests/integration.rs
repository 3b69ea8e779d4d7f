//! pinhole-volume's integration tests, in one binary (linking is slow on 2 cores).

// Test helpers outside `#[test]` functions unwrap too (`allow-unwrap-in-tests` covers only
// the test functions themselves).
#![allow(clippy::unwrap_used)]

// ---------------------------------------------------------------- mask surface

mod surface {
    use std::collections::HashMap;
    use std::f64::consts::PI;

    use pinhole_volume::math::Mat3;
    use pinhole_volume::surface::{mask_surface, TriangleMesh};
    use pinhole_volume::{DVec3, Grid, Mask, Volume};

    /// The world position of a continuous index, written out from the grid's definition
    /// (`origin + Σ_c direction[:, c] · spacing[c] · index[c]`) rather than through
    /// `Grid::index_to_world`.
    fn world(origin: [f64; 3], direction: &Mat3, spacing: [f64; 3], ijk: [f64; 3]) -> DVec3 {
        let mut p = DVec3::from(origin);
        for c in 0..3 {
            let column = DVec3::new(direction[0][c], direction[1][c], direction[2][c]);
            p += column * spacing[c] * ijk[c];
        }
        p
    }

    /// A mask whose voxel centres (world) satisfy `inside`.
    fn mask_where(grid: Grid, inside: impl Fn(DVec3) -> bool) -> Mask {
        let data = (0..grid.voxel_count())
            .map(|o| {
                let ijk = grid.index_of_offset(o).map(|v| v as f64);
                inside(DVec3::from(grid.index_to_world(ijk)))
            })
            .collect();
        Volume::new(grid, data).unwrap()
    }

    /// Asserts a closed, consistently wound 2-manifold: every directed edge occurs once
    /// and its reverse once too (so every undirected edge is shared by exactly two
    /// triangles, which traverse it in opposite directions).
    fn assert_closed_oriented_manifold(mesh: &TriangleMesh) {
        let mut directed: HashMap<(u32, u32), usize> = HashMap::new();
        for t in &mesh.triangles {
            assert!(
                t[0] != t[1] && t[1] != t[2] && t[0] != t[2],
                "degenerate {t:?}"
            );
            for n in 0..3 {
                *directed.entry((t[n], t[(n + 1) % 3])).or_default() += 1;
            }
        }
        for (&(a, b), &count) in &directed {
            assert_eq!(count, 1, "directed edge {a}->{b} used {count} times");
            assert_eq!(
                directed.get(&(b, a)),
                Some(&1),
                "edge {a}-{b} is not shared by two oppositely wound triangles"
            );
        }
        let used: std::collections::HashSet<u32> =
            mesh.triangles.iter().flatten().copied().collect();
        assert_eq!(used.len(), mesh.vertices_lps.len(), "unused vertices");
    }

    /// Enclosed volume by the divergence theorem (positive for outward normals).
    fn signed_volume_mm3(mesh: &TriangleMesh) -> f64 {
        mesh.triangles
            .iter()
            .map(|t| {
                let [a, b, c] = t.map(|v| DVec3::from(mesh.vertices_lps[v as usize]));
                a.dot(b.cross(c)) / 6.0
            })
            .sum()
    }

    fn relative_error(value: f64, expected: f64) -> f64 {
        (value - expected).abs() / expected
    }

    #[test]
    fn voxelised_sphere_area_volume_and_closure() {
        let (r, s) = (10.0, 0.5);
        let centre = DVec3::new(0.13, -0.21, 0.07);
        let grid = Grid::axis_aligned([48; 3], [s; 3], [-11.75; 3]).unwrap();
        let mask = mask_where(grid, |p| p.distance(centre) <= r);
        let mesh = mask_surface(&mask);

        assert_closed_oriented_manifold(&mesh);
        let diagonal = s * 3f64.sqrt();
        for v in &mesh.vertices_lps {
            let d = DVec3::from(*v).distance(centre);
            assert!((d - r).abs() <= diagonal, "vertex {v:?} at {d} mm");
        }
        // Surface Nets without smoothing overestimate the area of a staircase: about
        // +2.7 % here (0.5 mm voxels, r = 20 voxels); the volume comes within 0.3 %.
        let area = mesh.area_mm2();
        let sphere_area = 4.0 * PI * r * r;
        assert!(relative_error(area, sphere_area) < 0.04, "area {area}");
        let volume = signed_volume_mm3(&mesh);
        let sphere_volume = 4.0 / 3.0 * PI * r.powi(3);
        assert!(volume > 0.0, "inward-facing surface: {volume}");
        assert!(
            relative_error(volume, sphere_volume) < 0.05,
            "volume {volume}"
        );

        let vertex_areas = mesh.vertex_areas_mm2();
        assert_eq!(vertex_areas.len(), mesh.vertices_lps.len());
        assert!(vertex_areas.iter().all(|&a| a > 0.0));
        assert!((vertex_areas.iter().sum::<f64>() - area).abs() < 1e-9 * area);
    }

    /// Spacing 0.7 × 0.9 × 2.5 mm, axes rotated 30° about z and `k` pointing inferior
    /// (a reflection: the index→LPS determinant is negative).
    fn oblique_flipped() -> ([f64; 3], Mat3, [f64; 3]) {
        let (c, s) = (30f64.to_radians().cos(), 30f64.to_radians().sin());
        let direction = [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, -1.0]];
        ([0.7, 0.9, 2.5], direction, [-20.0, -15.0, 12.0])
    }

    #[test]
    fn oblique_anisotropic_flipped_sphere() {
        let (spacing, direction, origin) = oblique_flipped();
        let grid = Grid::new([48, 48, 16], spacing, origin, direction).unwrap();
        let centre = world(origin, &direction, spacing, [23.3, 22.6, 7.4]);
        let r = 10.0;
        let mask = mask_where(grid, |p| p.distance(centre) <= r);
        let mesh = mask_surface(&mask);

        assert_closed_oriented_manifold(&mesh);
        let diagonal = spacing.iter().map(|v| v * v).sum::<f64>().sqrt();
        for v in &mesh.vertices_lps {
            let d = DVec3::from(*v).distance(centre);
            assert!((d - r).abs() <= diagonal, "vertex {v:?} at {d} mm");
        }
        // 2.5 mm slices make coarse steps on a 10 mm sphere: the area comes out about
        // 7 % high here, the volume within 1 %.
        let area = mesh.area_mm2();
        assert!(relative_error(area, 4.0 * PI * r * r) < 0.10, "area {area}");
        let volume = signed_volume_mm3(&mesh);
        let sphere_volume = 4.0 / 3.0 * PI * r.powi(3);
        assert!(
            volume > 0.0,
            "inward-facing surface on a reflected grid: {volume}"
        );
        assert!(
            relative_error(volume, sphere_volume) < 0.05,
            "volume {volume}"
        );
    }

    #[test]
    fn oblique_box_vertices_land_on_the_world_geometry() {
        let (spacing, direction, origin) = oblique_flipped();
        let grid = Grid::new([8, 6, 6], spacing, origin, direction).unwrap();
        let (lo, hi) = ([2usize, 1, 1], [5usize, 3, 3]);
        let mut mask = Volume::filled(grid.clone(), false);
        for k in lo[2]..=hi[2] {
            for j in lo[1]..=hi[1] {
                for i in lo[0]..=hi[0] {
                    mask.data_mut()[grid.offset([i, j, k])] = true;
                }
            }
        }
        let mesh = mask_surface(&mask);
        assert_closed_oriented_manifold(&mesh);
        assert!(signed_volume_mm3(&mesh) > 0.0);

        // Cells inside a flat face average four crossings at the face, half a voxel out;
        // a corner cell averages three, a sixth of a voxel out from the corner voxel.
        let (l, h) = (lo.map(|v| v as f64), hi.map(|v| v as f64));
        let expected = [
            [h[0] + 0.5, l[1] + 0.5, l[2] + 0.5],
            [l[0] - 0.5, l[1] + 0.5, l[2] + 0.5],
            [l[0] + 0.5, h[1] + 0.5, l[2] + 0.5],
            [l[0] + 0.5, l[1] - 0.5, l[2] + 0.5],
            [l[0] + 0.5, l[1] + 0.5, h[2] + 0.5],
            [l[0] + 0.5, l[1] + 0.5, l[2] - 0.5],
            [l[0] - 1.0 / 6.0, l[1] - 1.0 / 6.0, l[2] - 1.0 / 6.0],
            [h[0] + 1.0 / 6.0, h[1] + 1.0 / 6.0, h[2] + 1.0 / 6.0],
        ];
        for ijk in expected {
            let p = world(origin, &direction, spacing, ijk);
            let nearest = mesh
                .vertices_lps
                .iter()
                .map(|v| DVec3::from(*v).distance(p))
                .fold(f64::INFINITY, f64::min);
            assert!(
                nearest < 1e-9,
                "no vertex at index {ijk:?} = {p}: {nearest}"
            );
        }
        // The triangles on the +i face (all three vertices in its plane) face world +i.
        let plus_i = DVec3::new(direction[0][0], direction[1][0], direction[2][0]);
        let face = world(origin, &direction, spacing, expected[0]);
        let on_face = |v: u32| {
            (DVec3::from(mesh.vertices_lps[v as usize]) - face)
                .dot(plus_i)
                .abs()
                < 1e-9
        };
        let flat: Vec<_> = mesh
            .triangles
            .iter()
            .filter(|t| t.iter().all(|&v| on_face(v)))
            .collect();
        assert!(!flat.is_empty());
        for t in flat {
            let [a, b, c] = t.map(|v| DVec3::from(mesh.vertices_lps[v as usize]));
            let normal = (b - a).cross(c - a).normalize();
            assert!(
                normal.dot(plus_i) > 1.0 - 1e-9,
                "normal {normal} vs +i {plus_i}"
            );
        }
    }

    #[test]
    fn empty_mask_gives_an_empty_mesh() {
        let grid = Grid::axis_aligned([5, 4, 3], [1.0; 3], [0.0; 3]).unwrap();
        let mesh = mask_surface(&Volume::filled(grid, false));
        assert!(mesh.vertices_lps.is_empty() && mesh.triangles.is_empty());
        assert_eq!(mesh.area_mm2(), 0.0);
    }

    #[test]
    fn single_voxel_gives_a_small_closed_cube() {
        // Every cell around one voxel averages its three crossings: a cube of side s/3.
        let s = 1.5;
        for (dims, at) in [([5, 5, 5], [2, 3, 1]), ([1, 1, 1], [0, 0, 0])] {
            let grid = Grid::axis_aligned(dims, [s; 3], [10.0, -4.0, 2.0]).unwrap();
            let mut mask = Volume::filled(grid.clone(), false);
            mask.data_mut()[grid.offset(at)] = true;
            let mesh = mask_surface(&mask);
            assert_eq!(mesh.vertices_lps.len(), 8);
            assert_eq!(mesh.triangles.len(), 12);
            assert_closed_oriented_manifold(&mesh);
            let side = s / 3.0;
            assert!((mesh.area_mm2() - 6.0 * side * side).abs() < 1e-9);
            assert!((signed_volume_mm3(&mesh) - side.powi(3)).abs() < 1e-9);
            let centre = DVec3::new(10.0, -4.0, 2.0) + DVec3::from(at.map(|v| v as f64 * s));
            for v in &mesh.vertices_lps {
                let d = DVec3::from(*v) - centre;
                assert!(
                    (d.abs() - DVec3::splat(side / 2.0)).abs().max_element() < 1e-9,
                    "{d}"
                );
            }
        }
    }

    #[test]
    fn mask_filling_the_grid_is_closed_by_virtual_padding() {
        let grid = Grid::axis_aligned([3, 4, 5], [1.0, 2.0, 0.5], [0.0; 3]).unwrap();
        let mesh = mask_surface(&Volume::filled(grid, true));
        assert_closed_oriented_manifold(&mesh);
        assert!(signed_volume_mm3(&mesh) > 0.0);
    }
}
