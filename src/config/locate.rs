//! The line of a path such as `routing[2].if.subject` in YAML text, for
//! errors found after deserializing (serde_yaml keeps no positions by then).
//!
//! `line_of_key` walks dotted keys only; policy errors name list items and
//! keys written in flow style (`- if: {subject: "(?i)x"}`), so this walks
//! both block and one-line flow style. It is a best effort: when a later
//! segment cannot be found the line of the deepest one found is returned, so
//! an error still points near its cause rather than nowhere.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

/// `routing[2].if.subject` → Key(routing), Index(2), Key(if), Key(subject);
/// `[0].manager` (a file that is one list) → Index(0), Key(manager).
fn segments(path: &str) -> Option<Vec<Seg<'_>>> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (name, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if !name.is_empty() {
            out.push(Seg::Key(name));
        }
        while let Some(r) = rest.strip_prefix('[') {
            let close = r.find(']')?;
            out.push(Seg::Index(r[..close].parse().ok()?));
            rest = &r[close + 1..];
        }
    }
    Some(out)
}

#[derive(Debug, Clone, Copy)]
enum Region {
    /// Lines `start..end` (0-based).
    Block { start: usize, end: usize },
    /// A one-line flow collection: line `line`, starting at byte `col`.
    Flow { line: usize, col: usize },
}

/// Indentation and text of a line that carries content (not blank, not a
/// comment).
fn content(line: &str) -> Option<(usize, &str)> {
    let trimmed = line.trim_start();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return None;
    }
    Some((line.len() - trimmed.len(), trimmed))
}

/// Strips block-sequence dashes: `- - key: v` → (`key: v`, bytes stripped).
fn strip_dashes(mut s: &str) -> (&str, usize) {
    let mut n = 0;
    while let Some(rest) = s.strip_prefix("- ") {
        let t = rest.trim_start();
        n += s.len() - t.len();
        s = t;
    }
    (s, n)
}

/// The key of a `key: value` line, unquoted, and the byte offset just after
/// its colon.
fn key_of(s: &str) -> Option<(&str, usize)> {
    let mut in_quote: Option<char> = None;
    for (i, c) in s.char_indices() {
        match (in_quote, c) {
            (Some(q), c) if c == q => in_quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') if i == 0 => in_quote = Some(c),
            (None, ':') => {
                let after = &s[i + 1..];
                if after.is_empty() || after.starts_with([' ', '\t']) {
                    let key = s[..i].trim().trim_matches(['"', '\'']);
                    return Some((key, i + 1));
                }
            }
            (None, '{' | '[') if i == 0 => return None,
            _ => {}
        }
    }
    None
}

/// Where a value written after a key or dash lives: a flow collection on
/// this line, nested block lines below, or nothing further (a scalar).
fn value_region(lines: &[&str], line: usize, col: usize, block_end: usize) -> Region {
    let value = lines[line][col..].trim_start();
    let value_col = lines[line].len() - value.len();
    if value.starts_with(['{', '[']) {
        Region::Flow {
            line,
            col: value_col,
        }
    } else if value.is_empty() || value.starts_with('#') {
        Region::Block {
            start: line + 1,
            end: block_end,
        }
    } else {
        Region::Block {
            start: line + 1,
            end: line + 1,
        }
    }
}

fn find_block_key(lines: &[&str], start: usize, end: usize, want: &str) -> Option<(usize, Region)> {
    let mut level: Option<usize> = None;
    for i in start..end {
        let Some((indent, text)) = content(lines[i]) else {
            continue;
        };
        let (text, dashes) = strip_dashes(text);
        let col = indent + dashes;
        let level = *level.get_or_insert(col);
        if col != level {
            continue;
        }
        let Some((key, after)) = key_of(text) else {
            continue;
        };
        if key != want {
            continue;
        }
        // Children end at the first line back at this key's level: a sibling
        // key, or anything less indented. A sequence may sit at the key's own
        // indentation (`routing:` then `- if:` at column 0).
        let mut child_end = end;
        for (j, l) in lines.iter().enumerate().take(end).skip(i + 1) {
            if let Some((ind, t)) = content(l) {
                if ind < col || (ind == col && !t.starts_with('-')) {
                    child_end = j;
                    break;
                }
            }
        }
        return Some((i, value_region(lines, i, col + after, child_end)));
    }
    None
}

fn find_block_item(lines: &[&str], start: usize, end: usize, n: usize) -> Option<(usize, Region)> {
    let mut dash_indent: Option<usize> = None;
    let mut seen = 0usize;
    for i in start..end {
        let Some((indent, text)) = content(lines[i]) else {
            continue;
        };
        let d = *dash_indent.get_or_insert(indent);
        if indent < d {
            return None;
        }
        if indent != d || !(text == "-" || text.starts_with("- ")) {
            continue;
        }
        if seen < n {
            seen += 1;
            continue;
        }
        let mut item_end = end;
        for (j, l) in lines.iter().enumerate().take(end).skip(i + 1) {
            if let Some((ind, _)) = content(l) {
                if ind <= d {
                    item_end = j;
                    break;
                }
            }
        }
        let after_dash = indent + 1;
        let value = lines[i][after_dash..].trim_start();
        let region = if value.starts_with(['{', '[']) {
            value_region(lines, i, after_dash, item_end)
        } else if value.is_empty() {
            Region::Block {
                start: i + 1,
                end: item_end,
            }
        } else {
            // `- key: v` then more keys below: the item starts on this line.
            Region::Block {
                start: i,
                end: item_end,
            }
        };
        return Some((i, region));
    }
    None
}

/// In a one-line flow collection starting at `col`: `want:` as a key.
fn find_flow_key(text: &str, col: usize, want: &str) -> Option<usize> {
    let s = text.get(col..)?;
    let mut from = 0;
    while let Some(pos) = s[from..].find(want) {
        let at = from + pos;
        let before = s[..at].chars().next_back();
        let after = s[at + want.len()..].trim_start_matches([' ', '"', '\'']);
        let quoted_before = before == Some('"') || before == Some('\'');
        let before_ok = quoted_before
            || matches!(
                before,
                None | Some('{') | Some(',') | Some(' ') | Some('\t')
            );
        if before_ok && after.starts_with(':') {
            let colon = s.len() - after.len() + 1;
            return Some(col + colon);
        }
        from = at + want.len();
    }
    None
}

/// In a one-line flow sequence starting at `col` (at its `[`): the byte
/// where item `n` starts.
fn find_flow_item(text: &str, col: usize, n: usize) -> Option<usize> {
    let s = text.get(col..)?;
    let body = s.strip_prefix('[')?;
    let mut depth = 0usize;
    let mut seen = 0usize;
    let mut quote: Option<char> = None;
    let mut item_start = 1;
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '"' | '\'') => quote = Some(c),
            (None, '{' | '[') => depth += 1,
            (None, '}' | ']') if depth > 0 => depth -= 1,
            (None, ']') => break,
            (None, ',') if depth == 0 => {
                if seen == n {
                    break;
                }
                seen += 1;
                item_start = i + 2;
            }
            _ => {}
        }
    }
    (seen == n).then(|| {
        let rest = &s[item_start.min(s.len())..];
        col + s.len() - rest.trim_start().len()
    })
}

/// 1-based line of `path` in `text`, or of the deepest part of it found;
/// `None` when not even its first segment is there.
pub fn line_of_path(text: &str, path: &str) -> Option<usize> {
    let segs = segments(path)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut region = Region::Block {
        start: 0,
        end: lines.len(),
    };
    let mut found: Option<usize> = None;
    for seg in segs {
        let next = match (region, seg) {
            (Region::Block { start, end }, Seg::Key(k)) => find_block_key(&lines, start, end, k),
            (Region::Block { start, end }, Seg::Index(n)) => find_block_item(&lines, start, end, n),
            (Region::Flow { line, col }, Seg::Key(k)) => {
                find_flow_key(lines[line], col, k).map(|c| {
                    let value = lines[line][c..].trim_start();
                    let vcol = lines[line].len() - value.len();
                    (line, Region::Flow { line, col: vcol })
                })
            }
            (Region::Flow { line, col }, Seg::Index(n)) => {
                find_flow_item(lines[line], col, n).map(|c| (line, Region::Flow { line, col: c }))
            }
        };
        match next {
            Some((line, r)) => {
                found = Some(line + 1);
                region = r;
            }
            None => break,
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
support:
  address: s@x.org
routing:
  - if: {sender_domain: \"*.acme.test\", subject: \"(?i)invoice\"}
    then: {category: billing}
  # a comment
  - name: second
    if:
      plus_tag: urgent
      subject: x
    then:
      tags: [a, b]
- not: part
categories:
- id: billing
  agents: [alice@x.org, l2]
  distribution: {mode: round_robin, max_open: 3}
";

    #[test]
    fn finds_block_and_flow_paths() {
        let at = |p| line_of_path(TEXT, p);
        assert_eq!(at("support.address"), Some(2));
        assert_eq!(at("routing"), Some(3));
        assert_eq!(at("routing[0]"), Some(4));
        assert_eq!(at("routing[0].if.subject"), Some(4));
        assert_eq!(at("routing[0].then.category"), Some(5));
        assert_eq!(at("routing[1].name"), Some(7));
        assert_eq!(at("routing[1].if.subject"), Some(10));
        assert_eq!(at("routing[1].then.tags"), Some(12));
        assert_eq!(at("routing[1].then.tags[1]"), Some(12));
        assert_eq!(at("categories[0].agents[1]"), Some(16));
        assert_eq!(at("categories[0].distribution.max_open"), Some(17));
    }

    #[test]
    fn falls_back_to_the_deepest_part_found() {
        assert_eq!(line_of_path(TEXT, "routing[1].if.body"), Some(8));
        assert_eq!(line_of_path(TEXT, "routing[5].if"), Some(3));
        assert_eq!(line_of_path(TEXT, "groups[0].name"), None);
    }

    #[test]
    fn a_file_that_is_one_list() {
        let text = "- id: A\n  domains: [a.test]\n- id: B\n  manager: bob@x.org\n";
        assert_eq!(line_of_path(text, "[1].manager"), Some(4));
        assert_eq!(line_of_path(text, "[0].domains"), Some(2));
    }

    #[test]
    fn sequences_at_the_key_indentation_and_flow_items() {
        let text = "priorities:\n- {id: low}\n- {id: normal, default: true}\ngroups: [{name: a}, {name: b, members: [x@y.z]}]\n";
        assert_eq!(line_of_path(text, "priorities[1].default"), Some(3));
        assert_eq!(line_of_path(text, "groups[1].members"), Some(4));
    }
}
