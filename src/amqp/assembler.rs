//! Content assembly: `basic.publish` → content header → body frames → one
//! complete message, as a pure state machine per channel.
//!
//! Frames of other kinds arriving mid-message, bodies longer than announced,
//! and oversize messages are protocol errors with RabbitMQ's codes. Bodies
//! are gathered into one exact-size buffer; a small frame is copied rather
//! than kept as a slice of the connection's read buffer, which would pin the
//! whole read buffer for as long as the message sits in a queue.

use amq_protocol::protocol::basic::Publish;
use bytes::{Bytes, BytesMut};

use crate::error::{AmqpError, AmqpResult};

/// Frames at least this large are kept as zero-copy slices.
const ZERO_COPY_MIN: usize = 32 * 1024;

#[derive(Debug, Default)]
pub enum Assembler {
    #[default]
    Idle,
    AwaitingHeader(Box<Publish>),
    AwaitingBody {
        publish: Box<Publish>,
        properties: Bytes,
        size: usize,
        body: Body,
    },
}

#[derive(Debug)]
pub enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

/// A fully assembled publish.
#[derive(Debug)]
pub struct Content {
    pub publish: Box<Publish>,
    pub properties: Bytes,
    pub body: Bytes,
}

impl Assembler {
    pub fn is_idle(&self) -> bool {
        matches!(self, Assembler::Idle)
    }

    /// A `basic.publish` method arrived.
    pub fn start(&mut self, publish: Publish) -> AmqpResult<()> {
        self.expect_method()?;
        if publish.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        *self = Assembler::AwaitingHeader(Box::new(publish));
        Ok(())
    }

    /// Any method other than a publish is only valid between messages.
    pub fn expect_method(&self) -> AmqpResult<()> {
        match self {
            Assembler::Idle => Ok(()),
            Assembler::AwaitingHeader(_) => Err(AmqpError::unexpected_frame(
                "expected content header for class 60, got non content header frame instead",
            )
            .caused_by(60, 40)),
            Assembler::AwaitingBody { .. } => Err(AmqpError::unexpected_frame(
                "expected content body, got non content body frame instead",
            )
            .caused_by(60, 40)),
        }
    }

    /// A content header arrived. Returns the message right away when the
    /// body is empty.
    pub fn header(
        &mut self,
        class_id: u16,
        body_size: u64,
        properties: Bytes,
        max_size: u64,
    ) -> AmqpResult<Option<Content>> {
        let publish = match std::mem::take(self) {
            Assembler::AwaitingHeader(p) => p,
            Assembler::Idle => {
                return Err(AmqpError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ));
            }
            other @ Assembler::AwaitingBody { .. } => {
                *self = other;
                return Err(AmqpError::unexpected_frame(
                    "expected content body, got non content body frame instead",
                )
                .caused_by(60, 40));
            }
        };
        match class_id {
            60 => {}
            // Warren's codec reports a header with a non-zero weight as class 0.
            0 => {
                return Err(AmqpError::unexpected_frame(
                    "expected content header for class 60, got non content header frame instead",
                )
                .caused_by(60, 40));
            }
            other => {
                return Err(AmqpError::unexpected_frame(format!(
                    "expected content header for class 60, got one for class {other} instead"
                ))
                .caused_by(60, 40));
            }
        }
        if body_size > max_size {
            return Err(AmqpError::precondition_failed(format!(
                "message size {body_size} is larger than configured max size {max_size}"
            ))
            .caused_by(60, 40));
        }
        let properties = Bytes::copy_from_slice(&properties);
        if body_size == 0 {
            return Ok(Some(Content {
                publish,
                properties,
                body: Bytes::new(),
            }));
        }
        *self = Assembler::AwaitingBody {
            publish,
            properties,
            size: body_size as usize,
            body: Body::Empty,
        };
        Ok(None)
    }

    /// A body frame arrived. Returns the message when it is complete.
    pub fn body(&mut self, payload: Bytes) -> AmqpResult<Option<Content>> {
        let Assembler::AwaitingBody { size, body, .. } = self else {
            return Err(match self {
                Assembler::AwaitingHeader(_) => AmqpError::unexpected_frame(
                    "expected content header for class 60, got non content header frame instead",
                )
                .caused_by(60, 40),
                _ => AmqpError::unexpected_frame(
                    "expected method frame, got non method frame instead",
                ),
            });
        };
        let have = match body {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        };
        let got = payload.len();
        if have + got > *size {
            return Err(AmqpError::unexpected_frame(format!(
                "content body is larger than the {size} bytes announced in its header"
            ))
            .caused_by(60, 40));
        }
        let total = *size;
        *body = match std::mem::replace(body, Body::Empty) {
            Body::Empty if payload.len() == total => {
                if total >= ZERO_COPY_MIN {
                    Body::One(payload)
                } else {
                    Body::One(Bytes::copy_from_slice(&payload))
                }
            }
            Body::Empty => {
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
            Body::Many(mut buf) => {
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
            Body::One(first) => {
                let mut buf = BytesMut::with_capacity(total);
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&payload);
                Body::Many(buf)
            }
        };
        if have + got < total {
            return Ok(None);
        }
        match std::mem::take(self) {
            Assembler::AwaitingBody {
                publish,
                properties,
                body,
                ..
            } => Ok(Some(Content {
                publish,
                properties,
                body: match body {
                    Body::Empty => Bytes::new(),
                    Body::One(b) => b,
                    Body::Many(b) => b.freeze(),
                },
            })),
            _ => unreachable!("checked above"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ReplyCode;

    fn publish() -> Publish {
        Publish {
            exchange: "".into(),
            routing_key: "q".into(),
            mandatory: false,
            immediate: false,
        }
    }

    #[test]
    fn assembles_a_body_split_over_frames() {
        let mut a = Assembler::default();
        a.start(publish()).unwrap();
        assert!(
            a.header(60, 6, Bytes::from_static(&[0, 0]), 100)
                .unwrap()
                .is_none()
        );
        assert!(a.body(Bytes::from_static(b"abc")).unwrap().is_none());
        let c = a.body(Bytes::from_static(b"def")).unwrap().unwrap();
        assert_eq!(&c.body[..], b"abcdef");
        assert!(a.is_idle());
    }

    #[test]
    fn empty_body_completes_at_the_header() {
        let mut a = Assembler::default();
        a.start(publish()).unwrap();
        let c = a
            .header(60, 0, Bytes::from_static(&[0, 0]), 100)
            .unwrap()
            .unwrap();
        assert!(c.body.is_empty());
        assert!(a.is_idle());
    }

    #[test]
    fn out_of_order_frames_are_unexpected() {
        let mut a = Assembler::default();
        assert_eq!(
            a.body(Bytes::from_static(b"x")).unwrap_err().code,
            ReplyCode::UnexpectedFrame
        );
        assert_eq!(
            a.header(60, 1, Bytes::new(), 100).unwrap_err().code,
            ReplyCode::UnexpectedFrame
        );
        a.start(publish()).unwrap();
        assert_eq!(
            a.expect_method().unwrap_err().code,
            ReplyCode::UnexpectedFrame
        );
        assert_eq!(
            a.body(Bytes::from_static(b"x")).unwrap_err().code,
            ReplyCode::UnexpectedFrame
        );
    }

    #[test]
    fn oversize_and_overlong_bodies_are_refused() {
        let mut a = Assembler::default();
        a.start(publish()).unwrap();
        assert_eq!(
            a.header(60, 101, Bytes::new(), 100).unwrap_err().code,
            ReplyCode::PreconditionFailed
        );
        let mut a = Assembler::default();
        a.start(publish()).unwrap();
        a.header(60, 2, Bytes::new(), 100).unwrap();
        assert_eq!(
            a.body(Bytes::from_static(b"abc")).unwrap_err().code,
            ReplyCode::UnexpectedFrame
        );
    }
}
