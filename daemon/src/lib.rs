#![deny(unsafe_code)]
//! daemon library
