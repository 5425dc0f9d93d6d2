//! YOLO26's building blocks, named as Ultralytics names them so that weights map one to one.
//! The structure of each block is described in `docs/yolo26-architecture.md`.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, PaddingConfig2d};
use burn::tensor::activation::softmax;
use burn::tensor::{Device, Tensor};

use crate::activation::Activation;
use crate::kernels::add::add;
use crate::kernels::bn_act::{self, Act};
use crate::kernels::cat::{cat, narrow};
use crate::kernels::conv;
use crate::kernels::pool::max_pool_same;

/// The network-wide switches an ablation can flip.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Switches {
    pub act: Activation,
    pub bn: bool,
    pub shortcut: bool,
}

impl Default for Switches {
    fn default() -> Self {
        Switches {
            act: Activation::Silu,
            bn: true,
            shortcut: true,
        }
    }
}

/// Conv2d (no bias, padding k/2, groups) + BatchNorm (eps 1e-3, momentum 0.03) + activation.
#[derive(Module, Debug)]
pub struct Conv {
    pub conv: Conv2d,
    pub bn: Option<BatchNorm>,
    #[module(skip)]
    pub act: Option<Activation>,
}

impl Conv {
    /// `act = false`: no activation (a linear projection). The arguments mirror Ultralytics'
    /// `Conv(c1, c2, k, s, g, act)` on purpose.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        k: usize,
        s: usize,
        g: usize,
        act: bool,
        sw: Switches,
        device: &Device,
    ) -> Self {
        let p = k / 2;
        let conv = Conv2dConfig::new([c1, c2], [k, k])
            .with_stride([s, s])
            .with_groups(g)
            .with_padding(PaddingConfig2d::Explicit(p, p, p, p))
            .with_bias(!sw.bn)
            .init(device);
        let bn = sw.bn.then(|| {
            BatchNormConfig::new(c2)
                .with_epsilon(1e-3)
                .with_momentum(0.03)
                .init(device)
        });
        Conv {
            conv,
            bn,
            act: act.then_some(sw.act),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = conv::conv2d(&self.conv, x);
        match (&self.bn, self.act) {
            // BatchNorm + SiLU (or no activation) in one fused pass on flex.
            (Some(bn), Some(Activation::Silu)) => bn_act::batch_norm_act(bn, y, Act::Silu),
            (Some(bn), None) => bn_act::batch_norm_act(bn, y, Act::Identity),
            (Some(bn), Some(a)) => a.forward(bn_act::batch_norm_act(bn, y, Act::Identity)),
            (None, Some(a)) => a.forward(y),
            (None, None) => y,
        }
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Depthwise Conv: groups = gcd(c1, c2).
pub fn dwconv(c1: usize, c2: usize, k: usize, sw: Switches, device: &Device) -> Conv {
    Conv::new(c1, c2, k, 1, gcd(c1, c2), true, sw, device)
}

/// Two convs with a residual add when the channel counts agree.
#[derive(Module, Debug)]
pub struct Bottleneck {
    pub cv1: Conv,
    pub cv2: Conv,
    #[module(skip)]
    pub add: bool,
}

impl Bottleneck {
    pub fn new(c1: usize, c2: usize, e: f64, k: usize, sw: Switches, device: &Device) -> Self {
        let c_ = (c2 as f64 * e) as usize;
        Bottleneck {
            cv1: Conv::new(c1, c_, k, 1, 1, true, sw, device),
            cv2: Conv::new(c_, c2, k, 1, 1, true, sw, device),
            add: sw.shortcut && c1 == c2,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.cv2.forward(self.cv1.forward(x.clone()));
        if self.add {
            add(x, y)
        } else {
            y
        }
    }
}

/// CSP block with two bottlenecks: cv3(cat(m(cv1(x)), cv2(x))).
#[derive(Module, Debug)]
pub struct C3k {
    pub cv1: Conv,
    pub cv2: Conv,
    pub cv3: Conv,
    pub m: Vec<Bottleneck>,
}

impl C3k {
    pub fn new(c1: usize, c2: usize, n: usize, sw: Switches, device: &Device) -> Self {
        let c_ = c2 / 2;
        C3k {
            cv1: Conv::new(c1, c_, 1, 1, 1, true, sw, device),
            cv2: Conv::new(c1, c_, 1, 1, 1, true, sw, device),
            cv3: Conv::new(2 * c_, c2, 1, 1, 1, true, sw, device),
            m: (0..n)
                .map(|_| Bottleneck::new(c_, c_, 1.0, 3, sw, device))
                .collect(),
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut y = self.cv1.forward(x.clone());
        for b in &self.m {
            y = b.forward(y);
        }
        self.cv3.forward(cat(vec![y, self.cv2.forward(x)], 1))
    }
}

/// Multi-head self-attention over the H·W positions, with a depthwise positional conv on v.
#[derive(Module, Debug)]
pub struct Attention {
    pub qkv: Conv,
    pub proj: Conv,
    pub pe: Conv,
    #[module(skip)]
    pub heads: usize,
    #[module(skip)]
    pub key_dim: usize,
    #[module(skip)]
    pub head_dim: usize,
}

impl Attention {
    pub fn new(dim: usize, heads: usize, sw: Switches, device: &Device) -> Self {
        let head_dim = dim / heads;
        let key_dim = head_dim / 2;
        Attention {
            qkv: Conv::new(dim, dim + 2 * key_dim * heads, 1, 1, 1, false, sw, device),
            proj: Conv::new(dim, dim, 1, 1, 1, false, sw, device),
            pe: Conv::new(dim, dim, 3, 1, dim, false, sw, device),
            heads,
            key_dim,
            head_dim,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, c, h, w] = x.dims();
        let n = h * w;
        let (kd, hd) = (self.key_dim, self.head_dim);
        let qkv = self.qkv.forward(x).reshape([b, self.heads, 2 * kd + hd, n]);
        let v = narrow(&qkv, 2, 2 * kd, hd);
        let scale = (kd as f64).powf(-0.5);
        let out = crate::kernels::attention::attention(&qkv, kd, hd, scale as f32)
            .unwrap_or_else(|| {
                let q = narrow(&qkv, 2, 0, kd);
                let k = narrow(&qkv, 2, kd, kd);
                // [b, heads, n, n]: softmax over the keys
                let attn = softmax(q.mul_scalar(scale).swap_dims(2, 3).matmul(k), 3);
                v.clone().matmul(attn.swap_dims(2, 3))
            })
            .reshape([b, c, h, w]);
        let pos = self.pe.forward(v.reshape([b, c, h, w]));
        self.proj.forward(add(out, pos))
    }
}

/// Attention then a two-conv feed-forward, each with a residual add.
#[derive(Module, Debug)]
pub struct PsaBlock {
    pub attn: Attention,
    pub ffn: Vec<Conv>,
    #[module(skip)]
    pub add: bool,
}

impl PsaBlock {
    pub fn new(c: usize, sw: Switches, device: &Device) -> Self {
        PsaBlock {
            attn: Attention::new(c, (c / 64).max(1), sw, device),
            ffn: vec![
                Conv::new(c, 2 * c, 1, 1, 1, true, sw, device),
                Conv::new(2 * c, c, 1, 1, 1, false, sw, device),
            ],
            add: sw.shortcut,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let a = self.attn.forward(x.clone());
        let x = if self.add { add(x, a) } else { a };
        let f = self.ffn[1].forward(self.ffn[0].forward(x.clone()));
        if self.add {
            add(x, f)
        } else {
            f
        }
    }
}

/// The inner block of a C3k2. (Built once per model, so the variants' size difference is moot.)
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Inner {
    Bottleneck(Bottleneck),
    C3k(C3k),
    /// `[Bottleneck, PSABlock]` in sequence.
    Attn(AttnPair),
}

/// A Bottleneck followed by a PSABlock (Ultralytics' `nn.Sequential` of the two). Fields named
/// `s<i>` are the i-th element of a sequence: `s0` ↔ `.0`.
#[derive(Module, Debug)]
pub struct AttnPair {
    pub s0: Bottleneck,
    pub s1: PsaBlock,
}

impl Inner {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        match self {
            Inner::Bottleneck(b) => b.forward(x),
            Inner::C3k(c) => c.forward(x),
            Inner::Attn(pair) => pair.s1.forward(pair.s0.forward(x)),
        }
    }
}

/// C2f with Bottleneck, C3k or attention inner blocks.
#[derive(Module, Debug)]
pub struct C3k2 {
    pub cv1: Conv,
    pub cv2: Conv,
    pub m: Vec<Inner>,
    #[module(skip)]
    pub c: usize,
}

impl C3k2 {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c1: usize,
        c2: usize,
        n: usize,
        c3k: bool,
        e: f64,
        attn: bool,
        sw: Switches,
        device: &Device,
    ) -> Self {
        let c = (c2 as f64 * e) as usize;
        let m = (0..n)
            .map(|_| {
                if attn {
                    Inner::Attn(AttnPair {
                        s0: Bottleneck::new(c, c, 0.5, 3, sw, device),
                        s1: PsaBlock::new(c, sw, device),
                    })
                } else if c3k {
                    Inner::C3k(C3k::new(c, c, 2, sw, device))
                } else {
                    Inner::Bottleneck(Bottleneck::new(c, c, 0.5, 3, sw, device))
                }
            })
            .collect();
        C3k2 {
            cv1: Conv::new(c1, 2 * c, 1, 1, 1, true, sw, device),
            cv2: Conv::new((2 + n) * c, c2, 1, 1, 1, true, sw, device),
            m,
            c,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.cv1.forward(x);
        let c = self.c;
        let mut ys = vec![narrow(&y, 1, 0, c), narrow(&y, 1, c, c)];
        for m in &self.m {
            let next = m.forward(ys.last().expect("two halves").clone());
            ys.push(next);
        }
        self.cv2.forward(cat(ys, 1))
    }
}

/// Spatial pyramid pooling, fast: three chained k×k max-pools (stride 1, padding that never wins).
#[derive(Module, Debug)]
pub struct Sppf {
    pub cv1: Conv,
    pub cv2: Conv,
    #[module(skip)]
    pub k: usize,
    #[module(skip)]
    pub n: usize,
    #[module(skip)]
    pub add: bool,
}

impl Sppf {
    pub fn new(
        c1: usize,
        c2: usize,
        k: usize,
        n: usize,
        shortcut: bool,
        sw: Switches,
        device: &Device,
    ) -> Self {
        let c_ = c1 / 2;
        Sppf {
            cv1: Conv::new(c1, c_, 1, 1, 1, false, sw, device),
            cv2: Conv::new(c_ * (n + 1), c2, 1, 1, 1, true, sw, device),
            k,
            n,
            add: shortcut && sw.shortcut && c1 == c2,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let mut ys = vec![self.cv1.forward(x.clone())];
        for _ in 0..self.n {
            let next = max_pool_same(ys.last().expect("cv1 output").clone(), self.k);
            ys.push(next);
        }
        let y = self.cv2.forward(cat(ys, 1));
        if self.add {
            add(y, x)
        } else {
            y
        }
    }
}

/// CSP around PSA blocks: cv2(cat(a, m(b))) with [a, b] = split(cv1(x)).
#[derive(Module, Debug)]
pub struct C2psa {
    pub cv1: Conv,
    pub cv2: Conv,
    pub m: Vec<PsaBlock>,
    #[module(skip)]
    pub c: usize,
}

impl C2psa {
    pub fn new(c1: usize, n: usize, sw: Switches, device: &Device) -> Self {
        let c = c1 / 2;
        C2psa {
            cv1: Conv::new(c1, 2 * c, 1, 1, 1, true, sw, device),
            cv2: Conv::new(2 * c, c1, 1, 1, 1, true, sw, device),
            m: (0..n).map(|_| PsaBlock::new(c, sw, device)).collect(),
            c,
        }
    }

    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let y = self.cv1.forward(x);
        let c = self.c;
        let a = narrow(&y, 1, 0, c);
        let mut t = narrow(&y, 1, c, c);
        for m in &self.m {
            t = m.forward(t);
        }
        self.cv2.forward(cat(vec![a, t], 1))
    }
}
