//! Data-parallel training: one replica of the model per device, each on its share of the batch,
//! their gradients summed before clipping and the optimizer step, so every replica takes the
//! same step and the parameters stay equal without being sent again.
//!
//! The replicas are processes (rank 0 is the one the user started; it starts the others with
//! [`ENV`] set) connected over TCP on the loopback interface, a star through rank 0: rank 0
//! adds the others' values to its own in rank order and sends the sum back. The order is fixed,
//! so a run is as reproducible as a run on one device. Values travel through the host, which
//! makes this transport right for CPU replicas and a correct but slow one for GPUs (NCCL-style
//! device-to-device reduction is what burn's `all_reduce` is for where a backend has it; burn
//! 0.22.1's `flex` backend has a single device and no `all_reduce`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor, TensorData};

/// The environment variable that makes a process a replica: `rank/world@address`.
pub const ENV: &str = "GRADSCOPE_REPLICA";

const HELLO: &[u8; 4] = b"GSR1";

/// Why replicas could not work together.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("replica {rank} of {world}: {what}")]
    Io {
        rank: usize,
        world: usize,
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("replica {rank} of {world}: {what}")]
    Protocol {
        rank: usize,
        world: usize,
        what: String,
    },
    #[error("{ENV}={value}: expected rank/world@address, e.g. 1/2@127.0.0.1:40000")]
    Env { value: String },
}

/// This process's place among the replicas and its connections: rank 0 holds one link per
/// other rank (in rank order), every other rank one link to rank 0.
#[derive(Debug)]
pub struct Group {
    rank: usize,
    world: usize,
    links: Vec<TcpStream>,
}

/// A number that crosses the wire little-endian.
trait Wire: Copy + std::ops::AddAssign {
    const SIZE: usize;
    fn put(self, out: &mut Vec<u8>);
    fn get(b: &[u8]) -> Self;
}

impl Wire for f32 {
    const SIZE: usize = 4;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        f32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

impl Wire for f64 {
    const SIZE: usize = 8;
    fn put(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
    fn get(b: &[u8]) -> Self {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        f64::from_le_bytes(a)
    }
}

/// `v` as bytes on the wire.
fn encode<T: Wire>(v: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len() * T::SIZE);
    v.iter().for_each(|x| x.put(&mut out));
    out
}

/// The numbers in `bytes`.
fn decode<'a, T: Wire + 'a>(bytes: &'a [u8]) -> impl Iterator<Item = T> + 'a {
    bytes.chunks_exact(T::SIZE).map(T::get)
}

impl Group {
    /// Rank 0: waits on `listener` until the other `world − 1` ranks have joined. `alive` is
    /// asked every 50 ms whether they can still come (a replica that failed to start makes it
    /// say why); after `wait` the missing ranks are an error.
    pub fn host(
        listener: &TcpListener,
        world: usize,
        wait: Duration,
        alive: &mut dyn FnMut() -> Result<(), String>,
    ) -> Result<Group, ReplicaError> {
        let io = |what: &str, source| ReplicaError::Io {
            rank: 0,
            world,
            what: what.into(),
            source,
        };
        listener
            .set_nonblocking(true)
            .map_err(|e| io("cannot wait for the other replicas", e))?;
        let mut links: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
        let t0 = Instant::now();
        while links.iter().any(Option::is_none) {
            match listener.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false)
                        .map_err(|e| io("a replica's connection", e))?;
                    let _ = s.set_nodelay(true);
                    let mut hello = [0u8; 12];
                    s.read_exact(&mut hello)
                        .map_err(|e| io("a replica's greeting", e))?;
                    let rank = u32::from_le_bytes([hello[4], hello[5], hello[6], hello[7]]);
                    let their = u32::from_le_bytes([hello[8], hello[9], hello[10], hello[11]]);
                    let r = rank as usize;
                    if &hello[..4] != HELLO || their as usize != world || r == 0 || r >= world {
                        return Err(ReplicaError::Protocol {
                            rank: 0,
                            world,
                            what: format!("a stranger joined (rank {rank} of {their})"),
                        });
                    }
                    links[r - 1] = Some(s);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    alive().map_err(|what| ReplicaError::Protocol {
                        rank: 0,
                        world,
                        what,
                    })?;
                    if t0.elapsed() > wait {
                        let missing: Vec<String> = (1..world)
                            .filter(|r| links[r - 1].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(ReplicaError::Protocol {
                            rank: 0,
                            world,
                            what: format!(
                                "rank {} did not join within {} s",
                                missing.join(", "),
                                wait.as_secs()
                            ),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(io("waiting for the other replicas", e)),
            }
        }
        Ok(Group {
            rank: 0,
            world,
            links: links.into_iter().flatten().collect(),
        })
    }

    /// Rank `rank` > 0: connects to rank 0 at `address`.
    pub fn join(address: &str, rank: usize, world: usize) -> Result<Group, ReplicaError> {
        let mut s = TcpStream::connect(address).map_err(|source| ReplicaError::Io {
            rank,
            world,
            what: format!("cannot reach rank 0 at {address}"),
            source,
        })?;
        let _ = s.set_nodelay(true);
        let mut hello = HELLO.to_vec();
        hello.extend_from_slice(&(rank as u32).to_le_bytes());
        hello.extend_from_slice(&(world as u32).to_le_bytes());
        s.write_all(&hello).map_err(|source| ReplicaError::Io {
            rank,
            world,
            what: "greeting rank 0".into(),
            source,
        })?;
        Ok(Group {
            rank,
            world,
            links: vec![s],
        })
    }

    /// The group this process belongs to when [`ENV`] says it is a replica (rank > 0).
    pub fn from_env() -> Option<Result<Group, ReplicaError>> {
        let value = std::env::var(ENV).ok()?;
        let bad = || ReplicaError::Env {
            value: value.clone(),
        };
        let parsed = (|| {
            let (rw, address) = value.split_once('@')?;
            let (r, w) = rw.split_once('/')?;
            Some((r.parse::<usize>().ok()?, w.parse::<usize>().ok()?, address))
        })();
        Some(match parsed {
            Some((rank, world, address)) if rank > 0 && rank < world => {
                Group::join(address, rank, world)
            }
            _ => Err(bad()),
        })
    }

    /// The value of [`ENV`] for rank `rank` of `world`, rank 0 listening at `address`.
    pub fn env_value(rank: usize, world: usize, address: &str) -> String {
        format!("{rank}/{world}@{address}")
    }

    /// This process's rank (0: the one that writes the run).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// How many replicas.
    pub fn world(&self) -> usize {
        self.world
    }

    fn io(&self, what: String) -> impl FnOnce(std::io::Error) -> ReplicaError {
        let (rank, world) = (self.rank, self.world);
        move |source| ReplicaError::Io {
            rank,
            world,
            what,
            source,
        }
    }

    fn send(&mut self, link: usize, bytes: &[u8]) -> Result<(), ReplicaError> {
        let peer = self.peer(link);
        let mut framed = (bytes.len() as u64).to_le_bytes().to_vec();
        framed.extend_from_slice(bytes);
        self.links[link]
            .write_all(&framed)
            .map_err(self.io(format!("sending to rank {peer}")))
    }

    fn receive(&mut self, link: usize, len: usize) -> Result<Vec<u8>, ReplicaError> {
        let peer = self.peer(link);
        let mut n = [0u8; 8];
        self.links[link]
            .read_exact(&mut n)
            .map_err(|e| self.left(peer, e))?;
        let n = u64::from_le_bytes(n) as usize;
        if n != len {
            return Err(ReplicaError::Protocol {
                rank: self.rank,
                world: self.world,
                what: format!(
                    "rank {peer} sent {n} bytes where {len} were due: the replicas do not run the same model or settings"
                ),
            });
        }
        let mut buf = vec![0u8; n];
        self.links[link]
            .read_exact(&mut buf)
            .map_err(|e| self.left(peer, e))?;
        Ok(buf)
    }

    /// A read from `peer` that failed: it left (its connection closed), or the link broke.
    fn left(&self, peer: usize, e: std::io::Error) -> ReplicaError {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            return ReplicaError::Protocol {
                rank: self.rank,
                world: self.world,
                what: format!("rank {peer} left (its connection closed)"),
            };
        }
        self.io(format!("rank {peer} left"))(e)
    }

    fn peer(&self, link: usize) -> usize {
        if self.rank == 0 {
            link + 1
        } else {
            0
        }
    }

    fn sum<T: Wire>(&mut self, v: &mut [T]) -> Result<(), ReplicaError> {
        let len = v.len() * T::SIZE;
        if self.rank == 0 {
            for link in 0..self.links.len() {
                let theirs = self.receive(link, len)?;
                for (x, t) in v.iter_mut().zip(decode::<T>(&theirs)) {
                    *x += t;
                }
            }
            let out = encode(v);
            for link in 0..self.links.len() {
                self.send(link, &out)?;
            }
        } else {
            self.send(0, &encode(v))?;
            let total = self.receive(0, len)?;
            for (x, t) in v.iter_mut().zip(decode::<T>(&total)) {
                *x = t;
            }
        }
        Ok(())
    }

    /// Every rank's `v` added element by element (rank 0's first, then rank 1's, …); every
    /// rank gets the sum.
    pub fn sum_f32(&mut self, v: &mut [f32]) -> Result<(), ReplicaError> {
        self.sum(v)
    }

    /// [`Group::sum_f32`] for f64.
    pub fn sum_f64(&mut self, v: &mut [f64]) -> Result<(), ReplicaError> {
        self.sum(v)
    }

    /// Rank 0's `v` to every rank.
    pub fn broadcast(&mut self, v: &mut [u8]) -> Result<(), ReplicaError> {
        if self.rank == 0 {
            let out = v.to_vec();
            for link in 0..self.links.len() {
                self.send(link, &out)?;
            }
        } else {
            let got = self.receive(0, v.len())?;
            v.copy_from_slice(&got);
        }
        Ok(())
    }

    /// Rank 0's parameter values into every replica's model (as PyTorch's DDP does when it is
    /// built), so replicas start equal however their own initialisation drew.
    pub fn broadcast_params<M: Module>(&mut self, model: M) -> Result<M, ReplicaError> {
        let mut flat = Flatten::default();
        model.visit(&mut flat);
        let mut bytes = encode(&flat.values);
        self.broadcast(&mut bytes)?;
        let values: Vec<f32> = decode(&bytes).collect();
        Ok(model.map(&mut Overwrite { values, at: 0 }))
    }

    /// Sums every replica's gradients of one iteration. A parameter gets a summed gradient
    /// where at least one replica has one (a replica with no images this iteration has none).
    pub fn sum_gradients<M: Module>(
        &mut self,
        model: &M,
        grads: GradientsParams,
        device: &Device,
    ) -> Result<GradientsParams, ReplicaError> {
        let mut gather = Gather {
            grads: &grads,
            values: Vec::new(),
            present: Vec::new(),
            params: Vec::new(),
        };
        model.visit(&mut gather);
        let Gather {
            mut values,
            present,
            params,
            ..
        } = gather;
        let n = values.len();
        values.extend(present);
        self.sum_f32(&mut values)?;
        let mut out = GradientsParams::new();
        let mut at = 0;
        for (k, (id, dims)) in params.iter().enumerate() {
            let len: usize = dims.iter().product();
            if values[n + k] > 0.0 {
                register(&mut out, *id, values[at..at + len].to_vec(), dims, device);
            }
            at += len;
        }
        Ok(out)
    }
}

fn register(
    out: &mut GradientsParams,
    id: ParamId,
    values: Vec<f32>,
    dims: &[usize],
    device: &Device,
) {
    let data = TensorData::new(values, dims.to_vec());
    macro_rules! rank {
        ($($d:literal)*) => {
            match dims.len() {
                $($d => out.register::<$d>(id, Tensor::<$d>::from_data(data, device)),)*
                _ => unreachable!("parameters have 1 to 4 dimensions"),
            }
        };
    }
    rank!(1 2 3 4)
}

#[derive(Default)]
struct Flatten {
    values: Vec<f32>,
}

impl ModuleVisitor for Flatten {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.values.extend(values_of(param.val()));
    }
}

fn values_of<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .unwrap_or_default()
}

struct Overwrite {
    values: Vec<f32>,
    at: usize,
}

impl ModuleMapper for Overwrite {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let (values, at) = (&self.values, &mut self.at);
        param.map(|t| {
            let grad = t.is_require_grad();
            let dims: [usize; D] = t.dims();
            let len: usize = dims.iter().product();
            let data = TensorData::new(values[*at..*at + len].to_vec(), dims);
            *at += len;
            let fresh = Tensor::<D>::from_data(data, &t.device());
            if grad {
                fresh.require_grad()
            } else {
                fresh
            }
        })
    }
}

struct Gather<'a> {
    grads: &'a GradientsParams,
    values: Vec<f32>,
    present: Vec<f32>,
    params: Vec<(ParamId, Vec<usize>)>,
}

impl ModuleVisitor for Gather<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let dims = param.val().dims().to_vec();
        let len: usize = dims.iter().product();
        match self.grads.get::<D>(param.id) {
            Some(g) => {
                self.values.extend(values_of(g));
                self.present.push(1.0);
            }
            None => {
                self.values.extend(std::iter::repeat_n(0.0, len));
                self.present.push(0.0);
            }
        }
        self.params.push((param.id, dims));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (Group, Group) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let joiner = std::thread::spawn(move || Group::join(&address, 1, 2).unwrap());
        let host = Group::host(&listener, 2, Duration::from_secs(20), &mut || Ok(())).unwrap();
        (host, joiner.join().unwrap())
    }

    #[test]
    fn sums_in_rank_order_and_broadcasts() {
        let (mut a, mut b) = pair();
        let other = std::thread::spawn(move || {
            let mut v = [10.0f32, 20.0, 0.5];
            b.sum_f32(&mut v).unwrap();
            let mut w = [0u8; 3];
            b.broadcast(&mut w).unwrap();
            (v, w)
        });
        let mut v = [1.0f32, 2.0, 0.25];
        a.sum_f32(&mut v).unwrap();
        a.broadcast(&mut [7, 8, 9]).unwrap();
        let (theirs, got) = other.join().unwrap();
        assert_eq!(v, [11.0, 22.0, 0.75]);
        assert_eq!(theirs, v);
        assert_eq!(got, [7, 8, 9]);
    }

    #[test]
    fn a_replica_that_leaves_or_disagrees_is_an_error() {
        let (mut a, b) = pair();
        drop(b);
        let e = a.sum_f64(&mut [1.0]).unwrap_err().to_string();
        assert!(e.contains("rank 1 left"), "{e}");
        let (mut a, mut b) = pair();
        let other = std::thread::spawn(move || b.sum_f32(&mut [1.0, 2.0]));
        let e = a.sum_f32(&mut [1.0]).unwrap_err().to_string();
        assert!(e.contains("not run the same model"), "{e}");
        drop(a);
        assert!(other.join().unwrap().is_err());
    }

    #[test]
    fn a_missing_replica_is_named() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let e = Group::host(&listener, 3, Duration::from_millis(200), &mut || Ok(()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 1, 2 did not join"), "{e}");
        let e = Group::host(&listener, 2, Duration::from_secs(5), &mut || {
            Err("rank 1 exited: bad data".into())
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("rank 1 exited: bad data"), "{e}");
    }
}
