#![deny(unsafe_code)]
//! tests
