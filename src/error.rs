//! Errors that travel on the wire.
//!
//! An [`AmqpError`] is a protocol error as AMQP defines it: a reply code, a
//! human-readable text, and the class/method that caused it. Soft errors
//! (403, 404, 405, 406, …) close only the offending channel; hard errors
//! (320, 501–541) close the whole connection. Domain code returns these
//! values; only the connection layer turns them into `channel.close` or
//! `connection.close` frames.
//!
//! Reply texts follow RabbitMQ's wording (`NOT_FOUND - no queue 'q' in vhost
//! '/'`) because client libraries and their users match on them.

use std::fmt;

/// AMQP reply codes Warren sends. The numeric values are the protocol's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ReplyCode {
    ConnectionForced = 320,
    InvalidPath = 402,
    AccessRefused = 403,
    NotFound = 404,
    ResourceLocked = 405,
    PreconditionFailed = 406,
    FrameError = 501,
    SyntaxError = 502,
    CommandInvalid = 503,
    ChannelError = 504,
    UnexpectedFrame = 505,
    ResourceError = 506,
    NotAllowed = 530,
    NotImplemented = 540,
    InternalError = 541,
}

impl ReplyCode {
    /// Hard errors close the connection; soft errors close the channel.
    pub fn is_hard(self) -> bool {
        !matches!(
            self,
            ReplyCode::AccessRefused
                | ReplyCode::NotFound
                | ReplyCode::ResourceLocked
                | ReplyCode::PreconditionFailed
        )
    }

    /// The name RabbitMQ prefixes reply texts with, e.g. `NOT_FOUND`.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    pub fn code(self) -> u16 {
        self as u16
    }
}

/// A protocol error: what went wrong, and which method it answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AmqpError {
    pub code: ReplyCode,
    /// The explanation without the `CODE_NAME - ` prefix.
    pub detail: String,
    pub class_id: u16,
    pub method_id: u16,
}

impl AmqpError {
    pub fn new(code: ReplyCode, detail: impl Into<String>) -> Self {
        AmqpError {
            code,
            detail: detail.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Attribute the error to the method that caused it, unless already set.
    pub fn caused_by(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// The reply text as sent on the wire: `NOT_FOUND - no queue 'q' in vhost '/'`.
    /// Truncated to fit a short string.
    pub fn reply_text(&self) -> String {
        let mut text = format!("{} - {}", self.code.name(), self.detail);
        if text.len() > 255 {
            let mut end = 255;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        text
    }

    pub fn is_hard(&self) -> bool {
        self.code.is_hard()
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotFound, detail)
    }
    pub fn access_refused(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::AccessRefused, detail)
    }
    pub fn resource_locked(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::ResourceLocked, detail)
    }
    pub fn precondition_failed(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::PreconditionFailed, detail)
    }
    pub fn frame_error(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::FrameError, detail)
    }
    pub fn syntax_error(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::SyntaxError, detail)
    }
    pub fn command_invalid(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::CommandInvalid, detail)
    }
    pub fn channel_error(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::ChannelError, detail)
    }
    pub fn unexpected_frame(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, detail)
    }
    pub fn not_allowed(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotAllowed, detail)
    }
    pub fn not_implemented(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::NotImplemented, detail)
    }
    pub fn internal_error(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::InternalError, detail)
    }
    pub fn connection_forced(detail: impl Into<String>) -> Self {
        Self::new(ReplyCode::ConnectionForced, detail)
    }
}

impl fmt::Display for AmqpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code.code(), self.reply_text())
    }
}

impl std::error::Error for AmqpError {}

pub type AmqpResult<T> = Result<T, AmqpError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_text_carries_the_rabbitmq_prefix() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        assert!(!e.is_hard());
        assert!(AmqpError::frame_error("x").is_hard());
    }

    #[test]
    fn reply_text_fits_a_short_string() {
        let e = AmqpError::not_found("é".repeat(300));
        assert!(e.reply_text().len() <= 255);
    }
}
