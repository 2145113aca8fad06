//! sd-torch: reads a PyTorch state dict in PyTorch's legacy (non-zip) serialization, safely.
//!
//! The file is five pickles and then raw storage bytes:
//!
//! 1. the magic number `0x1950a86a20f9469cfc6c`, 2. the protocol version 1001, 3. system info
//!    (`{"little_endian": True, ...}`), 4. the state dict: an `OrderedDict` of name ->
//!    `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)`
//!    whose storages are persistent ids `("storage", torch.FloatStorage, key, location, numel,
//!    None)`, 5. the list of storage keys, in the order their data follows;
//! 6. per key: the element count as a little-endian u64, then that many little-endian elements.
//!
//! Safety by construction (the file may be hostile): the pickle machine ([`Machine`]) knows only
//! the opcodes such a file uses and only three kinds of globals; any other is an error naming it
//! and its offset. Every length is checked against the bytes left before anything is allocated;
//! containers live in an arena indexed by number (no reference counting, so no cycles and no
//! recursive drops), and integer arithmetic is checked: no input panics.
//!
//! Why our own reader rather than the `pytorch-reader` crate (Burn): that crate reads much more
//! (zip archives, general pickled objects), a larger surface to audit against hostile input than
//! this small machine, which only has to read state dicts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What went wrong, with the byte offset where it did.
#[derive(Debug, thiserror::Error)]
pub enum TorchError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("not a PyTorch legacy state dict: {0}")]
    Format(String),
    #[error("state dict has no tensor '{0}'")]
    Missing(String),
    #[error("state dict tensor '{name}' is {dtype}, not float32")]
    NotFloat { name: String, dtype: &'static str },
}

fn format_error(offset: usize, what: impl std::fmt::Display) -> TorchError {
    TorchError::Format(format!("byte {offset}: {what}"))
}

/// Element types of PyTorch storages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    F16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::F16 => "float16",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

/// A float32 tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The tensors of a state dict, in file order. Float32 tensors carry their values; others
/// (e.g. batch norm's `num_batches_tracked`, int64) only their type and shape.
#[derive(Debug, Clone, Default)]
pub struct StateDict {
    pub names: Vec<String>,
    pub floats: BTreeMap<String, Tensor>,
    pub others: BTreeMap<String, (DType, Vec<usize>)>,
}

impl StateDict {
    /// The float32 tensor `name`.
    pub fn float(&self, name: &str) -> Result<&Tensor, TorchError> {
        self.floats.get(name).ok_or_else(|| match self.others.get(name) {
            Some((dtype, _)) => TorchError::NotFloat { name: name.into(), dtype: dtype.name() },
            None => TorchError::Missing(name.into()),
        })
    }
}

/// Reads the state dict in `path`.
pub fn read(path: impl AsRef<Path>) -> Result<StateDict, TorchError> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| TorchError::Read { path: path.into(), source })?;
    parse(&bytes).map_err(|e| TorchError::File { path: path.into(), reason: e.to_string() })
}

const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
const PROTOCOL_VERSION: i64 = 1001;

/// Parses a legacy state-dict file held in memory.
pub fn parse(bytes: &[u8]) -> Result<StateDict, TorchError> {
    let mut pos = 0;
    let (m, magic) = Machine::run(bytes, &mut pos)?;
    if !matches!(magic, Value::Obj(i) if matches!(&m.objects[i], Object::BigInt(b) if b[..] == MAGIC)) {
        return Err(format_error(0, "wrong magic number (a zip-format .pt/.pth, or not PyTorch at all)"));
    }
    let at = pos;
    let (_, version) = Machine::run(bytes, &mut pos)?;
    if !matches!(version, Value::Int(PROTOCOL_VERSION)) {
        return Err(format_error(at, format!("protocol version {version:?}, expected {PROTOCOL_VERSION}")));
    }
    let at = pos;
    let (m, info) = Machine::run(bytes, &mut pos)?;
    if m.dict_get(info, "little_endian").is_some_and(|v| !matches!(v, Value::Bool(true))) {
        return Err(format_error(at, "a big-endian file (not supported)"));
    }

    let at = pos;
    let (m, root) = Machine::run(bytes, &mut pos)?;
    let Some(items) = m.dict(root) else {
        return Err(format_error(at, "the saved object is not a state dict (a dict of tensors)"));
    };
    let mut refs = Vec::with_capacity(items.len());
    let mut storage_types: HashMap<&str, (DType, usize)> = HashMap::new();
    for &(k, v) in items {
        let name = m.str(k).ok_or_else(|| format_error(at, "a state dict key is not a string"))?;
        let tensor = match v {
            Value::Obj(i) => match &m.objects[i] {
                Object::Tensor(t) => t,
                _ => return Err(format_error(at, format!("'{name}' is not a tensor"))),
            },
            _ => return Err(format_error(at, format!("'{name}' is not a tensor"))),
        };
        let storage = &tensor.storage;
        match storage_types.insert(&storage.key, (storage.dtype, storage.numel)) {
            Some(prev) if prev != (storage.dtype, storage.numel) => {
                return Err(format_error(at, format!("storage '{}' is declared with two types or sizes", storage.key)));
            }
            _ => {}
        }
        refs.push((name.to_string(), tensor, storage));
    }

    let at = pos;
    let (mk, keys) = Machine::run(bytes, &mut pos)?;
    let keys = mk.list(keys).ok_or_else(|| format_error(at, "the storage key list is not a list"))?;
    let mut data: HashMap<String, &[u8]> = HashMap::new();
    for &k in keys {
        let key = mk.str(k).ok_or_else(|| format_error(at, "a storage key is not a string"))?;
        let &(dtype, numel) = storage_types
            .get(key)
            .ok_or_else(|| format_error(pos, format!("storage '{key}' is listed but no tensor uses it")))?;
        let count = take(bytes, &mut pos, 8)?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        if count != numel as u64 {
            return Err(format_error(
                pos - 8,
                format!("storage '{key}' holds {count} elements, its tensors say {numel}"),
            ));
        }
        let len = numel.checked_mul(dtype.size()).ok_or_else(|| format_error(pos, "storage size overflows"))?;
        let raw = take(bytes, &mut pos, len)?;
        if data.insert(key.to_string(), raw).is_some() {
            return Err(format_error(pos, format!("storage '{key}' is listed twice")));
        }
    }

    let mut dict = StateDict::default();
    for (name, t, storage) in refs {
        let raw = data.get(storage.key.as_str()).ok_or_else(|| {
            format_error(pos, format!("'{name}': its storage '{}' has no data in the file", storage.key))
        })?;
        let indices = strided_indices(&t.shape, &t.stride, t.offset, storage.numel).ok_or_else(|| {
            format_error(
                pos,
                format!(
                    "'{name}': shape {:?} and stride {:?} from offset {} reach outside its storage of {} elements",
                    t.shape, t.stride, t.offset, storage.numel
                ),
            )
        })?;
        if dict.floats.contains_key(&name) || dict.others.contains_key(&name) {
            return Err(format_error(pos, format!("'{name}' appears twice")));
        }
        dict.names.push(name.clone());
        if storage.dtype == DType::F32 {
            let data = indices
                .into_iter()
                .map(|i| f32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes")))
                .collect();
            dict.floats.insert(name, Tensor { shape: t.shape.clone(), data });
        } else {
            dict.others.insert(name, (storage.dtype, t.shape.clone()));
        }
    }
    Ok(dict)
}

/// The storage index of every element of a tensor, row-major; `None` when one falls outside
/// `numel` elements (or the arithmetic overflows).
fn strided_indices(shape: &[usize], stride: &[usize], offset: usize, numel: usize) -> Option<Vec<usize>> {
    if shape.len() != stride.len() {
        return None;
    }
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))?;
    if count == 0 {
        return Some(Vec::new());
    }
    let last = shape.iter().zip(stride).try_fold(offset, |a, (&d, &s)| a.checked_add((d - 1).checked_mul(s)?))?;
    if last >= numel {
        return None;
    }
    // Every index is at most `last`, so the count is bounded by the storage (times repeats
    // when a stride is 0); still bounded by the file, since `count <= numel` unless strides
    // repeat elements, which a state dict never does: refuse that too.
    if count > numel {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    let mut idx = vec![0usize; shape.len()];
    for _ in 0..count {
        out.push(idx.iter().zip(stride).fold(offset, |a, (&i, &s)| a + i * s));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Some(out)
}

fn take<'a>(bytes: &'a [u8], pos: &mut usize, n: usize) -> Result<&'a [u8], TorchError> {
    let end = pos.checked_add(n).filter(|&e| e <= bytes.len()).ok_or_else(|| {
        format_error(*pos, format!("needs {n} more bytes, the file has {} left (truncated?)", bytes.len() - *pos))
    })?;
    let s = &bytes[*pos..end];
    *pos = end;
    Ok(s)
}

/// A pickle value on the stack: scalars inline, everything else an index into the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    None,
    Bool(bool),
    Int(i64),
    Obj(usize),
    Global(Global),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    Storage(DType),
}

#[derive(Debug)]
enum Object {
    Str(String),
    BigInt(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Storage(Storage),
    Tensor(TensorRef),
}

#[derive(Debug, Clone)]
struct Storage {
    dtype: DType,
    key: String,
    numel: usize,
}

#[derive(Debug)]
struct TensorRef {
    storage: Storage,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// The pickle machine: a stack, marks, a memo and the arena of objects.
struct Machine {
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    objects: Vec<Object>,
}

impl Machine {
    /// Runs one pickle from `*pos` to its STOP; returns the machine (its arena) and the result.
    fn run(bytes: &[u8], pos: &mut usize) -> Result<(Machine, Value), TorchError> {
        let mut m = Machine { stack: Vec::new(), marks: Vec::new(), memo: HashMap::new(), objects: Vec::new() };
        loop {
            let at = *pos;
            let op = take(bytes, pos, 1)?[0];
            let err = |what: String| format_error(at, what);
            match op {
                0x80 => {
                    // PROTO
                    let v = take(bytes, pos, 1)?[0];
                    if !(2..=5).contains(&v) {
                        return Err(err(format!("pickle protocol {v} (expected 2 to 5)")));
                    }
                }
                0x95 => {
                    take(bytes, pos, 8)?; // FRAME: a length hint only
                }
                b'.' => {
                    // STOP
                    let v = m.pop(at)?;
                    if !m.stack.is_empty() || !m.marks.is_empty() {
                        return Err(err("pickle ends with values left on its stack".into()));
                    }
                    return Ok((m, v));
                }
                b'(' => m.marks.push(m.stack.len()),
                b')' => m.push_obj(Object::Tuple(Vec::new())),
                b't' => {
                    let items = m.pop_mark(at)?;
                    m.push_obj(Object::Tuple(items));
                }
                0x85..=0x87 => {
                    // TUPLE1..3
                    let n = (op - 0x84) as usize;
                    if m.stack.len() < n + m.marks.last().copied().unwrap_or(0) {
                        return Err(err("tuple of more values than the stack holds".into()));
                    }
                    let items = m.stack.split_off(m.stack.len() - n);
                    m.push_obj(Object::Tuple(items));
                }
                b']' => m.push_obj(Object::List(Vec::new())),
                b'}' => m.push_obj(Object::Dict(Vec::new())),
                b'a' => {
                    let v = m.pop(at)?;
                    m.list_mut(at)?.push(v);
                }
                b'e' => {
                    let items = m.pop_mark(at)?;
                    m.list_mut(at)?.extend(items);
                }
                b's' => {
                    let v = m.pop(at)?;
                    let k = m.pop(at)?;
                    m.dict_mut(at)?.push((k, v));
                }
                b'u' => {
                    let items = m.pop_mark(at)?;
                    if items.len() % 2 != 0 {
                        return Err(err("SETITEMS with an odd number of values".into()));
                    }
                    let pairs: Vec<_> = items.chunks_exact(2).map(|p| (p[0], p[1])).collect();
                    m.dict_mut(at)?.extend(pairs);
                }
                b'N' => m.stack.push(Value::None),
                0x88 => m.stack.push(Value::Bool(true)),
                0x89 => m.stack.push(Value::Bool(false)),
                b'J' => {
                    let b = take(bytes, pos, 4)?;
                    m.stack.push(Value::Int(i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64));
                }
                b'K' => m.stack.push(Value::Int(take(bytes, pos, 1)?[0] as i64)),
                b'M' => {
                    let b = take(bytes, pos, 2)?;
                    m.stack.push(Value::Int(u16::from_le_bytes([b[0], b[1]]) as i64));
                }
                0x8a => {
                    // LONG1: little-endian two's complement of n bytes
                    let n = take(bytes, pos, 1)?[0] as usize;
                    let b = take(bytes, pos, n)?;
                    if n <= 8 {
                        let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) { 0xff } else { 0 };
                        let mut full = [fill; 8];
                        full[..n].copy_from_slice(b);
                        m.stack.push(Value::Int(i64::from_le_bytes(full)));
                    } else {
                        m.push_obj(Object::BigInt(b.to_vec()));
                    }
                }
                b'X' | 0x8c => {
                    // BINUNICODE (u32 length), SHORT_BINUNICODE (u8 length)
                    let n = if op == b'X' {
                        u32::from_le_bytes(take(bytes, pos, 4)?.try_into().expect("4 bytes")) as usize
                    } else {
                        take(bytes, pos, 1)?[0] as usize
                    };
                    let s =
                        std::str::from_utf8(take(bytes, pos, n)?).map_err(|_| err("a string is not UTF-8".into()))?;
                    m.push_obj(Object::Str(s.to_string()));
                }
                b'q' | b'r' | 0x94 => {
                    // BINPUT, LONG_BINPUT, MEMOIZE
                    let key = match op {
                        b'q' => take(bytes, pos, 1)?[0] as u32,
                        b'r' => u32::from_le_bytes(take(bytes, pos, 4)?.try_into().expect("4 bytes")),
                        _ => m.memo.len() as u32,
                    };
                    let v = *m.stack.last().ok_or_else(|| err("memo store from an empty stack".into()))?;
                    m.memo.insert(key, v);
                }
                b'h' | b'j' => {
                    let key = if op == b'h' {
                        take(bytes, pos, 1)?[0] as u32
                    } else {
                        u32::from_le_bytes(take(bytes, pos, 4)?.try_into().expect("4 bytes"))
                    };
                    let v = *m.memo.get(&key).ok_or_else(|| err(format!("memo {key} read before it is written")))?;
                    m.stack.push(v);
                }
                b'c' => {
                    let module = line(bytes, pos)?;
                    let name = line(bytes, pos)?;
                    let g = match (module, name) {
                        ("collections", "OrderedDict") => Global::OrderedDict,
                        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
                        ("torch", s) if DType::from_storage(s).is_some() => {
                            Global::Storage(DType::from_storage(s).expect("checked"))
                        }
                        _ => {
                            return Err(err(format!(
                                "global '{module}.{name}' is not allowed (a state dict needs only collections.OrderedDict, \
                                 torch._utils._rebuild_tensor_v2 and torch.*Storage)"
                            )));
                        }
                    };
                    m.stack.push(Value::Global(g));
                }
                b'R' => {
                    let args = m.pop(at)?;
                    let f = m.pop(at)?;
                    let args = m.tuple(args).ok_or_else(|| err("REDUCE arguments are not a tuple".into()))?.to_vec();
                    let obj = match f {
                        Value::Global(Global::OrderedDict) if args.is_empty() => Object::Dict(Vec::new()),
                        Value::Global(Global::RebuildTensorV2) => m.rebuild_tensor(&args).map_err(err)?,
                        other => return Err(err(format!("cannot call {other:?} with {} arguments", args.len()))),
                    };
                    m.push_obj(obj);
                }
                b'Q' => {
                    // BINPERSID: ("storage", torch.XStorage, key, location, numel, view_metadata)
                    let pid = m.pop(at)?;
                    let storage = m.persistent_storage(pid).map_err(err)?;
                    m.push_obj(Object::Storage(storage));
                }
                b'b' => {
                    // BUILD: an OrderedDict's attributes (`_metadata`); not needed, not applied.
                    m.pop(at)?;
                    if m.dict(*m.stack.last().ok_or_else(|| err("BUILD on an empty stack".into()))?).is_none() {
                        return Err(err("BUILD on something other than a dict".into()));
                    }
                }
                _ => {
                    return Err(err(format!(
                        "pickle opcode 0x{op:02x} ({:?}) is not allowed in a state dict",
                        op as char
                    )));
                }
            }
        }
    }

    fn push_obj(&mut self, o: Object) {
        self.objects.push(o);
        self.stack.push(Value::Obj(self.objects.len() - 1));
    }

    fn pop(&mut self, at: usize) -> Result<Value, TorchError> {
        if self.stack.len() <= self.marks.last().copied().unwrap_or(0) && !self.marks.is_empty() {
            return Err(format_error(at, "pops past a mark"));
        }
        self.stack.pop().ok_or_else(|| format_error(at, "pops an empty stack"))
    }

    fn pop_mark(&mut self, at: usize) -> Result<Vec<Value>, TorchError> {
        let mark = self.marks.pop().ok_or_else(|| format_error(at, "no mark to pop to"))?;
        Ok(self.stack.split_off(mark))
    }

    fn top_obj(&mut self, at: usize) -> Result<&mut Object, TorchError> {
        match self.stack.last() {
            Some(&Value::Obj(i)) => Ok(&mut self.objects[i]),
            _ => Err(format_error(at, "adds items to something that is not a container")),
        }
    }

    fn list_mut(&mut self, at: usize) -> Result<&mut Vec<Value>, TorchError> {
        match self.top_obj(at)? {
            Object::List(l) => Ok(l),
            _ => Err(format_error(at, "appends to something that is not a list")),
        }
    }

    fn dict_mut(&mut self, at: usize) -> Result<&mut Vec<(Value, Value)>, TorchError> {
        match self.top_obj(at)? {
            Object::Dict(d) => Ok(d),
            _ => Err(format_error(at, "sets an item of something that is not a dict")),
        }
    }

    fn str(&self, v: Value) -> Option<&str> {
        match v {
            Value::Obj(i) => match &self.objects[i] {
                Object::Str(s) => Some(s),
                _ => None,
            },
            _ => None,
        }
    }

    fn tuple(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match &self.objects[i] {
                Object::Tuple(t) => Some(t),
                _ => None,
            },
            _ => None,
        }
    }

    fn list(&self, v: Value) -> Option<&[Value]> {
        match v {
            Value::Obj(i) => match &self.objects[i] {
                Object::List(l) => Some(l),
                _ => None,
            },
            _ => None,
        }
    }

    fn dict(&self, v: Value) -> Option<&[(Value, Value)]> {
        match v {
            Value::Obj(i) => match &self.objects[i] {
                Object::Dict(d) => Some(d),
                _ => None,
            },
            _ => None,
        }
    }

    fn dict_get(&self, d: Value, key: &str) -> Option<Value> {
        self.dict(d)?.iter().find(|(k, _)| self.str(*k) == Some(key)).map(|&(_, v)| v)
    }

    fn usize(v: Value) -> Option<usize> {
        match v {
            Value::Int(i) => usize::try_from(i).ok(),
            _ => None,
        }
    }

    fn usizes(&self, v: Value) -> Option<Vec<usize>> {
        self.tuple(v)?.iter().map(|&x| Self::usize(x)).collect()
    }

    fn persistent_storage(&self, pid: Value) -> Result<Storage, String> {
        let bad = || "a persistent id that is not ('storage', torch.XStorage, key, location, numel, ...)".to_string();
        let t = self.tuple(pid).ok_or_else(bad)?;
        match t {
            [tag, Value::Global(Global::Storage(dtype)), key, location, numel, ..]
                if self.str(*tag) == Some("storage") && self.str(*location).is_some() =>
            {
                Ok(Storage {
                    dtype: *dtype,
                    key: self.str(*key).ok_or_else(bad)?.to_string(),
                    numel: Self::usize(*numel).ok_or_else(bad)?,
                })
            }
            _ => Err(bad()),
        }
    }

    fn rebuild_tensor(&self, args: &[Value]) -> Result<Object, String> {
        let bad = || "_rebuild_tensor_v2 needs (storage, offset, size, stride, requires_grad, hooks)".to_string();
        let [storage, offset, size, stride, ..] = args else { return Err(bad()) };
        let storage = match *storage {
            Value::Obj(i) => match &self.objects[i] {
                Object::Storage(s) => s.clone(),
                _ => return Err(bad()),
            },
            _ => return Err(bad()),
        };
        Ok(Object::Tensor(TensorRef {
            storage,
            offset: Self::usize(*offset).ok_or_else(bad)?,
            shape: self.usizes(*size).ok_or_else(bad)?,
            stride: self.usizes(*stride).ok_or_else(bad)?,
        }))
    }
}

/// A GLOBAL argument: bytes up to a newline, as UTF-8.
fn line<'a>(bytes: &'a [u8], pos: &mut usize) -> Result<&'a str, TorchError> {
    let rest = &bytes[*pos..];
    let n = rest
        .iter()
        .take(256)
        .position(|&b| b == b'\n')
        .ok_or_else(|| format_error(*pos, "GLOBAL name without an end"))?;
    let s = std::str::from_utf8(&rest[..n]).map_err(|_| format_error(*pos, "GLOBAL name is not UTF-8"))?;
    *pos += n + 1;
    Ok(s)
}

#[cfg(test)]
mod tests;
