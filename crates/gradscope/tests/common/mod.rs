//! Helpers shared by the integration tests.
#![allow(dead_code)]

use burn::module::Param;
use burn::tensor::{Int, Tensor, TensorData};
use gradscope::nn::mlp::Mlp;
use gradscope::probe::{Fault, Probe, ProbeConfig, StepRecord, Tap};
use gradscope::train::loss::cross_entropy;

pub fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E3779B97F4A7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
    z ^ (z >> 31)
}

/// n values uniform in [−scale, scale): the same formula as tools/reference/mlp_grads.py.
pub fn det(p: u64, n: usize, scale: f64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| {
            let h = splitmix(p.wrapping_mul(1_000_003).wrapping_add(i));
            let u = (h >> 40) as f64 / 16777216.0;
            (scale * (2.0 * u - 1.0)) as f32
        })
        .collect()
}

pub fn tensor2(v: Vec<f32>, shape: [usize; 2]) -> Tensor<2> {
    Tensor::from_data(TensorData::new(v, shape), &gradscope::device())
}

pub fn labels(n: usize, classes: usize) -> Tensor<1, Int> {
    let y: Vec<i64> = (0..n as i64)
        .map(|b| (b * 7 + 3) % classes as i64)
        .collect();
    Tensor::from_data(TensorData::new(y, [n]), &gradscope::device())
}

/// Replaces every linear layer's weights with `det` values (layer p: weight 2p, bias 2p+1).
pub fn set_det_weights(mut m: Mlp, scale: f64) -> Mlp {
    let dev = gradscope::device();
    let set = |l: &mut burn::nn::Linear, p: u64| {
        let [i, o] = l.weight.dims();
        l.weight = Param::from_tensor(Tensor::from_data(
            TensorData::new(det(2 * p, i * o, scale), [i, o]),
            &dev,
        ));
        l.bias = Some(Param::from_tensor(Tensor::from_data(
            TensorData::new(det(2 * p + 1, o, scale), [o]),
            &dev,
        )));
    };
    let n = m.layers.len();
    for (p, b) in m.layers.iter_mut().enumerate() {
        set(&mut b.linear, p as u64);
    }
    set(&mut m.head, n as u64);
    m
}

/// One probed forward/backward pass (no optimizer step): the loss and the probe's record.
pub fn probe_once(
    model: &Mlp,
    x: &Tensor<2>,
    y: &Tensor<1, Int>,
    fault: Option<Fault>,
) -> (f64, StepRecord) {
    let mut probe = Probe::new(ProbeConfig::default());
    let mut tap = Tap::on().with_fault(fault);
    let loss = cross_entropy(model.forward(x.clone(), &mut tap), y.clone());
    let lv = loss.clone().into_scalar::<f64>();
    let grads = loss.backward();
    let pending = probe.after_backward(0, 0, lv, tap, model, &grads);
    probe
        .after_step(pending, model, 0.0)
        .expect("no file to write");
    (lv, probe.into_records().remove(0))
}

/// The loss only, with an optional fault/nudge.
pub fn loss_of(model: &Mlp, x: &Tensor<2>, y: &Tensor<1, Int>, fault: Option<Fault>) -> f64 {
    let mut tap = Tap::off().with_fault(fault);
    cross_entropy(model.forward(x.clone(), &mut tap), y.clone()).into_scalar::<f64>()
}

/// Σ v and Σ v·sin(0.1·i + 0.3) of both raw head outputs (one-to-many, one-to-one) of `model`
/// in eval mode on the closed-form 1×3×64×64 input of `tools/reference/head_branches.py`,
/// x[i] = 0.5 + 0.45·sin(0.7·i)·cos(0.013·i).
pub fn head_sums(model: &gradscope::yolo::model::Yolo) -> [(f64, f64); 2] {
    use burn::module::Module;
    let n = 3 * 64 * 64;
    let x: Vec<f32> = (0..n)
        .map(|i| {
            let i = i as f64;
            (0.5 + 0.45 * (0.7 * i).sin() * (0.013 * i).cos()) as f32
        })
        .collect();
    let dev = gradscope::device().inner();
    let x = Tensor::<4>::from_data(TensorData::new(x, [1, 3, 64, 64]), &dev);
    let out = model.valid().forward(x, &mut Tap::off());
    [out.heads.one2many, out.heads.one2one].map(|t| {
        let v: Vec<f32> = t.into_data().convert::<f32>().try_into_vec().unwrap();
        let w = v
            .iter()
            .enumerate()
            .map(|(i, &x)| x as f64 * (0.1 * i as f64 + 0.3).sin())
            .sum();
        (v.iter().map(|&x| x as f64).sum(), w)
    })
}

/// Serves `body` once over loopback HTTP (any path) and returns `http://127.0.0.1:<port>`: a
/// download server for tests that must not touch the network.
pub fn serve_once(body: Vec<u8>) -> String {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://127.0.0.1:{port}")
}

/// The device the reference checks run on: the CPU, or the one `GRADSCOPE_TEST_DEVICE` names
/// (`0`: a GPU, in a test binary built with `--features gpu`; `tools/gpu_check.sh`).
pub fn test_device() -> burn::tensor::Device {
    if let Ok(spec) = std::env::var("GRADSCOPE_TEST_DEVICE") {
        let spec = gradscope::devices::DeviceSpec::parse(&spec)
            .unwrap_or_else(|e| panic!("GRADSCOPE_TEST_DEVICE={spec}: {e}"));
        gradscope::devices::select(&spec)
            .unwrap_or_else(|e| panic!("GRADSCOPE_TEST_DEVICE={}: {e}", spec.show()));
    }
    gradscope::device()
}
