//! YOLO26 built layer by layer from its Ultralytics-format yaml (`embedded/yolo26.yaml`), scaled
//! by n/s/m/l/x. See `docs/yolo26-architecture.md`.

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::blocks::{C2psa, C3k2, Conv, Sppf, Switches};
use super::config::{scale_from_name, ModelDef, Spec};
use super::head::{Detect, HeadOutput};
use crate::probe::Tap;

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
    pub def: ModelDef,
}

impl YoloConfig {
    /// From `model=`: a yaml file that exists (its scale from the name, e.g. `my-yolo26s.yaml`,
    /// else its first scale), or one of the embedded `yolo26{n,s,m,l,x}.yaml`.
    pub fn from_name(name: &str, nc: usize) -> Result<Self, String> {
        let path = std::path::Path::new(name);
        let def = if path.is_file() {
            ModelDef::from_file(path)?
        } else if path
            .file_name()
            .and_then(|f| f.to_str())
            .is_some_and(|f| f.starts_with("yolo26"))
            && scale_from_name(name).is_some()
        {
            ModelDef::yolo26()
        } else {
            return Err(format!(
                "model={name}: no such file, and not one of the built-in yolo26n.yaml, yolo26s.yaml, yolo26m.yaml, yolo26l.yaml, yolo26x.yaml"
            ));
        };
        let scale = match scale_from_name(name).filter(|s| def.scale(*s).is_some()) {
            Some(s) => s,
            None => def
                .scales
                .first()
                .map(|(c, _)| *c)
                .ok_or_else(|| format!("model={name}: the yaml defines no scales"))?,
        };
        Ok(YoloConfig {
            scale,
            nc,
            switches: Switches::default(),
            def,
        })
    }

    /// The layer table with scaled channels and repeats, without building anything.
    pub fn layers(&self) -> Vec<LayerInfo> {
        let (depth, width, max_ch) = self.def.scale(self.scale).expect("the scale was checked");
        let mut ch: Vec<usize> = Vec::new();
        let mut strides: Vec<usize> = Vec::new();
        let mut out: Vec<LayerInfo> = Vec::new();
        for (i, (from, n, spec)) in self.def.layout.iter().cloned().enumerate() {
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
        let (depth, _, _) = self.def.scale(self.scale).expect("the scale was checked");
        let infos = self.layers();
        let sw = self.switches;
        let mut model = Vec::new();
        let mut kinds = Vec::new();
        let mut from = Vec::new();
        for ((i, (f, n, spec)), info) in self.def.layout.iter().cloned().enumerate().zip(&infos) {
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
                (None, "Upsample") => crate::kernels::pool::upsample2(x),
                (None, _) => crate::kernels::cat::cat((0..from.len()).map(input).collect(), 1),
            };
            let name = format!("model.{i}");
            // layers whose output the head reads are marked for the diagnosis
            let feeds_head = self
                .from
                .last()
                .is_some_and(|f| f.iter().any(|&j| resolve(j, self.from.len() - 1) == i));
            x = if feeds_head {
                tap.point(&name, &format!("output:{}", self.kinds[i]), None, None, y)
            } else {
                tap.point(&name, self.kinds[i], None, None, y)
            };
            outs.push(Some(x.clone()));
        }
        unreachable!("the layout ends with Detect")
    }
}
