//! Detection data in memory and the batch loader.
//!
//! Images are decoded once, in parallel (rayon), and kept decoded: the sets this tool trains on
//! from a laptop fit easily, and a step then never waits for JPEG decoding. Each training batch
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
use crate::detect::objective::assign::Xyxy;

/// Decoded images with their labels.
pub struct DetData {
    pub samples: Vec<Sample>,
    pub images: Vec<RgbImage>,
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
    /// Decodes every sample's image in parallel. Images that fail to decode are dropped and
    /// returned with the reason.
    pub fn decode(samples: Vec<Sample>) -> (Self, Vec<(PathBuf, image::ImageError)>) {
        let decoded: Vec<Result<RgbImage, image::ImageError>> = samples
            .par_iter()
            .map(|s| image::open(&s.image).map(|i| i.to_rgb8()))
            .collect();
        let mut kept = Vec::new();
        let mut images = Vec::new();
        let mut failed = Vec::new();
        for (s, d) in samples.into_iter().zip(decoded) {
            match d {
                Ok(img) => {
                    kept.push(s);
                    images.push(img);
                }
                Err(e) => failed.push((s.image.clone(), e)),
            }
        }
        (
            DetData {
                samples: kept,
                images,
            },
            failed,
        )
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
                train_image(&self.samples, &self.images, i, imgsz, cfg, mosaic, &mut rng)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self::assemble(parts, indices.to_vec(), imgsz))
    }

    /// A letterboxed validation batch.
    pub fn val_batch(&self, indices: &[usize], imgsz: u32, canvas: Canvas) -> Batch {
        let parts: Vec<Augmented> = indices
            .par_iter()
            .map(|&i| val_image(&self.images[i], &self.samples[i].labels, imgsz, canvas))
            .collect();
        Self::assemble(parts, indices.to_vec(), imgsz)
    }
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
/// on `pool`.
#[allow(clippy::too_many_arguments)]
pub fn prefetch(
    pool: Arc<rayon::ThreadPool>,
    data: Arc<DetData>,
    order: Vec<Vec<usize>>,
    imgsz: u32,
    cfg: AugmentConfig,
    mosaic: bool,
    seed: u64,
    epoch: usize,
) -> Receiver<Result<Batch, AugmentError>> {
    let (tx, rx) = sync_channel(2);
    std::thread::spawn(move || {
        for (i, idx) in order.iter().enumerate() {
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
