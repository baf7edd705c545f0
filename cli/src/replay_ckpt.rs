//! Checkpoint options of `vsgd replay`: `--checkpoint-at S` (run S steps, save the optimizer to
//! a file, drop it, load a fresh one from the file, finish: the output must not change) and
//! `--save FILE` (save the final state).

use std::path::PathBuf;

use vsgd::{checkpoint, Optimizer};

use crate::replay::Case;

/// The checkpoint options given.
#[derive(Default)]
pub struct Options {
    /// Step after which to save and reload.
    pub checkpoint_at: Option<usize>,
    /// Where to save the final state.
    pub save: Option<PathBuf>,
}

impl Options {
    /// Consumes `arg` (and its value) if it is a checkpoint option.
    pub fn parse<'a>(
        &mut self,
        arg: &str,
        rest: &mut impl Iterator<Item = &'a String>,
    ) -> Result<bool, String> {
        match arg {
            "--checkpoint-at" => {
                let s = rest.next().ok_or("--checkpoint-at needs a step number")?;
                let s = s
                    .parse()
                    .map_err(|_| format!("--checkpoint-at: '{s}' is not a step number"))?;
                self.checkpoint_at = Some(s);
            }
            "--save" => {
                let f = rest.next().ok_or("--save needs a file name")?;
                self.save = Some(PathBuf::from(f));
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Checks the options against the case.
    pub fn check(&self, case: &Case) -> Result<(), String> {
        match self.checkpoint_at {
            Some(s) if s > case.steps => Err(format!(
                "--checkpoint-at {s}: the case has only {} steps",
                case.steps
            )),
            _ => Ok(()),
        }
    }
}

/// Saves `opt` to a temporary file, drops it, and loads a fresh optimizer from the file.
pub fn round_trip(opt: Optimizer) -> Result<Optimizer, String> {
    let path = std::env::temp_dir().join(format!(
        "vsgd-replay-{}-{:x}.vsgdckpt",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    checkpoint::save_file(&opt, &path).map_err(|e| e.to_string())?;
    drop(opt);
    let loaded = checkpoint::load_file(&path).map_err(|e| e.to_string());
    let _ = std::fs::remove_file(&path);
    loaded
}

/// Saves the final state to `path` (atomically).
pub fn save(opt: &Optimizer, path: &std::path::Path) -> Result<(), String> {
    checkpoint::save_file(opt, path).map_err(|e| e.to_string())
}
