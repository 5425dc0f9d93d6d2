//! The augmentation pipeline end to end on synthetic scenes: boxes follow the pixels, seeds
//! reproduce, bad input is an error.

use super::affine::*;
use super::hsv::*;
use super::*;
use crate::data::image::to_u8;
use crate::data::letterbox::square;
use rand::SeedableRng;
use std::path::PathBuf;

/// Class colours of the synthetic scenes, and their background.
const COLOURS: [[u8; 3]; 4] = [[230, 40, 40], [40, 200, 60], [40, 60, 220], [230, 220, 40]];
const BACKGROUND: [u8; 3] = [80, 80, 80];

/// A grey `w × h` scene with solid rectangles `(class, x1, y1, x2, y2)` (pixels, end
/// exclusive) in their class colour, and the rectangles as normalised labels.
fn scene(w: u32, h: u32, rects: &[(usize, u32, u32, u32, u32)]) -> (RgbImage, Vec<Label>) {
    let mut img = RgbImage::from_pixel(w, h, Rgb(BACKGROUND));
    let mut labels = Vec::new();
    for &(class, x1, y1, x2, y2) in rects {
        for y in y1..y2 {
            for x in x1..x2 {
                img.put_pixel(x, y, Rgb(COLOURS[class]));
            }
        }
        let (wf, hf) = (w as f32, h as f32);
        labels.push(Label {
            class,
            cx: (x1 + x2) as f32 / 2.0 / wf,
            cy: (y1 + y2) as f32 / 2.0 / hf,
            w: (x2 - x1) as f32 / wf,
            h: (y2 - y1) as f32 / hf,
        });
    }
    (img, labels)
}

/// Five scenes of different shapes, with boxes touching edges and corners.
fn dataset() -> (Vec<Sample>, Vec<RgbImage>) {
    let scenes = [
        scene(
            640,
            480,
            &[
                (0, 50, 60, 250, 200),
                (1, 300, 250, 500, 420),
                (2, 520, 20, 620, 150),
            ],
        ),
        scene(300, 500, &[(3, 20, 30, 150, 200), (0, 160, 300, 280, 480)]),
        scene(
            800,
            600,
            &[
                (1, 0, 0, 200, 150),
                (2, 600, 450, 800, 600),
                (3, 300, 200, 500, 400),
            ],
        ),
        scene(200, 120, &[(0, 20, 20, 120, 100)]),
        scene(
            1000,
            300,
            &[(2, 100, 50, 400, 250), (1, 700, 100, 950, 290)],
        ),
    ];
    let mut samples = Vec::new();
    let mut images = Vec::new();
    for (i, (img, labels)) in scenes.into_iter().enumerate() {
        samples.push(Sample {
            image: PathBuf::from(format!("images/{i}.png")),
            width: img.width(),
            height: img.height(),
            labels,
        });
        images.push(img);
    }
    (samples, images)
}

fn run(
    data: &(Vec<Sample>, Vec<RgbImage>),
    index: usize,
    imgsz: u32,
    cfg: &AugmentConfig,
    use_mosaic: bool,
    seed: u64,
) -> Augmented {
    let mut rng = StdRng::seed_from_u64(seed);
    train_image(&data.0, &data.1, index, imgsz, cfg, use_mosaic, &mut rng).expect("augments")
}

/// The RGB bytes of output pixel `(x, y)`.
fn pixel_at(a: &Augmented, imgsz: u32, x: usize, y: usize) -> [u8; 3] {
    let n = (imgsz * imgsz) as usize;
    let i = y * imgsz as usize + x;
    [0, 1, 2].map(|c| to_u8(a.chw[c * n + i] * 255.0))
}

/// Every box is inside the image, non-degenerate and passes the size rule.
fn assert_boxes_valid(a: &Augmented, imgsz: u32) {
    let s = imgsz as f32;
    for (class, b) in &a.boxes {
        assert!(*class < COLOURS.len());
        assert!(
            b.iter().all(|v| v.is_finite() && (0.0..=s).contains(v)),
            "{b:?}"
        );
        assert!(b[2] - b[0] > 2.0 && b[3] - b[1] > 2.0, "{b:?}");
    }
    assert_eq!(a.chw.len(), 3 * (imgsz * imgsz) as usize);
    assert!(a.chw.iter().all(|v| (0.0..=1.0).contains(v)));
}

/// Checks that the pixels well inside each box (3 px margin) are mostly the class colour;
/// returns how many boxes were big enough to check.
fn assert_boxes_follow_pixels(a: &Augmented, imgsz: u32) -> usize {
    let mut checked = 0;
    for (class, b) in &a.boxes {
        let (x0, y0) = ((b[0] + 3.0).ceil() as usize, (b[1] + 3.0).ceil() as usize);
        let (x1, y1) = ((b[2] - 3.0).floor() as usize, (b[3] - 3.0).floor() as usize);
        if x1 < x0 + 4 || y1 < y0 + 4 {
            continue;
        }
        let (mut good, mut all) = (0, 0);
        for y in y0..y1 {
            for x in x0..x1 {
                let p = pixel_at(a, imgsz, x, y);
                let close = (0..3).all(|c| p[c].abs_diff(COLOURS[*class][c]) <= 30);
                good += close as usize;
                all += 1;
            }
        }
        assert!(
            good as f32 > 0.9 * all as f32,
            "box {b:?} of class {class}: {good}/{all} pixels in colour"
        );
        checked += 1;
    }
    checked
}

#[test]
fn the_same_seed_gives_the_same_image_and_another_seed_another() {
    let data = dataset();
    let cfg = AugmentConfig::default();
    for index in 0..data.0.len() {
        let a = run(&data, index, 160, &cfg, true, 7);
        let b = run(&data, index, 160, &cfg, true, 7);
        let c = run(&data, index, 160, &cfg, true, 8);
        assert_eq!(a, b);
        assert_ne!(a.chw, c.chw);
    }
}

#[test]
fn no_augmentation_is_the_plain_letterbox() {
    let data = dataset();
    for (index, (s, img)) in data.0.iter().zip(&data.1).enumerate() {
        let a = run(&data, index, 320, &AugmentConfig::none(), false, 3);
        let lb = letterbox(img, &s.labels, 320, square(320));
        assert_eq!(a.chw, to_chw(&lb.image));
        assert_eq!(a.boxes, lb.boxes);
        assert_eq!(a, val_image(img, &s.labels, 320, square(320)));
    }
}

#[test]
fn a_certain_flip_mirrors_pixels_and_boxes_exactly() {
    let data = dataset();
    let cfg = AugmentConfig {
        fliplr: 1.0,
        ..AugmentConfig::none()
    };
    let s = 128u32;
    for (index, (sample, img)) in data.0.iter().zip(&data.1).enumerate() {
        let a = run(&data, index, s, &cfg, false, 11);
        let lb = letterbox(img, &sample.labels, s, square(s));
        let plain = Augmented {
            chw: to_chw(&lb.image),
            boxes: lb.boxes,
        };
        for y in 0..s as usize {
            for x in 0..s as usize {
                let mirrored = pixel_at(&plain, s, s as usize - 1 - x, y);
                assert_eq!(pixel_at(&a, s, x, y), mirrored, "({x}, {y})");
            }
        }
        let sf = s as f32;
        let expect: Vec<PixelBox> = plain
            .boxes
            .iter()
            .map(|&(c, b)| (c, [sf - b[2], b[1], sf - b[0], b[3]]))
            .collect();
        assert_eq!(a.boxes, expect);
    }
}

#[test]
fn hsv_with_unit_gains_round_trips_every_colour_exactly() {
    let mut img = RgbImage::new(64, 64);
    for (i, p) in img.pixels_mut().enumerate() {
        // 4096 colours spread over the cube, including greys and pure hues
        let (r, g, b) = (i % 16, (i / 16) % 16, i / 256);
        *p = Rgb([r as u8 * 17, g as u8 * 17, b as u8 * 17]);
    }
    let before = img.clone();
    apply_hsv(
        &mut img,
        HsvGains {
            hue_deg: 0.0,
            sat: 1.0,
            val: 1.0,
        },
    );
    assert_eq!(img, before);
}

#[test]
fn hsv_value_and_hue_gains_do_what_they_say() {
    let mut img = RgbImage::from_pixel(2, 1, Rgb([200, 200, 200]));
    img.put_pixel(1, 0, Rgb([255, 0, 0]));
    let gains = HsvGains {
        hue_deg: 120.0,
        sat: 1.0,
        val: 0.5,
    };
    apply_hsv(&mut img, gains);
    assert_eq!(img.get_pixel(0, 0).0, [100, 100, 100], "grey halved");
    assert_eq!(
        img.get_pixel(1, 0).0,
        [0, 128, 0],
        "red turned green, half value"
    );
    let mut img = RgbImage::from_pixel(1, 1, Rgb([10, 20, 200]));
    let gains = HsvGains {
        hue_deg: 0.0,
        sat: 0.0,
        val: 2.0,
    };
    apply_hsv(&mut img, gains);
    assert_eq!(
        img.get_pixel(0, 0).0,
        [255, 255, 255],
        "no saturation, value clipped"
    );
}

#[test]
fn a_value_gain_changes_brightness_but_not_boxes() {
    let data = dataset();
    let cfg = AugmentConfig {
        hsv_v: 0.8,
        ..AugmentConfig::none()
    };
    let plain = run(&data, 0, 128, &AugmentConfig::none(), false, 0);
    let mean = |a: &Augmented| a.chw.iter().sum::<f32>() / a.chw.len() as f32;
    let mut changed = 0;
    for seed in 0..8 {
        let a = run(&data, 0, 128, &cfg, false, seed);
        assert_eq!(a.boxes, plain.boxes);
        changed += ((mean(&a) - mean(&plain)).abs() > 0.01) as usize;
    }
    assert!(
        changed >= 6,
        "brightness changed in only {changed} of 8 seeds"
    );
}

#[test]
fn grey_stays_grey_under_value_gain_and_under_any_hue_gain() {
    let mut img = RgbImage::new(96, 64);
    for (x, _, p) in img.enumerate_pixels_mut() {
        let v = (x * 255 / 95) as u8;
        *p = Rgb([v, v, v]);
    }
    let samples = vec![Sample {
        image: PathBuf::from("grey.png"),
        width: 96,
        height: 64,
        labels: Vec::new(),
    }];
    let images = [img];
    let configs = [
        AugmentConfig {
            hsv_v: 0.4,
            ..AugmentConfig::none()
        },
        AugmentConfig {
            hsv_h: 0.5,
            hsv_s: 0.9,
            hsv_v: 0.4,
            ..AugmentConfig::none()
        },
    ];
    for cfg in &configs {
        for seed in 0..4 {
            let mut rng = StdRng::seed_from_u64(seed);
            let a = train_image(&samples, &images[..], 0, 64, cfg, false, &mut rng).unwrap();
            for y in 0..64 {
                for x in 0..64 {
                    let p = pixel_at(&a, 64, x, y);
                    assert!(p[0] == p[1] && p[1] == p[2], "{p:?} at ({x}, {y})");
                }
            }
        }
    }
}

/// Boxes stay valid and sit on their coloured rectangles over `seeds` runs of every image;
/// at least `min` boxes checked.
fn boxes_follow(mosaic: bool, seeds: u64, min: usize) {
    let data = dataset();
    let cfg = AugmentConfig {
        hsv_h: 0.0,
        hsv_s: 0.0,
        hsv_v: 0.0,
        ..AugmentConfig::default()
    };
    let mut checked = 0;
    for seed in 0..seeds {
        for index in 0..data.0.len() {
            let a = run(&data, index, 192, &cfg, mosaic, seed);
            assert_boxes_valid(&a, 192);
            checked += assert_boxes_follow_pixels(&a, 192);
        }
    }
    assert!(checked > min, "only {checked} boxes were checked");
}

#[test]
fn boxes_follow_the_pixels_through_the_affine() {
    boxes_follow(false, 6, 50);
}

#[test]
fn boxes_follow_the_pixels_through_the_mosaic() {
    boxes_follow(true, 12, 100);
}

#[test]
fn many_mosaics_never_panic_and_keep_boxes_valid() {
    let data = dataset();
    let strong = AugmentConfig {
        scale: 0.9,
        translate: 0.4,
        ..AugmentConfig::default()
    };
    for cfg in [AugmentConfig::default(), strong] {
        for imgsz in [33, 96] {
            for seed in 0..40 {
                let a = run(&data, seed as usize % data.0.len(), imgsz, &cfg, true, seed);
                assert_boxes_valid(&a, imgsz);
            }
        }
    }
    // a dataset of one image mosaics with itself
    let one = (data.0[..1].to_vec(), data.1[..1].to_vec());
    for seed in 0..10 {
        assert_boxes_valid(&run(&one, 0, 64, &AugmentConfig::default(), true, seed), 64);
    }
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let data = dataset();
    let cfg = AugmentConfig::default();
    let mut rng = StdRng::seed_from_u64(0);
    let e = train_image(&data.0, &data.1, 99, 64, &cfg, true, &mut rng).unwrap_err();
    assert_eq!(e.to_string(), "image index 99 is out of range (5 images)");
    let e = train_image(&data.0, &data.1, 0, 0, &cfg, true, &mut rng).unwrap_err();
    assert!(matches!(e, AugmentError::Imgsz { imgsz: 0, .. }), "{e}");
    assert!(train_image(&[], &data.1, 0, 64, &cfg, true, &mut rng).is_err());
    // samples without their images (a mosaic reaches for the others too)
    let e = train_image(&data.0, &data.1[..1], 0, 64, &cfg, true, &mut rng).unwrap_err();
    assert!(matches!(e, AugmentError::Index { len: 1, .. }), "{e}");
    let empty = vec![RgbImage::new(0, 5); data.1.len()];
    let e = train_image(&data.0, &empty, 0, 64, &cfg, false, &mut rng).unwrap_err();
    assert!(e.to_string().contains("images/0.png"), "{e}");
    assert_eq!(
        val_image(&RgbImage::new(0, 0), &[], 8, square(8)).chw.len(),
        3 * 64
    );
    assert!(val_image(&data.1[0], &data.0[0].labels, 0, square(0))
        .chw
        .is_empty());
}

/// Times one 640 mosaic + affine + HSV + flip call:
/// `cargo test --release -p gradscope --lib detect::augment -- --ignored --nocapture`.
#[test]
#[ignore]
fn time_one_640_mosaic() {
    let data = dataset();
    let cfg = AugmentConfig::default();
    let mut rng = StdRng::seed_from_u64(0);
    let runs = 20;
    let start = std::time::Instant::now();
    for i in 0..runs {
        train_image(&data.0, &data.1, i % 5, 640, &cfg, true, &mut rng).unwrap();
    }
    let per = start.elapsed() / runs as u32;
    let start = std::time::Instant::now();
    for i in 0..runs {
        std::hint::black_box(mosaic(&data.0, &data.1, i % 5, 640, &mut rng).unwrap());
    }
    let mosaic_time = start.elapsed() / runs as u32;
    let src = RgbImage::from_pixel(1280, 1280, Rgb([1, 2, 3]));
    let affine = random_affine(1280, 640, &cfg, &mut rng);
    let start = std::time::Instant::now();
    for _ in 0..runs {
        std::hint::black_box(warp(&src, &affine, 640));
    }
    let warp_time = start.elapsed() / runs as u32;
    let mut img = RgbImage::from_pixel(640, 640, Rgb([10, 120, 200]));
    let gains = hsv_gains(&cfg, &mut rng).unwrap();
    let start = std::time::Instant::now();
    for _ in 0..runs {
        apply_hsv(&mut img, gains);
    }
    let hsv_time = start.elapsed() / runs as u32;
    println!(
        "640 mosaic+affine+hsv+flip: {per:?} per call; of which mosaic {mosaic_time:?}, \
         warp {warp_time:?}, hsv {hsv_time:?}"
    );
}
