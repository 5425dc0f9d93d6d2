use burn::backend::flex::FlexTensor;
use burn::backend::ops::ModuleOps;
use burn::backend::Flex;
use burn::tensor::ops::ConvOptions;
use burn::tensor::TensorData;
use std::time::Instant;

fn t(shape: [usize; 4]) -> FlexTensor {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
        .collect();
    FlexTensor::from_data(TensorData::new(v, shape))
}

fn main() {
    // `convparts own`: only gradscope's kernels (flex's weight gradient takes seconds)
    let own_only = std::env::args().nth(1).as_deref() == Some("own");
    gradscope::on_workers(|| run(own_only));
}

/// Milliseconds per call of `f`, after one warm-up call.
fn time<R>(f: impl Fn() -> R) -> f64 {
    let _ = f();
    let t0 = Instant::now();
    for _ in 0..5 {
        let _ = f();
    }
    t0.elapsed().as_secs_f64() * 1000.0 / 5.0
}

fn run(own_only: bool) {
    // (N, Cin, H, Cout, k, s, groups)
    let cases = [
        (4, 3, 640, 16, 3, 2, 1),
        (4, 16, 320, 32, 3, 2, 1),
        (4, 32, 160, 32, 1, 1, 1),
        (4, 16, 160, 16, 3, 1, 1),
        (4, 64, 80, 64, 3, 2, 1),
        (4, 64, 80, 64, 3, 1, 64),
        (4, 128, 40, 128, 1, 1, 1),
        (4, 256, 20, 256, 3, 1, 1),
    ];
    for (n, cin, h, cout, k, s, g) in cases {
        let x = t([n, cin, h, h]);
        let w = t([cout, cin / g, k, k]);
        let p = k / 2;
        let opt = ConvOptions::new([s, s], [p, p], [1, 1], g);
        let y = <Flex as ModuleOps<Flex>>::conv2d(x.clone(), w.clone(), None, opt.clone());
        let p = k / 2;
        let geom = gradscope::kernels::conv::Geom {
            n,
            cin,
            h,
            w: h,
            cout,
            kh: k,
            kw: k,
            stride: [s, s],
            pad: [p, p],
            dilation: [1, 1],
            groups: g,
        };
        let xs = x.as_slice::<f32>().unwrap().to_vec();
        let ys = y.as_slice::<f32>().unwrap().to_vec();
        let ws = w.as_slice::<f32>().unwrap().to_vec();
        let own_dw = time(|| {
            gradscope::kernels::conv::weight_grad(
                gradscope::kernels::conv::Images::dense(&xs, &geom),
                &ys,
                &geom,
            )
        });
        let own_f = time(|| {
            gradscope::kernels::conv::forward_gemm(
                gradscope::kernels::conv::Images::dense(&xs, &geom),
                &ws,
                &geom,
            )
        });
        let own_dx = time(|| gradscope::kernels::conv::input_grad(&ws, &ys, &geom));
        println!("N{n} {cin}->{cout} {h}px k{k} s{s} g{g}: own fwd {own_f:.2} ms, dx {own_dx:.2} ms, dw {own_dw:.2} ms");
        if own_only {
            continue;
        }
        let fwd =
            time(|| <Flex as ModuleOps<Flex>>::conv2d(x.clone(), w.clone(), None, opt.clone()));
        let bx = time(|| {
            <Flex as ModuleOps<Flex>>::conv2d_x_backward(
                x.clone(),
                w.clone(),
                y.clone(),
                opt.clone(),
            )
        });
        let bw = time(|| {
            <Flex as ModuleOps<Flex>>::conv2d_weight_backward(
                x.clone(),
                w.clone(),
                y.clone(),
                opt.clone(),
            )
        });
        let oh = (h + 2 * p - k) / s + 1;
        let gflop = 2.0 * (n * cout * oh * oh * (cin / g) * k * k) as f64 / 1e9;
        println!(
            "   flex: fwd {fwd:.1} ms ({:.0} GF/s)  dx {bx:.1} ({:.0})  dw {bw:.1} ({:.0})",
            gflop / fwd * 1e3,
            gflop / bx * 1e3,
            gflop / bw * 1e3
        );
    }
}
