#![deny(unsafe_code)]
//! ipc
