//! Run-time choice of the burn backend: `flex` on the CPU, `wgpu` on a GPU.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

use super::error::LlmError;

/// Which burn backend runs the model.
///
/// Exists because burn 0.22 picks the backend at run time through a
/// [`Device`]; this enum is the user-facing name for it (`--backend cpu`)
/// and the one place that knows which backends were compiled in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// burn's `flex` CPU backend (pure Rust, SIMD, multi-threaded with
    /// rayon). Needs the `flex` feature (on by default).
    Cpu,
    /// burn's `wgpu` backend (Vulkan, Metal or DX12, chosen by wgpu).
    /// Needs the `wgpu` feature.
    Wgpu,
}

impl Backend {
    /// The name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Wgpu => "wgpu",
        }
    }

    /// Whether this backend was compiled in.
    pub fn compiled(self) -> bool {
        match self {
            Backend::Cpu => cfg!(feature = "flex"),
            Backend::Wgpu => cfg!(feature = "wgpu"),
        }
    }

    /// The burn device for this backend.
    ///
    /// For [`Backend::Wgpu`] the adapter is acquired once per process (the
    /// default device: a discrete GPU if any, else what wgpu finds, such as
    /// Mesa's lavapipe); a machine without any adapter gets
    /// [`LlmError::BackendUnavailable`], not a panic.
    pub fn device(self) -> Result<Device, LlmError> {
        match self {
            Backend::Cpu => cpu_device(),
            Backend::Wgpu => wgpu_device(),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = LlmError;

    fn from_str(s: &str) -> Result<Self, LlmError> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" | "flex" => Ok(Backend::Cpu),
            "wgpu" | "gpu" => Ok(Backend::Wgpu),
            other => Err(LlmError::BackendUnavailable {
                backend: "unknown",
                reason: format!("{other:?} is not a backend (use cpu or wgpu)"),
            }),
        }
    }
}

/// Whether `device` is burn's `flex` CPU device (autodiff or not), where
/// the native ggml kernels of [`super::native`] run.
pub(crate) fn is_cpu(device: &Device) -> bool {
    cpu_device().is_ok_and(|cpu| *device == cpu)
}

#[cfg(feature = "flex")]
fn cpu_device() -> Result<Device, LlmError> {
    Ok(Device::flex())
}

#[cfg(not(feature = "flex"))]
fn cpu_device() -> Result<Device, LlmError> {
    Err(LlmError::BackendUnavailable {
        backend: "cpu",
        reason: "memkern-models was built without the `flex` feature".into(),
    })
}

#[cfg(feature = "wgpu")]
fn wgpu_device() -> Result<Device, LlmError> {
    use std::sync::OnceLock;
    // wgpu refuses a second initialisation of the same selector, so the
    // outcome of the first one is kept for the whole process.
    static DEVICE: OnceLock<Result<Device, String>> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            Device::wgpu_options()
                .init()
                .map_err(|e| format!("no usable wgpu adapter: {e}"))
        })
        .clone()
        .map_err(|reason| LlmError::BackendUnavailable {
            backend: "wgpu",
            reason,
        })
}

#[cfg(not(feature = "wgpu"))]
fn wgpu_device() -> Result<Device, LlmError> {
    Err(LlmError::BackendUnavailable {
        backend: "wgpu",
        reason: "memkern-models was built without the `wgpu` feature".into(),
    })
}
