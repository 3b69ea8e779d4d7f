// Cone-beam DRR: one invocation per detector pixel, z of the dispatch = pose index.
//
// Computes the same integral as `pinhole_xray::render::render` with
// `Integrator::TrilinearSamples(n)`: the ray from the source through the pixel centre,
// in voxel-index space, clipped to the voxel-face box [-0.5, n-0.5] per axis, `n`
// midpoint samples between entry and exit, each a clamp-to-edge trilinear sample (the
// hardware filter at normalised coordinate (index + 0.5) / dims), sum · dt · world length.

struct Params {
    // Volume dimensions (x, y, z) as floats; w: air threshold, blocks whose max |μ| is at
    // or below it are skipped (0 = skip only blocks of exact zeros).
    dims: vec4<f32>,
    // x: samples per ray, y: number of poses in this dispatch, z: 1 = skip empty blocks.
    counts: vec4<u32>,
}

// One projection, precomputed on the CPU in f64 and rounded to f32.
struct Pose {
    // Source in voxel-index space.
    source_index: vec4<f32>,
    // Index-space direction from the source to pixel (0, 0), and its per-column and
    // per-row increments.
    dir00_index: vec4<f32>,
    dcol_index: vec4<f32>,
    drow_index: vec4<f32>,
    // The same three in world millimetres (for the ray length).
    dir00_world: vec4<f32>,
    dcol_world: vec4<f32>,
    drow_world: vec4<f32>,
    // x: width, y: height, z: offset of this pose's image in `out` (in pixels).
    size: vec4<u32>,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> poses: array<Pose>;
@group(0) @binding(2) var volume: texture_3d<f32>;
@group(0) @binding(3) var linear_clamp: sampler;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
// Max |μ| over the voxels a trilinear sample inside each BLOCK³ cell can touch: the cell
// of block b spans index [BLOCK·b − 0.5, BLOCK·b + BLOCK − 0.5) per axis, its samples touch
// voxels BLOCK·b − 1 … BLOCK·b + BLOCK. A zero means every sample there is exactly 0.
@group(0) @binding(5) var occupancy: texture_3d<f32>;

const BLOCK: f32 = 8.0;

// Parameter interval [t0, t1] of o + t·d inside the voxel-face box; t0 > t1 when missed.
fn clip(o: vec3<f32>, d: vec3<f32>, hi: vec3<f32>) -> vec2<f32> {
    var t0 = 0.0;
    var t1 = 3.0e38;
    for (var a = 0; a < 3; a++) {
        if abs(d[a]) < 1.0e-30 {
            if o[a] < -0.5 || o[a] > hi[a] {
                return vec2<f32>(1.0, 0.0);
            }
        } else {
            let ta = (-0.5 - o[a]) / d[a];
            let tb = (hi[a] - o[a]) / d[a];
            t0 = max(t0, min(ta, tb));
            t1 = min(t1, max(ta, tb));
        }
    }
    return vec2<f32>(t0, t1);
}

@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    let pose_index = gid.z;
    if pose_index >= params.counts.y {
        return;
    }
    let pose = poses[pose_index];
    let col = gid.x;
    let row = gid.y;
    if col >= pose.size.x || row >= pose.size.y {
        return;
    }
    let fc = f32(col);
    let fr = f32(row);
    let o = pose.source_index.xyz;
    let d = pose.dir00_index.xyz + fc * pose.dcol_index.xyz + fr * pose.drow_index.xyz;
    let dw = pose.dir00_world.xyz + fc * pose.dcol_world.xyz + fr * pose.drow_world.xyz;
    let world_length = length(dw);
    let dims = params.dims.xyz;
    let hi = dims - vec3<f32>(0.5);
    let t = clip(o, d, hi);
    var result = 0.0;
    if t.y > t.x && world_length > 0.0 {
        let n = max(params.counts.x, 1u);
        let dt = (t.y - t.x) / f32(n);
        // Work in normalised texture coordinates: u = (index + 0.5) / dims.
        let inv_dims = vec3<f32>(1.0) / dims;
        let entry = (o + d * t.x + vec3<f32>(0.5)) * inv_dims;
        let step = d * dt * inv_dims;
        let first = entry + 0.5 * step;
        var sum = 0.0;
        if params.counts.z == 0u {
            for (var k = 0u; k < n; k++) {
                let u = first + f32(k) * step;
                sum += textureSampleLevel(volume, linear_clamp, u, 0.0).x;
            }
        } else {
            // Walk the ray block by block; sample only blocks that are not empty. The
            // samples taken and their order are those of the plain loop; with threshold 0
            // every skipped sample is exactly zero, so the sum is the same.
            let entry_index = o + d * t.x;
            let step_index = d * dt;
            let nb = vec3<i32>(textureDimensions(occupancy));
            var k = 0u;
            while k < n {
                let p = entry_index + (f32(k) + 0.5) * step_index;
                let b = clamp(vec3<i32>(floor((p + 0.5) / BLOCK)), vec3<i32>(0), nb - 1);
                let lo = vec3<f32>(b) * BLOCK - 0.5;
                let hi = lo + BLOCK;
                // Ray parameter (in samples from the entry) where it leaves this cell.
                var s_exit = 3.0e38;
                for (var a = 0; a < 3; a++) {
                    if step_index[a] > 0.0 {
                        s_exit = min(s_exit, (hi[a] - entry_index[a]) / step_index[a]);
                    } else if step_index[a] < 0.0 {
                        s_exit = min(s_exit, (lo[a] - entry_index[a]) / step_index[a]);
                    }
                }
                // First sample (at k + 0.5) at or beyond the exit; always at least k + 1.
                let k_end = u32(clamp(ceil(s_exit - 0.5), f32(k + 1u), f32(n)));
                if textureLoad(occupancy, b, 0).x > params.dims.w {
                    for (; k < k_end; k++) {
                        let u = first + f32(k) * step;
                        sum += textureSampleLevel(volume, linear_clamp, u, 0.0).x;
                    }
                }
                k = k_end;
            }
        }
        result = sum * dt * world_length;
    }
    out[pose.size.z + row * pose.size.x + col] = result;
}
