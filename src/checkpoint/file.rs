//! Checkpoint files, written atomically: a crash at any moment leaves either the previous file
//! or the new one, never a mix.
//!
//! The new file is written to a temporary file in the same directory (so the rename stays on
//! one file system), flushed to disk (`fsync`), renamed over the target (atomic on POSIX and
//! on Windows' `MoveFileEx` with replace), and then the directory itself is flushed so the
//! rename survives a power cut. A crash can leave a stale `.NAME.tmp-*` file beside the
//! target; it is never read and may be deleted.
//!
//! Every error before the rename leaves the previous file in place. The directory flush comes
//! after the rename, so its failure cannot: it is reported as
//! [`CheckpointError::NotDurable`] (the new file is in place, its durability unknown), never
//! as a failure that kept the previous file.
//!
//! Reading checks the file's size first: a file that cannot be held in memory is
//! [`CheckpointError::AllocationFailed`] before anything is read or allocated.

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
/// directory, fsync, rename, fsync of the directory. On an error before the rename the temp
/// file is removed and `path` is untouched; a failed directory flush after it is
/// [`CheckpointError::NotDurable`].
fn atomic<F>(path: &Path, write: F) -> Result<(), CheckpointError>
where
    F: FnOnce(&mut File, &Path) -> Result<(), CheckpointError>,
{
    atomic_with(path, write, sync_dir)
}

/// [`atomic`] with the directory flush given (tests inject a failing one).
fn atomic_with<F>(
    path: &Path,
    write: F,
    sync_dir: impl FnOnce(&Path) -> io::Result<()>,
) -> Result<(), CheckpointError>
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
    // The rename is done: from here on the new file is in place, whatever happens.
    sync_dir(path).map_err(|e| CheckpointError::NotDurable {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Flushes the directory holding `path`, so that a rename in it survives a power cut.
#[cfg(unix)]
fn sync_dir(path: &Path) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(not(unix))]
fn sync_dir(_path: &Path) -> io::Result<()> {
    // Directories cannot be opened for fsync here; the rename is still atomic.
    Ok(())
}

/// The whole file, read only if it can be held in memory: its size is checked (against
/// `isize::MAX`, then by a fallible reservation) before a byte is read.
fn read_file(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    use std::io::Read;
    let mut f = File::open(path).map_err(io_err("read", path))?;
    let size = f.metadata().map_err(io_err("read", path))?.len();
    let mut bytes = Vec::new();
    if size > isize::MAX as u64 || bytes.try_reserve_exact(size as usize).is_err() {
        return Err(CheckpointError::AllocationFailed { bytes: size });
    }
    // `take`: a file that grows while being read cannot make the buffer grow past its size
    // (a longer file reads as truncated and fails its checksum).
    Read::by_ref(&mut f)
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", path))?;
    Ok(bytes)
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
    super::load(&read_file(path)?)
}

/// Restores a checkpoint file into `opt` (see [`super::restore`]).
pub fn restore_file(opt: &mut Optimizer, path: impl AsRef<Path>) -> Result<(), CheckpointError> {
    let path = path.as_ref();
    super::restore(opt, &read_file(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(std::format!("vsgd-file-{name}-{}", std::process::id()));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_failed_directory_flush_says_the_new_file_is_in_place() {
        let d = dir("notdurable");
        let path = d.join("a.ckpt");
        fs::write(&path, b"previous").unwrap();
        let r = atomic_with(
            &path,
            |f, _| f.write_all(b"new").map_err(|_| unreachable!()),
            |_| Err(io::Error::other("injected EIO")),
        );
        match r {
            Err(CheckpointError::NotDurable { path: p, message }) => {
                assert_eq!(p, path.display().to_string());
                assert!(message.contains("injected EIO"), "{message}");
            }
            other => panic!("expected NotDurable, got {other:?}"),
        }
        // What the error says is true: the new file is in place, no temp file is left.
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
        let text = CheckpointError::NotDurable {
            path: "p".into(),
            message: "m".into(),
        }
        .to_string();
        assert!(
            text.contains("in place") && !text.contains("kept"),
            "{text}"
        );
        // An error before the rename still keeps the previous file.
        let r = atomic_with(
            &path,
            |_, tmp| Err(io_err("write", tmp)(io::Error::other("injected"))),
            |_| Ok(()),
        );
        assert!(matches!(r, Err(CheckpointError::Io { .. })));
        assert_eq!(fs::read(&path).unwrap(), b"new");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    #[cfg_attr(miri, ignore)]
    fn a_file_too_large_for_memory_is_refused_before_reading() {
        // With "always overcommit" a 1 TiB reservation succeeds and the read would take ages.
        if fs::read_to_string("/proc/sys/vm/overcommit_memory").is_ok_and(|m| m.trim() == "1") {
            std::eprintln!("SKIPPED: vm.overcommit_memory = 1 grants any reservation");
            return;
        }
        let d = dir("huge");
        let path = d.join("huge.ckpt");
        let f = File::create(&path).unwrap();
        // Sparse (no disk space used), as large as the file system allows, at least 1 TiB:
        // more than this machine's memory, so the reservation is refused.
        let size = [1u64 << 46, 1 << 44, 1 << 42, 1 << 40]
            .into_iter()
            .find(|&n| f.set_len(n).is_ok())
            .expect("a sparse file of 1 TiB");
        drop(f);
        match load_file(&path) {
            Err(CheckpointError::AllocationFailed { bytes }) => assert_eq!(bytes, size),
            other => panic!("expected AllocationFailed, got {other:?}"),
        }
        fs::remove_dir_all(&d).unwrap();
    }
}
