//! A guard against stack exhaustion: field tables and arrays can nest, and
//! `amq-protocol` parses them recursively, so a peer could send a table
//! nested tens of thousands of levels deep (a 128 KiB frame is room enough)
//! and overflow the stack of the task parsing it. Before any table reaches
//! the recursive parser, this non-recursive scan measures its depth.
//!
//! The scan follows the AMQP field grammar (RabbitMQ's type tags). Malformed
//! input is left for the real parser to reject with its own error; only
//! excessive depth is reported here.

/// Deeper than any real application's headers, shallow enough for the
/// parser's recursion on a 2 MiB stack.
pub const MAX_DEPTH: usize = 64;

/// Whether the field table starting at `bytes[0]` (its 4-byte length first)
/// nests at most [`MAX_DEPTH`] levels. Malformed input returns true: the
/// parser will refuse it.
pub fn table_depth_ok(bytes: &[u8]) -> bool {
    // Each open container: (is_table, end offset).
    let mut stack: Vec<(bool, usize)> = Vec::new();
    let Some(len) = read_u32(bytes, 0) else {
        return true;
    };
    let mut pos: usize = 4;
    stack.push((true, pos.saturating_add(len)));
    while let Some(&(is_table, end)) = stack.last() {
        if pos >= end {
            stack.pop();
            pos = end;
            continue;
        }
        if is_table {
            // key: short string
            let Some(&klen) = bytes.get(pos) else {
                return true;
            };
            pos += 1 + klen as usize;
        }
        let Some(&tag) = bytes.get(pos) else {
            return true;
        };
        pos += 1;
        let fixed = match tag {
            b't' | b'b' | b'B' => 1,
            b's' | b'u' | b'U' => 2,
            b'I' | b'i' | b'f' => 4,
            b'l' | b'L' | b'd' | b'T' => 8,
            b'D' => 5,
            b'V' => 0,
            b'S' | b'x' => match read_u32(bytes, pos) {
                Some(n) => 4 + n,
                None => return true,
            },
            b'F' | b'A' => {
                let Some(n) = read_u32(bytes, pos) else {
                    return true;
                };
                pos += 4;
                let inner_end = pos.saturating_add(n).min(end);
                if stack.len() >= MAX_DEPTH {
                    return false;
                }
                stack.push((tag == b'F', inner_end));
                continue;
            }
            _ => return true,
        };
        pos = pos.saturating_add(fixed);
    }
    true
}

fn read_u32(bytes: &[u8], at: usize) -> Option<usize> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
}

/// Offset of the field-table argument in a method payload (after the class
/// and method ids), for the methods a client sends that carry one.
pub fn method_table_offset(class_id: u16, method_id: u16, payload: &[u8]) -> Option<usize> {
    let shortstr = |at: usize| -> Option<usize> { Some(at + 1 + *payload.get(at)? as usize) };
    let args = 4;
    match (class_id, method_id) {
        // connection.start-ok: client-properties first
        (10, 11) => Some(args),
        // exchange.declare: ticket, exchange, type, flags, arguments
        (40, 10) => Some(shortstr(shortstr(args + 2)?)? + 1),
        // exchange.bind / unbind: ticket, destination, source, key, nowait, arguments
        (40, 30) | (40, 40) => Some(shortstr(shortstr(shortstr(args + 2)?)?)? + 1),
        // queue.declare: ticket, queue, flags, arguments
        (50, 10) => Some(shortstr(args + 2)? + 1),
        // queue.bind: ticket, queue, exchange, key, nowait, arguments
        (50, 20) => Some(shortstr(shortstr(shortstr(args + 2)?)?)? + 1),
        // queue.unbind: ticket, queue, exchange, key, arguments
        (50, 50) => shortstr(shortstr(shortstr(args + 2)?)?),
        // basic.consume: ticket, queue, tag, flags, arguments
        (60, 20) => Some(shortstr(shortstr(args + 2)?)? + 1),
        _ => None,
    }
}

/// Offset of the `headers` table in raw content-header properties, if set.
pub fn properties_headers_offset(props: &[u8]) -> Option<usize> {
    let flags = u16::from_be_bytes([*props.first()?, *props.get(1)?]);
    let mut pos = 2;
    for bit in [15, 14] {
        if flags & (1 << bit) != 0 {
            pos += 1 + *props.get(pos)? as usize;
        }
    }
    (flags & (1 << 13) != 0).then_some(pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> Vec<u8> {
        let mut table: Vec<u8> = Vec::new();
        for _ in 0..depth {
            let mut outer = vec![1u8, b'k', b'F'];
            outer.extend_from_slice(&(table.len() as u32).to_be_bytes());
            outer.extend_from_slice(&table);
            table = outer;
        }
        let mut out = (table.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&table);
        out
    }

    #[test]
    fn shallow_tables_pass_and_deep_ones_fail() {
        assert!(table_depth_ok(&nested(1)));
        assert!(table_depth_ok(&nested(MAX_DEPTH - 1)));
        assert!(!table_depth_ok(&nested(MAX_DEPTH + 1)));
        assert!(!table_depth_ok(&nested(20_000)));
    }

    #[test]
    fn ordinary_values_are_skipped() {
        let mut t = Vec::new();
        for (k, tag, v) in [
            ("a", b'S', &[0u8, 0, 0, 2, b'h', b'i'][..]),
            ("b", b'I', &[0, 0, 0, 1]),
            ("c", b'A', &[0, 0, 0, 2, b't', 1]),
            ("d", b'V', &[]),
        ] {
            t.push(k.len() as u8);
            t.extend_from_slice(k.as_bytes());
            t.push(tag);
            t.extend_from_slice(v);
        }
        let mut out = (t.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&t);
        assert!(table_depth_ok(&out));
    }

    #[test]
    fn truncated_input_is_left_to_the_parser() {
        assert!(table_depth_ok(&[0, 0]));
        assert!(table_depth_ok(&[0, 0, 0, 9, 1, b'k', b'F']));
    }
}
