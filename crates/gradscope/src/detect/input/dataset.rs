//! Detection data and the batch loader.
//!
//! Every image is decoded once when the run starts, in parallel (rayon): one that does not
//! decode is dropped with the reason before any work. Then `cache=` ([`Pixels`]) says where the
//! decoded images stay: in memory (`ram`, the default here: a step never waits for JPEG
//! decoding), decoded again at every use (`false`), or in `.npy` files (`disk`). Each training batch
//! is augmented in parallel, one image per task, every image with its own generator seeded from
//! (seed, epoch, position), so a run is reproducible whatever the thread count. The next batch
//! is prepared on a background thread while the model trains on the current one.

use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use image::RgbImage;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;

use crate::data::detect::Sample;
use crate::data::letterbox::Canvas;
use crate::detect::input::augment::{
    train_image, val_image, AugmentConfig, AugmentError, Augmented,
};
use crate::detect::input::pixels::{decode, npy_holds, npy_path, write_npy, Cache, Images, Pixels};
use crate::detect::objective::assign::Xyxy;

/// Images with their labels.
pub struct DetData {
    pub samples: Vec<Sample>,
    /// `samples[i]`'s image at `i`, kept as `cache=` says.
    pub pixels: Pixels,
}

/// One batch: `[B, 3, imgsz, imgsz]` values in [0, 1], boxes per image (class, xyxy pixels of the
/// input), the dataset index of each image.
pub struct Batch {
    pub x: Vec<f32>,
    pub size: usize,
    pub targets: Vec<Vec<(usize, Xyxy)>>,
    pub indices: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }
}

impl DetData {
    /// Decodes every sample's image in parallel and keeps them as `cache` says. Images that
    /// fail to decode are dropped and returned with the reason; the notes say what the cache
    /// did (`cache=disk`: files written and reused, or why it fell back to `cache=false`).
    pub fn decode(samples: Vec<Sample>, cache: Cache) -> Decoded {
        // cache=disk: a whole .npy at the image's size is used as it is (its header and length
        // are checked, its pixels not read)
        let reused: Vec<bool> = samples
            .par_iter()
            .map(|s| cache == Cache::Disk && npy_holds(&npy_path(&s.image), (s.width, s.height)))
            .collect();
        let decoded: Vec<Kept> = samples
            .par_iter()
            .zip(&reused)
            .map(|(s, &reused)| {
                if reused {
                    return Kept::Elsewhere;
                }
                let img = match decode(&s.image) {
                    Ok(img) => img,
                    Err(e) => return Kept::Failed(e.to_string()),
                };
                match cache {
                    Cache::Ram => Kept::Decoded(img),
                    Cache::Off => Kept::Elsewhere,
                    Cache::Disk => {
                        let npy = npy_path(&s.image);
                        match write_npy(&img, &npy) {
                            Ok(()) => Kept::Elsewhere,
                            Err(e) => Kept::Unwritable(format!("{}: {e}", npy.display())),
                        }
                    }
                }
            })
            .collect();
        let (mut kept, mut images, mut failed, mut unwritable) =
            (Vec::new(), Vec::new(), Vec::new(), None);
        for (s, d) in samples.into_iter().zip(decoded) {
            match d {
                Kept::Decoded(img) => images.push(img),
                Kept::Elsewhere => {}
                // the image is fine; its .npy is not
                Kept::Unwritable(why) => {
                    unwritable.get_or_insert(why);
                }
                Kept::Failed(why) => {
                    failed.push((s.image.clone(), why));
                    continue;
                }
            }
            kept.push(s);
        }
        let files = |kept: &[Sample]| kept.iter().map(|s| s.image.clone()).collect();
        let mut notes = Vec::new();
        let pixels = match (cache, unwritable) {
            (Cache::Ram, _) => Pixels::Ram(images),
            (Cache::Off, _) => Pixels::Files(files(&kept)),
            (Cache::Disk, Some(why)) => {
                notes.push(Note::Warning(format!(
                    "cache=disk: cannot write {why}; the images are decoded from their files at every use instead, as cache=false does"
                )));
                Pixels::Files(files(&kept))
            }
            (Cache::Disk, None) => {
                let n = reused.iter().filter(|r| **r).count();
                notes.push(Note::Info(format!(
                    "cache=disk: {} images kept as .gradscope.npy beside them ({} written, {n} reused)",
                    kept.len(),
                    kept.len().saturating_sub(n)
                )));
                Pixels::Npy(kept.iter().map(|s| npy_path(&s.image)).collect())
            }
        };
        Decoded {
            data: DetData {
                samples: kept,
                pixels,
            },
            failed,
            notes,
        }
    }

    /// Image `i`, decoded.
    pub fn image(&self, i: usize) -> Result<std::borrow::Cow<'_, RgbImage>, AugmentError> {
        self.pixels.image(i)
    }

    /// Width and height of image `i` (as its file's header gives them, which decoding keeps).
    pub fn dimensions(&self, i: usize) -> (u32, u32) {
        match &self.pixels {
            Pixels::Ram(v) => v.get(i).map_or((0, 0), |img| img.dimensions()),
            _ => self.samples.get(i).map_or((0, 0), |s| (s.width, s.height)),
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    fn assemble(parts: Vec<Augmented>, indices: Vec<usize>, imgsz: u32) -> Batch {
        let n = (3 * imgsz * imgsz) as usize;
        let mut x = Vec::with_capacity(n * parts.len());
        let mut targets = Vec::with_capacity(parts.len());
        for p in parts {
            x.extend_from_slice(&p.chw);
            targets.push(p.boxes);
        }
        Batch {
            x,
            size: imgsz as usize,
            targets,
            indices,
        }
    }

    /// An augmented training batch of the samples `indices`.
    pub fn train_batch(
        &self,
        indices: &[usize],
        imgsz: u32,
        cfg: &AugmentConfig,
        mosaic: bool,
        seed: u64,
    ) -> Result<Batch, AugmentError> {
        let parts: Vec<Augmented> = indices
            .par_iter()
            .enumerate()
            .map(|(k, &i)| {
                let mut rng =
                    StdRng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(k as u64));
                train_image(&self.samples, &self.pixels, i, imgsz, cfg, mosaic, &mut rng)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::assemble(parts, indices.to_vec(), imgsz))
    }

    /// A letterboxed validation batch.
    pub fn val_batch(
        &self,
        indices: &[usize],
        imgsz: u32,
        canvas: Canvas,
    ) -> Result<Batch, AugmentError> {
        let parts: Vec<Augmented> = indices
            .par_iter()
            .map(|&i| {
                let img = self.image(i)?;
                Ok(val_image(&img, &self.samples[i].labels, imgsz, canvas))
            })
            .collect::<Result<_, AugmentError>>()?;
        Ok(Self::assemble(parts, indices.to_vec(), imgsz))
    }
}

/// Where one image went in [`DetData::decode`].
enum Kept {
    Decoded(RgbImage),
    /// Not held: reused or written as .npy, or decoded at each use.
    Elsewhere,
    /// Decodes, but its .npy cannot be written (why).
    Unwritable(String),
    /// Does not decode (why).
    Failed(String),
}

/// What [`DetData::decode`] gives: the data, the images that did not decode (path, why), and
/// what the cache did.
pub struct Decoded {
    pub data: DetData,
    pub failed: Vec<(PathBuf, String)>,
    pub notes: Vec<Note>,
}

/// A line about the cache: what it did, or a warning that it could not do what was asked.
pub enum Note {
    Info(String),
    Warning(String),
}

/// The shuffled batches of one epoch (the last one may be smaller).
pub fn epoch_order(n: usize, batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed.wrapping_add(epoch as u64 * 7919));
    idx.shuffle(&mut rng);
    idx.chunks(batch.max(1)).map(|c| c.to_vec()).collect()
}

/// The threads that augment training images: `workers` of them (0: one per core), never more
/// than the machine has, as Ultralytics caps its loader workers. Every image has its own seeded
/// generator, so batches are the same whatever the count.
pub fn loader_pool(workers: usize) -> Result<Arc<rayon::ThreadPool>, rayon::ThreadPoolBuildError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let n = if workers == 0 {
        cores
    } else {
        workers.min(cores)
    };
    rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("gradscope-loader-{i}"))
        .build()
        .map(Arc::new)
}

/// Prepares one epoch's training batches on a background thread, at most two ahead, augmenting
/// on `pool`. Each batch of `order` comes with its place among the epoch's batches, which seeds
/// its augmentation (a replica's share of a batch is augmented as it would be on one device).
#[allow(clippy::too_many_arguments)]
pub fn prefetch(
    pool: Arc<rayon::ThreadPool>,
    data: Arc<DetData>,
    order: Vec<(usize, Vec<usize>)>,
    imgsz: u32,
    cfg: AugmentConfig,
    mosaic: bool,
    seed: u64,
    epoch: usize,
) -> Receiver<Result<Batch, AugmentError>> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        for (i, idx) in &order {
            let s = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add((epoch * 100_003 + i) as u64);
            let batch = pool.install(|| data.train_batch(idx, imgsz, &cfg, mosaic, s));
            if tx.send(batch).is_err() {
                break;
            }
        }
    });
    rx
}
