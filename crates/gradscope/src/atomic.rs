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
    let tmp = tmp_path(path);
    let result = write_synced(&tmp, path, bytes).and_then(|()| {
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
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
