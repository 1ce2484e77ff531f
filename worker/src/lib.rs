#![deny(unsafe_code)]
//! worker library
