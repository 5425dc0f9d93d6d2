//! Dataset downloads: an http(s) zip fetched with `ureq` and unpacked with `zip` into the
//! datasets dir. Entries whose path would leave the target folder (`../`, absolute paths) are
//! refused, and the archive is unpacked into a temporary folder first, so a failed or partial
//! download never leaves a half-written dataset behind.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

pub use crate::detect::error::DownloadError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Downloads `url` (a zip) and unpacks it into `dir`. Returns the top-level entries created.
pub fn fetch_zip(url: &str, dir: &Path) -> Result<Vec<PathBuf>, DownloadError> {
    let resp = ureq::get(url)
        .timeout(std::time::Duration::from_secs(60))
        .call()
        .map_err(|e| DownloadError::Get {
            url: url.into(),
            source: Box::new(e),
        })?;
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(4 << 30)
        .read_to_end(&mut bytes)
        .map_err(|source| DownloadError::Read {
            url: url.into(),
            source,
        })?;
    unzip(&bytes, dir)
}

/// A safe relative path inside the archive's target, or None when it would escape it.
fn safe_path(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(x) => out.push(x),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Unpacks zip `bytes` into `dir` through a temporary folder; refuses escaping paths.
pub fn unzip(bytes: &[u8], dir: &Path) -> Result<Vec<PathBuf>, DownloadError> {
    let mut zip =
        zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(DownloadError::NotZip)?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".download.{}.tmp", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| {
        let mut tops: Vec<PathBuf> = Vec::new();
        for i in 0..zip.len() {
            let mut f = zip
                .by_index(i)
                .map_err(|source| DownloadError::Entry { index: i, source })?;
            let name = f.name().to_string();
            let rel = safe_path(&name).ok_or_else(|| DownloadError::Escapes {
                name: name.clone(),
                dir: dir.to_path_buf(),
            })?;
            if let Some(Component::Normal(top)) = rel.components().next() {
                let top = PathBuf::from(top);
                if !tops.contains(&top) {
                    tops.push(top);
                }
            }
            let out = tmp.join(&rel);
            if f.is_dir() {
                std::fs::create_dir_all(&out).map_err(io(&out))?;
                continue;
            }
            if let Some(p) = out.parent() {
                std::fs::create_dir_all(p).map_err(io(p))?;
            }
            let mut w = std::fs::File::create(&out).map_err(io(&out))?;
            std::io::copy(&mut f, &mut w).map_err(io(&out))?;
        }
        for t in &tops {
            let to = dir.join(t);
            if to.exists() {
                return Err(DownloadError::Exists { path: to });
            }
        }
        for t in &tops {
            std::fs::rename(tmp.join(t), dir.join(t)).map_err(io(&dir.join(t)))?;
        }
        Ok(tops.iter().map(|t| dir.join(t)).collect())
    })();
    let _ = std::fs::remove_dir_all(&tmp);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_paths_are_refused() {
        assert!(safe_path("../evil").is_none());
        assert!(safe_path("/etc/passwd").is_none());
        assert!(safe_path("a/../../b").is_none());
        assert_eq!(
            safe_path("coco8/images/a.jpg"),
            Some(PathBuf::from("coco8/images/a.jpg"))
        );
    }
}
