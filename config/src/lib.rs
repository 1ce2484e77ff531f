#![deny(unsafe_code)]
//! config
