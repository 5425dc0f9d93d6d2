//! Downloads with `ureq`: a dataset archive (a zip, unpacked with `zip`, or a gzip-compressed tar,
//! with `flate2` and `tar`) unpacked into the datasets dir, and a weights file written whole.
//! Archive entries whose path would leave the target folder (`../`, absolute paths) and links are
//! refused; both go through a temporary file or folder first, so a failed or partial
//! download never leaves a half-written dataset or checkpoint behind.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

pub use crate::detect::error::DownloadError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// GET `url`, the whole transfer bounded by `timeout_s` seconds.
fn get(url: &str, timeout_s: u64) -> Result<ureq::Response, DownloadError> {
    ureq::get(url)
        .timeout(std::time::Duration::from_secs(timeout_s))
        .call()
        .map_err(|e| DownloadError::Get {
            url: url.into(),
            source: Box::new(e),
        })
}

/// A failure while reading `url`'s body.
fn read_failed(url: &str) -> impl FnOnce(std::io::Error) -> DownloadError + '_ {
    move |source| DownloadError::Read {
        url: url.into(),
        source,
    }
}

/// The largest archive a dataset download may be.
pub const MAX_ARCHIVE_BYTES: u64 = 64 << 30;

/// The largest weights file a download may be.
pub const MAX_WEIGHTS_BYTES: u64 = 8 << 30;

/// Streams `body` (the response of `url`) into a new file `path`, synced; more than `limit`
/// bytes is an error, not a truncated file. Returns the bytes written. The caller removes `path`
/// on failure.
fn save_body(
    body: &mut dyn Read,
    url: &str,
    path: &Path,
    limit: u64,
) -> Result<u64, DownloadError> {
    let mut out = std::fs::File::create(path).map_err(io(path))?;
    let bytes = std::io::copy(&mut body.take(limit + 1), &mut out).map_err(read_failed(url))?;
    if bytes > limit {
        return Err(DownloadError::TooLarge {
            url: url.into(),
            limit,
        });
    }
    out.sync_all().map_err(io(path))?;
    Ok(bytes)
}

/// The archive kind an URL names by its ending (`.zip`, `.tar.gz`, `.tgz`; case and query ignored).
pub fn archive_kind(url: &str) -> Option<Archive> {
    let lower = url.to_ascii_lowercase();
    let plain = lower.split(['?', '#']).next().unwrap_or_default();
    if plain.ends_with(".zip") {
        Some(Archive::Zip)
    } else if plain.ends_with(".tar.gz") || plain.ends_with(".tgz") {
        Some(Archive::TarGz)
    } else {
        None
    }
}

/// The dataset archives gradscope unpacks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Archive {
    Zip,
    TarGz,
}

/// Downloads `url` (a zip or a .tar.gz, by its ending) and unpacks it into `dir`: streamed to a
/// temporary file (never held in memory), at most [`MAX_ARCHIVE_BYTES`], then unpacked with
/// [`unzip_from`]'s or [`untar_gz_from`]'s limits. Returns the top-level entries created; a
/// failure leaves nothing behind.
pub fn fetch_archive(url: &str, dir: &Path) -> Result<Vec<PathBuf>, DownloadError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = dir.join(format!(".download.{}.archive", std::process::id()));
    let result = (|| {
        let mut body = get(url, 60)?.into_reader();
        let bytes = save_body(&mut body, url, &tmp, MAX_ARCHIVE_BYTES)?;
        let file = std::io::BufReader::new(std::fs::File::open(&tmp).map_err(io(&tmp))?);
        match archive_kind(url) {
            Some(Archive::TarGz) => untar_gz_from(file, bytes, dir),
            _ => unzip_from(file, bytes, dir),
        }
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Where Ultralytics 8.4 downloads its release weights from (`yolo26n.pt` …).
pub const RELEASE_ASSETS: &str = "https://github.com/ultralytics/assets/releases/download/v8.4.0";

/// A downloaded weights file smaller than this is not weights (an error page, a truncated
/// transfer): Ultralytics' own bound.
pub const MIN_WEIGHTS_BYTES: u64 = 100_000;

/// Downloads `url` to `dest` atomically: streamed into a temporary file beside it, checked (at
/// least `min_bytes`; a zip archive, as every PyTorch checkpoint is), then renamed into place. A
/// failed download leaves nothing behind. `say` hears where from, where to and how big.
pub fn fetch_file(
    url: &str,
    dest: &Path,
    min_bytes: u64,
    say: &mut dyn FnMut(String),
) -> Result<(), DownloadError> {
    let resp = get(url, 600)?;
    let total = resp
        .header("Content-Length")
        .and_then(|v| v.parse::<u64>().ok());
    let size = total
        .map(|b| format!(" ({:.1} MB)", b as f64 / 1e6))
        .unwrap_or_default();
    say(format!("downloading {url} to {}{size}", dest.display()));
    if let Some(dir) = dest.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = dest.with_extension(format!("download.{}.tmp", std::process::id()));
    let result = (|| {
        let mut reader = Progress {
            inner: resp.into_reader(),
            read: 0,
            total,
            next: 0,
            say: &mut *say,
        };
        let bytes = save_body(&mut reader, url, &tmp, MAX_WEIGHTS_BYTES)?;
        if bytes < min_bytes {
            return Err(DownloadError::TooSmall {
                url: url.into(),
                bytes,
                min: min_bytes,
            });
        }
        let mut magic = [0u8; 4];
        std::fs::File::open(&tmp)
            .and_then(|mut f| f.read_exact(&mut magic))
            .map_err(io(&tmp))?;
        if &magic != b"PK\x03\x04" {
            return Err(DownloadError::NotArchive { url: url.into() });
        }
        std::fs::rename(&tmp, dest).map_err(io(dest))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// A reader that reports how much has come: each tenth of a known size, else every 10 MB.
struct Progress<'a, R> {
    inner: R,
    read: u64,
    total: Option<u64>,
    next: u64,
    say: &'a mut dyn FnMut(String),
}

impl<R: Read> Read for Progress<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        let step = self.total.map_or(10_000_000, |t| (t / 10).max(1));
        if n > 0 && self.read >= self.next {
            if self.next > 0 {
                let mb = |b: u64| b as f64 / 1e6;
                (self.say)(match self.total {
                    Some(t) => format!(
                        "  {:>3}% ({:.1} of {:.1} MB)",
                        self.read * 100 / t.max(1),
                        mb(self.read),
                        mb(t)
                    ),
                    None => format!("  {:.1} MB", mb(self.read)),
                });
            }
            self.next = (self.read / step + 1) * step;
        }
        Ok(n)
    }
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

/// Unpacks zip `bytes` into `dir` (see [`unzip_from`]).
pub fn unzip(bytes: &[u8], dir: &Path) -> Result<Vec<PathBuf>, DownloadError> {
    unzip_from(std::io::Cursor::new(bytes), bytes.len() as u64, dir)
}

/// Unpacks the zip `archive` (`len` bytes) into `dir` with [`Unpack`]'s refusals and limit.
pub fn unzip_from<R: Read + std::io::Seek>(
    archive: R,
    len: u64,
    dir: &Path,
) -> Result<Vec<PathBuf>, DownloadError> {
    let mut zip = zip::ZipArchive::new(archive).map_err(DownloadError::NotZip)?;
    Unpack::run(dir, len, |u| {
        for i in 0..zip.len() {
            let mut f = zip
                .by_index(i)
                .map_err(|source| DownloadError::Entry { index: i, source })?;
            let name = f.name().to_string();
            u.entry(&name, f.is_dir(), &mut f)?;
        }
        Ok(())
    })
}

/// Unpacks the gzip-compressed tar `archive` (`len` bytes) into `dir` with [`Unpack`]'s
/// refusals and limit; links and device files are refused.
pub fn untar_gz_from<R: Read>(
    archive: R,
    len: u64,
    dir: &Path,
) -> Result<Vec<PathBuf>, DownloadError> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    Unpack::run(dir, len, |u| {
        for e in tar.entries().map_err(DownloadError::NotTar)? {
            let mut e = e.map_err(DownloadError::NotTar)?;
            let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
            let kind = e.header().entry_type();
            if !(kind.is_file() || kind.is_dir()) {
                // pax/GNU headers carry metadata, not files
                if kind.is_pax_global_extensions()
                    || kind.is_pax_local_extensions()
                    || kind.is_gnu_longname()
                {
                    continue;
                }
                return Err(DownloadError::Special {
                    name,
                    kind: format!("{kind:?}").to_lowercase(),
                });
            }
            u.entry(&name, kind.is_dir(), &mut e)?;
        }
        Ok(())
    })
}

/// Unpacking an archive into `dir` through a temporary folder beside it: entries whose path
/// would leave the folder are refused, and unpacking stops — leaving nothing — once more than
/// `100 × len` bytes (at least 100 MB) come out, counted from the bytes written, whatever the
/// entries declare (an archive bomb). The top-level entries move into `dir` only when all is
/// unpacked, and never over existing ones.
pub struct Unpack {
    dir: PathBuf,
    tmp: PathBuf,
    limit: u64,
    left: u64,
    tops: Vec<PathBuf>,
}

impl Unpack {
    fn run(
        dir: &Path,
        len: u64,
        entries: impl FnOnce(&mut Unpack) -> Result<(), DownloadError>,
    ) -> Result<Vec<PathBuf>, DownloadError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let tmp = dir.join(format!(".download.{}.tmp", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let limit = len.saturating_mul(100).max(100 << 20);
        let mut u = Unpack {
            dir: dir.to_path_buf(),
            tmp: tmp.clone(),
            limit,
            left: limit,
            tops: Vec::new(),
        };
        let result = entries(&mut u).and_then(|()| u.finish());
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }

    /// One entry: a folder, or a file whose content `r` gives.
    fn entry(&mut self, name: &str, is_dir: bool, r: &mut dyn Read) -> Result<(), DownloadError> {
        let rel = safe_path(name).ok_or_else(|| DownloadError::Escapes {
            name: name.to_string(),
            dir: self.dir.clone(),
        })?;
        if let Some(Component::Normal(top)) = rel.components().next() {
            let top = PathBuf::from(top);
            if !self.tops.contains(&top) {
                self.tops.push(top);
            }
        }
        let out = self.tmp.join(&rel);
        if is_dir {
            return std::fs::create_dir_all(&out).map_err(io(&out));
        }
        if let Some(p) = out.parent() {
            std::fs::create_dir_all(p).map_err(io(p))?;
        }
        let mut w = std::fs::File::create(&out).map_err(io(&out))?;
        let n = std::io::copy(&mut r.take(self.left + 1), &mut w).map_err(io(&out))?;
        if n > self.left {
            return Err(DownloadError::Unpacked { limit: self.limit });
        }
        self.left -= n;
        Ok(())
    }

    fn finish(&self) -> Result<Vec<PathBuf>, DownloadError> {
        for t in &self.tops {
            let to = self.dir.join(t);
            if to.exists() {
                return Err(DownloadError::Exists { path: to });
            }
        }
        for t in &self.tops {
            let to = self.dir.join(t);
            std::fs::rename(self.tmp.join(t), &to).map_err(io(&to))?;
        }
        Ok(self.tops.iter().map(|t| self.dir.join(t)).collect())
    }
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
