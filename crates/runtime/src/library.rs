//! Finding `libonnxruntime.so` (see the crate docs for the search order) and, for the CUDA
//! build, preloading the CUDA/cuDNN libraries that came with the `nvidia-*` wheels.

use std::path::{Path, PathBuf};

use crate::{Device, Result, RuntimeError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LibraryKind {
    Cpu,
    /// The onnxruntime-gpu build (CUDA provider available; runs on CPU too).
    Cuda,
}

const LIB: &str = "libonnxruntime.so";

/// Folders that may hold `.cache/` (or are the cache, for `SMALLDATA_CACHE`), in search order.
fn cache_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(c) = std::env::var_os("SMALLDATA_CACHE").filter(|c| !c.is_empty()) {
        dirs.push(PathBuf::from(c));
    }
    let mut ancestors_of = |start: Option<PathBuf>| {
        if let Some(start) = start {
            dirs.extend(start.ancestors().map(|a| a.join(".cache")));
        }
    };
    ancestors_of(std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)));
    ancestors_of(std::env::current_dir().ok());
    // The workspace this crate was built in (crates/runtime/../..).
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache"));
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The first file `relative` (e.g. `models/vgg16-keras-imagenet.onnx`) in the set-up's `.cache`
/// folders, searched where the ONNX Runtime library is: `$SMALLDATA_CACHE`, `.cache` beside the
/// binaries or above them, above the current folder, then the checkout the binaries were built in.
pub fn find_in_cache(relative: &Path) -> Option<PathBuf> {
    cache_dirs().into_iter().map(|d| d.join(relative)).find(|p| p.is_file())
}

/// Finds the ONNX Runtime library for `device`.
pub fn find_library(device: Device) -> Result<(PathBuf, LibraryKind)> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(RuntimeError::BadEnvPath(p));
        }
        // A GPU build ships its CUDA provider next to it.
        let kind = match p.parent().map(|d| d.join("libonnxruntime_providers_cuda.so").exists()) {
            Some(true) => LibraryKind::Cuda,
            _ => LibraryKind::Cpu,
        };
        return Ok((p, kind));
    }
    let dirs = cache_dirs();
    let candidates = |sub: &'static str| dirs.iter().map(move |d| d.join("onnxruntime").join(sub).join(LIB));
    let cuda = candidates("cuda").find(|p| p.is_file());
    let cpu = candidates("cpu").find(|p| p.is_file());
    let looked = || {
        let mut list: Vec<String> = vec!["$ORT_DYLIB_PATH (unset)".into()];
        list.extend(candidates(if device.wants_cuda() { "cuda" } else { "cpu" }).map(|p| p.display().to_string()));
        list.join(", ")
    };
    match (device, cuda, cpu) {
        (Device::Cuda(_), Some(p), _) | (Device::Auto, Some(p), _) => Ok((p, LibraryKind::Cuda)),
        (Device::Cuda(_), None, _) => Err(RuntimeError::NoCudaLibrary { device, looked: looked() }),
        (_, _, Some(p)) => Ok((p, LibraryKind::Cpu)),
        (Device::Cpu, Some(p), None) => Ok((p, LibraryKind::Cuda)),
        _ => Err(RuntimeError::NotFound { looked: looked() }),
    }
}

/// Loads the CUDA, cuBLAS and cuDNN libraries listed by `setup.sh --gpu` with global symbol
/// visibility, so that ONNX Runtime's CUDA provider finds them without `LD_LIBRARY_PATH` (what
/// `onnxruntime.preload_dlls()` does in Python). Failures are only logged: registering the CUDA
/// provider then reports what is missing.
pub(crate) fn preload_cuda_libraries(ort_library: &Path) {
    let Some(list) = ort_library.parent().map(|d| d.join("nvidia-lib-dirs.txt")) else { return };
    let Ok(text) = std::fs::read_to_string(&list) else { return };
    let mut pending: Vec<PathBuf> = text
        .lines()
        .filter_map(|d| std::fs::read_dir(d.trim()).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("lib") && n.contains(".so")))
        .collect();
    pending.sort();
    // Libraries depend on each other; retry until a pass loads nothing new.
    loop {
        let before = pending.len();
        pending.retain(|p| {
            // SAFETY: these are plain shared libraries from NVIDIA's wheels; their initialisers
            // only register CUDA state. The handles are leaked to keep them loaded.
            match unsafe { libloading::os::unix::Library::open(Some(p), libc_flags()) } {
                Ok(lib) => {
                    std::mem::forget(lib);
                    false
                }
                Err(_) => true,
            }
        });
        if pending.is_empty() || pending.len() == before {
            break;
        }
    }
    for p in &pending {
        tracing::debug!(library = %p.display(), "could not preload");
    }
}

fn libc_flags() -> std::os::raw::c_int {
    libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_GLOBAL
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_found_in_the_cache_folders() {
        assert_eq!(find_in_cache(Path::new("no/such/file.onnx")), None);
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache");
        if here.join("onnxruntime/cpu").join(LIB).is_file() {
            let found = find_in_cache(&Path::new("onnxruntime/cpu").join(LIB)).unwrap();
            assert!(found.ends_with(Path::new(".cache/onnxruntime/cpu").join(LIB)), "{}", found.display());
        }
    }

    #[test]
    fn cache_dirs_include_the_build_workspace() {
        let dirs = cache_dirs();
        assert!(dirs.iter().any(|d| d.ends_with("../../.cache")), "{dirs:?}");
    }
}
