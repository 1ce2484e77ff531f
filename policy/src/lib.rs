#![deny(unsafe_code)]
//! policy
