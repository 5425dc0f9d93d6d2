//! What can go wrong in detection training, validation and prediction: a typed error whose
//! variants keep their sources, so the CLI prints the whole chain (`what: why: cause`).

use std::path::{Path, PathBuf};

use crate::probe::ProbeError;
use crate::report::ReportError;
use crate::settings::SettingError;
use crate::yolo::weights::WeightsError;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Settings that cannot be used together, or a run that cannot be continued.
    #[error("{0}")]
    Args(String),
    /// One setting that cannot be used.
    #[error(transparent)]
    Setting(#[from] SettingError),
    /// A `device=` this binary or this machine cannot use.
    #[error(transparent)]
    Device(#[from] crate::devices::Unusable),
    #[error("data-parallel training")]
    Replica(#[from] crate::train::replicas::ReplicaError),
    /// Data that cannot be used: what and where.
    #[error("{0}")]
    Data(String),
    /// A built-in dataset that is not on disk and could not be downloaded.
    #[error("{name}: the data is not in {} and the download failed; put the dataset there (images/train, images/val, labels/train, labels/val) or pass data=path/to/{name}", target.display())]
    Download {
        name: String,
        target: PathBuf,
        #[source]
        source: Box<DownloadError>,
    },
    /// Release weights that are not on disk and could not be downloaded.
    #[error("{key}={name}: not in the working folder or $GRADSCOPE_WEIGHTS, and the download failed; download {name} from {url} into {}, or train from scratch with model=yolo26n.yaml", dir.display())]
    WeightsDownload {
        key: String,
        name: String,
        url: String,
        dir: PathBuf,
        #[source]
        source: Box<DownloadError>,
    },
    /// A training image that cannot be made.
    #[error("cannot augment a training image")]
    Augment(#[from] AugmentError),
    /// A data file (data.yaml, an image folder) that cannot be read or used.
    #[error(transparent)]
    DataFile(#[from] crate::data::DataError),
    /// The command ran but found nothing it could use (no decodable image, a checkpoint full of
    /// NaN): what it found, and what to try.
    #[error("{0}")]
    NothingUsable(String),
    /// A file or folder that cannot be read or written.
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A checkpoint that cannot be read or written.
    #[error(transparent)]
    Weights(#[from] WeightsError),
    /// The probe's record file.
    #[error(transparent)]
    Probe(#[from] ProbeError),
    /// A file whose content cannot be used (a state file without its metadata, …).
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    /// A plot that cannot be drawn or saved.
    #[error("cannot draw {}: {msg}", path.display())]
    Plot { path: PathBuf, msg: String },
    /// The gradient report.
    #[error(transparent)]
    Report(#[from] ReportError),
}

impl DetectError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DetectError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// Content of `path` that cannot be used.
    pub fn invalid(path: &Path, what: impl std::fmt::Display) -> Self {
        DetectError::Invalid {
            path: path.to_path_buf(),
            what: what.to_string(),
        }
    }

    /// A plot that cannot be drawn into `path`.
    pub fn plot(path: &Path, msg: impl std::fmt::Display) -> Self {
        DetectError::Plot {
            path: path.to_path_buf(),
            msg: msg.to_string(),
        }
    }
}

/// Why a training image cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum AugmentError {
    #[error("imgsz {imgsz} is out of range 1..={max}")]
    Imgsz { imgsz: u32, max: u32 },
    #[error("image index {index} is out of range ({len} images)")]
    Index { index: usize, len: usize },
    #[error("{}: the image is empty", path.display())]
    Empty { path: PathBuf },
    /// An image file that decoded when the run started no longer does (`cache=false`).
    #[error("{}: cannot decode the image (it decoded when the run started)", path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    /// A `cache=disk` file cannot be read back.
    #[error("{}: cannot read the cached image (delete it to have it written again)", path.display())]
    Npy {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Why a download did not give a dataset.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// The request failed (the source names the URL and why).
    #[error("request failed")]
    Get {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },
    #[error("GET {url}: reading the body")]
    Read {
        url: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not a zip archive")]
    NotZip(#[source] zip::result::ZipError),
    #[error("zip entry {index}")]
    Entry {
        index: usize,
        #[source]
        source: zip::result::ZipError,
    },
    #[error("not a gzip-compressed tar archive")]
    NotTar(#[source] std::io::Error),
    #[error("archive entry '{name}' would be written outside {}", dir.display())]
    Escapes { name: String, dir: PathBuf },
    #[error("archive entry '{name}' is a {kind}; gradscope unpacks files and folders only")]
    Special { name: String, kind: String },
    #[error("{}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} already exists; not overwritten", path.display())]
    Exists { path: PathBuf },
    #[error("{url}: {bytes} bytes, fewer than the {min} a weights file has")]
    TooSmall { url: String, bytes: u64, min: u64 },
    #[error("{url}: not a PyTorch checkpoint (not a zip archive)")]
    NotArchive { url: String },
    #[error("{url}: larger than the {limit} bytes gradscope downloads")]
    TooLarge { url: String, limit: u64 },
    #[error("the archive unpacks to more than {limit} bytes (100× its own size, at least 100 MB): refused as an archive bomb")]
    Unpacked { limit: u64 },
}
