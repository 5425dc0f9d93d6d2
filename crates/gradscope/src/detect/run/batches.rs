//! The batch pictures a user checks first: `train_batch0.jpg` … `train_batch2.jpg` (the first
//! three training batches as the model sees them: augmented, mosaicked, with their boxes),
//! `val_batch0_labels.jpg` (the first validation images with their true boxes) and
//! `val_batch0_pred.jpg` (the same images with the model's predictions). Up to 16 images in a
//! square grid at most 1920 pixels wide, as Ultralytics lays them out, each captioned with its
//! file name, under a title band that says what the boxes are.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use image::imageops::FilterType;
use image::RgbImage;
use plotters::prelude::*;

use super::boxes::{draw_boxes, Drawn};
use crate::data::image::from_chw;
use crate::data::letterbox::{geometry, square};
use crate::detect::error::DetectError;
use crate::detect::eval::metrics::DetBox;
use crate::detect::eval::validate::ValResult;
use crate::detect::input::dataset::{Batch, DetData};
use crate::detect::objective::assign::Xyxy;
use crate::report::chart::fonts;

fn e(path: &Path, m: impl std::fmt::Display) -> DetectError {
    DetectError::plot(path, m)
}

/// Most images in one picture.
const MAX_TILES: usize = 16;
/// Widest picture, pixels.
const MAX_SIZE: u32 = 1920;
/// Height of the title band, pixels.
const TITLE: u32 = 32;
/// The score from which a prediction is drawn (Ultralytics' plotting threshold).
const DRAW_CONF: f32 = 0.25;

/// One image of a grid, boxes drawn, and its caption: the image's name and a note after it.
struct Tile {
    image: RgbImage,
    name: String,
    note: String,
}

impl Tile {
    /// The caption in at most `chars` characters: the note whole, the name cut from the front
    /// (tiles cut from one photo differ at the end of their names).
    fn caption(&self, chars: usize) -> String {
        let name: Vec<char> = self.name.chars().collect();
        let room = chars.saturating_sub(self.note.chars().count()).max(8);
        let name: String = match name.len().checked_sub(room) {
            Some(cut) if cut > 0 => std::iter::once('…')
                .chain(name[cut + 1..].iter().copied())
                .collect(),
            _ => name.into_iter().collect(),
        };
        format!("{name}{}", self.note)
    }
}

/// The file name of image `index`.
fn file_name(data: &DetData, index: usize) -> String {
    data.samples
        .get(index)
        .and_then(|s| s.image.file_name())
        .map_or_else(
            || format!("image {index}"),
            |n| n.to_string_lossy().into_owned(),
        )
}

/// Pictures drawn beside the training, each on a thread of its own: the training-batch pictures
/// (drawn on the job thread, their boxes and JPEG encoding took ≈0.7 s of the default run while
/// the other thread waited for work most of the run) and each epoch's validation pictures and
/// curves (≈0.15 s an epoch there). [`Drawing::finish`] waits for them and gives the first
/// error; dropped unfinished (a run that stops early), it waits for them too. Where no thread
/// can be started, a picture is drawn at once on the caller's thread.
#[derive(Default)]
pub struct Drawing(Vec<(PathBuf, Pending)>);

/// A picture's drawing, owning what it draws.
type DrawJob = Box<dyn FnOnce() -> Result<(), DetectError> + Send>;

/// A picture started: drawing on its thread, or drawn already (no thread could be started).
enum Pending {
    Thread(JoinHandle<Result<(), DetectError>>),
    Drawn(Result<(), DetectError>),
}

impl Drawing {
    /// Starts `train_batch{i}.jpg` in `dir`: batch `i` of the first epoch, its boxes drawn (from a
    /// copy of its first images, so that the batch can go on to the step).
    pub fn train_batch(
        &mut self,
        b: &Batch,
        i: usize,
        data: &DetData,
        names: &[String],
        dir: &Path,
    ) {
        let path = dir.join(format!("train_batch{i}.jpg"));
        let s = b.size as u32;
        let n = (3 * s * s) as usize;
        let k = b.len().min(MAX_TILES);
        let x = b.x[..k * n].to_vec();
        let targets = b.targets[..k].to_vec();
        let files: Vec<String> = b.indices[..k].iter().map(|&j| file_name(data, j)).collect();
        let names = names.to_vec();
        let at = path.clone();
        self.spawn(path, move || {
            train_batch(&x, s, &targets, files, &names, i, &at)
        });
    }

    /// Starts `job`, which draws `path` (named in the error if it panics), from what it owns; it
    /// runs here and now when no thread can be started (its error waits for
    /// [`Drawing::finish`] all the same).
    pub fn spawn(
        &mut self,
        path: PathBuf,
        job: impl FnOnce() -> Result<(), DetectError> + Send + 'static,
    ) {
        self.start(path, Box::new(job), |job| {
            std::thread::Builder::new()
                .name("gradscope-drawing".into())
                .spawn(job)
        });
    }

    /// [`Drawing::spawn`] with the thread started by `thread`, which hands the job back when it
    /// cannot start one.
    fn start(
        &mut self,
        path: PathBuf,
        job: DrawJob,
        thread: impl FnOnce(DrawJob) -> std::io::Result<JoinHandle<Result<(), DetectError>>>,
    ) {
        // `spawn` drops its closure when it fails: the thread is started first, and the job
        // sent to it once it runs (kept here otherwise)
        let (tx, rx) = std::sync::mpsc::channel::<DrawJob>();
        let pending = match thread(Box::new(move || rx.recv().map_or(Ok(()), |j| j()))) {
            Ok(h) => match tx.send(job) {
                Ok(()) => Pending::Thread(h),
                // the thread ended without waiting for it (it cannot, short of a bug): draw here
                Err(back) => Pending::Drawn((back.0)()),
            },
            Err(_) => Pending::Drawn(job()),
        };
        self.0.push((path, pending));
    }

    /// Waits for every picture started; the first error among them.
    pub fn finish(&mut self) -> Result<(), DetectError> {
        let mut first = Ok(());
        for (path, pending) in self.0.drain(..) {
            let r = match pending {
                Pending::Drawn(r) => r,
                Pending::Thread(h) => {
                    // the drawing may split its work over the pool this thread belongs to
                    crate::wait_helping(|| h.is_finished());
                    h.join()
                        .unwrap_or_else(|_| Err(e(&path, "its drawing stopped with a panic")))
                }
            };
            if first.is_ok() {
                first = r;
            }
        }
        first
    }
}

impl Drop for Drawing {
    fn drop(&mut self) {
        // a run that ended early: its pictures are complete files, or none
        let _ = self.finish();
    }
}

/// `path`: training batch `i` of the first epoch as the model sees it (its images `x`, `s`² each,
/// named `files`), with its true boxes `targets`.
fn train_batch(
    x: &[f32],
    s: u32,
    targets: &[Vec<(usize, Xyxy)>],
    files: Vec<String>,
    names: &[String],
    i: usize,
    path: &Path,
) -> Result<(), DetectError> {
    let n = (3 * s * s) as usize;
    let mut tiles = Vec::new();
    for ((j, boxes), name) in targets.iter().enumerate().zip(files) {
        let mut image = from_chw(&x[j * n..(j + 1) * n], s, s);
        let boxes: Vec<Drawn> = boxes.iter().map(|(c, bx)| (*c, *bx, None)).collect();
        draw_boxes(&mut image, &boxes, names).map_err(|m| e(path, m))?;
        tiles.push(Tile {
            image,
            name,
            note: String::new(),
        });
    }
    let title = format!("training batch {i} of epoch 1 as the model sees it: true boxes");
    grid(tiles, &title, path)
}

/// `val_batch0_labels.jpg` and `val_batch0_pred.jpg` in `dir`: the first validation images on
/// `imgsz` squares with their true boxes, and with the predictions of `v`.
pub fn val_batch(
    val: &DetData,
    v: &ValResult,
    names: &[String],
    imgsz: usize,
    dir: &Path,
) -> Result<(), DetectError> {
    let k = val.len().min(MAX_TILES);
    if k == 0 {
        return Ok(());
    }
    let (labels_path, pred_path) = (
        dir.join("val_batch0_labels.jpg"),
        dir.join("val_batch0_pred.jpg"),
    );
    let s = imgsz as u32;
    let idx: Vec<usize> = (0..k).collect();
    // drawn on imgsz squares: a box found on a rectangular canvas moves by the difference in
    // padding (the scale is the same)
    let b = val
        .val_batch(&idx, s, square(s))
        .map_err(|m| e(&labels_path, m))?;
    let n = (3 * s * s) as usize;
    let (mut with_labels, mut with_preds) = (Vec::new(), Vec::new());
    for (j, &i) in idx.iter().enumerate() {
        let chw = &b.x[j * n..(j + 1) * n];
        let mut image = from_chw(chw, s, s);
        let labels: Vec<Drawn> = b.targets[j].iter().map(|(c, bx)| (*c, *bx, None)).collect();
        draw_boxes(&mut image, &labels, names).map_err(|m| e(&labels_path, m))?;
        with_labels.push(Tile {
            image,
            name: file_name(val, i),
            note: format!(": {} boxes", labels.len()),
        });
        let mut image = from_chw(chw, s, s);
        let (preds, guessed) = predictions(val, v, i, s, b.targets[j].len());
        draw_boxes(&mut image, &preds, names).map_err(|m| e(&pred_path, m))?;
        let note = if guessed {
            format!(": none ≥ {DRAW_CONF}, best {} shown", preds.len())
        } else {
            format!(": {} found", preds.len())
        };
        with_preds.push(Tile {
            image,
            name: file_name(val, i),
            note,
        });
    }
    grid(
        with_labels,
        "validation images: their true boxes",
        &labels_path,
    )?;
    let title = format!("validation images: predictions with score ≥ {DRAW_CONF}");
    grid(with_preds, &title, &pred_path)
}

/// The predictions of image `i` to draw on an `s` square: those scoring at least
/// [`DRAW_CONF`], or — a young model scores below it everywhere — its best guesses, as many as
/// the image has labels (then `true`).
fn predictions(
    val: &DetData,
    v: &ValResult,
    i: usize,
    s: u32,
    labels: usize,
) -> (Vec<Drawn>, bool) {
    let (w0, h0) = val.dimensions(i);
    let (_, _, to) = geometry(w0, h0, s, square(s));
    let from = v.canvases.get(i).map_or(to, |c| geometry(w0, h0, s, *c).2);
    let (dx, dy) = (to.0 as f32 - from.0 as f32, to.1 as f32 - from.1 as f32);
    let mut mine: Vec<&DetBox> = v.dets.iter().filter(|d| d.image == i).collect();
    mine.sort_by(|a, b| b.score.total_cmp(&a.score));
    let confident = mine.iter().filter(|d| d.score >= DRAW_CONF).count();
    let keep = if confident > 0 { confident } else { labels };
    let drawn = mine
        .iter()
        .take(keep)
        .map(|d| {
            let b = d.bbox;
            (
                d.class,
                [b[0] + dx, b[1] + dy, b[2] + dx, b[3] + dy],
                Some(d.score),
            )
        })
        .collect::<Vec<_>>();
    let guessed = confident == 0 && !drawn.is_empty();
    (drawn, guessed)
}

/// Lays `tiles` out in a square grid under a title band, scaled down to [`MAX_SIZE`], and
/// writes the picture to `path`.
fn grid(tiles: Vec<Tile>, title: &str, path: &Path) -> Result<(), DetectError> {
    let k = tiles.len();
    if k == 0 {
        return Ok(());
    }
    let cols = (k as f64).sqrt().ceil() as u32;
    let rows = (k as u32).div_ceil(cols);
    let side = tiles[0].image.width().max(tiles[0].image.height());
    let t = side.min(MAX_SIZE / cols);
    let (w, h) = (cols * t, TITLE + rows * t);
    let mut canvas = RgbImage::from_pixel(w, h, image::Rgb([255, 255, 255]));
    for (n, tile) in tiles.iter().enumerate() {
        let (c, r) = (n as u32 % cols, n as u32 / cols);
        let image = if tile.image.width() == t && tile.image.height() == t {
            tile.image.clone()
        } else {
            image::imageops::resize(&tile.image, t, t, FilterType::Triangle)
        };
        image::imageops::replace(&mut canvas, &image, (c * t) as i64, (TITLE + r * t) as i64);
    }
    fonts();
    {
        let buf: &mut [u8] = &mut canvas;
        let root = BitMapBackend::with_buffer(buf, (w, h)).into_drawing_area();
        let text = |size: u32, color: &RGBColor| ("sans-serif", size).into_font().color(color);
        root.draw(&Text::new(title.to_string(), (8, 8), text(15, &BLACK)))
            .map_err(|m| e(path, m))?;
        for (n, tile) in tiles.iter().enumerate() {
            let (x, y) = (
                (n as u32 % cols * t) as i32,
                (TITLE + n as u32 / cols * t) as i32,
            );
            // the grid's lines, then the caption on a dark strip at the tile's foot
            root.draw(&Rectangle::new(
                [(x, y), (x + t as i32, y + t as i32)],
                WHITE.stroke_width(2),
            ))
            .map_err(|m| e(path, m))?;
            let foot = y + t as i32 - 20;
            // DejaVu Sans at 12 px: about 7 px a character
            let caption = tile.caption((t as usize).saturating_sub(12) / 7);
            let (tw, _) = root
                .estimate_text_size(&caption, &text(12, &WHITE))
                .unwrap_or((t - 2, 0));
            let width = (tw as i32 + 8).min(t as i32 - 2);
            root.draw(&Rectangle::new(
                [(x + 1, foot), (x + 1 + width, y + t as i32 - 1)],
                BLACK.mix(0.6).filled(),
            ))
            .map_err(|m| e(path, m))?;
            root.draw(&Text::new(caption, (x + 5, foot + 3), text(12, &WHITE)))
                .map_err(|m| e(path, m))?;
        }
        root.present().map_err(|m| e(path, m))?;
    }
    canvas.save(path).map_err(|m| e(path, m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::input::pixels::Pixels;
    use std::sync::Arc;

    fn batch(s: usize) -> Batch {
        Batch {
            x: vec![0.5; 2 * 3 * s * s],
            size: s,
            targets: vec![vec![(0, [4.0, 4.0, 20.0, 24.0])], vec![]],
            indices: vec![0, 1],
        }
    }

    /// The pictures drawn on their own threads are the files the job thread would have written,
    /// and a picture that cannot be written comes back from `finish` as the error naming it.
    #[test]
    fn pictures_drawn_beside_the_training_are_written_and_their_errors_returned() {
        let data = DetData {
            samples: Vec::new(),
            pixels: Pixels::Ram(Vec::new()),
        };
        let names = vec!["tree".to_string()];
        let dir = std::env::temp_dir().join(format!("gradscope-drawing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut d = Drawing::default();
        d.train_batch(&batch(64), 0, &data, &names, &dir);
        d.train_batch(&batch(64), 1, &data, &names, &dir);
        d.finish().unwrap();
        for i in 0..2 {
            let p = dir.join(format!("train_batch{i}.jpg"));
            let img = image::open(&p).unwrap();
            assert!(img.width() > 64, "{}", p.display());
        }

        let missing = dir.join("no such folder");
        d.train_batch(&batch(64), 2, &data, &names, &missing);
        match d.finish() {
            Err(DetectError::Plot { path, .. }) => {
                assert_eq!(path, missing.join("train_batch2.jpg"))
            }
            other => panic!("expected the picture's error, got {other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Where no thread can be started, the picture is drawn on the caller's thread at once, and
    /// its error is returned by `finish` as a thread's would be.
    #[test]
    fn a_picture_is_drawn_here_when_no_thread_can_start() {
        let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let no_thread = |_job: DrawJob| Err(std::io::Error::other("no thread"));
        let mut d = Drawing::default();
        for fails in [false, true] {
            let ran = Arc::clone(&ran);
            let job: DrawJob = Box::new(move || {
                ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                match fails {
                    true => Err(e(Path::new("b.jpg"), "unwritable")),
                    false => Ok(()),
                }
            });
            d.start(PathBuf::from("a.jpg"), job, no_thread);
        }
        // both ran before `finish`: there was no thread to run them later
        assert_eq!(ran.load(std::sync::atomic::Ordering::SeqCst), 2);
        match d.finish() {
            Err(DetectError::Plot { path, .. }) => assert_eq!(path, PathBuf::from("b.jpg")),
            other => panic!("expected the second picture's error, got {other:?}"),
        }
    }
}
