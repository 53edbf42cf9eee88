//! Content-header properties, differentially: Warren's allocation-free
//! reader (`amqp::properties::read`, on the publish path) against
//! amq-protocol's decoder (`message::parse`). Both accept the same bytes,
//! and read the same values: the fields the broker checks, and the
//! header table's top-level keys. What parses re-encodes to bytes that
//! parse to the same encoding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use warren::amqp::properties;
use warren::message;

fuzz_target!(|raw: &[u8]| {
    let fast = properties::read(raw);
    let full = message::parse(raw);
    let (fast, full) = match (fast, full) {
        (None, None) => return,
        (Some(f), None) => panic!("only the fast reader accepts: {f:?}"),
        (None, Some(p)) => panic!("only amq-protocol accepts: {p:?}"),
        (Some(f), Some(p)) => (f, p),
    };
    assert_eq!(fast.delivery_mode, *full.delivery_mode());
    assert_eq!(fast.priority, *full.priority());
    assert_eq!(fast.reply_to, full.reply_to().as_ref().map(|s| s.as_str()));
    assert_eq!(
        fast.expiration,
        full.expiration().as_ref().map(|s| s.as_str())
    );
    assert_eq!(fast.user_id, full.user_id().as_ref().map(|s| s.as_str()));
    assert_eq!(fast.headers.is_some(), full.headers().is_some());
    if let Some(headers) = full.headers() {
        for key in headers.inner().keys() {
            assert!(fast.has_header(&[key.as_str()]), "header {key:?} not found");
        }
        let absent = "\u{0}not-a-key";
        assert_eq!(
            fast.has_header(&[absent]),
            headers.inner().contains_key(absent)
        );
    }
    let encoded = message::encode(&full);
    let again = message::parse(&encoded).expect("Warren's own encoding parses");
    assert_eq!(message::encode(&again), encoded);
});
