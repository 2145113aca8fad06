//! Files written here byte by byte the way `torch.save(state_dict, f,
//! _use_new_zipfile_serialization=False)` lays them out (pickle protocol 2), then read back; and
//! hostile variants of them.

use super::*;

/// A pickle protocol 2 writer for the few things a legacy file holds.
#[derive(Default)]
struct Pickle(Vec<u8>);

impl Pickle {
    fn new() -> Pickle {
        Pickle(vec![0x80, 2])
    }
    fn op(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X").op(&(s.len() as u32).to_le_bytes()).op(s.as_bytes())
    }
    fn int(&mut self, i: usize) -> &mut Self {
        match i32::try_from(i) {
            Ok(i) => self.op(b"J").op(&i.to_le_bytes()),
            Err(_) => self.op(&[0x8a, 8]).op(&(i as u64).to_le_bytes()),
        }
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(b"c").op(module.as_bytes()).op(b"\n").op(name.as_bytes()).op(b"\n")
    }
    fn ints(&mut self, v: &[usize]) -> &mut Self {
        self.op(b"(");
        for &x in v {
            self.int(x);
        }
        self.op(b"t")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        std::mem::take(&mut self.0)
    }
}

struct Entry<'a> {
    name: &'a str,
    storage_type: &'a str,
    key: &'a str,
    numel: usize,
    offset: usize,
    shape: &'a [usize],
    stride: &'a [usize],
}

fn contiguous(shape: &[usize]) -> Vec<usize> {
    let mut s = vec![1; shape.len()];
    for d in (0..shape.len().saturating_sub(1)).rev() {
        s[d] = s[d + 1] * shape[d + 1];
    }
    s
}

/// The header pickles (magic, protocol, sys info).
fn header() -> Vec<u8> {
    let mut out = Pickle::new().op(&[0x8a, 10]).op(&MAGIC).stop();
    out.extend(Pickle::new().op(b"M").op(&1001u16.to_le_bytes()).stop());
    let mut info = Pickle::new();
    info.op(b"}(").str("protocol_version").op(b"M").op(&1001u16.to_le_bytes()).str("little_endian").op(&[0x88]);
    out.extend(info.op(b"u").stop());
    out
}

/// The state dict pickle; with memo use like torch's (the global and storage type memoised).
fn state_dict_pickle(entries: &[Entry]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.global("collections", "OrderedDict").op(b"q\x00").op(b")R").op(b"q\x01(");
    for e in entries {
        p.str(e.name).global("torch._utils", "_rebuild_tensor_v2").op(b"((").str("storage");
        p.global("torch", e.storage_type).str(e.key).str("cpu").int(e.numel).op(b"NtQ");
        p.int(e.offset).ints(e.shape).ints(e.stride).op(&[0x89]).op(b"h\x00)R").op(b"tR");
    }
    // torch's _metadata attribute, set by BUILD
    p.op(b"u}(").str("_metadata").op(b"h\x00)R").op(b"ub");
    p.stop()
}

fn keys_pickle(keys: &[&str]) -> Vec<u8> {
    let mut p = Pickle::new();
    p.op(b"](");
    for k in keys {
        p.str(k);
    }
    p.op(b"e").stop()
}

fn storage(count: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = count.to_le_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn floats(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// conv.weight [2, 1, 2] and its transposed view conv.t [2, 2] (offset 1... of the same
/// storage), bn.num_batches_tracked (int64 scalar), bias [3].
fn sample_file() -> Vec<u8> {
    let w: Vec<f32> = (0..4).map(|i| i as f32 * 0.5 - 1.0).collect();
    let entries = [
        Entry {
            name: "conv.weight",
            storage_type: "FloatStorage",
            key: "10",
            numel: 5,
            offset: 0,
            shape: &[2, 1, 2],
            stride: &contiguous(&[2, 1, 2]),
        },
        Entry {
            name: "conv.t",
            storage_type: "FloatStorage",
            key: "10",
            numel: 5,
            offset: 1,
            shape: &[2, 2],
            stride: &[1, 2],
        },
        Entry {
            name: "bn.num_batches_tracked",
            storage_type: "LongStorage",
            key: "11",
            numel: 1,
            offset: 0,
            shape: &[],
            stride: &[],
        },
        Entry { name: "bias", storage_type: "FloatStorage", key: "9", numel: 3, offset: 0, shape: &[3], stride: &[1] },
    ];
    let mut out = header();
    out.extend(state_dict_pickle(&entries));
    out.extend(keys_pickle(&["10", "11", "9"]));
    let mut five = w.clone();
    five.push(7.0);
    out.extend(storage(5, &floats(&five)));
    out.extend(storage(1, &0i64.to_le_bytes()));
    out.extend(storage(3, &floats(&[1.0, -2.0, 3.5])));
    out
}

#[test]
fn reads_float_tensors_views_and_other_types() {
    let dict = parse(&sample_file()).unwrap();
    assert_eq!(dict.names, ["conv.weight", "conv.t", "bn.num_batches_tracked", "bias"]);
    let w = dict.float("conv.weight").unwrap();
    assert_eq!((w.shape.as_slice(), w.data.as_slice()), (&[2, 1, 2][..], &[-1.0, -0.5, 0.0, 0.5][..]));
    // storage [-1, -0.5, 0, 0.5, 7] from offset 1, stride [1, 2]: [[-0.5, 0.5], [0, 7]]
    assert_eq!(dict.float("conv.t").unwrap().data, [-0.5, 0.5, 0.0, 7.0]);
    assert_eq!(dict.float("bias").unwrap().data, [1.0, -2.0, 3.5]);
    assert_eq!(dict.others["bn.num_batches_tracked"], (DType::I64, vec![]));
    let e = dict.float("bn.num_batches_tracked").unwrap_err().to_string();
    assert!(e.contains("int64"), "{e}");
    assert!(dict.float("nope").unwrap_err().to_string().contains("no tensor 'nope'"));
}

#[test]
fn reads_from_a_file_and_names_it_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("w.pth");
    std::fs::write(&p, sample_file()).unwrap();
    assert_eq!(read(&p).unwrap().floats.len(), 3);
    std::fs::write(&p, b"PK\x03\x04 a zip").unwrap();
    let e = read(&p).unwrap_err().to_string();
    assert!(e.contains("w.pth") && e.contains("byte 0"), "{e}");
    assert!(read(dir.path().join("missing.pth")).unwrap_err().to_string().contains("cannot read"));
}

fn parse_err(bytes: &[u8]) -> String {
    parse(bytes).unwrap_err().to_string()
}

#[test]
fn an_unknown_opcode_is_named() {
    // INST ('i') can call anything: not part of the machine.
    let mut f = header();
    f.extend(Pickle::new().op(b"ios\nsystem\n").stop());
    let e = parse_err(&f);
    assert!(e.contains("opcode 0x69 ('i')") && e.contains("not allowed"), "{e}");
}

#[test]
fn an_unknown_global_is_named() {
    let mut f = header();
    f.extend(Pickle::new().global("os", "system").str("echo hi").op(&[0x85]).op(b"R").stop());
    let e = parse_err(&f);
    assert!(e.contains("global 'os.system' is not allowed"), "{e}");
    let mut f = header();
    f.extend(Pickle::new().global("torch", "Tensor").stop());
    assert!(parse_err(&f).contains("'torch.Tensor'"));
}

#[test]
fn sizes_larger_than_the_file_fail_before_allocating() {
    // A storage claiming 2^40 floats (4 TiB): refused by the byte count, nothing allocated.
    let huge = 1usize << 40;
    let entries = [Entry {
        name: "w",
        storage_type: "FloatStorage",
        key: "0",
        numel: huge,
        offset: 0,
        shape: &[huge],
        stride: &[1],
    }];
    let mut f = header();
    f.extend(state_dict_pickle(&entries));
    f.extend(keys_pickle(&["0"]));
    f.extend(storage(huge as u64, &floats(&[1.0, 2.0])));
    let e = parse_err(&f);
    assert!(e.contains("more bytes") && e.contains("truncated"), "{e}");
    // A string whose length runs past the end.
    let mut f = header();
    f.extend([0x80, 2, b'X', 0xff, 0xff, 0xff, 0x7f, b'a']);
    assert!(parse_err(&f).contains("more bytes"));
    // A tensor reaching outside its storage.
    let entries =
        [Entry { name: "w", storage_type: "FloatStorage", key: "0", numel: 2, offset: 1, shape: &[2], stride: &[1] }];
    let mut f = header();
    f.extend(state_dict_pickle(&entries));
    f.extend(keys_pickle(&["0"]));
    f.extend(storage(2, &floats(&[1.0, 2.0])));
    assert!(parse_err(&f).contains("reach outside its storage"));
    // A count that disagrees with the tensor's declared size.
    let entries =
        [Entry { name: "w", storage_type: "FloatStorage", key: "0", numel: 2, offset: 0, shape: &[2], stride: &[1] }];
    let mut f = header();
    f.extend(state_dict_pickle(&entries));
    f.extend(keys_pickle(&["0"]));
    f.extend(storage(1, &floats(&[1.0])));
    assert!(parse_err(&f).contains("holds 1 elements, its tensors say 2"));
}

#[test]
fn every_truncation_and_many_corruptions_are_errors_not_panics() {
    let good = sample_file();
    for n in 0..good.len() {
        assert!(parse(&good[..n]).is_err(), "prefix of {n} bytes");
    }
    // Deterministic byte flips (an LCG): any outcome but a panic is fine.
    let mut state = 0x2545f4914f6cdd1du64;
    for _ in 0..3000 {
        let mut f = good.clone();
        for _ in 0..3 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let i = (state >> 33) as usize % f.len();
            f[i] = (state >> 17) as u8;
        }
        let _ = parse(&f);
    }
}

#[test]
fn memo_cycles_are_harmless() {
    // A list that contains itself: fine for the arena, and not a state dict.
    let mut f = header();
    f.extend(Pickle::new().op(b"]q\x00h\x00a").stop());
    assert!(parse_err(&f).contains("not a state dict"));
}
