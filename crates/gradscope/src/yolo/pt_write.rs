//! Ultralytics `.pt` checkpoints, written without Python.
//!
//! Ultralytics loads a checkpoint with `torch.load(..., weights_only=False)` and takes its
//! `model` entry, a whole pickled `DetectionModel`. Rather than pickling each of Ultralytics'
//! module objects attribute by attribute (their private fields change between versions), the
//! pickle written here *builds* the model the way Ultralytics itself does —
//! `ultralytics.nn.tasks.DetectionModel(yaml, 3, nc, False)` from the model yaml — sets its
//! `names`, and then gives each of its layers its parameter and buffer tables, reached by name
//! (see `layers` below): a name Ultralytics' model does not have fails the load instead of leaving a
//! layer as initialised. The tensors are also kept under the checkpoint's `state_dict` key, so
//! the file reads back with plain PyTorch (`torch.load(f, weights_only=False)["state_dict"]`) and
//! with gradscope's own reader. They are f32, bit for bit what gradscope trained.
//!
//! (`model.load_state_dict(sd)` would be the shorter call, but it passes tensors as a call's
//! argument, which burn's pickle reader — rightly — refuses to read past; a layer's
//! `__setstate__` is how `torch.save` itself pickles a module's tensors, and it reads.)
//!
//! The archive is PyTorch's zip format: `archive/data.pkl`, one stored (uncompressed,
//! 64-byte-aligned) record per tensor under `archive/data/<key>`, `archive/version`,
//! `archive/byteorder`.

use std::io::Write;
use std::path::Path;

use super::config::{ModelDef, Spec};
use super::pickle::{Pickler, Py, StorageKind};
use super::weights::WeightsError;

/// What goes into a `.pt`.
pub struct PtExport<'a> {
    /// (Ultralytics name, shape, values) for every parameter and BatchNorm statistic.
    pub tensors: &'a [(String, Vec<usize>, Vec<f32>)],
    /// The model definition it was built from.
    pub def: &'a ModelDef,
    pub scale: char,
    pub names: &'a [String],
    /// Written as `train_args` (Ultralytics keeps `imgsz`, `data`, `task`, `single_cls` of them).
    pub imgsz: usize,
    pub data: Option<String>,
}

/// The memo slot of the model object, whose layers receive the weights.
const MODEL: u32 = 0;
/// The memo slot of the first tensor; tensor `k` is kept under `FIRST_TENSOR + k`.
const FIRST_TENSOR: u32 = 1;

/// Writes `e` as an Ultralytics checkpoint at `path`, atomically (a temporary file, then a
/// rename).
pub fn write_pt(e: &PtExport, path: &Path) -> Result<(), WeightsError> {
    let write = |msg: String| WeightsError::Write {
        path: path.to_path_buf(),
        msg,
    };
    let tmp = path.with_extension("pt.tmp");
    let result = write_archive(e, &tmp)
        .map_err(|err| write(err.to_string()))
        .and_then(|()| std::fs::rename(&tmp, path).map_err(|err| write(err.to_string())));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// One tensor of the archive: its name, shape, storage kind and little-endian bytes.
struct Record {
    name: String,
    shape: Vec<usize>,
    kind: StorageKind,
    bytes: Vec<u8>,
}

fn write_archive(e: &PtExport, path: &Path) -> std::io::Result<()> {
    let records = records(e.tensors);
    let mut p = Pickler::new();
    p.push(&checkpoint(e, &records));
    // the weights into the model's layers, each call kept only for its effect on the model
    for layer in layers(&records) {
        p.push(&layer);
        p.pop();
    }
    let pickle = p.finish();

    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(std::io::BufWriter::new(file));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .with_alignment(64);
    let mut record = |name: &str, bytes: &[u8]| -> std::io::Result<()> {
        zip.start_file(format!("archive/{name}"), opts)
            .map_err(std::io::Error::other)?;
        zip.write_all(bytes)
    };
    record("data.pkl", &pickle)?;
    record("byteorder", b"little")?;
    for (key, r) in records.iter().enumerate() {
        record(&format!("data/{key}"), &r.bytes)?;
    }
    record("version", b"3\n")?;
    let mut inner = zip.finish().map_err(std::io::Error::other)?;
    inner.flush()?;
    inner.get_ref().sync_all()
}

/// The tensors as stored. Every BatchNorm also gets the `num_batches_tracked` counter
/// PyTorch's layer has (0: its momentum is set, so the counter is never read).
fn records(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<Record> {
    let mut out = Vec::new();
    for (name, shape, values) in tensors {
        out.push(Record {
            name: name.clone(),
            shape: shape.clone(),
            kind: StorageKind::Float,
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
        if let Some(bn) = name.strip_suffix(".running_var") {
            out.push(Record {
                name: format!("{bn}.num_batches_tracked"),
                shape: vec![],
                kind: StorageKind::Long,
                bytes: 0i64.to_le_bytes().to_vec(),
            });
        }
    }
    out
}

/// The `state_dict` entry: name → tensor, each tensor memoized for [`layers`].
fn state_dict(records: &[Record]) -> Py {
    Py::Dict(
        records
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let t = Py::tensor(r.kind, k.to_string(), &r.shape);
                (
                    Py::str(r.name.as_str()),
                    Py::Put(FIRST_TENSOR + k as u32, Box::new(t)),
                )
            })
            .collect(),
    )
}

/// For each layer that holds weights (YOLO26 has two kinds: `Conv2d`, and `BatchNorm2d` with
/// running statistics), `layer.__setstate__` with its parameter and buffer tables — the form in
/// which `torch.save` itself pickles a module's tensors. The layer is reached from the model by
/// attribute (`model.model.23.one2one_cv3.0.0.conv`): a name Ultralytics' model does not have
/// fails the load. A convolution without a bias keeps `bias = None`, as PyTorch's does.
fn layers(records: &[Record]) -> Vec<Py> {
    let mut by_layer: Vec<(&str, Vec<(&str, u32)>)> = Vec::new();
    for (k, r) in records.iter().enumerate() {
        let (layer, field) = r.name.rsplit_once('.').unwrap_or(("", &r.name));
        match by_layer.last_mut() {
            Some((l, fields)) if *l == layer => fields.push((field, FIRST_TENSOR + k as u32)),
            _ => by_layer.push((layer, vec![(field, FIRST_TENSOR + k as u32)])),
        }
    }
    let parameter = |id: u32| {
        Py::call(
            Py::Global("torch._utils", "_rebuild_parameter"),
            vec![
                Py::Get(id),
                Py::Bool(true),
                Py::call(Py::Global("collections", "OrderedDict"), vec![]),
            ],
        )
    };
    by_layer
        .into_iter()
        .map(|(layer, fields)| {
            let get = |f: &str| fields.iter().find(|(n, _)| *n == f).map(|(_, id)| *id);
            let mut params = vec![];
            for p in ["weight", "bias"] {
                params.push((Py::str(p), get(p).map_or(Py::None, parameter)));
            }
            let buffers = ["running_mean", "running_var", "num_batches_tracked"]
                .into_iter()
                .filter_map(|b| Some((Py::str(b), Py::Get(get(b)?))))
                .collect();
            let module = layer.split('.').fold(Py::Get(MODEL), |m, part| {
                Py::call(Py::Global("builtins", "getattr"), vec![m, Py::str(part)])
            });
            let state = Py::Dict(vec![
                (Py::str("_parameters"), Py::Dict(params)),
                (Py::str("_buffers"), Py::Dict(buffers)),
                (Py::str("_modules"), Py::Dict(vec![])),
            ]);
            Py::Build(Box::new(module), Box::new(state))
        })
        .collect()
}

/// The checkpoint dict, with the model built by Ultralytics' constructor (memoized as [`MODEL`]).
fn checkpoint(e: &PtExport, records: &[Record]) -> Py {
    let nc = e.names.len();
    let model = Py::call(
        Py::Global("ultralytics.nn.tasks", "DetectionModel"),
        vec![
            model_yaml(e.def, e.scale, nc),
            Py::Int(3),
            Py::Int(nc as i64),
            Py::Bool(false),
        ],
    );
    let names = Py::Dict(
        e.names
            .iter()
            .enumerate()
            .map(|(i, n)| (Py::Int(i as i64), Py::str(n.as_str())))
            .collect(),
    );
    let model = Py::Build(
        Box::new(model),
        Box::new(Py::Dict(vec![(Py::str("names"), names)])),
    );
    let mut train_args = vec![
        (Py::str("task"), Py::str("detect")),
        (Py::str("model"), Py::str(format!("yolo26{}.yaml", e.scale))),
        (Py::str("imgsz"), Py::Int(e.imgsz as i64)),
        (Py::str("single_cls"), Py::Bool(false)),
    ];
    if let Some(d) = &e.data {
        train_args.push((Py::str("data"), Py::str(d.as_str())));
    }
    let entry = |k: &str, v: Py| (Py::str(k), v);
    Py::Dict(vec![
        entry("date", Py::Str(utc_now())),
        entry(
            "version",
            Py::str(format!("gradscope {}", env!("CARGO_PKG_VERSION"))),
        ),
        entry("epoch", Py::Int(-1)),
        entry("best_fitness", Py::None),
        entry("model", Py::Put(MODEL, Box::new(model))),
        entry("ema", Py::None),
        entry("updates", Py::None),
        entry("optimizer", Py::None),
        entry("train_args", Py::Dict(train_args)),
        // the class names again, readable without Ultralytics' classes (gradscope reads these)
        entry(
            "names",
            Py::List(e.names.iter().map(|n| Py::str(n.as_str())).collect()),
        ),
        entry("state_dict", state_dict(records)),
    ])
}

/// The model yaml as Ultralytics' `DetectionModel` takes it: a dict of `nc`, `end2end`,
/// `reg_max`, `scales`, `scale`, `backbone` and `head` rows.
fn model_yaml(def: &ModelDef, scale: char, nc: usize) -> Py {
    let int = |v: usize| Py::Int(v as i64);
    let scales = def
        .scales
        .iter()
        .map(|(c, (d, w, m))| {
            (
                Py::Str(c.to_string()),
                Py::List(vec![Py::Float(*d), Py::Float(*w), int(*m)]),
            )
        })
        .collect();
    let row = |(from, repeats, spec): &(Vec<i64>, usize, Spec)| {
        let from = match from.as_slice() {
            [one] => Py::Int(*one),
            many => Py::List(many.iter().map(|&f| Py::Int(f)).collect()),
        };
        let (module, args) = match spec {
            Spec::Conv { c2, k, s } => ("Conv", vec![int(*c2), int(*k), int(*s)]),
            Spec::C3k2 { c2, c3k, e, attn } => (
                "C3k2",
                vec![int(*c2), Py::Bool(*c3k), Py::Float(*e), Py::Bool(*attn)],
            ),
            Spec::Sppf { c2, k, n, shortcut } => (
                "SPPF",
                vec![int(*c2), int(*k), int(*n), Py::Bool(*shortcut)],
            ),
            Spec::C2psa { c2 } => ("C2PSA", vec![int(*c2)]),
            Spec::Upsample => ("nn.Upsample", vec![Py::None, int(2), Py::str("nearest")]),
            Spec::Concat => ("Concat", vec![int(1)]),
            Spec::Detect => ("Detect", vec![Py::str("nc")]),
        };
        Py::List(vec![from, int(*repeats), Py::str(module), Py::List(args)])
    };
    let detect_at = def.layout.len() - 1;
    let backbone_end = def
        .layout
        .iter()
        .position(|(_, _, s)| matches!(s, Spec::Upsample))
        .unwrap_or(detect_at);
    let rows = |r: std::ops::Range<usize>| Py::List(def.layout[r].iter().map(row).collect());
    Py::Dict(vec![
        (Py::str("nc"), int(nc)),
        (Py::str("end2end"), Py::Bool(true)),
        (Py::str("reg_max"), int(1)),
        (Py::str("scales"), Py::Dict(scales)),
        (Py::str("scale"), Py::Str(scale.to_string())),
        (Py::str("backbone"), rows(0..backbone_end)),
        (Py::str("head"), rows(backbone_end..def.layout.len())),
        (Py::str("channels"), int(3)),
    ])
}

/// The time now as ISO 8601 UTC (`2026-11-30T07:05:00+00:00`), the form of Ultralytics' `date`.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    utc(secs)
}

/// Seconds since 1970-01-01 UTC as ISO 8601.
fn utc(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil date from days since 1970-01-01 (proleptic Gregorian, 400-year eras)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    /// Against Python's `datetime.fromtimestamp(s, timezone.utc).isoformat()`.
    #[test]
    fn dates_are_pythons() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00+00:00");
        assert_eq!(super::utc(951_782_400), "2000-02-29T00:00:00+00:00");
        assert_eq!(super::utc(1_796_019_930), "2026-11-30T06:25:30+00:00");
    }
}
