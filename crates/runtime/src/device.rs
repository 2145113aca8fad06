//! `--device auto|cpu|cuda[:N]` and execution provider registration.

use std::fmt;
use std::str::FromStr;

use ort::ep::{CUDA, ExecutionProvider};
use ort::session::builder::SessionBuilder;

use crate::library::LibraryKind;
use crate::{Result, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// CUDA device 0 when a CUDA build of ONNX Runtime and a GPU are there, else CPU with a warning.
    #[default]
    Auto,
    Cpu,
    /// A CUDA device; an error when it cannot be used.
    Cuda(u32),
}

impl Device {
    pub fn wants_cuda(self) -> bool {
        matches!(self, Device::Cuda(_))
    }
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda(0)),
            // Not taken as CUDA: a guessed name would hide which device an error speaks of.
            "gpu" => Err("unknown device 'gpu': say cuda (the first CUDA GPU) or cuda:N".into()),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(Device::Cuda)
                .ok_or_else(|| format!("unknown device '{s}' (expected auto, cpu, cuda or cuda:N)")),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Auto => f.write_str("auto"),
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Registers the execution provider for `device` and returns where the session will run.
/// An explicit CUDA request fails loudly; `auto` falls back to CPU with a warning.
pub(crate) fn register(builder: &mut SessionBuilder, device: Device, kind: LibraryKind) -> Result<Device> {
    let id = match device {
        Device::Cpu => return Ok(Device::Cpu),
        Device::Auto if kind == LibraryKind::Cpu => return Ok(Device::Cpu),
        Device::Auto => 0,
        Device::Cuda(id) => id,
    };
    let cuda = CUDA::default().with_device_id(id as i32);
    match cuda.register(builder) {
        Ok(()) => Ok(Device::Cuda(id)),
        Err(e) => {
            // ONNX Runtime's messages end in a newline; keep ours on one line.
            let reason = e.to_string().trim_end().to_owned();
            if device == Device::Auto {
                tracing::warn!("CUDA is not usable ({reason}); running on CPU");
                Ok(Device::Cpu)
            } else {
                Err(RuntimeError::CudaUnavailable { device, reason })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for (s, d) in
            [("auto", Device::Auto), ("cpu", Device::Cpu), ("cuda", Device::Cuda(0)), ("cuda:3", Device::Cuda(3))]
        {
            assert_eq!(s.parse::<Device>().unwrap(), d);
        }
        assert_eq!(Device::Cuda(1).to_string(), "cuda:1");
        assert!("tpu".parse::<Device>().unwrap_err().contains("auto, cpu, cuda"));
        assert!("cuda:x".parse::<Device>().is_err());
        assert!("gpu".parse::<Device>().unwrap_err().contains("say cuda (the first CUDA GPU) or cuda:N"));
    }
}
