//! sd-fuzz: mutation fuzzing of every reader of outside bytes, on stable Rust.
//!
//! cargo-fuzz needs a nightly toolchain with sanitizers and its own build of the workspace; this
//! harness needs neither. Each [`targets::Target`] is a reader of a file that a user or another
//! program hands the stages (`.npy`, `pipeline.yaml`, the lock file, the JSON documents, images,
//! ONNX, PyTorch state dicts). The fuzzer starts from the seed files in `corpus/<target>/`,
//! mutates them ([`mutate`]: bit flips, interesting bytes and integers, insertions, deletions,
//! splices, number and length-field edits, the target's own tokens), writes each input where the
//! reader expects its file and calls the reader. An input whose outcome (its error message with
//! the numbers taken out) has not been seen before joins the corpus: the distinct outcomes are
//! the coverage proxy, and the search drifts toward inputs that reach new code.
//!
//! Properties checked on every input ([`run::worker`]):
//! * no panic (caught) and no abort (the worker runs in a child process; [`run::supervise`]
//!   records the input it died on and starts another);
//! * no allocation beyond a small multiple of the input's size ([`alloc::Counting`] tracks the
//!   peak of live bytes during the call; the bound is [`BOUND_FACTOR`] x the input + a constant);
//! * every error names the file;
//! * no input takes more than [`SLOW_SECONDS`] (a hang is killed by the supervisor).

pub mod alloc;
pub mod mutate;
pub mod run;
pub mod targets;

/// Allowed peak allocation per input byte during one read.
pub const BOUND_FACTOR: usize = 64;
/// Allowed peak allocation regardless of the input's size (buffers, error messages).
pub const BOUND_BASE: usize = 1 << 20;
/// A read slower than this is a finding.
pub const SLOW_SECONDS: f64 = 2.0;
/// The largest input the mutator builds.
pub const MAX_INPUT: usize = 256 << 10;
