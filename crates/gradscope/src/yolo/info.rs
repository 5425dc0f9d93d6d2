//! `gradscope info`: the layer table of a YOLO26 model — index, from, repeats, parameters, module,
//! arguments, output shape — with totals and GFLOPs.

use super::model::{Yolo, YoloConfig};
use crate::probe::params::snapshot;
use crate::report::html::Table;

pub struct Info {
    pub table: Table,
    pub layers: usize,
    pub params: u64,
    /// 2 × multiply-accumulates of every convolution at `imgsz` (the count Ultralytics' profiler
    /// reports); attention's matrix products are not included.
    pub gflops: f64,
}

/// Which detection level a Detect parameter belongs to (`cv2.{level}…`).
fn level(path: &str) -> Option<usize> {
    let segs: Vec<&str> = path.split('.').collect();
    segs.iter()
        .position(|s| matches!(*s, "cv2" | "cv3" | "one2one_cv2" | "one2one_cv3"))
        .and_then(|i| segs.get(i + 1))
        .and_then(|s| s.parse().ok())
}

pub fn info(cfg: &YoloConfig, model: &Yolo, imgsz: usize) -> Info {
    let layers = cfg.layers();
    let mut params = vec![0u64; layers.len()];
    let mut flops = 0f64;
    let detect_strides = [8usize, 16, 32];
    for p in snapshot(model, None) {
        let layer: usize = p
            .path
            .split('.')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let numel: usize = p.shape.iter().product();
        params[layer] += numel as u64;
        if p.shape.len() == 4 {
            let stride = match level(&p.path) {
                Some(l) => detect_strides[l],
                None => layers[layer].stride,
            };
            let cells = (imgsz / stride).pow(2);
            flops += 2.0 * numel as f64 * cells as f64;
        }
    }
    let rows = layers
        .iter()
        .map(|l| {
            let from = if l.from.len() == 1 {
                l.from[0].to_string()
            } else {
                format!("{:?}", l.from)
            };
            let shape = if l.module == "Detect" {
                "-".to_string()
            } else {
                format!(
                    "{}×{}×{}",
                    l.out_channels,
                    imgsz / l.stride,
                    imgsz / l.stride
                )
            };
            vec![
                l.index.to_string(),
                from,
                l.repeats.to_string(),
                params[l.index].to_string(),
                l.module.to_string(),
                l.args.clone(),
                shape,
            ]
        })
        .collect();
    let columns = ["", "from", "n", "params", "module", "arguments", "output"];
    Info {
        table: Table {
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows,
        },
        layers: layers.len(),
        params: params.iter().sum(),
        gflops: flops / 1e9,
    }
}
