//! Patterns as RabbitMQ reads them (PCRE): a policy's `pattern` and a
//! permission's configure / write / read.
//!
//! Most compile with the `regex` crate, whose matching takes linear time
//! whatever the input — what permission checks on every declare and
//! publish want. Patterns that need look-around or backreferences, such
//! as the classic HA policy `^(?!amq\.).*`, compile with `fancy-regex`
//! instead (which backtracks, within its bound), so RabbitMQ definitions
//! that use them import unchanged.

/// A compiled pattern.
#[derive(Clone, Debug)]
pub enum Pattern {
    Linear(regex::Regex),
    Backtracking(fancy_regex::Regex),
}

/// Why a pattern does not compile, in the words of the engine that tried
/// last.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PatternError(pub String);

impl Pattern {
    pub fn new(pattern: &str) -> Result<Pattern, PatternError> {
        match regex::Regex::new(pattern) {
            Ok(r) => Ok(Pattern::Linear(r)),
            Err(linear) => fancy_regex::Regex::new(pattern)
                .map(Pattern::Backtracking)
                .map_err(|_| PatternError(reason(&linear))),
        }
    }

    /// Whether `text` matches; a pattern that gives up backtracking does
    /// not match.
    pub fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Linear(r) => r.is_match(text),
            Pattern::Backtracking(r) => r.is_match(text).unwrap_or(false),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Pattern::Linear(r) => r.as_str(),
            Pattern::Backtracking(r) => r.as_str(),
        }
    }
}

/// The `regex` crate's message without its drawing of the pattern.
fn reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or_else(|| text.lines().last().unwrap_or_default())
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn look_around_compiles_and_plain_patterns_stay_linear() {
        let ha = Pattern::new(r"^(?!amq\.).*").unwrap();
        assert!(matches!(ha, Pattern::Backtracking(_)));
        assert!(ha.is_match("orders"));
        assert!(!ha.is_match("amq.gen-x"));
        let plain = Pattern::new("^orders-.*").unwrap();
        assert!(matches!(plain, Pattern::Linear(_)));
        assert!(plain.is_match("orders-1"));
        assert_eq!(plain.as_str(), "^orders-.*");
    }

    #[test]
    fn a_broken_pattern_says_why() {
        let e = Pattern::new("(").unwrap_err();
        assert!(e.0.contains("unclosed group"), "{e}");
    }
}
