use alembic::distill::*;
use alembic::tensor::npy::read_npy;
use alembic::Model;
fn main() {
    let m = std::path::Path::new("models");
    let x = read_npy(&m.join("data/refine_x.npy")).unwrap();
    let t = Model::load(m.join("teacher.onnx")).unwrap().session(Default::default()).unwrap();
    let tl = t.run_refs(&[("input", &x)]).unwrap().0[0].1.as_slice::<f32>().unwrap().to_vec();
    let targets: Vec<Option<SoftTarget>> = tl.chunks(10).map(|r| Some(SoftTarget::from_logits(r, 4.0))).collect();
    let labels = vec![None; targets.len()];
    let mut s = Student::load(&m.join("student.onnx"), &Trainable::All).unwrap();
    for p in &s.params {
        println!("param {} {:?}", p.name, p.tensor.shape());
    }
    let cfg = TrainConfig { steps: std::env::args().nth(1).unwrap().parse().unwrap(), ..Default::default() };
    train(&mut s, &TrainData { x: &x, targets: &targets, labels: &labels }, &cfg, |i| {
        if i.step % 50 == 0 {
            println!("{} loss {:.4} lr {:.5} gn {:.4}", i.step, i.loss, i.lr, i.grad_norm)
        }
    })
    .unwrap();
    let tx = read_npy(&m.join("data/refine_test_x.npy")).unwrap();
    let ty = read_npy(&m.join("data/refine_test_y.npy")).unwrap().to_i64_vec().unwrap();
    let tape = s.forward(&tx).unwrap();
    let z = s.logits(&tape).unwrap().as_slice::<f32>().unwrap().to_vec();
    println!("{:?}", alembic::eval::evaluate(&z, 10, Some(&ty), None));
    let tape = s.forward(&x).unwrap();
    let z = s.logits(&tape).unwrap().as_slice::<f32>().unwrap().to_vec();
    let ry = read_npy(&m.join("data/refine_y.npy")).unwrap().to_i64_vec().unwrap();
    println!("train-split {:?}", alembic::eval::evaluate(&z, 10, Some(&ry), Some(&tl)));
}
