//! A boot from stored definitions (`store::definitions` records, restored
//! by `Broker::open`): whatever the store holds — truncated JSON, wrong
//! types, unknown exchange types, queue arguments this build rejects,
//! policies with bad patterns, bindings with a missing end — the broker
//! starts or refuses with an error, and never panics.
//!
//! The input is one record per line: the kind letter a record's key starts
//! with (`v` vhost, `u` user, `p` permission, `P` policy, `e` exchange, `q`
//! queue, `b` binding), then its JSON.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let records: Vec<(u8, &[u8])> = data
        .split(|b| *b == b'\n')
        .filter_map(|line| line.split_first().map(|(kind, json)| (*kind, json)))
        .collect();
    let _ = warren::fuzzing::boot_from_definitions(&records);
});
