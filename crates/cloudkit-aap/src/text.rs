//! Short, single-line, credential-free texts for error messages and job messages.

/// At most `max` bytes of `text` (cut at a character boundary), with `...` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(3);
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// All runs of white space (newlines included) replaced by one blank, ends trimmed.
pub(crate) fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `text` with every occurrence of `secret` replaced, so that a server echoing the request can
/// never put the token into a message.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    if secret.is_empty() || !text.contains(secret) {
        return text.to_string();
    }
    text.replace(secret, "<redacted>")
}

/// A description of a response body for an error message: the `detail` of an AWX error, the
/// title of an HTML page, or the start of the text.
pub(crate) fn describe_body(body: &[u8], content_type: Option<&str>) -> String {
    if body.iter().all(u8::is_ascii_whitespace) {
        return "empty body".to_string();
    }
    let text = String::from_utf8_lossy(body);
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(detail) = value.get("detail").and_then(|d| d.as_str()) {
            return truncate(&one_line(detail), 200);
        }
        return truncate(&one_line(&value.to_string()), 200);
    }
    let is_html = content_type.is_some_and(|c| c.to_ascii_lowercase().contains("html"))
        || text.trim_start().starts_with('<');
    if is_html {
        return match html_title(&text) {
            Some(title) => format!("an HTML page titled {:?}", truncate(&one_line(title), 100)),
            None => "an HTML page".to_string(),
        };
    }
    format!("{:?}", truncate(&one_line(&text), 200))
}

fn html_title(html: &str) -> Option<&str> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = start + lower[start..].find("</title")?;
    html.get(start..end).filter(|t| !t.trim().is_empty())
}

/// The first non-empty line of a traceback; for a Python traceback, whose first line only says
/// `Traceback (most recent call last):`, also its last line (the exception).
pub(crate) fn traceback_summary(traceback: &str) -> Option<String> {
    let mut lines = traceback.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next()?;
    if first.starts_with("Traceback (most recent call last)")
        && let Some(last) = lines.next_back()
    {
        return Some(format!("{first} ... {last}"));
    }
    Some(first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("abcdefghij", 8), "abcde...");
        let cut = truncate("ééééé", 6);
        assert!(cut.len() <= 6, "{cut}");
        assert!(cut.ends_with("..."));
    }

    #[test]
    fn bodies_are_described_briefly() {
        let rows: [(&[u8], Option<&str>, &str); 6] = [
            (b"", None, "empty body"),
            (br#"{"detail": "Not found."}"#, None, "Not found."),
            (
                b"<html><head><title>502 Bad Gateway</title></head></html>",
                Some("text/html"),
                "an HTML page titled \"502 Bad Gateway\"",
            ),
            (b"<html><body>x</body></html>", None, "an HTML page"),
            (b"plain\ntext", Some("text/plain"), "\"plain text\""),
            (br#"{"a": 1}"#, None, r#"{"a":1}"#),
        ];
        for (body, ct, want) in rows {
            assert_eq!(describe_body(body, ct), want);
        }
        let long = "x".repeat(5000);
        assert!(describe_body(long.as_bytes(), None).len() < 300);
    }

    #[test]
    fn traceback_lines() {
        assert_eq!(traceback_summary(""), None);
        assert_eq!(
            traceback_summary("\nboom happened\nmore").as_deref(),
            Some("boom happened")
        );
        assert_eq!(
            traceback_summary(
                "Traceback (most recent call last):\n  File \"x\", line 1\nValueError: bad\n"
            )
            .as_deref(),
            Some("Traceback (most recent call last): ... ValueError: bad")
        );
    }

    #[test]
    fn redaction() {
        assert_eq!(redact("a tok b tok", "tok"), "a <redacted> b <redacted>");
        assert_eq!(redact("abc", ""), "abc");
    }
}
