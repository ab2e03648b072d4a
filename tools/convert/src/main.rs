//! `memkern-convert`: model converters (work in progress).

fn main() {}
