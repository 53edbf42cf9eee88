//! The configuration layers (`config::Config`): a config file's text over
//! the embedded defaults, then `WARREN_*` environment variables. Any text
//! gives a configuration or a clear error, never a panic.
//!
//! The input is the file's text; after a NUL byte, `NAME=value` lines for
//! the environment.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (file, env) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let Ok(file) = std::str::from_utf8(file) else {
        return;
    };
    let env = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let _ = warren::fuzzing::config(file, env);
});
