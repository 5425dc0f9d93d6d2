use burn::module::Module;
use burn::tensor::{Tensor, TensorData};
use gradscope::detect::args::DetectArgs;
use gradscope::detect::assign::Anchors;
use gradscope::detect::loss::{yolo_loss, LossGains};
use gradscope::detect::runs::{load_sets, resolve_data};
use gradscope::detect::train::build_model;
use gradscope::probe::Tap;

fn main() {
    let device = gradscope::device();
    let data = resolve_data("/tmp/of/data.yaml", &mut |_| {}).unwrap();
    let (tr, _) = load_sets(&data, &mut |_, _| {}).unwrap();
    let args = DetectArgs::default();
    let (_, fresh) = build_model(&args, 1, &device).unwrap();
    let (model, ema, _, c) = gradscope::detect::resume::load(std::path::Path::new("/tmp/of/runs/detect/of/weights/last.state.safetensors"), fresh, &device).unwrap();
    println!("epoch {}", c.epoch);
    let b = tr.val_batch(&[0, 1, 2, 3], 256);
    let anchors = Anchors::new(256, 256, &[8, 16, 32]);
    let x = Tensor::<4>::from_data(TensorData::new(b.x.clone(), [4, 3, 256, 256]), &device);
    let out = model.forward(x.clone(), &mut Tap::off());
    let (_, it) = yolo_loss(out.heads.one2many, out.heads.one2one, &b.targets, &anchors, (256, 256), 0.8, &LossGains::default());
    println!("train-mode model: {it:?}");
    let v = model.valid();
    let xi = Tensor::<4>::from_data(TensorData::new(b.x.clone(), [4, 3, 256, 256]), &device.clone().inner());
    let out = v.forward(xi.clone(), &mut Tap::off());
    let (_, it) = yolo_loss(out.heads.one2many, out.heads.one2one, &b.targets, &anchors, (256, 256), 0.8, &LossGains::default());
    println!("eval-mode model: {it:?}");
    let out = ema.model.forward(xi, &mut Tap::off());
    let (_, it) = yolo_loss(out.heads.one2many, out.heads.one2one, &b.targets, &anchors, (256, 256), 0.8, &LossGains::default());
    println!("eval-mode ema: {it:?}");
    if let Some(gradscope::yolo::model::Block::Conv(c)) = &model.model[0] {
        let y = c.conv.forward(x.clone()).inner();
        let [b, ch, h, w] = y.dims();
        let y = y.swap_dims(0, 1).reshape([ch, b * h * w]);
        let mean = y.clone().mean_dim(1);
        let var = (y - mean.clone()).powf_scalar(2.0).mean_dim(1);
        let bn = c.bn.as_ref().unwrap();
        println!("batch mean {:?}", &mean.into_data().to_vec::<f32>().unwrap()[..6]);
        println!("run   mean {:?}", &bn.running_mean.value().into_data().to_vec::<f32>().unwrap()[..6]);
        println!("batch var  {:?}", &var.into_data().to_vec::<f32>().unwrap()[..6]);
        println!("run   var  {:?}", &bn.running_var.value().into_data().to_vec::<f32>().unwrap()[..6]);
    }
}
