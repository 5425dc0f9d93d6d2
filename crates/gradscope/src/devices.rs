//! `device=`, Ultralytics' key: which backend the tensors live on. `cpu` (the default) is burn's
//! `flex` backend; a GPU (`0`, `vulkan:0`, `cuda:0`) goes through burn's dispatch device and
//! needs a binary built with the matching cargo feature: `--features gpu` (Vulkan, builds
//! offline) or `--features cuda` (its build script downloads an LLVM bundle, so it needs the
//! network at build time). A list (`0,1`, or `cpu,cpu`) asks for data-parallel training: one
//! process per device ([`crate::train::replicas`]), each selecting its own part. The choice is made once per process ([`select`]) before any tensor is created;
//! [`crate::device`] then hands it out.

use std::sync::OnceLock;

use burn::tensor::Device;

/// What `device=` names.
#[derive(Clone, Debug, PartialEq)]
pub enum DeviceSpec {
    /// The CPU (`flex`).
    Cpu,
    /// A Vulkan GPU by index among the discrete GPUs (`0`, `vulkan:0`).
    Vulkan(usize),
    /// A CUDA GPU by index (`cuda:0`).
    Cuda(usize),
    /// Several devices for data-parallel training (`0,1`; `cpu,cpu` for CPU processes).
    Several(Vec<DeviceSpec>),
}

/// Why a `device=` cannot be used by this binary.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum DeviceError {
    #[error("expected cpu, a GPU index (0, 1, …), vulkan:N, cuda:N or a list such as 0,1")]
    Syntax,
    #[error("this binary has no {backend} backend: build it with `cargo build --release -p gradscope-cli --features {feature}`{note}, or use device=cpu")]
    NotBuilt {
        backend: &'static str,
        feature: &'static str,
        note: &'static str,
    },
    #[error("cannot use it here ({why}); use device=cpu")]
    Missing { why: String },
}

/// A `device=` that cannot be used, named, with why.
#[derive(Debug, thiserror::Error)]
#[error("device={spec}")]
pub struct Unusable {
    pub spec: String,
    #[source]
    pub source: DeviceError,
}

impl DeviceSpec {
    /// Parses Ultralytics' forms: `cpu`, `0`, `vulkan:0`, `cuda:0`, `0,1` (also `[0,1]`).
    pub fn parse(v: &str) -> Result<Self, DeviceError> {
        let v = v.trim().trim_start_matches('[').trim_end_matches(']');
        if v.contains(',') {
            let parts: Vec<DeviceSpec> = v
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(Self::parse)
                .collect::<Result<_, _>>()?;
            return match parts.len() {
                0 => Err(DeviceError::Syntax),
                1 => Ok(parts.into_iter().next().unwrap_or(DeviceSpec::Cpu)),
                _ => Ok(DeviceSpec::Several(parts)),
            };
        }
        let index = |s: &str| s.parse::<usize>().map_err(|_| DeviceError::Syntax);
        let lower = v.to_ascii_lowercase();
        match lower.split_once(':') {
            None if lower == "cpu" => Ok(DeviceSpec::Cpu),
            None if lower == "cuda" => Ok(DeviceSpec::Cuda(0)),
            None if lower == "vulkan" => Ok(DeviceSpec::Vulkan(0)),
            None => index(&lower).map(DeviceSpec::Vulkan),
            Some(("vulkan", i)) => index(i).map(DeviceSpec::Vulkan),
            Some(("cuda", i)) => index(i).map(DeviceSpec::Cuda),
            Some(_) => Err(DeviceError::Syntax),
        }
    }

    /// Whether this binary can use the device (not whether the machine has it): the check the
    /// argument parser makes before any work.
    pub fn check(&self) -> Result<(), DeviceError> {
        match self {
            DeviceSpec::Cpu => Ok(()),
            DeviceSpec::Vulkan(_) if cfg!(feature = "gpu") => Ok(()),
            DeviceSpec::Vulkan(_) => Err(DeviceError::NotBuilt {
                backend: "GPU (Vulkan)",
                feature: "gpu",
                note: "",
            }),
            DeviceSpec::Cuda(_) if cfg!(feature = "cuda") => Ok(()),
            DeviceSpec::Cuda(_) => Err(DeviceError::NotBuilt {
                backend: "CUDA",
                feature: "cuda",
                note: " (needs the network at build time)",
            }),
            DeviceSpec::Several(parts) => parts.iter().try_for_each(DeviceSpec::check),
        }
    }

    /// How many devices (replicas in data-parallel training).
    pub fn count(&self) -> usize {
        match self {
            DeviceSpec::Several(parts) => parts.len(),
            _ => 1,
        }
    }

    /// The device of replica `rank` (for one device: itself).
    pub fn part(&self, rank: usize) -> &DeviceSpec {
        match self {
            DeviceSpec::Several(parts) => &parts[rank.min(parts.len() - 1)],
            one => one,
        }
    }

    /// The device itself, without autodiff.
    pub fn device(&self) -> Result<Device, DeviceError> {
        self.check()?;
        match self {
            #[cfg(feature = "gpu")]
            DeviceSpec::Vulkan(i) => Ok(Device::vulkan(burn::tensor::DeviceKind::DiscreteGpu(*i))),
            #[cfg(feature = "cuda")]
            DeviceSpec::Cuda(i) => Ok(Device::cuda(*i)),
            _ => Ok(Device::flex()),
        }
    }

    /// Ultralytics' form of the spec (what args.yaml records).
    pub fn show(&self) -> String {
        match self {
            DeviceSpec::Cpu => "cpu".into(),
            DeviceSpec::Vulkan(i) => i.to_string(),
            DeviceSpec::Cuda(i) => format!("cuda:{i}"),
            DeviceSpec::Several(p) => p.iter().map(DeviceSpec::show).collect::<Vec<_>>().join(","),
        }
    }
}

impl crate::settings::Value for DeviceSpec {
    fn parse(v: &str) -> Result<Self, String> {
        DeviceSpec::parse(v).map_err(|e| e.to_string())
    }
    fn show(&self) -> String {
        DeviceSpec::show(self)
    }
}

static SELECTED: OnceLock<Device> = OnceLock::new();

/// Makes `spec` the process's device, after checking that a tensor can be created and read back
/// there (a GPU that is not present fails here, with the reason, not at the first step). Once
/// per process: a second call with another device is refused. Of a list, the first (a
/// replica of data-parallel training selects its own part).
pub fn select(spec: &DeviceSpec) -> Result<(), Unusable> {
    choose(spec.part(0)).map_err(|source| Unusable {
        spec: spec.show(),
        source,
    })
}

fn choose(spec: &DeviceSpec) -> Result<(), DeviceError> {
    let device = spec.device()?;
    if *spec != DeviceSpec::Cpu {
        probe(&device).map_err(|why| DeviceError::Missing { why })?;
    }
    let chosen = SELECTED.get_or_init(|| device.clone());
    if *chosen != device {
        return Err(DeviceError::Missing {
            why: "this process already runs on another device".into(),
        });
    }
    Ok(())
}

/// One small tensor there and back. A backend that cannot start panics inside burn, often on
/// one of its own threads: the panics are caught (the first one's message is the reason) and
/// not printed, the previous panic hook is put back after.
fn probe(device: &Device) -> Result<(), String> {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let previous = std::panic::take_hook();
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let text = info.payload_as_str().unwrap_or("the backend did not start");
        if let Ok(mut s) = record.lock() {
            s.push(text.to_string());
        }
    }));
    let d = device.clone();
    let sum = std::panic::catch_unwind(move || {
        let t = burn::tensor::Tensor::<1>::from_floats([1.0, 2.0], &d);
        t.sum().into_scalar::<f32>()
    });
    std::panic::set_hook(previous);
    let first = seen.lock().ok().and_then(|s| s.first().cloned());
    match sum {
        Ok(3.0) => Ok(()),
        Ok(other) => Err(format!("1 + 2 gave {other}")),
        Err(_) => Err(first.unwrap_or_else(|| "the backend did not start".into())),
    }
}

/// The selected device, or the CPU when none was selected.
pub fn selected() -> Device {
    SELECTED.get().cloned().unwrap_or_else(Device::flex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ultralytics_forms_parse() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("CPU"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("0"), Ok(DeviceSpec::Vulkan(0)));
        assert_eq!(DeviceSpec::parse("vulkan:1"), Ok(DeviceSpec::Vulkan(1)));
        assert_eq!(DeviceSpec::parse("cuda:0"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(
            DeviceSpec::parse("[0,1]"),
            Ok(DeviceSpec::Several(vec![
                DeviceSpec::Vulkan(0),
                DeviceSpec::Vulkan(1)
            ]))
        );
        assert_eq!(DeviceSpec::parse("0,"), Ok(DeviceSpec::Vulkan(0)));
        for bad in ["gpu", "-1", "cuda:x", "mps:0", ""] {
            assert_eq!(DeviceSpec::parse(bad), Err(DeviceError::Syntax), "{bad}");
        }
        assert_eq!(DeviceSpec::parse("cuda:3").unwrap().show(), "cuda:3");
    }

    /// Without the feature a GPU is refused with the build command; a list is checked part by
    /// part.
    #[test]
    fn what_the_binary_lacks_is_named() {
        assert_eq!(DeviceSpec::Cpu.check(), Ok(()));
        let gpu = DeviceSpec::Vulkan(0).check();
        if cfg!(feature = "gpu") {
            assert_eq!(gpu, Ok(()));
        } else {
            let e = gpu.unwrap_err().to_string();
            assert!(
                e.contains("--features gpu") && e.contains("device=cpu"),
                "{e}"
            );
        }
        if !cfg!(feature = "cuda") {
            let e = DeviceSpec::Cuda(0).check().unwrap_err().to_string();
            assert!(
                e.contains("--features cuda") && e.contains("network"),
                "{e}"
            );
        }
        let several = DeviceSpec::parse("0,1").unwrap();
        assert_eq!(several.check(), DeviceSpec::Vulkan(0).check());
        assert_eq!(several.count(), 2);
        assert_eq!(several.part(1), &DeviceSpec::Vulkan(1));
        assert_eq!(DeviceSpec::parse("cpu,cpu").unwrap().check(), Ok(()));
    }
}
