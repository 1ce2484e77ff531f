#![deny(unsafe_code)]
//! mgmt-broker library
