//! The dev server's library side: the product tour run by `make demo` and by the
//! end-to-end tests.

pub mod tour;
