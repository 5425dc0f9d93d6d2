//! Files replaced whole or not at all: the new content goes to `<file>.tmp` beside it, is synced
//! to disk, and renamed over the old one, so a crash (or a full disk) at any instant leaves either
//! the old file or the new one, never a mix. A failed write removes its temporary file.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The temporary file [`write()`] uses for `path`: `<file name>.tmp` in the same folder (a rename
/// is atomic only within one file system).
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Replaces `path` by `bytes` atomically. Crash points (see [`crate::crash`]):
/// `write-half:<file>` with half the temporary file written, `write:<file>` before the rename.
pub fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    replace(path, |tmp| write_synced(tmp, path, bytes))
}

/// Replaces `path` by what `fill` writes, atomically as [`write()`] does: for content too large to
/// hold in memory (a long run's `probe.jsonl`). Crash points: `write-half:<file>` once `fill` has
/// written (the temporary file complete, not yet synced), `write:<file>` before the rename.
pub fn write_with(
    path: &Path,
    fill: impl FnOnce(&mut dyn Write) -> std::io::Result<()>,
) -> std::io::Result<()> {
    replace(path, |tmp| {
        let mut w = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        fill(&mut w)?;
        w.flush()?;
        crate::crash::file_point("write-half", path);
        w.into_inner().map_err(|e| e.into_error())?.sync_all()
    })
}

/// Writes the temporary file with `body` (which syncs it), then renames it over `path`; a failure
/// removes the temporary file.
fn replace(path: &Path, body: impl FnOnce(&Path) -> std::io::Result<()>) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    let result = body(&tmp).and_then(|()| {
        crate::crash::file_point("write", path);
        std::fs::rename(&tmp, path)
    });
    match result {
        Ok(()) => {
            sync_dir(path);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

fn write_synced(tmp: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(tmp)?;
    let (first, rest) = bytes.split_at(bytes.len() / 2);
    f.write_all(first)?;
    crate::crash::file_point("write-half", path);
    f.write_all(rest)?;
    f.sync_all()
}

/// Makes the rename itself durable (best effort: not every file system syncs folders).
fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("gradscope-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.state.safetensors");
        write(&p, b"old").unwrap();
        write(&p, b"new content").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new content");
        assert_eq!(tmp_path(&p), dir.join("a.state.safetensors.tmp"));
        assert!(!tmp_path(&p).exists());
        // a write that cannot happen (the target is a folder) leaves the old state and no .tmp
        let sub = dir.join("sub");
        std::fs::create_dir_all(&sub).unwrap();
        assert!(write(&sub, b"x").is_err());
        assert!(sub.is_dir() && !tmp_path(&sub).exists());
        // streamed: the same, and a fill that fails leaves the old file and no .tmp
        write_with(&p, |w| w.write_all(b"streamed")).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"streamed");
        let failed = write_with(&p, |w| {
            w.write_all(b"half")?;
            Err(std::io::Error::other("the source broke"))
        });
        assert!(failed.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"streamed");
        assert!(!tmp_path(&p).exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
