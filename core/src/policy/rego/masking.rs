//! The masked copy of a Rego source, and the scanners that read it.
//!
//! [`mask`] blanks the contents of strings and comments and keeps every byte offset, so that the
//! scanners here (identifiers, lines, calls, matching brackets, argument lists) see only code.

/// The source with string contents and comments replaced by spaces. Quotes stay, so a string is
/// still visibly a value. Byte offsets are unchanged.
pub fn mask(src: &str) -> Vec<u8> {
    let bytes = src.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    if bytes[i] == b'\\' && i + 1 < bytes.len() {
                        out[i] = b' ';
                        i += 1;
                    }
                    out[i] = b' ';
                    i += 1;
                }
                i += 1;
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    if bytes[i] != b'\n' {
                        out[i] = b' ';
                    }
                    i += 1;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    out
}

pub(super) fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

pub(super) fn line_of(src: &[u8], pos: usize) -> usize {
    src[..pos.min(src.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Finds calls of `name(` in code (not strings or comments), returning byte offsets.
pub(super) fn find_calls(masked: &[u8], name: &str) -> Vec<usize> {
    let needle = name.as_bytes();
    let mut hits = Vec::new();
    let mut from = 0;
    while let Some(off) = find(&masked[from..], needle) {
        let at = from + off;
        from = at + needle.len();
        let before_ok = at == 0 || !(is_ident(masked[at - 1]) || masked[at - 1] == b'.');
        let mut after = at + needle.len();
        while after < masked.len() && masked[after] == b' ' {
            after += 1;
        }
        if before_ok && masked.get(after) == Some(&b'(') {
            hits.push(at);
        }
    }
    hits
}

pub(super) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The offset of the bracket that closes the one at `open`.
pub fn closing(b: &[u8], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (i, &c) in b.iter().enumerate().skip(open) {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// Ranges of the comma-separated arguments of a masked argument list.
pub(super) fn split_args(m: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut from = 0;
    for (i, &c) in m.iter().enumerate() {
        match c {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth -= 1,
            b',' if depth == 0 => {
                out.push((from, i));
                from = i + 1;
            }
            _ => {}
        }
    }
    if m[from..].iter().any(|c| !c.is_ascii_whitespace()) {
        out.push((from, m.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masking_blanks_strings_and_comments_but_keeps_offsets() {
        let src = "x := \"a{b\" # c}\ny := `r]aw`";
        let masked = String::from_utf8(mask(src)).unwrap();
        assert_eq!(masked.len(), src.len());
        assert!(!masked.contains('{') && !masked.contains('}') && !masked.contains(']'));
        assert!(masked.starts_with("x := \"   \""));
    }
}
