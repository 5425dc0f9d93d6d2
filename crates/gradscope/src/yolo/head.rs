//! YOLO26's detection head: per level a box branch (4 distances, reg_max = 1) and a class branch
//! with depthwise convs, in two copies: one-to-many (trained with top-k assignment, used with NMS)
//! and one-to-one (trained on detached features, used end to end without NMS).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::tensor::{Device, Tensor};

use super::blocks::{dwconv, Conv, Switches};
use crate::kernels::conv;

/// `[Conv 3×3, Conv 3×3, Conv2d 1×1 → 4]` (fields `s<i>` = sequence element i).
#[derive(Module, Debug)]
pub struct BoxBranch {
    pub s0: Conv,
    pub s1: Conv,
    pub s2: Conv2d,
}

/// `[[DWConv 3×3, Conv 1×1], [DWConv 3×3, Conv 1×1], Conv2d 1×1 → nc]`.
#[derive(Module, Debug)]
pub struct ClsBranch {
    pub s0: DwPair,
    pub s1: DwPair,
    pub s2: Conv2d,
}

#[derive(Module, Debug)]
pub struct DwPair {
    pub s0: Conv,
    pub s1: Conv,
}

impl BoxBranch {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        conv::conv2d(&self.s2, self.s1.forward(self.s0.forward(x)))
    }
}

impl ClsBranch {
    fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let x = self.s0.s1.forward(self.s0.s0.forward(x));
        let x = self.s1.s1.forward(self.s1.s0.forward(x));
        conv::conv2d(&self.s2, x)
    }
}

#[derive(Module, Debug)]
pub struct Detect {
    pub cv2: Vec<BoxBranch>,
    pub cv3: Vec<ClsBranch>,
    pub one2one_cv2: Vec<BoxBranch>,
    pub one2one_cv3: Vec<ClsBranch>,
    #[module(skip)]
    pub nc: usize,
    #[module(skip)]
    pub strides: Vec<usize>,
}

fn conv2d(c1: usize, c2: usize, bias: f32, device: &Device) -> Conv2d {
    let mut c = Conv2dConfig::new([c1, c2], [1, 1]).init(device);
    c.bias = Some(Param::from_tensor(Tensor::full([c2], bias, device)));
    c
}

/// Raw head outputs: `[B, 4 + nc, anchors]` per branch (distances l, t, r, b in stride units, class
/// logits), anchors ordered level by level, row-major within a level.
pub struct HeadOutput {
    pub one2many: Tensor<3>,
    pub one2one: Tensor<3>,
}

impl Detect {
    /// `ch`: channels of P3, P4, P5; `strides`: 8, 16, 32. Biases: box 2.0, class
    /// log(5 / nc / (640 / stride)²).
    pub fn new(nc: usize, ch: &[usize], strides: &[usize], sw: Switches, device: &Device) -> Self {
        let c2 = 16.max(ch[0] / 4).max(4);
        let c3 = ch[0].max(nc.min(100));
        let branches = || {
            let boxes: Vec<BoxBranch> = ch
                .iter()
                .map(|&x| BoxBranch {
                    s0: Conv::new(x, c2, 3, 1, 1, true, sw, device),
                    s1: Conv::new(c2, c2, 3, 1, 1, true, sw, device),
                    s2: conv2d(c2, 4, 2.0, device),
                })
                .collect();
            let cls: Vec<ClsBranch> = ch
                .iter()
                .zip(strides)
                .map(|(&x, &s)| {
                    let prior = (5.0 / nc as f64 / (640.0 / s as f64).powi(2)).ln() as f32;
                    ClsBranch {
                        s0: DwPair {
                            s0: dwconv(x, x, 3, sw, device),
                            s1: Conv::new(x, c3, 1, 1, 1, true, sw, device),
                        },
                        s1: DwPair {
                            s0: dwconv(c3, c3, 3, sw, device),
                            s1: Conv::new(c3, c3, 1, 1, 1, true, sw, device),
                        },
                        s2: conv2d(c3, nc, prior, device),
                    }
                })
                .collect();
            (boxes, cls)
        };
        let (cv2, cv3) = branches();
        let (one2one_cv2, one2one_cv3) = branches();
        Detect {
            cv2,
            cv3,
            one2one_cv2,
            one2one_cv3,
            nc,
            strides: strides.to_vec(),
        }
    }

    fn branch(boxes: &[BoxBranch], cls: &[ClsBranch], feats: &[Tensor<4>]) -> Tensor<3> {
        let per_level: Vec<Tensor<3>> = feats
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let y = crate::kernels::cat::cat(
                    vec![boxes[i].forward(f.clone()), cls[i].forward(f.clone())],
                    1,
                );
                let [b, c, h, w] = y.dims();
                y.reshape([b, c, h * w])
            })
            .collect();
        crate::kernels::cat::cat(per_level, 2)
    }

    /// Both branches; the one-to-one branch reads the features detached, so its loss trains only
    /// its own weights.
    pub fn forward(&self, feats: &[Tensor<4>]) -> HeadOutput {
        let detached: Vec<Tensor<4>> = feats.iter().map(|f| f.clone().detach()).collect();
        HeadOutput {
            one2many: Self::branch(&self.cv2, &self.cv3, feats),
            one2one: Self::branch(&self.one2one_cv2, &self.one2one_cv3, &detached),
        }
    }
}
