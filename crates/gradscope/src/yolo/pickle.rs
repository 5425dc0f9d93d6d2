//! A Python pickle *writer* (protocol 2), enough for a PyTorch checkpoint.
//!
//! A value is a tree of [`Py`] nodes: plain data (numbers, strings, tuples, lists, dicts), a
//! reference to a Python callable by module and name ([`Py::Global`]), a call of one
//! ([`Py::Call`], pickle's `REDUCE`), the `__setstate__` of an object ([`Py::Build`]) and a PyTorch
//! storage ([`Py::Storage`], a persistent id whose bytes live beside the pickle in the zip). The
//! opcodes written are the ones `pickle.py` documents for protocol 2; nothing here reads pickles.

/// The element type of a PyTorch storage, as `torch.<Name>Storage`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum StorageKind {
    Float,
    Long,
}

impl StorageKind {
    fn class(self) -> &'static str {
        match self {
            StorageKind::Float => "FloatStorage",
            StorageKind::Long => "LongStorage",
        }
    }
}

/// A Python value to be pickled.
#[derive(Clone, Debug, PartialEq)]
pub enum Py {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Tuple(Vec<Py>),
    List(Vec<Py>),
    /// Keys and values in insertion order (Python dicts keep it).
    Dict(Vec<(Py, Py)>),
    /// `module.name`, e.g. `torch._utils._rebuild_tensor_v2`.
    Global(&'static str, &'static str),
    /// `callable(*args)`.
    Call(Box<Py>, Vec<Py>),
    /// `obj.__setstate__(state)` (for a `torch.nn.Module`: its `__dict__` updated), giving `obj`.
    Build(Box<Py>, Box<Py>),
    /// The storage `data/<key>` of the archive, `numel` elements of `kind`.
    Storage {
        kind: StorageKind,
        key: String,
        numel: usize,
    },
    /// The value, also kept in the pickle's memo under `id` for a later [`Py::Get`].
    Put(u32, Box<Py>),
    /// The value kept under `id` by an earlier [`Py::Put`]: the same Python object, not a copy.
    Get(u32),
}

impl Py {
    /// A Python `str`.
    pub fn str(s: impl Into<String>) -> Py {
        Py::Str(s.into())
    }

    /// `callable(*args)`.
    pub fn call(callable: Py, args: Vec<Py>) -> Py {
        Py::Call(Box::new(callable), args)
    }

    /// A contiguous CPU tensor of `shape` over the whole of storage `data/<key>`, as
    /// `torch.save` writes one (`torch._utils._rebuild_tensor_v2`).
    pub fn tensor(kind: StorageKind, key: impl Into<String>, shape: &[usize]) -> Py {
        let mut stride = vec![0usize; shape.len()];
        let mut step = 1;
        for (s, d) in stride.iter_mut().zip(shape).rev() {
            *s = step;
            step *= d;
        }
        let ints = |v: &[usize]| Py::Tuple(v.iter().map(|&x| Py::Int(x as i64)).collect());
        Py::call(
            Py::Global("torch._utils", "_rebuild_tensor_v2"),
            vec![
                Py::Storage {
                    kind,
                    key: key.into(),
                    numel: shape.iter().product(),
                },
                Py::Int(0),
                ints(shape),
                ints(&stride),
                Py::Bool(false),
                Py::call(Py::Global("collections", "OrderedDict"), vec![]),
            ],
        )
    }
}

/// Writes pickle opcodes into a buffer.
pub struct Pickler {
    out: Vec<u8>,
}

impl Default for Pickler {
    fn default() -> Self {
        Self::new()
    }
}

impl Pickler {
    /// Starts a protocol-2 pickle.
    pub fn new() -> Self {
        Pickler { out: vec![0x80, 2] }
    }

    /// Pushes `v` onto the unpickler's stack.
    pub fn push(&mut self, v: &Py) {
        match v {
            Py::None => self.out.push(b'N'),
            Py::Bool(b) => self.out.push(if *b { 0x88 } else { 0x89 }),
            Py::Int(i) => self.int(*i),
            Py::Float(f) => {
                self.out.push(b'G');
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Py::Str(s) => {
                self.out.push(b'X');
                self.out.extend_from_slice(&(s.len() as u32).to_le_bytes());
                self.out.extend_from_slice(s.as_bytes());
            }
            Py::Tuple(items) => self.tuple(items),
            Py::List(items) => {
                self.out.push(b']');
                if !items.is_empty() {
                    self.out.push(b'(');
                    items.iter().for_each(|x| self.push(x));
                    self.out.push(b'e');
                }
            }
            Py::Dict(items) => {
                self.out.push(b'}');
                if !items.is_empty() {
                    self.out.push(b'(');
                    for (k, x) in items {
                        self.push(k);
                        self.push(x);
                    }
                    self.out.push(b'u');
                }
            }
            Py::Global(module, name) => {
                self.out.push(b'c');
                self.out.extend_from_slice(module.as_bytes());
                self.out.push(b'\n');
                self.out.extend_from_slice(name.as_bytes());
                self.out.push(b'\n');
            }
            Py::Call(f, args) => {
                self.push(f);
                self.tuple(args);
                self.out.push(b'R');
            }
            Py::Build(obj, state) => {
                self.push(obj);
                self.push(state);
                self.out.push(b'b');
            }
            Py::Storage { kind, key, numel } => {
                self.tuple(&[
                    Py::str("storage"),
                    Py::Global("torch", kind.class()),
                    Py::Str(key.clone()),
                    Py::str("cpu"),
                    Py::Int(*numel as i64),
                ]);
                self.out.push(b'Q');
            }
            Py::Put(id, v) => {
                self.push(v);
                self.out.push(b'r');
                self.out.extend_from_slice(&id.to_le_bytes());
            }
            Py::Get(id) => {
                self.out.push(b'j');
                self.out.extend_from_slice(&id.to_le_bytes());
            }
        }
    }

    /// Drops the top of the stack (a call made for its effect).
    pub fn pop(&mut self) {
        self.out.push(b'0');
    }

    /// The pickle, ending with the top of the stack as its value.
    pub fn finish(mut self) -> Vec<u8> {
        self.out.push(b'.');
        self.out
    }

    fn int(&mut self, i: i64) {
        if let Ok(small) = i32::try_from(i) {
            self.out.push(b'J');
            self.out.extend_from_slice(&small.to_le_bytes());
        } else {
            self.out.push(0x8a); // LONG1: little-endian two's complement
            self.out.push(8);
            self.out.extend_from_slice(&i.to_le_bytes());
        }
    }

    fn tuple(&mut self, items: &[Py]) {
        match items.len() {
            0 => self.out.push(b')'),
            1..=3 => {
                items.iter().for_each(|x| self.push(x));
                self.out.push(0x84 + items.len() as u8); // TUPLE1..TUPLE3
            }
            _ => {
                self.out.push(b'(');
                items.iter().for_each(|x| self.push(x));
                self.out.push(b't');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pickle(v: &Py) -> Vec<u8> {
        let mut p = Pickler::new();
        p.push(v);
        p.finish()
    }

    /// Each form as `pickletools` documents its opcode (PROTO 2, NONE, BININT, LONG1, BINUNICODE,
    /// BINFLOAT, TUPLE2, EMPTY_DICT MARK … SETITEMS, GLOBAL, EMPTY_TUPLE REDUCE, STOP). That
    /// readers agree is checked by reading written checkpoints back (`tests/pt_checkpoint.rs`) and,
    /// by hand, with PyTorch (`tools/reference/load_exported_pt.py`).
    #[test]
    fn opcodes_are_the_documented_ones() {
        assert_eq!(pickle(&Py::None), b"\x80\x02N.");
        assert_eq!(pickle(&Py::Int(7)), b"\x80\x02J\x07\x00\x00\x00.");
        assert_eq!(
            pickle(&Py::Int(1 << 40)),
            b"\x80\x02\x8a\x08\x00\x00\x00\x00\x00\x01\x00\x00."
        );
        assert_eq!(pickle(&Py::str("ab")), b"\x80\x02X\x02\x00\x00\x00ab.");
        assert_eq!(
            pickle(&Py::Float(1.5)),
            b"\x80\x02G\x3f\xf8\x00\x00\x00\x00\x00\x00."
        );
        assert_eq!(
            pickle(&Py::Tuple(vec![Py::Int(1), Py::Bool(true)])),
            b"\x80\x02J\x01\x00\x00\x00\x88\x86."
        );
        assert_eq!(
            pickle(&Py::Dict(vec![(Py::Int(0), Py::str("a"))])),
            b"\x80\x02}(J\x00\x00\x00\x00X\x01\x00\x00\x00au."
        );
        assert_eq!(
            pickle(&Py::call(Py::Global("m", "f"), vec![])),
            b"\x80\x02cm\nf\n)R."
        );
    }

    #[test]
    fn strides_are_contiguous() {
        let Py::Call(_, args) = Py::tensor(StorageKind::Float, "0", &[2, 3, 4]) else {
            panic!("a tensor is a call");
        };
        assert_eq!(
            args[3],
            Py::Tuple(vec![Py::Int(12), Py::Int(4), Py::Int(1)])
        );
        assert_eq!(args[2], Py::Tuple(vec![Py::Int(2), Py::Int(3), Py::Int(4)]));
    }
}
