#![deny(unsafe_code)]
//! pki
