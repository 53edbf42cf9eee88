//! Behaviour tests: the real broker, in-process on an ephemeral port, driven
//! by a real client (lapin) or by raw bytes on a socket.
//!
//! One test binary (this file and its modules) keeps debug builds lean.

mod common;

mod smoke;
