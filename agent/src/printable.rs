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

/// `path` as text (lossy for non-UTF-8 bytes), control characters escaped.
pub fn path(path: &Path) -> String {
    text(&path.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(text("a\u{1b}[2Jb\n\tc é"), "a\\u{1b}[2Jb\\n\\tc é");
        assert_eq!(path(Path::new("/tmp/x\ry.pcap")), "/tmp/x\\ry.pcap");
    }
}
