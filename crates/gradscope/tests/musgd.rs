//! MuSGD against Ultralytics 8.4.190's own MuSGD: two steps on a 2-D and a 4-D weight (Muon +
//! SGD with decay) and a bias (SGD only) from fixed gradients (fixture by
//! `tools/reference/musgd.py`): equal to 1e-6 against the reference with its Newton–Schulz run in
//! f32, within 1e-4 of the reference as shipped (bfloat16 Newton–Schulz).

use burn::module::{Module, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Tensor, TensorData};
use gradscope::detect::optimize::optimizer::{newton_schulz, GroupLr, GroupOptimizer};
use serde_json::Value;

#[derive(Module, Debug)]
struct Net {
    weight2: Param<Tensor<2>>,
    weight4: Param<Tensor<4>>,
    bias: Param<Tensor<1>>,
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap()
}

#[test]
fn musgd_matches_ultralytics() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/musgd.json"),
    )
    .unwrap();
    let f: Value = serde_json::from_str(&text).unwrap();
    let device = gradscope::device();
    let init = f["init"].as_array().unwrap();
    let mut net = Net {
        weight2: Param::from_tensor(Tensor::from_data(
            TensorData::new(floats(&init[0]), [4, 6]),
            &device,
        )),
        weight4: Param::from_tensor(Tensor::from_data(
            TensorData::new(floats(&init[1]), [3, 2, 2, 2]),
            &device,
        )),
        bias: Param::from_tensor(Tensor::from_data(
            TensorData::new(floats(&init[2]), [3]),
            &device,
        )),
    };
    let mut opt = GroupOptimizer::musgd();
    let g = GroupLr {
        lr: [0.01; 3],
        momentum: 0.9,
        weight_decay: 5e-4,
    };
    for (step, grads) in f["grads"].as_array().unwrap().iter().enumerate() {
        let gr = grads.as_array().unwrap();
        // L = Σ w ⊙ g_fixed has gradient g_fixed
        let c2 = Tensor::<2>::from_data(TensorData::new(floats(&gr[0]), [4, 6]), &device);
        let c4 = Tensor::<4>::from_data(TensorData::new(floats(&gr[1]), [3, 2, 2, 2]), &device);
        let c1 = Tensor::<1>::from_data(TensorData::new(floats(&gr[2]), [3]), &device);
        let loss = (net.weight2.val() * c2).sum()
            + (net.weight4.val() * c4).sum()
            + (net.bias.val() * c1).sum();
        let grads = GradientsParams::from_grads(loss.backward(), &net);
        net = opt.step(net, grads, g);
        let got = [
            values(net.weight2.val()),
            values(net.weight4.val()),
            values(net.bias.val()),
        ];
        // Newton-Schulz in f32 on both sides: equal to rounding; as shipped (bf16): within its error
        for (key, tol) in [("after_f32", 1e-6f32), ("after", 1e-4)] {
            let want = f[key][step].as_array().unwrap();
            for (k, (o, w)) in got.iter().zip(want).enumerate() {
                for (a, b) in o.iter().zip(floats(w)) {
                    assert!(
                        (a - b).abs() < tol,
                        "{key} step {step}, tensor {k}: {a} vs Ultralytics {b}"
                    );
                }
            }
        }
    }
}

#[test]
fn newton_schulz_orthogonalises() {
    let device = gradscope::device().inner();
    let v: Vec<f32> = (0..48)
        .map(|i| ((i * 37 % 11) as f32 - 5.0) / 3.0)
        .collect();
    let x = Tensor::<2>::from_data(TensorData::new(v, [6, 8]), &device);
    let o = newton_schulz(x);
    // O Oᵀ has every eigenvalue near 1 (the quintic iteration leaves them within about [0.5, 1.5]²)
    let g = values(o.clone().matmul(o.transpose()));
    for i in 0..6 {
        assert!(
            g[i * 6 + i] > 0.2 && g[i * 6 + i] < 2.0,
            "diagonal {}",
            g[i * 6 + i]
        );
    }
}
