//! The labs' optimizers against PyTorch: four steps of SGD, SGD with momentum, Adam and AdamW on
//! one weight, with the learning rate changing every step, without clipping and with the
//! gradient clipped by norm and by value first (`tools/reference/lab_optim.py`, PyTorch 2.15).

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use gradscope::train::optim::Clip;
use gradscope::train::OptimizerKind;

#[derive(Module, Debug)]
struct One {
    w: Param<Tensor<1>>,
}

#[derive(serde::Deserialize)]
struct Reference {
    w0: Vec<f32>,
    grads: Vec<Vec<f32>>,
    lrs: Vec<f64>,
    clip_norm: f64,
    clip_value: f64,
    after: std::collections::HashMap<String, Vec<Vec<f32>>>,
}

fn values(t: Tensor<1>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn lab_optimizers_match_pytorch() {
    let r: Reference =
        serde_json::from_str(include_str!("fixtures/lab_optim.json")).expect("fixture");
    let device = gradscope::device();
    let n = r.w0.len();
    for kind in OptimizerKind::ALL {
        for clip in ["none", "norm", "value"] {
            let key = format!("{}/{clip}", kind.name());
            let want = &r.after[&key];
            let mut model = One {
                w: Param::from_tensor(Tensor::from_data(
                    TensorData::new(r.w0.clone(), [n]),
                    &device,
                )),
            };
            let mut opt = kind.build();
            for (step, (g, &lr)) in r.grads.iter().zip(&r.lrs).enumerate() {
                let norm = g
                    .iter()
                    .map(|&x| (x as f64) * (x as f64))
                    .sum::<f64>()
                    .sqrt();
                let c = match clip {
                    "norm" if norm > r.clip_norm => Clip {
                        scale: (r.clip_norm / norm) as f32,
                        limit: f32::INFINITY,
                    },
                    "value" => Clip {
                        scale: 1.0,
                        limit: r.clip_value as f32,
                    },
                    _ => Clip::NONE,
                };
                let mut grads = GradientsParams::new();
                let gt = Tensor::<1>::from_data(TensorData::new(g.clone(), [n]), &device);
                grads.register::<1>(model.w.id, gt.inner());
                let measured;
                (model, measured) = opt.step_measured(lr, model, grads, c, true);
                // the pass measured the gradient as it came, before clipping
                assert!(
                    (measured[0].g_sq.expect("updated").sqrt() - norm).abs() <= 1e-6 * norm,
                    "{key}"
                );
                let got = values(model.w.val());
                for (i, (a, b)) in got.iter().zip(&want[step]).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-6 + 1e-5 * b.abs(),
                        "{key} step {step} [{i}]: {a} vs PyTorch {b}"
                    );
                }
            }
        }
    }
}
