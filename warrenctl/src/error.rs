//! Failures, and the exit codes (sysexits.h) that scripts written for
//! rabbitmqctl test for. Every failure a command can meet is a value of
//! [`Failure`]; nothing here panics.

use std::fmt;

/// The process exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// EX_USAGE: the command line was wrong.
    Usage = 64,
    /// EX_DATAERR: the broker refused the request (no such user, already
    /// exists, invalid policy, bad definitions file, ...).
    DataErr = 65,
    /// EX_UNAVAILABLE: the management API could not be reached, timed out,
    /// answered 5xx, or a health check failed.
    Unavailable = 69,
    /// EX_IOERR: writing the output or a file failed.
    IoErr = 74,
    /// EX_NOPERM: the API refused our credentials (401/403).
    NoPerm = 77,
}

/// A command failed: what to print on stderr and how to exit.
#[derive(Debug, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    pub message: String,
    style: Style,
}

#[derive(Debug, PartialEq, Eq)]
enum Style {
    /// `Error:` on its own line, then the message, as rabbitmqctl prints.
    Error,
    /// `Error (argument validation): message`, rabbitmqctl's usage errors.
    Validation,
    /// Nothing at all: output stopped because the reader went away.
    Silent,
}

impl Failure {
    fn new(exit: Exit, message: impl Into<String>, style: Style) -> Self {
        Failure {
            exit,
            message: message.into(),
            style,
        }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message, Style::Validation)
    }

    pub fn data(message: impl Into<String>) -> Self {
        Self::new(Exit::DataErr, message, Style::Error)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Exit::Unavailable, message, Style::Error)
    }

    pub fn no_perm(message: impl Into<String>) -> Self {
        Self::new(Exit::NoPerm, message, Style::Error)
    }

    pub fn io(message: impl Into<String>) -> Self {
        Self::new(Exit::IoErr, message, Style::Error)
    }

    /// Whether the process should exit 0 without a word: stdout was closed
    /// by its reader (`warrenctl list_queues | head -1`).
    pub fn is_silent(&self) -> bool {
        self.style == Style::Silent
    }

    pub fn code(&self) -> i32 {
        if self.is_silent() {
            0
        } else {
            self.exit as i32
        }
    }
}

impl From<std::io::Error> for Failure {
    /// A failed write to stdout.
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            Failure::new(Exit::IoErr, "", Style::Silent)
        } else {
            Failure::io(format!("Failed to write output: {e}"))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.style {
            Style::Error => write!(f, "Error:\n{}", self.message),
            Style::Validation => write!(f, "Error (argument validation): {}", self.message),
            Style::Silent => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rabbitmqctl_error_layout_and_codes() {
        let f = Failure::data("User \"bob\" already exists");
        assert_eq!(f.to_string(), "Error:\nUser \"bob\" already exists");
        assert_eq!(f.code(), 65);
        let u = Failure::usage("Info key(s) nosuch are not supported");
        assert_eq!(
            u.to_string(),
            "Error (argument validation): Info key(s) nosuch are not supported"
        );
        assert_eq!(u.code(), 64);
        assert_eq!(Failure::unavailable("down").code(), 69);
        assert_eq!(Failure::no_perm("no").code(), 77);
    }

    #[test]
    fn broken_pipe_is_a_quiet_success() {
        let f = Failure::from(std::io::Error::from(std::io::ErrorKind::BrokenPipe));
        assert!(f.is_silent());
        assert_eq!(f.code(), 0);
        assert_eq!(f.to_string(), "");
    }
}
