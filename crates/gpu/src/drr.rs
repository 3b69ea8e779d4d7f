//! The DRR kernel's host side: volume upload, pose packing, dispatch and readback.

use std::sync::{mpsc, Mutex};
use std::time::Duration;

use bytemuck::{Pod, Zeroable};
use pinhole_volume::math::{mat3_inverse, mat3_mul_vec, sub, Mat3, Vec3};
use pinhole_volume::Volume;
use pinhole_xray::{Image, Projection};

use crate::{GpuContext, GpuError};

const WORKGROUP: u32 = 8;
/// Edge of an occupancy block in voxels (`BLOCK` in `drr.wgsl`).
const BLOCK: usize = 8;
/// Empty-space skipping starts on when at least this fraction of blocks is empty.
const MIN_EMPTY_FRACTION: f64 = 0.05;

/// Kernel-wide parameters (uniform buffer; layout of `Params` in `drr.wgsl`).
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    dims: [f32; 4],
    counts: [u32; 4],
}

/// One projection (layout of `Pose` in `drr.wgsl`), computed in f64, stored in f32.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Pose {
    source_index: [f32; 4],
    dir00_index: [f32; 4],
    dcol_index: [f32; 4],
    drow_index: [f32; 4],
    dir00_world: [f32; 4],
    dcol_world: [f32; 4],
    drow_world: [f32; 4],
    size: [u32; 4],
}

/// Buffers reused across renders, grown on demand.
struct Scratch {
    pose_capacity: usize,
    pixel_capacity: usize,
    poses: wgpu::Buffer,
    out: wgpu::Buffer,
    readback: wgpu::Buffer,
    bind_group: wgpu::BindGroup,
}

/// Timestamp queries of one dispatch (present when the device has `TIMESTAMP_QUERY`).
struct Timestamps {
    set: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    period_ns: f32,
}

/// Images of a batch and, when the device records timestamps, the kernel's own time.
#[derive(Debug, Clone)]
pub struct TimedBatch {
    pub images: Vec<Image>,
    /// Time between the start and end of the compute pass(es) on the device.
    pub kernel: Option<Duration>,
}

/// A μ volume resident on the GPU, ready to render DRRs.
pub struct GpuDrr {
    ctx: GpuContext,
    dims: [usize; 3],
    world_to_index: Mat3,
    origin: Vec3,
    params: wgpu::Buffer,
    // Kept alive for the bind group.
    _texture: wgpu::Texture,
    view: wgpu::TextureView,
    sampler: wgpu::Sampler,
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    _occupancy: wgpu::Texture,
    occupancy_view: wgpu::TextureView,
    occupancy_host: Vec<f32>,
    air_threshold: f32,
    skip_empty: bool,
    scratch: Mutex<Option<Scratch>>,
    timestamps: Option<Timestamps>,
    max_out_bytes: u64,
}

impl GpuDrr {
    /// Uploads `mu` (1/mm) into a 3-D texture once and builds the pipeline.
    pub fn new(ctx: &GpuContext, mu: &Volume<f32>) -> Result<Self, GpuError> {
        let grid = mu.grid();
        let dims = grid.dims();
        let max = ctx.limits.max_texture_dimension_3d;
        if dims.iter().any(|&n| n > max as usize) {
            return Err(GpuError::VolumeTooLarge { dims, max });
        }
        let m = grid.ijk_to_lps();
        let lin: Mat3 = std::array::from_fn(|r| [m[r][0], m[r][1], m[r][2]]);
        // The grid checked its direction matrix; a singular one cannot get here.
        let world_to_index = mat3_inverse(&lin).unwrap_or([[0.0; 3]; 3]);

        let device = &ctx.device;
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let (texture, view) = volume_texture(ctx, mu.data(), dims);
        let (occupancy, occupancy_view, occupancy_data) = occupancy_texture(ctx, mu.data(), dims);
        let sampler = trilinear_sampler(device);
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pinhole-gpu params"),
            size: std::mem::size_of::<Params>() as u64,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let layout = bind_group_layout(device);
        let pipeline = drr_pipeline(device, &layout);
        let timestamps = ctx.has_timestamps().then(|| timestamp_queries(ctx));
        check(oom, "creating the volume texture")?;
        check(scope, "creating the DRR pipeline")?;
        // Finish the upload here, so that its cost is not charged to the first render.
        let done = ctx.queue.submit([]);
        ctx.wait(done, "uploading the volume")?;
        let max_out_bytes = ctx
            .limits
            .max_storage_buffer_binding_size
            .min(ctx.limits.max_buffer_size);
        let mut drr = Self {
            ctx: ctx.clone(),
            dims,
            world_to_index,
            origin: grid.origin_lps(),
            params,
            _texture: texture,
            view,
            sampler,
            layout,
            pipeline,
            _occupancy: occupancy,
            occupancy_view,
            occupancy_host: occupancy_data,
            air_threshold: 0.0,
            skip_empty: false,
            scratch: Mutex::new(None),
            timestamps,
            max_out_bytes,
        };
        // Walking blocks costs a little per block: worth it only with enough empty space.
        drr.skip_empty = drr.empty_block_fraction() >= MIN_EMPTY_FRACTION;
        Ok(drr)
    }

    /// The volume's dimensions.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Empty-space skipping: rays step over 8³ blocks in which every trilinear sample is
    /// exactly zero (air at μ = 0). The samples taken, and so the result, are the same as
    /// without it. On by default when at least 5 % of the blocks are empty (the block walk
    /// costs a little where nothing can be skipped, e.g. a CT with noisy air; see
    /// [`GpuDrr::set_air_threshold`]).
    pub fn set_empty_space_skipping(&mut self, on: bool) {
        self.skip_empty = on;
    }

    /// Whether empty-space skipping is on.
    pub fn empty_space_skipping(&self) -> bool {
        self.skip_empty
    }

    /// Air threshold for empty-space skipping (μ in 1/mm, default 0): blocks whose max
    /// |μ| is at or below it are skipped. Above 0 this drops their small contributions
    /// (at most threshold × skipped length per ray): a speed/accuracy trade for CTs whose
    /// air is noisy rather than exactly −1000 HU.
    pub fn set_air_threshold(&mut self, mu_per_mm: f32) {
        self.air_threshold = mu_per_mm.max(0.0);
    }

    /// The air threshold in use.
    pub fn air_threshold(&self) -> f32 {
        self.air_threshold
    }

    /// Fraction of 8³ blocks that rays skip at the current air threshold.
    pub fn empty_block_fraction(&self) -> f64 {
        let empty = self
            .occupancy_host
            .iter()
            .filter(|&&v| v <= self.air_threshold)
            .count();
        empty as f64 / self.occupancy_host.len().max(1) as f64
    }

    /// Line integrals of μ for one projection, `samples` trilinear samples per ray.
    pub fn render(&self, projection: &Projection, samples: usize) -> Result<Image, GpuError> {
        let mut images = self.render_batch(std::slice::from_ref(projection), samples)?;
        images.pop().ok_or(GpuError::Wgpu {
            what: "rendering",
            reason: "no image came back".into(),
        })
    }

    /// One image per projection; a batch is one dispatch (split only where it would
    /// overflow the adapter's buffer limits). Projections may differ in size.
    pub fn render_batch(
        &self,
        projections: &[Projection],
        samples: usize,
    ) -> Result<Vec<Image>, GpuError> {
        Ok(self.run(projections, samples, false)?.images)
    }

    /// As [`GpuDrr::render_batch`], also returning the kernel time from timestamp
    /// queries ([`GpuError::FeatureMissing`] without `TIMESTAMP_QUERY`).
    pub fn render_batch_timed(
        &self,
        projections: &[Projection],
        samples: usize,
    ) -> Result<TimedBatch, GpuError> {
        if self.timestamps.is_none() {
            return Err(GpuError::FeatureMissing("TIMESTAMP_QUERY"));
        }
        self.run(projections, samples, true)
    }

    fn run(
        &self,
        projections: &[Projection],
        samples: usize,
        timed: bool,
    ) -> Result<TimedBatch, GpuError> {
        let mut images = Vec::with_capacity(projections.len());
        let mut kernel = timed.then_some(Duration::ZERO);
        let max_pixels = (self.max_out_bytes / 4) as usize;
        let max_poses = self.ctx.limits.max_compute_workgroups_per_dimension as usize;
        let mut start = 0;
        while start < projections.len() {
            // Greedy chunk: as many poses as fit the output buffer and the dispatch.
            let mut end = start;
            let mut pixels = 0usize;
            while end < projections.len() && end - start < max_poses {
                let p = projections[end].width * projections[end].height;
                if p > max_pixels {
                    return Err(GpuError::OutputTooLarge {
                        pixels: p,
                        max_bytes: self.max_out_bytes,
                    });
                }
                if pixels + p > max_pixels {
                    break;
                }
                pixels += p;
                end += 1;
            }
            let (mut chunk, time) = self.dispatch(&projections[start..end], samples, timed)?;
            images.append(&mut chunk);
            if let (Some(total), Some(t)) = (kernel.as_mut(), time) {
                *total += t;
            }
            start = end;
        }
        Ok(TimedBatch { images, kernel })
    }

    fn pose(&self, p: &Projection, offset: usize) -> Pose {
        let m = &self.world_to_index;
        let dir00 = sub(p.pixel00_lps, p.source_lps);
        let v4 = |v: Vec3| [v[0] as f32, v[1] as f32, v[2] as f32, 0.0];
        Pose {
            source_index: v4(mat3_mul_vec(m, sub(p.source_lps, self.origin))),
            dir00_index: v4(mat3_mul_vec(m, dir00)),
            dcol_index: v4(mat3_mul_vec(m, p.col_step)),
            drow_index: v4(mat3_mul_vec(m, p.row_step)),
            dir00_world: v4(dir00),
            dcol_world: v4(p.col_step),
            drow_world: v4(p.row_step),
            size: [p.width as u32, p.height as u32, offset as u32, 0],
        }
    }

    fn dispatch(
        &self,
        projections: &[Projection],
        samples: usize,
        timed: bool,
    ) -> Result<(Vec<Image>, Option<Duration>), GpuError> {
        let mut poses = Vec::with_capacity(projections.len());
        let mut offset = 0usize;
        for p in projections {
            poses.push(self.pose(p, offset));
            offset += p.width * p.height;
        }
        let pixels = offset;
        if pixels == 0 {
            return Ok((Vec::new(), None));
        }
        let max_w = projections.iter().map(|p| p.width).max().unwrap_or(0) as u32;
        let max_h = projections.iter().map(|p| p.height).max().unwrap_or(0) as u32;
        let params = Params {
            dims: [
                self.dims[0] as f32,
                self.dims[1] as f32,
                self.dims[2] as f32,
                self.air_threshold,
            ],
            counts: [
                samples.clamp(1, u32::MAX as usize) as u32,
                poses.len() as u32,
                u32::from(self.skip_empty),
                0,
            ],
        };
        let ctx = &self.ctx;
        let device = &ctx.device;
        let mut guard = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let scratch = self.scratch_for(&mut guard, poses.len(), pixels);
        ctx.queue
            .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
        ctx.queue
            .write_buffer(&scratch.poses, 0, bytemuck::cast_slice(&poses));
        let mut encoder = device.create_command_encoder(&wgpu::CommandEncoderDescriptor {
            label: Some("pinhole-gpu drr"),
        });
        let timestamps = self.timestamps.as_ref().filter(|_| timed);
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: Some("pinhole-gpu drr"),
                timestamp_writes: timestamps.map(|t| wgpu::ComputePassTimestampWrites {
                    query_set: &t.set,
                    beginning_of_pass_write_index: Some(0),
                    end_of_pass_write_index: Some(1),
                }),
            });
            pass.set_pipeline(&self.pipeline);
            pass.set_bind_group(0, &scratch.bind_group, &[]);
            pass.dispatch_workgroups(
                max_w.div_ceil(WORKGROUP),
                max_h.div_ceil(WORKGROUP),
                poses.len() as u32,
            );
        }
        let bytes = (pixels * 4) as u64;
        encoder.copy_buffer_to_buffer(&scratch.out, 0, &scratch.readback, 0, bytes);
        if let Some(t) = timestamps {
            encoder.resolve_query_set(&t.set, 0..2, &t.resolve, 0);
            encoder.copy_buffer_to_buffer(&t.resolve, 0, &t.readback, 0, 16);
        }
        let submission = ctx.queue.submit([encoder.finish()]);
        check(scope, "encoding the DRR dispatch")?;

        let out_slice = scratch.readback.slice(0..bytes);
        let out_rx = map_read(&out_slice);
        let ts_rx = timestamps.map(|t| map_read(&t.readback.slice(..)));
        ctx.wait(submission, "rendering DRRs")?;
        receive(ctx, &out_rx, "DRR image")?;
        let data: Vec<f32> = {
            let view = out_slice
                .get_mapped_range()
                .map_err(|e| GpuError::BufferMap {
                    what: "DRR image",
                    reason: e.to_string(),
                })?;
            bytemuck::cast_slice(&view).to_vec()
        };
        scratch.readback.unmap();
        let kernel = match (timestamps, ts_rx) {
            (Some(t), Some(rx)) => {
                receive(ctx, &rx, "timestamp")?;
                let ticks: [u64; 2] = {
                    let view =
                        t.readback
                            .get_mapped_range(..)
                            .map_err(|e| GpuError::BufferMap {
                                what: "timestamp",
                                reason: e.to_string(),
                            })?;
                    let v: &[u64] = bytemuck::cast_slice(&view);
                    [v[0], v[1]]
                };
                t.readback.unmap();
                let ns = ticks[1].saturating_sub(ticks[0]) as f64 * f64::from(t.period_ns);
                Some(Duration::from_nanos(ns as u64))
            }
            _ => None,
        };
        let images = projections
            .iter()
            .zip(&poses)
            .map(|(p, pose)| {
                let start = pose.size[2] as usize;
                Image {
                    width: p.width,
                    height: p.height,
                    data: data[start..start + p.width * p.height].to_vec(),
                }
            })
            .collect();
        Ok((images, kernel))
    }

    /// The cached buffers, grown to hold `poses` poses and `pixels` output pixels.
    fn scratch_for<'a>(
        &self,
        slot: &'a mut Option<Scratch>,
        poses: usize,
        pixels: usize,
    ) -> &'a Scratch {
        let fits = slot
            .as_ref()
            .is_some_and(|s| s.pose_capacity >= poses && s.pixel_capacity >= pixels);
        let (old_poses, old_pixels) = slot
            .as_ref()
            .map_or((0, 0), |s| (s.pose_capacity, s.pixel_capacity));
        if !fits {
            *slot = None;
        }
        slot.get_or_insert_with(|| {
            let pose_capacity = poses.max(old_poses);
            let pixel_capacity = pixels.max(old_pixels);
            let device = &self.ctx.device;
            let buffer = |label, size: usize, usage| {
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(label),
                    size: size as u64,
                    usage,
                    mapped_at_creation: false,
                })
            };
            let poses_buf = buffer(
                "pinhole-gpu poses",
                pose_capacity * std::mem::size_of::<Pose>(),
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
            );
            let out = buffer(
                "pinhole-gpu out",
                pixel_capacity * 4,
                wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            );
            let readback = buffer(
                "pinhole-gpu readback",
                pixel_capacity * 4,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            );
            let bind_group = device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("pinhole-gpu drr"),
                layout: &self.layout,
                entries: &[
                    wgpu::BindGroupEntry {
                        binding: 0,
                        resource: self.params.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 1,
                        resource: poses_buf.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 2,
                        resource: wgpu::BindingResource::TextureView(&self.view),
                    },
                    wgpu::BindGroupEntry {
                        binding: 3,
                        resource: wgpu::BindingResource::Sampler(&self.sampler),
                    },
                    wgpu::BindGroupEntry {
                        binding: 4,
                        resource: out.as_entire_binding(),
                    },
                    wgpu::BindGroupEntry {
                        binding: 5,
                        resource: wgpu::BindingResource::TextureView(&self.occupancy_view),
                    },
                ],
            });
            Scratch {
                pose_capacity,
                pixel_capacity,
                poses: poses_buf,
                out,
                readback,
                bind_group,
            }
        })
    }
}
/// A sampled 3-D texture of `dims` holding `data` (i fastest) in `format`, and its view.
fn texture_3d(
    ctx: &GpuContext,
    label: &'static str,
    data: &[f32],
    dims: [usize; 3],
    format: wgpu::TextureFormat,
) -> (wgpu::Texture, wgpu::TextureView) {
    let texture = ctx.device.create_texture(&wgpu::TextureDescriptor {
        label: Some(label),
        size: wgpu::Extent3d {
            width: dims[0] as u32,
            height: dims[1] as u32,
            depth_or_array_layers: dims[2] as u32,
        },
        mip_level_count: 1,
        sample_count: 1,
        dimension: wgpu::TextureDimension::D3,
        format,
        usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
        view_formats: &[],
    });
    upload(ctx, &texture, data, dims, format);
    let view = texture.create_view(&wgpu::TextureViewDescriptor::default());
    (texture, view)
}

/// The μ volume in the context's volume format (sampled with hardware trilinear).
fn volume_texture(
    ctx: &GpuContext,
    data: &[f32],
    dims: [usize; 3],
) -> (wgpu::Texture, wgpu::TextureView) {
    texture_3d(
        ctx,
        "pinhole-gpu mu volume",
        data,
        dims,
        ctx.volume_format(),
    )
}

/// The occupancy of each `BLOCK`³ block (see [`occupancy`]; R32Float) for empty-space
/// skipping, with the host copy.
fn occupancy_texture(
    ctx: &GpuContext,
    data: &[f32],
    dims: [usize; 3],
) -> (wgpu::Texture, wgpu::TextureView, Vec<f32>) {
    let (block_dims, occupancy_data) = occupancy(data, dims);
    let (texture, view) = texture_3d(
        ctx,
        "pinhole-gpu occupancy",
        &occupancy_data,
        block_dims,
        wgpu::TextureFormat::R32Float,
    );
    (texture, view, occupancy_data)
}

fn trilinear_sampler(device: &wgpu::Device) -> wgpu::Sampler {
    device.create_sampler(&wgpu::SamplerDescriptor {
        label: Some("pinhole-gpu trilinear clamp"),
        address_mode_u: wgpu::AddressMode::ClampToEdge,
        address_mode_v: wgpu::AddressMode::ClampToEdge,
        address_mode_w: wgpu::AddressMode::ClampToEdge,
        mag_filter: wgpu::FilterMode::Linear,
        min_filter: wgpu::FilterMode::Linear,
        mipmap_filter: wgpu::MipmapFilterMode::Nearest,
        ..Default::default()
    })
}

/// The bindings of `drr.wgsl`: params, poses, μ, sampler, output, occupancy.
fn bind_group_layout(device: &wgpu::Device) -> wgpu::BindGroupLayout {
    let storage = |read_only| wgpu::BindingType::Buffer {
        ty: wgpu::BufferBindingType::Storage { read_only },
        has_dynamic_offset: false,
        min_binding_size: None,
    };
    let entry = |binding, ty| wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty,
        count: None,
    };
    device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
        label: Some("pinhole-gpu drr"),
        entries: &[
            entry(
                0,
                wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            ),
            entry(1, storage(true)),
            entry(
                2,
                wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: true },
                    view_dimension: wgpu::TextureViewDimension::D3,
                    multisampled: false,
                },
            ),
            entry(
                3,
                wgpu::BindingType::Sampler(wgpu::SamplerBindingType::Filtering),
            ),
            entry(4, storage(false)),
            entry(
                5,
                wgpu::BindingType::Texture {
                    sample_type: wgpu::TextureSampleType::Float { filterable: false },
                    view_dimension: wgpu::TextureViewDimension::D3,
                    multisampled: false,
                },
            ),
        ],
    })
}

/// The compute pipeline of `drr.wgsl`'s `main`.
fn drr_pipeline(device: &wgpu::Device, layout: &wgpu::BindGroupLayout) -> wgpu::ComputePipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some("drr.wgsl"),
        source: wgpu::ShaderSource::Wgsl(include_str!("drr.wgsl").into()),
    });
    let pipeline_layout = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some("pinhole-gpu drr"),
        bind_group_layouts: &[Some(layout)],
        immediate_size: 0,
    });
    device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some("pinhole-gpu drr"),
        layout: Some(&pipeline_layout),
        module: &module,
        entry_point: Some("main"),
        compilation_options: Default::default(),
        cache: None,
    })
}

/// Two timestamp queries around a dispatch, with their resolve and readback buffers.
fn timestamp_queries(ctx: &GpuContext) -> Timestamps {
    let device = &ctx.device;
    Timestamps {
        set: device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("pinhole-gpu kernel time"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        }),
        resolve: device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pinhole-gpu timestamps"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        }),
        readback: device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("pinhole-gpu timestamps readback"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }),
        period_ns: ctx.queue.get_timestamp_period(),
    }
}

/// Writes the volume into the texture in slabs of z slices (bounded staging memory).
fn upload(
    ctx: &GpuContext,
    texture: &wgpu::Texture,
    data: &[f32],
    dims: [usize; 3],
    format: wgpu::TextureFormat,
) {
    let [nx, ny, nz] = dims;
    let slice = nx * ny;
    let texel = if format == wgpu::TextureFormat::R32Float {
        4
    } else {
        2
    };
    let slab = (32 << 20) / (slice * texel).max(1);
    let slab = slab.clamp(1, nz);
    let mut z = 0;
    while z < nz {
        let depth = slab.min(nz - z);
        let values = &data[z * slice..(z + depth) * slice];
        let f16s: Vec<u16>;
        let bytes: &[u8] = if texel == 4 {
            bytemuck::cast_slice(values)
        } else {
            f16s = values
                .iter()
                .map(|&v| half::f16::from_f32(v).to_bits())
                .collect();
            bytemuck::cast_slice(&f16s)
        };
        ctx.queue.write_texture(
            wgpu::TexelCopyTextureInfo {
                texture,
                mip_level: 0,
                origin: wgpu::Origin3d {
                    x: 0,
                    y: 0,
                    z: z as u32,
                },
                aspect: wgpu::TextureAspect::All,
            },
            bytes,
            wgpu::TexelCopyBufferLayout {
                offset: 0,
                bytes_per_row: Some((nx * texel) as u32),
                rows_per_image: Some(ny as u32),
            },
            wgpu::Extent3d {
                width: nx as u32,
                height: ny as u32,
                depth_or_array_layers: depth as u32,
            },
        );
        z += depth;
    }
}

/// Per 8³ block, the max |μ| over the voxels a trilinear sample inside the block's cell
/// can touch (the block grown by one voxel on each side), as dims and x-fastest data.
fn occupancy(data: &[f32], dims: [usize; 3]) -> ([usize; 3], Vec<f32>) {
    let blocks = dims.map(|n| n.div_ceil(BLOCK));
    // One axis at a time: reduce axis `a` of `src` (shape `shape`) to blocks.
    let reduce = |src: &[f32], shape: [usize; 3], a: usize| -> (Vec<f32>, [usize; 3]) {
        let mut out_shape = shape;
        out_shape[a] = blocks[a];
        let n = shape[a];
        let stride = match a {
            0 => 1,
            1 => shape[0],
            _ => shape[0] * shape[1],
        };
        let mut out = vec![0.0f32; out_shape.iter().product()];
        for z in 0..out_shape[2] {
            for y in 0..out_shape[1] {
                for x in 0..out_shape[0] {
                    let mut pos = [x, y, z];
                    let b = pos[a];
                    let lo = (b * BLOCK).saturating_sub(1);
                    let hi = (b * BLOCK + BLOCK).min(n - 1);
                    pos[a] = 0;
                    let base = pos[0] + shape[0] * (pos[1] + shape[1] * pos[2]);
                    // NaN counts as occupied, so it reaches the sum as on the CPU.
                    let m = (lo..=hi)
                        .map(|i| {
                            let v = src[base + i * stride];
                            if v.is_nan() {
                                f32::INFINITY
                            } else {
                                v.abs()
                            }
                        })
                        .fold(0.0f32, f32::max);
                    out[x + out_shape[0] * (y + out_shape[1] * z)] = m;
                }
            }
        }
        (out, out_shape)
    };
    let (v, shape) = reduce(data, dims, 0);
    let (v, shape) = reduce(&v, shape, 1);
    let (v, _) = reduce(&v, shape, 2);
    (blocks, v)
}

type MapResult = Result<(), wgpu::BufferAsyncError>;

fn map_read(slice: &wgpu::BufferSlice<'_>) -> mpsc::Receiver<MapResult> {
    let (tx, rx) = mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        // The receiver outlives the wait; a send error only means nobody listens.
        let _ = tx.send(r);
    });
    rx
}

/// The result of a buffer mapping requested before the submission was waited for.
/// Waiting for a submission does not always run the mapping's callback in the same
/// poll (seen with lavapipe under load), so an absent result polls the device until it
/// is idle, then waits for the callback, at most the context's poll timeout.
fn receive(
    ctx: &crate::GpuContext,
    rx: &mpsc::Receiver<MapResult>,
    what: &'static str,
) -> Result<(), GpuError> {
    let result = match rx.try_recv() {
        Ok(result) => result,
        Err(_) => {
            ctx.wait_idle(what)?;
            rx.recv_timeout(ctx.poll_timeout)
                .map_err(|e| GpuError::BufferMap {
                    what,
                    reason: format!("map callback did not run after the wait ({e})"),
                })?
        }
    };
    result.map_err(|e| GpuError::BufferMap {
        what,
        reason: e.to_string(),
    })
}

/// Pops an error scope, turning a captured error into [`GpuError::Wgpu`].
fn check(scope: wgpu::ErrorScopeGuard, what: &'static str) -> Result<(), GpuError> {
    match pollster::block_on(scope.pop()) {
        None => Ok(()),
        Some(e) => Err(GpuError::Wgpu {
            what,
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn occupancy_is_the_max_over_each_grown_block() {
        let dims = [19, 9, 17];
        let n: usize = dims.iter().product();
        // Sparse values, one negative and one at a block's grown edge.
        let mut data = vec![0.0f32; n];
        let at = |i: usize, j: usize, k: usize| i + dims[0] * (j + dims[1] * k);
        data[at(8, 0, 0)] = 1.0; // first voxel of block 1: also touches block 0
        data[at(3, 4, 16)] = -2.0;
        data[at(18, 8, 7)] = 0.5;
        let (blocks, occ) = occupancy(&data, dims);
        assert_eq!(blocks, [3, 2, 3]);
        for bz in 0..3 {
            for by in 0..2 {
                for bx in 0..3 {
                    let b = [bx, by, bz];
                    let mut expect = 0.0f32;
                    for k in 0..dims[2] {
                        for j in 0..dims[1] {
                            for i in 0..dims[0] {
                                let inside = [i, j, k]
                                    .iter()
                                    .zip(b)
                                    .all(|(&x, b)| x + 1 >= b * BLOCK && x <= b * BLOCK + BLOCK);
                                if inside {
                                    expect = expect.max(data[at(i, j, k)].abs());
                                }
                            }
                        }
                    }
                    let got = occ[bx + blocks[0] * (by + blocks[1] * bz)];
                    assert_eq!(got, expect, "block {b:?}");
                }
            }
        }
    }
}
