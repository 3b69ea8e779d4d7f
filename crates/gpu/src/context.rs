//! Adapter, device and queue, chosen from the environment.

use std::time::Duration;

use crate::GpuError;

/// An adapter with its device and queue.
///
/// Requests `FLOAT32_FILTERABLE` (volume stored as `R32Float`) and `TIMESTAMP_QUERY`
/// (kernel timings) when the adapter has them, and the adapter's own limits.
#[derive(Debug, Clone)]
pub struct GpuContext {
    pub(crate) device: wgpu::Device,
    pub(crate) queue: wgpu::Queue,
    info: wgpu::AdapterInfo,
    pub(crate) features: wgpu::Features,
    pub(crate) limits: wgpu::Limits,
    pub(crate) poll_timeout: Duration,
}

impl GpuContext {
    /// The first adapter of the backends named by `WGPU_BACKEND` (default: all native),
    /// high-performance preferred (`WGPU_POWER_PREF` may override).
    pub fn new() -> Result<Self, GpuError> {
        let desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
        let backends = format!("{:?}", desc.backends);
        let instance = wgpu::Instance::new(desc);
        let options = wgpu::RequestAdapterOptions {
            power_preference: wgpu::PowerPreference::from_env()
                .unwrap_or(wgpu::PowerPreference::HighPerformance),
            ..Default::default()
        };
        let adapter = pollster::block_on(instance.request_adapter(&options)).map_err(|e| {
            GpuError::NoAdapter {
                backends,
                reason: e.to_string(),
            }
        })?;
        Self::from_adapter(&adapter)
    }

    /// A device on a given adapter.
    pub fn from_adapter(adapter: &wgpu::Adapter) -> Result<Self, GpuError> {
        let info = adapter.get_info();
        let wanted = wgpu::Features::FLOAT32_FILTERABLE | wgpu::Features::TIMESTAMP_QUERY;
        let features = adapter.features() & wanted;
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("pinhole-gpu"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| GpuError::RequestDevice {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            device,
            queue,
            info,
            features,
            limits,
            poll_timeout: Duration::from_secs(120),
        })
    }

    /// How long a render waits for the device before failing with [`GpuError::Poll`]
    /// (default 120 s: lavapipe renders large batches slowly).
    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    /// Stores volumes as `R16Float` even where `FLOAT32_FILTERABLE` is available (the
    /// fallback path, for tests and for halving texture memory).
    pub fn prefer_r16float(mut self) -> Self {
        self.features.remove(wgpu::Features::FLOAT32_FILTERABLE);
        self
    }

    /// One line: adapter name, backend, type, driver, and the volume texture format.
    pub fn adapter_info(&self) -> String {
        let i = &self.info;
        format!(
            "{} ({:?}, {:?}; driver {} {}); volume texture {}; timestamps {}",
            i.name,
            i.backend,
            i.device_type,
            i.driver,
            i.driver_info,
            self.volume_format_name(),
            if self.has_timestamps() { "yes" } else { "no" },
        )
    }

    /// The raw wgpu adapter information.
    pub fn info(&self) -> &wgpu::AdapterInfo {
        &self.info
    }

    /// A software rasteriser (Mesa lavapipe, SwiftShader): correct but slower than the
    /// CPU renderers, so callers that choose a renderer by speed skip it.
    pub fn is_software(&self) -> bool {
        self.info.device_type == wgpu::DeviceType::Cpu
    }

    /// Whether the device records timestamp queries (kernel timings).
    pub fn has_timestamps(&self) -> bool {
        self.features.contains(wgpu::Features::TIMESTAMP_QUERY)
    }

    /// The format the μ volume is stored in on this device.
    pub(crate) fn volume_format(&self) -> wgpu::TextureFormat {
        if self.features.contains(wgpu::Features::FLOAT32_FILTERABLE) {
            wgpu::TextureFormat::R32Float
        } else {
            wgpu::TextureFormat::R16Float
        }
    }

    /// `"R32Float (FLOAT32_FILTERABLE)"` or `"R16Float"`.
    pub fn volume_format_name(&self) -> &'static str {
        match self.volume_format() {
            wgpu::TextureFormat::R32Float => "R32Float (FLOAT32_FILTERABLE)",
            _ => "R16Float",
        }
    }

    /// The wgpu device (shared with other GPU work of the application).
    pub fn device(&self) -> &wgpu::Device {
        &self.device
    }

    /// The wgpu queue.
    pub fn queue(&self) -> &wgpu::Queue {
        &self.queue
    }

    /// Blocks until every submission finished and their callbacks ran, at most the poll
    /// timeout.
    pub(crate) fn wait_idle(&self, what: &'static str) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(self.poll_timeout),
            })
            .map(|_| ())
            .map_err(|e| GpuError::Poll {
                what,
                reason: e.to_string(),
            })
    }

    /// Blocks until `submission` finished, at most the poll timeout.
    pub(crate) fn wait(
        &self,
        submission: wgpu::SubmissionIndex,
        what: &'static str,
    ) -> Result<(), GpuError> {
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(submission),
                timeout: Some(self.poll_timeout),
            })
            .map(|_| ())
            .map_err(|e| GpuError::Poll {
                what,
                reason: e.to_string(),
            })
    }
}
