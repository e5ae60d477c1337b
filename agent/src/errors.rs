//! Writing an error with its causes, for logs, status and the command line.
//! Palisade's errors keep their cause as `#[source]` only, never also in
//! their own text, so the chain reads once: `outer: cause: root cause`. Some
//! third-party errors (tracing-subscriber's, kube's) end their text with
//! their cause's; that cause is not written a second time.

use std::error::Error;

/// `error: cause: root cause`.
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("reading manifests")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn every_cause_is_written_once_in_order() {
        let e = Outer(std::io::Error::other("permission denied"));
        assert_eq!(chain(&e), "reading manifests: permission denied");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("parsing: {0}")]
    struct Repeats(#[source] std::io::Error);

    #[test]
    fn a_cause_its_error_already_ends_with_is_not_repeated() {
        let e = Outer2(Repeats(std::io::Error::other("bad digit")));
        assert_eq!(chain(&e), "loading: parsing: bad digit");
    }

    #[derive(Debug, thiserror::Error)]
    #[error("loading")]
    struct Outer2(#[source] Repeats);
}
