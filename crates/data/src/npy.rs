//! `.npy` files (NumPy format 1.0, little-endian, C order), readable by `numpy.load`.
//!
//! [`NpyWriter`] streams rows into a file whose first dimension is known up front, so that
//! features for thousands of images never sit in memory at once; it writes atomically (see
//! [`crate::artifact`]) and refuses to commit a file with fewer or more rows than declared.
//! Reading checks the header against the file's size before allocating anything, with errors
//! that name the file.

use std::io::{Read, Write};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use ndarray::{ArrayBase, ArrayD, Data, Dimension, IxDyn, ShapeBuilder};

use crate::artifact::{AtomicFile, WriteError};

#[derive(Debug, thiserror::Error)]
pub enum NpyError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error("cannot read {path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: wrote {written} rows, but the header declares {declared}; the file was not saved")]
    RowCount { path: PathBuf, written: usize, declared: usize },
    #[error("{path}: a row has {got} values, expected a multiple of {row_len}")]
    RowShape { path: PathBuf, got: usize, row_len: usize },
}

/// Element types this module writes.
pub trait NpyElement: Copy {
    /// NumPy `descr`.
    const DESCR: &'static str;
    /// Bytes per element.
    const SIZE: usize = std::mem::size_of::<Self>();
    fn put(self, out: &mut Vec<u8>);
    /// From `SIZE` little-endian bytes.
    fn get(bytes: &[u8]) -> Self;
}

macro_rules! element {
    ($t:ty, $descr:literal) => {
        impl NpyElement for $t {
            const DESCR: &'static str = $descr;
            fn put(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn get(bytes: &[u8]) -> Self {
                <$t>::from_le_bytes(bytes.try_into().expect("SIZE bytes"))
            }
        }
    };
}
element!(f32, "<f4");
element!(f64, "<f8");
element!(i32, "<i4");
element!(i64, "<i8");
element!(u8, "|u1");

/// The NumPy 1.0 header for `shape` and element `descr`, padded to a multiple of 64 bytes.
pub fn header(descr: &str, shape: &[usize]) -> Vec<u8> {
    let dims = match shape.len() {
        1 => format!("{},", shape[0]),
        _ => shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", "),
    };
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({dims}), }}");
    let unpadded = 10 + dict.len() + 1; // magic+version+len, dict, newline
    dict.push_str(&" ".repeat(unpadded.next_multiple_of(64) - unpadded));
    dict.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    out.extend_from_slice(dict.as_bytes());
    out
}

/// Streams rows of a `[rows, ...row_shape]` array into an `.npy` file.
pub struct NpyWriter<T: NpyElement> {
    file: AtomicFile,
    declared: usize,
    row_len: usize,
    written: usize,
    buf: Vec<u8>,
    _t: PhantomData<T>,
}

impl<T: NpyElement> NpyWriter<T> {
    /// Starts `path` holding `rows` rows of shape `row_shape`.
    pub fn create(path: impl AsRef<Path>, rows: usize, row_shape: &[usize]) -> Result<Self, NpyError> {
        let mut file = AtomicFile::create(path)?;
        let mut shape = vec![rows];
        shape.extend_from_slice(row_shape);
        file.write_all(&header(T::DESCR, &shape)).map_err(|e| file.io_error(e))?;
        Ok(NpyWriter {
            file,
            declared: rows,
            row_len: row_shape.iter().product(),
            written: 0,
            buf: Vec::new(),
            _t: PhantomData,
        })
    }

    /// Appends one or more whole rows (`values.len()` a multiple of the row length).
    pub fn write_rows(&mut self, values: &[T]) -> Result<(), NpyError> {
        if self.row_len == 0 || !values.len().is_multiple_of(self.row_len) {
            return Err(NpyError::RowShape { path: self.file.path().into(), got: values.len(), row_len: self.row_len });
        }
        self.buf.clear();
        for &v in values {
            v.put(&mut self.buf);
        }
        self.file.write_all(&self.buf).map_err(|e| self.file.io_error(e))?;
        self.written += values.len() / self.row_len;
        Ok(())
    }

    pub fn rows_written(&self) -> usize {
        self.written
    }

    /// Checks the row count and moves the file into place.
    pub fn finish(self) -> Result<(), NpyError> {
        if self.written != self.declared {
            return Err(NpyError::RowCount {
                path: self.file.path().into(),
                written: self.written,
                declared: self.declared,
            });
        }
        Ok(self.file.commit()?)
    }
}

/// Writes a whole array atomically.
pub fn write<T: NpyElement, S: Data<Elem = T>, D: Dimension>(
    path: impl AsRef<Path>,
    array: &ArrayBase<S, D>,
) -> Result<(), NpyError> {
    let shape = array.shape();
    let (rows, row_shape) = match shape.split_first() {
        Some((r, rest)) => (*r, rest.to_vec()),
        None => (1, vec![]),
    };
    let mut w = NpyWriter::<T>::create(path, rows, &row_shape)?;
    if w.row_len == 0 {
        // Rows of no values (a zero in the row shape): all of them written by writing nothing.
        w.written = rows;
    } else {
        // Standard (C) order is what .npy stores.
        let values: Vec<T> = array.iter().copied().collect();
        if !values.is_empty() {
            w.write_rows(&values)?;
        }
    }
    w.finish()
}

/// Reads a whole array, with an error naming the file and the fix. Fortran-order files (numpy
/// writes them for transposed arrays) are read correctly and returned in standard (C) order,
/// which is what every caller indexes. The header is checked against the file's size before
/// anything is allocated, so a damaged header cannot ask for more memory than the file holds.
pub fn read<T: NpyElement>(path: impl AsRef<Path>) -> Result<ArrayD<T>, NpyError> {
    let path = path.as_ref();
    let bad = |reason: String| NpyError::Read { path: path.into(), reason };
    let (parsed, mut file) = open(path)?;
    let descr = &parsed.header.descr;
    let same_type = descr == T::DESCR || (T::SIZE == 1 && descr.get(1..) == T::DESCR.get(1..));
    if !same_type {
        return Err(bad(format!(
            "element type {descr:?} where {} was expected (was it written by another stage?)",
            T::DESCR
        )));
    }
    let count = parsed.data_len / T::SIZE;
    let mut values = Vec::with_capacity(count);
    let mut chunk = vec![0u8; parsed.data_len.min(1 << 20).next_multiple_of(T::SIZE)];
    let mut left = parsed.data_len;
    while left > 0 {
        let n = left.min(chunk.len());
        file.read_exact(&mut chunk[..n])
            .map_err(|e| bad(format!("{e}: the file is truncated or damaged; write it again")))?;
        values.extend(chunk[..n].chunks_exact(T::SIZE).map(T::get));
        left -= n;
    }
    let shape = IxDyn(&parsed.header.shape);
    let array = if parsed.fortran_order {
        ArrayD::from_shape_vec(shape.f(), values).map(|a| a.as_standard_layout().into_owned())
    } else {
        ArrayD::from_shape_vec(shape, values)
    };
    array.map_err(|e| bad(e.to_string()))
}

/// Shape and element type of an `.npy` file, from its header alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NpyHeader {
    pub descr: String,
    pub shape: Vec<usize>,
    /// Byte offset of the first element.
    pub data_offset: u64,
}

/// Reads an `.npy` header without reading the data, and checks that the file holds exactly the
/// data the header declares (so a caller may size buffers from the shape).
pub fn read_header(path: impl AsRef<Path>) -> Result<NpyHeader, NpyError> {
    let path = path.as_ref();
    let (parsed, _) = open(path)?;
    if parsed.fortran_order {
        return Err(NpyError::Read {
            path: path.into(),
            reason: "a Fortran-order array, which is streamed here as C order: save it with np.save(path, np.ascontiguousarray(a))".into(),
        });
    }
    Ok(parsed.header)
}

/// A header as parsed, with what [`read`] needs beyond [`NpyHeader`].
struct Parsed {
    header: NpyHeader,
    fortran_order: bool,
    /// Bytes of data the header declares, which the file holds.
    data_len: usize,
}

/// Opens an `.npy` file, parses its header and checks the declared data against the file's
/// size; the file is left positioned at the first element.
fn open(path: &Path) -> Result<(Parsed, std::fs::File), NpyError> {
    let bad = |reason: String| NpyError::Read { path: path.into(), reason };
    let damaged = |what: String| {
        bad(format!("{what}: the file is truncated or damaged; write it again (numpy.save or the stage that made it)"))
    };
    let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file".into()),
        _ => bad(e.to_string()),
    })?;
    let file_len = f.metadata().map_err(|e| bad(e.to_string()))?.len();
    let mut pre = [0u8; 10];
    f.read_exact(&mut pre).map_err(|_| bad("too short to be an .npy file".into()))?;
    if &pre[..6] != b"\x93NUMPY" {
        return Err(bad(
            "not a valid .npy file (bad magic); write it again (numpy.save or the stage that made it)".into()
        ));
    }
    let (len, offset) = match pre[6] {
        1 => (u64::from(u16::from_le_bytes([pre[8], pre[9]])), 10u64),
        2 | 3 => {
            let mut more = [0u8; 2];
            f.read_exact(&mut more).map_err(|_| damaged("the header is cut short".into()))?;
            (u64::from(u32::from_le_bytes([pre[8], pre[9], more[0], more[1]])), 12u64)
        }
        v => return Err(bad(format!("unsupported .npy format version {v}; save it again with numpy.save"))),
    };
    let data_offset = offset + len;
    if data_offset > file_len {
        return Err(damaged(format!(
            "the header declares {len} bytes of header, but the file holds {file_len} bytes in all"
        )));
    }
    let mut dict = vec![0u8; len as usize];
    f.read_exact(&mut dict).map_err(|e| bad(e.to_string()))?;
    let (descr, fortran_order, shape) = parse_dict(&String::from_utf8_lossy(&dict)).map_err(|e| {
        bad(format!("not a valid .npy file ({e}); write it again (numpy.save or the stage that made it)"))
    })?;
    let item = item_size(&descr).ok_or_else(|| {
        bad(format!("element type {descr:?} is not supported (expected a number type such as '<f4')"))
    })?;
    let data_len = shape.iter().try_fold(item, |n, &d| n.checked_mul(d));
    let held = file_len - data_offset;
    match data_len {
        Some(n) if n as u64 == held => {}
        Some(n) if (n as u64) < held => {
            return Err(damaged(format!(
                "{} bytes after the {n} bytes of data that shape {shape:?} of {descr} declares",
                held - n as u64
            )));
        }
        _ => {
            let declared = data_len.map_or_else(|| "more bytes than can exist".to_string(), |n| format!("{n} bytes"));
            return Err(damaged(format!(
                "the header declares shape {shape:?} of {descr}, {declared} of data, but the file holds {held} bytes after its header"
            )));
        }
    }
    let parsed = Parsed {
        header: NpyHeader { descr, shape, data_offset },
        fortran_order,
        data_len: data_len.expect("checked above"),
    };
    Ok((parsed, f))
}

/// Bytes per element of a NumPy number `descr` such as `<f4` or `|u1`.
fn item_size(descr: &str) -> Option<usize> {
    let rest = descr.strip_prefix(['<', '>', '|', '=']).unwrap_or(descr);
    let size = rest.strip_prefix(['b', 'i', 'u', 'f', 'c'])?;
    size.bytes().all(|b| b.is_ascii_digit()).then(|| size.parse().ok()).flatten().filter(|&n| n > 0)
}

/// The header dictionary, e.g. `{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`:
/// exactly these three keys, each once, with a string, a boolean and a tuple of integers.
fn parse_dict(text: &str) -> Result<(String, bool, Vec<usize>), String> {
    let mut c = Cursor { s: text.as_bytes(), i: 0 };
    c.expect(b'{')?;
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    while !c.eat(b'}') {
        let key = c.string()?;
        c.expect(b':')?;
        let seen = match key.as_str() {
            "descr" => descr.replace(c.string()?).is_some(),
            "fortran_order" => fortran.replace(c.boolean()?).is_some(),
            "shape" => shape.replace(c.tuple()?).is_some(),
            _ => return Err(format!("unknown header key '{key}'")),
        };
        if seen {
            return Err(format!("header key '{key}' appears twice"));
        }
        if !c.eat(b',') {
            c.expect(b'}')?;
            break;
        }
    }
    if c.s[c.i..].iter().any(|b| !b.is_ascii_whitespace()) {
        return Err("text after the header dictionary".into());
    }
    let missing = |k: &str| format!("header has no '{k}'");
    Ok((
        descr.ok_or_else(|| missing("descr"))?,
        fortran.ok_or_else(|| missing("fortran_order"))?,
        shape.ok_or_else(|| missing("shape"))?,
    ))
}

/// A position in the header text, skipping white space before each token.
struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&mut self) -> Option<u8> {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
        self.s.get(self.i).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let found = self.peek() == Some(b);
        self.i += usize::from(found);
        found
    }

    fn expect(&mut self, b: u8) -> Result<(), String> {
        if self.eat(b) { Ok(()) } else { Err(format!("expected '{}' at byte {} of the header", b as char, self.i)) }
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self
            .peek()
            .filter(|q| matches!(q, b'\'' | b'"'))
            .ok_or_else(|| format!("expected a quoted string at byte {}", self.i))?;
        let start = self.i + 1;
        let len = self.s[start..].iter().position(|&b| b == quote).ok_or("a string without its closing quote")?;
        self.i = start + len + 1;
        Ok(String::from_utf8_lossy(&self.s[start..start + len]).into_owned())
    }

    fn boolean(&mut self) -> Result<bool, String> {
        self.peek();
        for (word, value) in [(&b"True"[..], true), (b"False", false)] {
            if self.s[self.i..].starts_with(word) {
                self.i += word.len();
                return Ok(value);
            }
        }
        Err(format!("expected True or False at byte {}", self.i))
    }

    fn tuple(&mut self) -> Result<Vec<usize>, String> {
        self.expect(b'(')?;
        let mut dims = Vec::new();
        while !self.eat(b')') {
            self.peek();
            let digits = self.s[self.i..].iter().take_while(|b| b.is_ascii_digit()).count();
            let text = std::str::from_utf8(&self.s[self.i..self.i + digits]).expect("ASCII digits");
            dims.push(text.parse::<usize>().map_err(|_| format!("bad shape entry at byte {}", self.i))?);
            self.i += digits;
            self.eat(b'L'); // Python 2's long integers
            if !self.eat(b',') {
                self.expect(b')')?;
                break;
            }
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array2, Array4, array};

    #[test]
    fn header_is_64_byte_aligned_and_parses_back() {
        for shape in [vec![3], vec![2000, 4, 4, 512], vec![0, 8192]] {
            let h = header("<f4", &shape);
            assert_eq!(h.len() % 64, 0);
            assert_eq!(*h.last().unwrap(), b'\n');
        }
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write(&p, &Array4::<f32>::zeros((3, 4, 4, 2))).unwrap();
        let h = read_header(&p).unwrap();
        assert_eq!(h, NpyHeader { descr: "<f4".into(), shape: vec![3, 4, 4, 2], data_offset: 128 });
    }

    #[test]
    fn streamed_rows_read_back_with_ndarray_npy() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.npy");
        let mut w = NpyWriter::<f32>::create(&p, 3, &[2, 2]).unwrap();
        w.write_rows(&[0., 1., 2., 3., 4., 5., 6., 7.]).unwrap();
        w.write_rows(&[8., 9., 10., 11.]).unwrap();
        w.finish().unwrap();
        let a = read::<f32>(&p).unwrap();
        assert_eq!(a.shape(), [3, 2, 2]);
        assert_eq!(a.iter().copied().collect::<Vec<_>>(), (0..12).map(|v| v as f32).collect::<Vec<_>>());
    }

    #[test]
    fn wrong_row_count_is_refused_and_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("short.npy");
        let mut w = NpyWriter::<i64>::create(&p, 3, &[]).unwrap();
        w.write_rows(&[1, 2]).unwrap();
        let err = w.finish().unwrap_err().to_string();
        assert!(err.contains("wrote 2 rows") && err.contains("declares 3"), "{err}");
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn partial_row_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = NpyWriter::<f32>::create(dir.path().join("r.npy"), 1, &[4]).unwrap();
        assert!(matches!(w.write_rows(&[1.0, 2.0, 3.0]), Err(NpyError::RowShape { .. })));
    }

    #[test]
    fn whole_arrays_round_trip_for_each_type() {
        let dir = tempfile::tempdir().unwrap();
        let labels = array![0i64, 1, 1];
        write(dir.path().join("l.npy"), &labels).unwrap();
        assert_eq!(read::<i64>(dir.path().join("l.npy")).unwrap(), labels.into_dyn());
        let bytes = Array2::<u8>::from_shape_fn((2, 3), |(i, j)| (i * 3 + j) as u8);
        write(dir.path().join("u.npy"), &bytes).unwrap();
        assert_eq!(read::<u8>(dir.path().join("u.npy")).unwrap(), bytes.into_dyn());
    }

    #[test]
    fn arrays_without_values_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        for shape in [vec![2, 0], vec![0, 3], vec![0]] {
            let p = dir.path().join("e.npy");
            write(&p, &ArrayD::<f32>::zeros(IxDyn(&shape))).unwrap();
            assert_eq!(read::<f32>(&p).unwrap().shape(), shape);
            assert_eq!(read_header(&p).unwrap().shape, shape);
        }
    }

    #[test]
    fn a_header_claiming_more_than_the_file_holds_is_refused_before_allocating() {
        // Issue 34: (100000000000, 4, 4, 512) floats in a file of 1 KB of data aborted with
        // "memory allocation of 3276800000000000 bytes failed".
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("features.npy");
        let mut bytes = header("<f4", &[100_000_000_000, 4, 4, 512]);
        bytes.extend([0u8; 1024]);
        std::fs::write(&p, &bytes).unwrap();
        for err in [read::<f32>(&p).unwrap_err().to_string(), read_header(&p).unwrap_err().to_string()] {
            assert!(err.contains("features.npy") && err.contains("3276800000000000 bytes of data"), "{err}");
            assert!(err.contains("the file holds 1024 bytes after its header"), "{err}");
        }
        // More than can exist, a header longer than the file, a dictionary that is not one.
        let mut huge = header("<f4", &[1 << 40, 1 << 40]);
        huge.extend([0u8; 8]);
        std::fs::write(&p, &huge).unwrap();
        assert!(read::<f32>(&p).unwrap_err().to_string().contains("more bytes than can exist"));
        let mut long = b"\x93NUMPY\x02\x00".to_vec();
        long.extend(u32::MAX.to_le_bytes());
        std::fs::write(&p, &long).unwrap();
        assert!(read::<f32>(&p).unwrap_err().to_string().contains("4294967295 bytes of header"));
        for dict in [
            "{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}",
            "{'descr': '<f4', 'fortran_order': False}",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }",
            "{'descr': '<f4', 'fortran_order': False, 'shape': (1,), } trailing",
        ] {
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend((dict.len() as u16).to_le_bytes());
            b.extend(dict.as_bytes());
            b.extend([0u8; 4]);
            std::fs::write(&p, &b).unwrap();
            let err = read::<f32>(&p).unwrap_err().to_string();
            assert!(err.contains("not a valid .npy file"), "{dict}: {err}");
        }
    }

    #[test]
    fn fortran_order_files_read_as_their_values() {
        // What numpy.save writes for a transposed [2, 3] array: column-major data.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.npy");
        let mut bytes = header("<i8", &[2, 3]);
        let at = bytes.windows(5).position(|w| w == b"False").unwrap();
        bytes.splice(at..at + 5, *b"True ");
        for v in [0i64, 3, 1, 4, 2, 5] {
            bytes.extend(v.to_le_bytes());
        }
        std::fs::write(&p, &bytes).unwrap();
        let a = read::<i64>(&p).unwrap();
        assert!(a.is_standard_layout());
        assert_eq!(a, array![[0i64, 1, 2], [3, 4, 5]].into_dyn());
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("f.npy") && err.contains("np.ascontiguousarray"), "{err}");
    }

    #[test]
    fn damaged_files_say_to_write_them_again() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.npy");
        write(&p, &array![1.0f32, 2.0, 3.0]).unwrap();
        let whole = std::fs::read(&p).unwrap();
        std::fs::write(&p, &whole[..whole.len() - 4]).unwrap();
        let err = read::<f32>(&p).unwrap_err().to_string();
        assert!(err.contains("x.npy") && err.contains("truncated"), "{err}");
        let mut bad = whole.clone();
        bad[20] = b'#';
        std::fs::write(&p, &bad).unwrap();
        let err = read::<f32>(&p).unwrap_err().to_string();
        assert!(err.contains("x.npy") && err.contains("not a valid .npy file"), "{err}");
        let err = read::<f32>(dir.path().join("none.npy")).unwrap_err().to_string();
        assert!(err.contains("none.npy: no such file"), "{err}");
    }

    #[test]
    fn reading_with_the_wrong_type_names_file_and_types() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.npy");
        write(&p, &array![1i64, 2]).unwrap();
        let err = read::<f32>(&p).unwrap_err().to_string();
        assert!(err.contains("labels.npy") && err.contains("<f4"), "{err}");
        std::fs::write(&p, b"garbage").unwrap();
        let err = read_header(&p).unwrap_err().to_string();
        assert!(err.contains("labels.npy"), "{err}");
    }
}
