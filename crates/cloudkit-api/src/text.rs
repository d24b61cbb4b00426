//! Small text helpers shared by the controllers.

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn prefix_at_char_boundary(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_end_on_character_boundaries() {
        assert_eq!(prefix_at_char_boundary("héllo", 2), "h");
        assert_eq!(prefix_at_char_boundary("héllo", 3), "hé");
        assert_eq!(prefix_at_char_boundary("hello", 10), "hello");
        assert_eq!(prefix_at_char_boundary("é", 0), "");
    }
}
