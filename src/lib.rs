//! smalldata: see README.md. The binaries live in src/bin; the logic in crates/.
