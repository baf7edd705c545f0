//! Checkpoint files, written atomically: a crash at any moment leaves either the previous file
//! or the new one, never a mix.
//!
//! The new file is written to a temporary file in the same directory (so the rename stays on
//! one file system), flushed to disk (`fsync`), renamed over the target (atomic on POSIX and
//! on Windows' `MoveFileEx` with replace), and then the directory itself is flushed so the
//! rename survives a power cut. A crash can leave a stale `.NAME.tmp-*` file beside the
//! target; it is never read and may be deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::vec::Vec;

use xxhash_rust::xxh3::Xxh3;

use super::format::{self, Hashing, Sink};
use super::{CheckpointError, LIBRARY};
use crate::optimizer::Optimizer;

fn io_err<'p>(op: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> CheckpointError + 'p {
    move |e| CheckpointError::Io {
        op,
        path: path.display().to_string(),
        kind: e.kind(),
        message: e.to_string(),
    }
}

struct FileSink(File);

impl Sink for FileSink {
    type Err = io::Error;
    fn put(&mut self, bytes: &[u8]) -> Result<(), io::Error> {
        self.0.write_all(bytes)
    }
}

/// Small writes (the MessagePack headers) are gathered; large ones (state arrays, handed over
/// in chunks of 256 KiB) go straight through.
struct Buffered {
    file: FileSink,
    buf: Vec<u8>,
}

impl Sink for Buffered {
    type Err = io::Error;
    fn put(&mut self, bytes: &[u8]) -> Result<(), io::Error> {
        if self.buf.len() + bytes.len() > self.buf.capacity() {
            self.file.put(&self.buf)?;
            self.buf.clear();
        }
        if bytes.len() >= self.buf.capacity() {
            self.file.put(bytes)
        } else {
            self.buf.extend_from_slice(bytes);
            Ok(())
        }
    }
}

fn temp_path(path: &Path) -> Result<PathBuf, CheckpointError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| CheckpointError::Io {
        op: "save",
        path: path.display().to_string(),
        kind: io::ErrorKind::InvalidInput,
        message: "not a file name".into(),
    })?;
    let mut tmp = String::from(".");
    tmp.push_str(&name.to_string_lossy());
    tmp.push_str(&std::format!(
        ".tmp-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    Ok(path.with_file_name(tmp))
}

/// Writes `path` atomically from what `write` puts into a file: temp file in the same
/// directory, fsync, rename, fsync of the directory. On error the temp file is removed and
/// `path` is untouched.
fn atomic<F>(path: &Path, write: F) -> Result<(), CheckpointError>
where
    F: FnOnce(&mut File, &Path) -> Result<(), CheckpointError>,
{
    let tmp = temp_path(path)?;
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        write(&mut f, &tmp)?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        drop(f);
        fs::rename(&tmp, path).map_err(io_err("rename", path))
    })();
    if let Err(e) = result {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path)
}

#[cfg(unix)]
fn sync_dir(path: &Path) -> Result<(), CheckpointError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> Result<(), CheckpointError> {
    // Directories cannot be opened for fsync here; the rename is still atomic.
    Ok(())
}

/// Saves `opt`'s whole state to `path` atomically (see the module docs), streaming: no copy
/// of the state is built in memory.
pub fn save_file(opt: &Optimizer, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    atomic(path, |f, tmp| {
        let file = f.try_clone().map_err(io_err("open", tmp))?;
        let mut sink = Buffered {
            file: FileSink(file),
            buf: Vec::with_capacity(64 * 1024),
        };
        let mut hs = Hashing {
            inner: &mut sink,
            hasher: Xxh3::new(),
        };
        format::encode_body(opt, 0, 1, LIBRARY, &mut hs)?.map_err(io_err("write", tmp))?;
        let sum = hs.hasher.digest();
        sink.put(&format::trailer(sum))
            .map_err(io_err("write", tmp))?;
        let rest = core::mem::take(&mut sink.buf);
        sink.file.put(&rest).map_err(io_err("write", tmp))
    })
}

/// Writes `bytes` (a checkpoint, a shard, anything) to `path` atomically.
pub fn write_file_atomic(path: impl AsRef<Path>, bytes: &[u8]) -> Result<(), CheckpointError> {
    atomic(path.as_ref(), |f, tmp| {
        f.write_all(bytes).map_err(io_err("write", tmp))
    })
}

/// Loads a checkpoint file into a new optimizer (reads the whole file, then [`super::load`]).
pub fn load_file(path: impl AsRef<Path>) -> Result<Optimizer, CheckpointError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    super::load(&bytes)
}

/// Restores a checkpoint file into `opt` (see [`super::restore`]).
pub fn restore_file(opt: &mut Optimizer, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    super::restore(opt, &bytes)
}
