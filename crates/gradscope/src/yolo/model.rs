//! YOLO26, layer by layer as in its Ultralytics yaml (the index of each layer in the comment),
//! scaled by n/s/m/l/x. See `docs/yolo26-architecture.md`.

use burn::module::Module;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Device, Tensor};

use super::blocks::{C2psa, C3k2, Conv, Sppf, Switches};
use super::head::{Detect, HeadOutput};
use crate::probe::Tap;

/// `[depth, width, max_channels]` of a scale.
pub fn scale(name: char) -> Option<(f64, f64, usize)> {
    match name {
        'n' => Some((0.50, 0.25, 1024)),
        's' => Some((0.50, 0.50, 1024)),
        'm' => Some((0.50, 1.00, 512)),
        'l' => Some((1.00, 1.00, 512)),
        'x' => Some((1.00, 1.50, 512)),
        _ => None,
    }
}

/// One yaml row: from, repeats, module and its arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum Spec {
    Conv {
        c2: usize,
        k: usize,
        s: usize,
    },
    C3k2 {
        c2: usize,
        c3k: bool,
        e: f64,
        attn: bool,
    },
    Sppf {
        c2: usize,
        k: usize,
        n: usize,
        shortcut: bool,
    },
    C2psa {
        c2: usize,
    },
    Upsample,
    Concat,
    Detect,
}

/// The YOLO26 detection layout: (from, repeats, spec).
pub fn yolo26_layout() -> Vec<(Vec<i64>, usize, Spec)> {
    use Spec::*;
    let c3k2 = |c2, c3k, e, attn| C3k2 { c2, c3k, e, attn };
    vec![
        (vec![-1], 1, Conv { c2: 64, k: 3, s: 2 }), // 0 P1/2
        (
            vec![-1],
            1,
            Conv {
                c2: 128,
                k: 3,
                s: 2,
            },
        ), // 1 P2/4
        (vec![-1], 2, c3k2(256, false, 0.25, false)), // 2
        (
            vec![-1],
            1,
            Conv {
                c2: 256,
                k: 3,
                s: 2,
            },
        ), // 3 P3/8
        (vec![-1], 2, c3k2(512, false, 0.25, false)), // 4
        (
            vec![-1],
            1,
            Conv {
                c2: 512,
                k: 3,
                s: 2,
            },
        ), // 5 P4/16
        (vec![-1], 2, c3k2(512, true, 0.5, false)), // 6
        (
            vec![-1],
            1,
            Conv {
                c2: 1024,
                k: 3,
                s: 2,
            },
        ), // 7 P5/32
        (vec![-1], 2, c3k2(1024, true, 0.5, false)), // 8
        (
            vec![-1],
            1,
            Sppf {
                c2: 1024,
                k: 5,
                n: 3,
                shortcut: true,
            },
        ), // 9
        (vec![-1], 2, C2psa { c2: 1024 }),          // 10
        (vec![-1], 1, Upsample),                    // 11
        (vec![-1, 6], 1, Concat),                   // 12 cat backbone P4
        (vec![-1], 2, c3k2(512, true, 0.5, false)), // 13
        (vec![-1], 1, Upsample),                    // 14
        (vec![-1, 4], 1, Concat),                   // 15 cat backbone P3
        (vec![-1], 2, c3k2(256, true, 0.5, false)), // 16 P3 out
        (
            vec![-1],
            1,
            Conv {
                c2: 256,
                k: 3,
                s: 2,
            },
        ), // 17
        (vec![-1, 13], 1, Concat),                  // 18 cat head P4
        (vec![-1], 2, c3k2(512, true, 0.5, false)), // 19 P4 out
        (
            vec![-1],
            1,
            Conv {
                c2: 512,
                k: 3,
                s: 2,
            },
        ), // 20
        (vec![-1, 10], 1, Concat),                  // 21 cat head P5
        (vec![-1], 1, c3k2(1024, true, 0.5, true)), // 22 P5 out
        (vec![16, 19, 22], 1, Detect),              // 23
    ]
}

#[derive(Module, Debug)]
pub enum Block {
    Conv(Conv),
    C3k2(C3k2),
    Sppf(Sppf),
    C2psa(C2psa),
    Detect(Detect),
}

/// One row of the layer table (`gradscope info`).
#[derive(Clone, Debug)]
pub struct LayerInfo {
    pub index: usize,
    pub from: Vec<i64>,
    pub repeats: usize,
    pub module: &'static str,
    pub args: String,
    pub out_channels: usize,
    /// Input pixels per output cell (1 for the image itself).
    pub stride: usize,
}

#[derive(Module, Debug)]
pub struct Yolo {
    /// Layer i is `model.{i}` (None for parameter-free layers: upsample, concat).
    pub model: Vec<Option<Block>>,
    #[module(skip)]
    pub from: Vec<Vec<i64>>,
    #[module(skip)]
    pub kinds: Vec<&'static str>,
}

fn resolve(f: i64, i: usize) -> usize {
    if f < 0 {
        (i as i64 + f) as usize
    } else {
        f as usize
    }
}

#[derive(Clone, Debug)]
pub struct YoloConfig {
    pub scale: char,
    pub nc: usize,
    pub switches: Switches,
}

impl YoloConfig {
    /// From a model name such as `yolo26n.yaml` (the scale letter follows `yolo26`).
    pub fn from_name(name: &str, nc: usize) -> Result<Self, String> {
        let stem = name.trim_end_matches(".yaml").trim_end_matches(".yml");
        let letter = stem.strip_prefix("yolo26").and_then(|r| r.chars().next());
        match letter.filter(|c| scale(*c).is_some()) {
            Some(s) => Ok(YoloConfig { scale: s, nc, switches: Switches::default() }),
            None => Err(format!("model={name}: expected yolo26n.yaml, yolo26s.yaml, yolo26m.yaml, yolo26l.yaml or yolo26x.yaml")),
        }
    }

    /// The layer table with scaled channels and repeats, without building anything.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let (depth, width, max_ch) = scale(self.scale).expect("valid scale");
        let mut ch: Vec<usize> = Vec::new();
        let mut strides: Vec<usize> = Vec::new();
        let mut out: Vec<LayerInfo> = Vec::new();
        for (i, (from, n, spec)) in yolo26_layout().into_iter().enumerate() {
            let n = if n > 1 {
                ((n as f64 * depth).round() as usize).max(1)
            } else {
                n
            };
            let c1 = if ch.is_empty() {
                3
            } else {
                ch[resolve(from[0], i)]
            };
            let scaled = |c: usize| (c.min(max_ch) as f64 * width / 8.0).ceil() as usize * 8;
            let (module, args, c2) = match spec.clone() {
                Spec::Conv { c2, k, s } => (
                    "Conv",
                    format!("[{c1}, {}, {k}, {s}]", scaled(c2)),
                    scaled(c2),
                ),
                Spec::C3k2 { c2, c3k, e, attn } => {
                    let c3k = c3k || matches!(self.scale, 'm' | 'l' | 'x');
                    (
                        "C3k2",
                        format!("[{c1}, {}, {n}, {c3k}, {e}, {attn}]", scaled(c2)),
                        scaled(c2),
                    )
                }
                Spec::Sppf {
                    c2,
                    k,
                    n: pools,
                    shortcut,
                } => (
                    "SPPF",
                    format!("[{c1}, {}, {k}, {pools}, {shortcut}]", scaled(c2)),
                    scaled(c2),
                ),
                Spec::C2psa { c2 } => ("C2PSA", format!("[{c1}, {}, {n}]", scaled(c2)), scaled(c2)),
                Spec::Upsample => ("Upsample", "[None, 2, 'nearest']".into(), c1),
                Spec::Concat => {
                    let c: usize = from.iter().map(|&f| ch[resolve(f, i)]).sum();
                    ("Concat", "[1]".into(), c)
                }
                Spec::Detect => {
                    let chs: Vec<usize> = from.iter().map(|&f| ch[resolve(f, i)]).collect();
                    ("Detect", format!("[{}, {chs:?}]", self.nc), 0)
                }
            };
            let s_in = if strides.is_empty() {
                1
            } else {
                strides[resolve(from[0], i)]
            };
            let stride = match &spec {
                Spec::Conv { s, .. } => s_in * s,
                Spec::Upsample => s_in / 2,
                _ => s_in,
            };
            ch.push(c2);
            strides.push(stride);
            out.push(LayerInfo {
                index: i,
                from,
                repeats: n,
                module,
                args,
                out_channels: c2,
                stride,
            });
        }
        out
    }

    pub fn init(&self, device: &Device) -> Yolo {
        let (depth, _, _) = scale(self.scale).expect("valid scale");
        let infos = self.layers();
        let sw = self.switches;
        let mut model = Vec::new();
        let mut kinds = Vec::new();
        let mut from = Vec::new();
        for ((i, (f, n, spec)), info) in yolo26_layout().into_iter().enumerate().zip(&infos) {
            let n = if n > 1 {
                ((n as f64 * depth).round() as usize).max(1)
            } else {
                n
            };
            let c1 = if i == 0 {
                3
            } else {
                infos[resolve(f[0], i)].out_channels
            };
            let c2 = info.out_channels;
            let block = match spec {
                Spec::Conv { k, s, .. } => {
                    Some(Block::Conv(Conv::new(c1, c2, k, s, 1, true, sw, device)))
                }
                Spec::C3k2 { c3k, e, attn, .. } => {
                    let c3k = c3k || matches!(self.scale, 'm' | 'l' | 'x');
                    Some(Block::C3k2(C3k2::new(c1, c2, n, c3k, e, attn, sw, device)))
                }
                Spec::Sppf {
                    k,
                    n: pools,
                    shortcut,
                    ..
                } => Some(Block::Sppf(Sppf::new(
                    c1, c2, k, pools, shortcut, sw, device,
                ))),
                Spec::C2psa { .. } => Some(Block::C2psa(C2psa::new(c1, n, sw, device))),
                Spec::Upsample | Spec::Concat => None,
                Spec::Detect => {
                    let chs: Vec<usize> = f
                        .iter()
                        .map(|&x| infos[resolve(x, i)].out_channels)
                        .collect();
                    Some(Block::Detect(Detect::new(
                        self.nc,
                        &chs,
                        &[8, 16, 32],
                        sw,
                        device,
                    )))
                }
            };
            model.push(block);
            kinds.push(info.module);
            from.push(f);
        }
        Yolo { model, from, kinds }
    }
}

/// Both heads' raw outputs and the P3/P4/P5 features they read.
pub struct YoloOutput {
    pub heads: HeadOutput,
    pub features: Vec<Tensor<4>>,
}

impl Yolo {
    /// `x`: `[B, 3, H, W]` with H, W multiples of 32. Every layer's output is a probe point
    /// named `model.{i}`.
    pub fn forward(&self, x: Tensor<4>, tap: &mut Tap) -> YoloOutput {
        tap.input(&x);
        let mut outs: Vec<Option<Tensor<4>>> = Vec::with_capacity(self.model.len());
        let mut x = x;
        for (i, (block, from)) in self.model.iter().zip(&self.from).enumerate() {
            let input = |k: usize| -> Tensor<4> {
                let j = resolve(from[k], i);
                outs[j].clone().expect("layer outputs are kept")
            };
            let y = match (block, self.kinds[i]) {
                (Some(Block::Detect(d)), _) => {
                    let feats: Vec<Tensor<4>> = (0..from.len()).map(input).collect();
                    let heads = d.forward(&feats);
                    return YoloOutput {
                        heads,
                        features: feats,
                    };
                }
                (Some(Block::Conv(m)), _) => m.forward(x),
                (Some(Block::C3k2(m)), _) => m.forward(x),
                (Some(Block::Sppf(m)), _) => m.forward(x),
                (Some(Block::C2psa(m)), _) => m.forward(x),
                (None, "Upsample") => {
                    let [_, _, h, w] = x.dims();
                    interpolate(
                        x,
                        InterpolateOptions::new(InterpolateMode::Nearest)
                            .with_output_size([2 * h, 2 * w]),
                    )
                }
                (None, _) => Tensor::cat((0..from.len()).map(input).collect(), 1),
            };
            let name = format!("model.{i}");
            x = tap.point(&name, self.kinds[i], None, None, y);
            outs.push(Some(x.clone()));
        }
        unreachable!("the layout ends with Detect")
    }
}
