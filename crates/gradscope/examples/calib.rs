use gradscope::data::{digits, prepare};
use gradscope::nn::mlp::{MlpConfig, NormKind};
use gradscope::probe::{Probe, ProbeConfig};
use gradscope::train::{train_classifier, TrainConfig};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let dev = gradscope::device();
    let (tr, va) = prepare(&digits::load().unwrap(), 0.2, 0);
    let mut m = MlpConfig::new(64, 10);
    m.act = a[1].parse().unwrap(); m.init = a[2].parse().unwrap(); m.norm = a[3].parse::<NormKind>().unwrap(); m.residual = a[4] == "true"; m.zero_init = a.get(7).map(|s| s=="zero").unwrap_or(false);
    let mut t = TrainConfig::default(); t.optimizer = a[5].parse().unwrap(); t.lr = a[6].parse().unwrap(); t.epochs = 30;
    let mut p = Probe::new(ProbeConfig { every: 10, ..Default::default() });
    let t0 = std::time::Instant::now();
    let (_, h) = train_classifier(m.init(&dev), &tr, &va, &t, &mut p, None, &dev, &mut |_| {}).unwrap();
    let r0 = &p.records()[0]; let rl = p.records().last().unwrap();
    let fl = |r: &gradscope::probe::StepRecord| r.layers[0].grad_h.norm / r.layers[r.layers.len()-2].grad_h.norm;
    for e in h.epochs.iter().step_by(5) { println!("ep {} loss {:.4} val {:.3}", e.epoch, e.train_loss, e.val_acc); }
    println!("{:?} final val_acc {:.3} first/last init {:.2e} end {:.2e} time {:.1}s stopped {:?}", &a[1..], h.epochs.last().map(|e| e.val_acc).unwrap_or(f64::NAN), fl(r0), fl(rl), t0.elapsed().as_secs_f64(), h.stopped);
}
