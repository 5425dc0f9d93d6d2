//! Detection metrics against pycocotools: COCO bbox mAP50-95, mAP50, mAP75 and every per-class,
//! per-threshold AP on a seeded fixture written by `tools/reference/coco_map.py`.

use gradscope::detect::eval::metrics::{coco_map, iou_thresholds, DetBox, GtBox};
use serde_json::Value;

const TOL: f64 = 1e-6;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/coco_map.json")).expect("fixture parses")
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn index(v: &Value) -> usize {
    v.as_u64().expect("an index") as usize
}

/// `[x1, y1, x2, y2]` from four numbers starting at `row[2]`.
fn bbox(row: &[Value]) -> [f32; 4] {
    std::array::from_fn(|i| num(&row[2 + i]) as f32)
}

fn rows(f: &Value, key: &str) -> Vec<Vec<Value>> {
    f[key]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r.as_array().expect("a row").clone())
        .collect()
}

fn boxes(f: &Value) -> (Vec<GtBox>, Vec<DetBox>) {
    let gts = rows(f, "gts")
        .iter()
        .map(|r| GtBox {
            image: index(&r[0]),
            class: index(&r[1]),
            bbox: bbox(r),
        })
        .collect();
    let dets = rows(f, "dets")
        .iter()
        .map(|r| DetBox {
            image: index(&r[0]),
            class: index(&r[1]),
            bbox: bbox(r),
            score: num(&r[6]) as f32,
        })
        .collect();
    (gts, dets)
}

#[test]
fn thresholds_are_pycocotools_own() {
    let f = fixture();
    let want: Vec<f64> = f["iou_thrs"].as_array().unwrap().iter().map(num).collect();
    assert_eq!(iou_thresholds().to_vec(), want);
}

#[test]
fn coco_map_matches_pycocotools() {
    let f = fixture();
    let nc = index(&f["nc"]);
    let (gts, dets) = boxes(&f);
    let r = coco_map(&gts, &dets, nc);
    let stats = &f["stats"];
    for (name, ours, theirs) in [
        ("mAP50-95", r.map50_95, num(&stats["map50_95"])),
        ("mAP50", r.map50, num(&stats["map50"])),
        ("mAP75", r.map75, num(&stats["map75"])),
    ] {
        assert!((ours - theirs).abs() < TOL, "{name}: {ours} vs {theirs}");
    }
    let per_class = f["ap_per_class"].as_array().unwrap();
    assert_eq!(per_class.len(), nc);
    assert!(
        per_class.iter().any(Value::is_null),
        "the fixture has a class without GT"
    );
    for (c, want) in per_class.iter().enumerate() {
        match (r.ap[c], want.as_array()) {
            (None, None) => assert!(r.ap50[c].is_none() && r.ap50_95[c].is_none()),
            (Some(ours), Some(theirs)) => {
                for (t, (o, w)) in ours.iter().zip(theirs).enumerate() {
                    let w = num(w);
                    assert!((o - w).abs() < TOL, "class {c}, IoU #{t}: {o} vs {w}");
                }
                assert_eq!(r.ap50[c], Some(ours[0]));
            }
            (ours, _) => panic!("class {c}: ours {ours:?}, pycocotools {want}"),
        }
    }
}

/// The same boxes scored as Ultralytics 8.4's `val` scores them (P, R, mAP50, mAP50-95 and each
/// class's), against its own functions run by `tools/reference/ultralytics_metrics.py`.
#[test]
fn ultralytics_metrics_equal_ultralytics() {
    use gradscope::detect::eval::det_metrics::det_metrics;
    let f = fixture();
    let (gts, mut dets) = boxes(&f);
    let want: Value =
        serde_json::from_str(include_str!("fixtures/ultralytics_metrics.json")).unwrap();
    // the scores the reference used: made distinct, as numpy orders ties in no defined way
    let scores = want["scores"].as_array().unwrap();
    assert_eq!(scores.len(), dets.len());
    for (d, s) in dets.iter_mut().zip(scores) {
        d.score = num(s) as f32;
    }
    let m = det_metrics(&gts, &dets, index(&f["nc"]));
    let close = |a: f64, b: f64, what: &str| assert!((a - b).abs() < 1e-6, "{what}: {a} vs {b}");
    close(m.p, num(&want["p"]), "P");
    close(m.r, num(&want["r"]), "R");
    close(m.map50, num(&want["map50"]), "mAP50");
    close(m.map50_95, num(&want["map50_95"]), "mAP50-95");
    for row in want["classes"].as_array().unwrap() {
        let c = index(&row[0]);
        let got = m.classes[c].unwrap_or_else(|| panic!("class {c} missing"));
        close(got.p, num(&row[1]), &format!("class {c} P"));
        close(got.r, num(&row[2]), &format!("class {c} R"));
        close(got.ap50, num(&row[3]), &format!("class {c} AP50"));
        close(got.ap50_95, num(&row[4]), &format!("class {c} AP50-95"));
    }
    // the curves the PR and F1/P/R-confidence plots draw, at the reference's sample points
    let at: Vec<usize> = want["curve_points"]
        .as_array()
        .unwrap()
        .iter()
        .map(index)
        .collect();
    let curves = want["curves"].as_array().unwrap();
    assert_eq!(curves.len(), m.curves.len());
    for (theirs, ours) in curves.iter().zip(&m.curves) {
        let c = index(&theirs["class"]);
        assert_eq!(ours.class, c);
        let f1 = ours.f1();
        for (name, mine) in [
            ("p", &ours.p),
            ("r", &ours.r),
            ("f1", &f1),
            ("pr", &ours.pr),
        ] {
            for (k, &i) in at.iter().enumerate() {
                let want = num(&theirs[name][k]);
                close(mine[i], want, &format!("class {c} {name} at point {i}"));
            }
        }
    }
}

/// A real run's predictions (the default `gradscope train` run's best weights on the tree tiles'
/// validation set, `val save_json=true`; `tools/reference/real_run_map.py`): COCO mAP as
/// gradscope computes it equals pycocotools' on the same 1 400 detections and 506 boxes.
#[test]
fn a_real_runs_predictions_score_as_pycocotools_scores_them() {
    let f: Value = serde_json::from_str(include_str!("fixtures/trees_val_run.json")).unwrap();
    let (gts, dets) = boxes(&f);
    assert_eq!((gts.len(), dets.len()), (506, 1400));
    let r = coco_map(&gts, &dets, 1);
    let stats = &f["stats"];
    for (name, ours, theirs) in [
        ("mAP50-95", r.map50_95, num(&stats["map50_95"])),
        ("mAP50", r.map50, num(&stats["map50"])),
        ("mAP75", r.map75, num(&stats["map75"])),
    ] {
        assert!(theirs > 0.01, "{name}: a run that found something");
        assert!((ours - theirs).abs() < TOL, "{name}: {ours} vs {theirs}");
    }
}
