#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Behaviour tests: the real broker, in-process on an ephemeral port, driven
//! by a real client (lapin) or by raw bytes on a socket.
//!
//! One test binary (this file and its modules) keeps debug builds lean.

mod common;
mod pki;
mod raw;

mod access;
mod auth;
mod bad_input;
mod basic;
mod bounded;
mod channels;
mod confirms;
mod connection;
mod crash;
mod definitions;
mod definitions_boot;
mod definitions_rabbitmq;
mod durability;
mod exchanges;
mod flow_control;
mod fuzz_corpus;
mod hostile_topology;
mod layering;
mod limits;
mod openapi;
mod properties;
mod queue_features;
mod queues;
mod server;
mod smoke;
mod store_faults;
mod store_faults_runtime;
mod streams;
mod super_streams;
mod telemetry;
mod tls;
