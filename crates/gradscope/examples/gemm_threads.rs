//! Why `gradscope::on_workers` exists: the same chain of 20 dense-layer products
//! (128×256 · 256×256, then a cheap element-wise pass, as in the MLP benchmark) on one thread,
//! split over the pool from the main thread, and split from inside `on_workers`.
//!
//!     cargo run --release -p gradscope --example gemm_threads

use std::time::Instant;

const M: usize = 128;
const K: usize = 256;
const N: usize = 256;
const LAYERS: usize = 20;

fn chain(parallel: bool) -> f64 {
    let ws: Vec<Vec<f32>> = (0..LAYERS).map(|i| vec![0.001 * i as f32; K * N]).collect();
    let mut acts: Vec<Vec<f32>> = (0..=LAYERS).map(|_| vec![0.5f32; M * K]).collect();
    let par = if parallel {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    let reps = 200;
    let t = Instant::now();
    for _ in 0..reps {
        for (i, w) in ws.iter().enumerate() {
            let (done, rest) = acts.split_at_mut(i + 1);
            let (x, y) = (&done[i], &mut rest[0]);
            // SAFETY: x is M×K, w is K×N and y is M×N, all row-major with the strides given.
            unsafe {
                gemm::gemm(
                    M,
                    N,
                    K,
                    y.as_mut_ptr(),
                    1,
                    N as isize,
                    false,
                    x.as_ptr(),
                    1,
                    K as isize,
                    w.as_ptr(),
                    1,
                    N as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    par,
                )
            };
            for v in y.iter_mut() {
                *v = (*v * 0.01).max(0.0);
            }
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / (reps * LAYERS) as f64
}

fn main() {
    println!(
        "one thread:                        {:6.1} µs per layer",
        chain(false)
    );
    println!(
        "split, issued from the main thread: {:6.1} µs per layer",
        chain(true)
    );
    let inside = gradscope::on_workers(|| chain(true));
    println!("split, inside on_workers:           {inside:6.1} µs per layer");
}
