//! Text that came from outside (file paths, config contents) made safe to print.
//!
//! A file called `$'a\e[2Jb.pcap'` must not clear the operator's terminal when its
//! name appears in an error: control characters are shown as Rust escapes instead.

use std::path::Path;

/// `text` with every control character escaped (`\n`, `\u{1b}`, ...).
pub fn text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

/// `text` with every control character but the line break escaped: for lines that
/// mix our words with names from outside (interface names, which Linux lets carry
/// any byte but `/`, `:` and white space), so that multi-line output keeps its shape
/// and nothing else can move the cursor or recolour the terminal.
pub fn lines(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() && c != '\n') {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() && c != '\n' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `path` as text (lossy for non-UTF-8 bytes), control characters escaped.
pub fn path(path: &Path) -> String {
    text(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_keep_their_breaks_and_lose_every_other_control_character() {
        assert_eq!(lines("eth0 appeared\n  next"), "eth0 appeared\n  next");
        assert_eq!(lines("vpn\u{1b}[2J0 went\r\taway"), "vpn\\u{1b}[2J0 went\\r\\taway");
        assert!(matches!(lines("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(text("a\u{1b}[2Jb\n\tc é"), "a\\u{1b}[2Jb\\n\\tc é");
        assert_eq!(path(Path::new("/tmp/x\ry.pcap")), "/tmp/x\\ry.pcap");
    }
}
