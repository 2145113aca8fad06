//! Resumable training. After an epoch a trainer saves everything the next epoch depends on
//! (weights, optimiser state, random streams, history) into a hidden folder beside its output,
//! `.NAME.checkpoint`, replaced as a whole (`sd_data::artifact::StagingDir`) so a kill never
//! leaves half of one. A run that resumes continues from it and ends with the same bytes as a
//! run that was never interrupted; a finished run removes it. The saved state carries a
//! fingerprint of the configuration and the inputs, so a checkpoint of another run is never
//! resumed by mistake.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ndarray::ArrayView1;
use sd_data::artifact::{StagingDir, WriteError, write_json};
use sd_data::layout::{LayoutError, read_json};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const STATE: &str = "state.json";

/// A model part whose state is a fixed list of `f32` tensors (weights, optimiser slots): what a
/// checkpoint saves, and restores into a freshly built part of the same shapes.
pub trait Parameters {
    fn tensors(&self) -> Vec<&[f32]>;
    fn tensors_mut(&mut self) -> Vec<&mut [f32]>;
}

/// Two parts as one (e.g. block 5 and the head): the first's tensors, then the second's.
impl<A: Parameters, B: Parameters> Parameters for (A, B) {
    fn tensors(&self) -> Vec<&[f32]> {
        let mut t = self.0.tensors();
        t.extend(self.1.tensors());
        t
    }
    fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
        let mut t = self.0.tensors_mut();
        t.extend(self.1.tensors_mut());
        t
    }
}

/// The tensors of one checkpoint, by part name.
#[derive(Default)]
pub struct Snapshot<'a> {
    parts: Vec<(&'static str, Vec<&'a [f32]>)>,
}

impl<'a> Snapshot<'a> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `part` under `name` (saved as `NAME.I.npy`, one file per tensor).
    pub fn with(mut self, name: &'static str, part: &'a dyn Parameters) -> Self {
        self.parts.push((name, part.tensors()));
        self
    }
}

/// The checkpoint folder of one output.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
}

/// What `state.json` holds: the trainer's state and whose it is.
#[derive(Serialize, Deserialize)]
struct Saved<S> {
    fingerprint: String,
    state: S,
}

/// The tensors of a loaded checkpoint.
pub struct Tensors {
    dir: PathBuf,
}

impl Tensors {
    /// Restores the part saved under `name` into `part`, which must have the saved shapes.
    pub fn fill(&self, name: &str, part: &mut dyn Parameters) -> Result<(), LayoutError> {
        for (i, tensor) in part.tensors_mut().into_iter().enumerate() {
            let path = self.dir.join(format!("{name}.{i}.npy"));
            let saved = sd_data::npy::read::<f32>(&path)?;
            if saved.len() != tensor.len() {
                let reason = format!("{} values saved, the model has {}", saved.len(), tensor.len());
                return Err(LayoutError::Invalid { path, reason });
            }
            tensor.iter_mut().zip(saved.iter()).for_each(|(t, &s)| *t = s);
        }
        Ok(())
    }
}

impl Checkpoint {
    /// `.NAME.checkpoint` beside output `out`.
    pub fn beside(out: &Path) -> Checkpoint {
        let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Checkpoint { dir: sd_data::scratch::parent_dir(out).join(format!(".{name}.checkpoint")) }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Saves `state` and `snapshot`, replacing the previous checkpoint at once.
    pub fn save<S: Serialize>(&self, fingerprint: &str, state: &S, snapshot: &Snapshot) -> Result<(), LayoutError> {
        let staging = StagingDir::create(&self.dir)?;
        for (name, tensors) in &snapshot.parts {
            for (i, t) in tensors.iter().enumerate() {
                sd_data::npy::write(staging.path().join(format!("{name}.{i}.npy")), &ArrayView1::from(*t))?;
            }
        }
        write_json(staging.path().join(STATE), &Saved { fingerprint: fingerprint.to_string(), state })?;
        Ok(staging.commit()?)
    }

    /// The saved state and tensors, if a checkpoint with this fingerprint exists (one of another
    /// run is left alone, with a warning).
    pub fn load<S: DeserializeOwned>(&self, fingerprint: &str) -> Result<Option<(S, Tensors)>, LayoutError> {
        if !self.dir.join(STATE).is_file() {
            return Ok(None);
        }
        let saved: Saved<serde_json::Value> = read_json(&self.dir.join(STATE), "written by the trainer")?;
        if saved.fingerprint != fingerprint {
            tracing::warn!(
                "{} is the checkpoint of another run (other options or inputs): starting afresh",
                self.dir.display()
            );
            return Ok(None);
        }
        let state = serde_json::from_value(saved.state)
            .map_err(|e| LayoutError::Invalid { path: self.dir.join(STATE), reason: e.to_string() })?;
        Ok(Some((state, Tensors { dir: self.dir.clone() })))
    }

    /// Removes the checkpoint (the run it belongs to is complete).
    pub fn remove(&self) -> Result<(), WriteError> {
        match sd_data::scratch::remove(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(WriteError { path: self.dir.clone(), source: e }),
            _ => Ok(()),
        }
    }
}

/// A trainer's checkpointing: where, whose, whether to continue from it, and how often to save.
pub struct Resumable {
    checkpoint: Checkpoint,
    fingerprint: String,
    resume: bool,
    every: Duration,
    since: Instant,
}

impl Resumable {
    /// Checkpoints of the run writing `out` with this fingerprint; `resume`: continue from one;
    /// saved after an epoch once `every` has passed since the last save (zero: every epoch).
    pub fn new(out: &Path, fingerprint: String, resume: bool, every: Duration) -> Resumable {
        Resumable { checkpoint: Checkpoint::beside(out), fingerprint, resume, every, since: Instant::now() }
    }

    /// The state to continue from: only when resuming and a checkpoint of this run exists.
    pub fn load<S: DeserializeOwned>(&self) -> Result<Option<(S, Tensors)>, LayoutError> {
        if !self.resume {
            return Ok(None);
        }
        let loaded = self.checkpoint.load(&self.fingerprint)?;
        if loaded.is_none() {
            tracing::info!("no checkpoint to resume from in {}: starting afresh", self.checkpoint.path().display());
        }
        Ok(loaded)
    }

    /// Whether a save is due (`every` has passed since the last one).
    pub fn due(&self) -> bool {
        self.since.elapsed() >= self.every
    }

    /// Saves the state after an epoch, if a save is due.
    pub fn save<S: Serialize>(&mut self, state: &S, snapshot: &Snapshot) -> Result<(), LayoutError> {
        if self.due() {
            self.checkpoint.save(&self.fingerprint, state, snapshot)?;
            self.since = Instant::now();
        }
        Ok(())
    }

    /// The run is complete: its checkpoint goes.
    pub fn finish(&self) -> Result<(), WriteError> {
        self.checkpoint.remove()
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }
}

/// A fingerprint of a run: its configuration and, for each input file or folder, every file's
/// path, size and modification time (a stat each, no reading; an unreadable input adds nothing,
/// the run itself reports it).
pub fn fingerprint(config: &impl Serialize, inputs: &[&Path]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(serde_json::to_string(config).unwrap_or_default().as_bytes());
    for input in inputs {
        let mut files = match std::fs::metadata(input) {
            Ok(meta) if meta.is_dir() => sd_data::tree::files(input).unwrap_or_default(),
            Ok(meta) => vec![(input.to_path_buf(), meta)],
            Err(_) => Vec::new(),
        };
        files.sort_by(|a, b| a.0.cmp(&b.0));
        for (path, meta) in files {
            let mtime = meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
            let mtime = mtime.map_or(0, |d| d.as_nanos());
            h.update(format!("{}\0{}\0{mtime}\n", path.display(), meta.len()).as_bytes());
        }
    }
    h.finalize().to_hex().to_string()
}

/// A training loss that is not a number: the run stops rather than train on garbage.
#[derive(Debug, thiserror::Error)]
#[error(
    "training diverged: the loss is {loss} at epoch {epoch}, step {step}; nothing was exported{kept}. \
     lower the learning rate and run again"
)]
pub struct Diverged {
    pub loss: f64,
    pub epoch: usize,
    pub step: usize,
    /// Where the last good epoch's checkpoint is, if any.
    pub kept: String,
}

impl Diverged {
    /// At `step` (0-based) of `epoch` (0-based); `checkpoint`: where the last good state is.
    pub fn new(loss: f64, epoch: usize, step: usize, checkpoint: Option<&Checkpoint>) -> Diverged {
        let kept = match checkpoint {
            Some(c) if c.path().join(STATE).exists() => {
                format!(" (the state after the last saved good epoch is kept in {})", c.path().display())
            }
            _ => String::new(),
        };
        Diverged { loss, epoch: epoch + 1, step: step + 1, kept }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct State {
        epoch: usize,
        rng: rand_chacha::ChaCha8Rng,
    }

    struct Weights(Vec<f32>, Vec<f32>);

    impl Parameters for Weights {
        fn tensors(&self) -> Vec<&[f32]> {
            vec![&self.0, &self.1]
        }
        fn tensors_mut(&mut self) -> Vec<&mut [f32]> {
            vec![&mut self.0, &mut self.1]
        }
    }

    #[test]
    fn saves_loads_and_refuses_another_runs_checkpoint() {
        use rand::{Rng, SeedableRng};
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::beside(&dir.path().join("out"));
        assert_eq!(c.path(), dir.path().join(".out.checkpoint"));
        assert!(c.load::<State>("a").unwrap().is_none());
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let _: u64 = rng.random();
        let w = Weights(vec![1.0, 2.0, 3.0], vec![-0.5]);
        c.save("a", &State { epoch: 4, rng: rng.clone() }, &Snapshot::new().with("w", &w)).unwrap();
        let (state, tensors) = c.load::<State>("a").unwrap().unwrap();
        assert_eq!(state, State { epoch: 4, rng: rng.clone() });
        let (mut a, mut b) = (state.rng, rng);
        assert_eq!(a.random::<u64>(), b.random::<u64>(), "the stream continues where it was");
        let mut restored = Weights(vec![0.0; 3], vec![0.0]);
        tensors.fill("w", &mut restored).unwrap();
        assert_eq!((restored.0, restored.1), (w.0, w.1));
        let err = tensors.fill("w", &mut Weights(vec![0.0; 2], vec![0.0])).unwrap_err().to_string();
        assert!(err.contains("w.0.npy") && err.contains("3 values saved, the model has 2"), "{err}");
        assert!(c.load::<State>("b").unwrap().is_none(), "another run's checkpoint");
        c.remove().unwrap();
        assert!(!c.path().exists());
        c.remove().unwrap();
    }

    #[test]
    fn resumable_loads_only_when_resuming_and_saves_when_due() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let w = Weights(vec![1.0], vec![2.0]);
        let mut every_epoch = Resumable::new(&out, "f".into(), false, Duration::ZERO);
        every_epoch.save(&1usize, &Snapshot::new().with("w", &w)).unwrap();
        assert!(every_epoch.load::<usize>().unwrap().is_none(), "not resuming");
        let resuming = Resumable::new(&out, "f".into(), true, Duration::ZERO);
        assert_eq!(resuming.load::<usize>().unwrap().map(|(s, _)| s), Some(1));
        let mut throttled = Resumable::new(&out, "f".into(), true, Duration::from_secs(3600));
        throttled.save(&2usize, &Snapshot::new().with("w", &w)).unwrap();
        assert_eq!(throttled.load::<usize>().unwrap().map(|(s, _)| s), Some(1), "not due: not saved");
        throttled.finish().unwrap();
        assert!(!Checkpoint::beside(&out).path().exists());
    }

    #[test]
    fn fingerprints_follow_config_and_inputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), b"x").unwrap();
        let a = fingerprint(&("cfg", 1), &[dir.path()]);
        assert_eq!(a, fingerprint(&("cfg", 1), &[dir.path()]));
        assert_ne!(a, fingerprint(&("cfg", 2), &[dir.path()]));
        std::fs::write(dir.path().join("g"), b"y").unwrap();
        assert_ne!(a, fingerprint(&("cfg", 1), &[dir.path()]));
    }
}
