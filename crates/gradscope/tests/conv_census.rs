//! The convolutions' backward is cut into tasks by the work, enough of them for 16 threads, on
//! the layers that had too few: YOLO26n's 1×1 layers of 32–96 channels and its first layers, at
//! batch 4, each gave 4 tasks (one per image), so 12 of 16 threads waited through them; its
//! layers at 20² gave 8–12.
//! (Its own test binary: the census is process-wide, and here nothing else runs beside it.)

use burn::tensor::{Tensor, TensorData};
use gradscope::kernels::census;
use gradscope::yolo::blocks::{Conv, Switches};

/// The census of one forward and backward of `conv` (cin → cout, k×k, stride s) on 4 images of
/// `hw`², at `threads` threads.
fn census_of(
    cin: usize,
    cout: usize,
    k: usize,
    s: usize,
    hw: usize,
    threads: usize,
) -> Vec<census::Call> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| {
        let device = gradscope::device();
        let conv = Conv::new(cin, cout, k, s, 1, true, Switches::default(), &device);
        let n = 4 * cin * hw * hw;
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0 - 0.5)
            .collect();
        let x =
            Tensor::<4>::from_data(TensorData::new(x, [4, cin, hw, hw]), &device).require_grad();
        census::start();
        let loss = conv.forward(x).powf_scalar(2.0).sum();
        let _grads = loss.backward();
        census::stop()
    })
}

fn tasks(calls: &[census::Call], kind: &str) -> Vec<usize> {
    calls
        .iter()
        .filter(|c| c.kind == kind)
        .map(|c| c.tasks)
        .collect()
}

#[test]
fn the_backward_of_few_images_is_cut_into_enough_tasks_for_16_threads() {
    // (cin, cout, k, stride, input side): a 1×1 layer of 48 channels at 160², the second layer
    // (3×3 stride 2, 16 → 32 at 320²), the first (3 → 16)
    for (cin, cout, k, s, hw) in [(48, 64, 1, 1, 160), (16, 32, 3, 2, 320), (3, 16, 3, 2, 640)] {
        let calls = census_of(cin, cout, k, s, hw, 2);
        let wg = tasks(&calls, "conv_weight_grad");
        assert_eq!(
            wg.len(),
            1,
            "{cin}→{cout} k{k}: one weight gradient: {calls:?}"
        );
        assert!(
            wg[0] >= 16,
            "{cin}→{cout} k{k}: weight gradient in {} tasks",
            wg[0]
        );
        // the split comes from the work, not the threads: the same at one thread
        let one: Vec<(&str, usize)> = census_of(cin, cout, k, s, hw, 1)
            .iter()
            .map(|c| (c.kind, c.tasks))
            .collect();
        let two: Vec<(&str, usize)> = calls.iter().map(|c| (c.kind, c.tasks)).collect();
        assert_eq!(one, two);
    }
    // a 1×1 layer's input gradient is a 1×1 convolution itself, split as the forward is, and a
    // strided 3×3 one of 16 channels is split into pieces of 4 channels
    for (cin, cout, k, s, hw) in [(48, 64, 1, 1, 160), (16, 32, 3, 2, 320)] {
        let calls = census_of(cin, cout, k, s, hw, 2);
        let ig = tasks(&calls, "conv_input_grad");
        assert!(!ig.is_empty() && ig.iter().all(|&t| t >= 16), "{calls:?}");
    }
    // a 1×1 layer at 20² (one block an image, 12 tasks from its rows of dWᵀ): spans of narrower
    // blocks
    let calls = census_of(384, 256, 1, 1, 20, 2);
    assert!(tasks(&calls, "conv_weight_grad")[0] >= 16, "{calls:?}");
}
