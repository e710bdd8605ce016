//! CherryPy's config syntax: INI sections whose values are Python literals.

use super::keys::{fraction, Entry, Value};
use super::path::RawSection;
use super::Error;

/// Splits `text` into sections of `key = value` entries.
///
/// Leading white space is not significant (the example of CherryPy's
/// session documentation, docs/spec.md §2.2, is indented), blank lines and
/// lines starting with `#` or `;` are skipped.
pub(super) fn parse(text: &str, file: &str) -> Result<Vec<RawSection>, Error> {
    let mut sections: Vec<RawSection> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        let syntax = |message: String| Error::Syntax {
            file: file.into(),
            line,
            message,
        };
        if let Some(rest) = l.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or_else(|| syntax("section header without a closing ]".into()))?
                .trim();
            let name = unquote(name).unwrap_or(name).to_string();
            if sections.iter().any(|s| s.name == name) {
                return Err(syntax(format!("section [{name}] appears twice")));
            }
            sections.push(RawSection {
                name,
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let Some(split) = l.find(['=', ':']) else {
            return Err(syntax(format!("expected `key = value`, got {l:?}")));
        };
        let key = l[..split].trim().to_string();
        let value_text = l[split + 1..].trim();
        let section = sections
            .last_mut()
            .ok_or_else(|| syntax("a key before any [section]".into()))?;
        if section.entries.iter().any(|e| e.key == key) {
            return Err(Error::Key {
                file: file.into(),
                line,
                key,
                message: "given twice in this section".into(),
            });
        }
        let value = literal(value_text).ok_or_else(|| Error::Key {
            file: file.into(),
            line,
            key: key.clone(),
            // Most often an unquoted `storage_url`: shown without its password.
            message: format!(
                "{:?} is not a Python literal",
                crate::redact::url(value_text)
            ),
        })?;
        section.entries.push(Entry { key, value, line });
    }
    Ok(sections)
}

/// Reads the Python literals CherryPy configs use: `True`, `False`,
/// `None`, integers, floats, quoted strings, `a / b`, dotted names, and
/// lists of those (`['127.0.0.1:11211', 'h:11211']`).
fn literal(s: &str) -> Option<Value> {
    if let Some(inner) = s.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return list(inner).map(Value::List);
    }
    match s {
        "True" => return Some(Value::Bool(true)),
        "False" => return Some(Value::Bool(false)),
        "None" => return Some(Value::None),
        _ => {}
    }
    if let Some(inner) = unquote(s) {
        return unescape(inner).map(Value::Str);
    }
    if let Ok(i) = s.parse::<i64>() {
        return Some(Value::Int(i));
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        if let Ok(x) = s.parse::<f64>() {
            return Some(Value::Float(x));
        }
    }
    if let Some(x) = fraction(s) {
        return Some(Value::Float(x));
    }
    let is_name = s.split('.').all(|part| {
        let mut b = part.bytes();
        b.next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
            && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
    });
    is_name.then(|| Value::Name(s.to_string()))
}

/// The items of a list's inside, split at commas outside quotes; a
/// trailing comma is allowed, as in Python. Lists do not nest.
fn list(inner: &str) -> Option<Vec<Value>> {
    let (mut items, mut start, mut quote) = (Vec::new(), 0, None);
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match (quote, c) {
            (Some(_), '\\') if !escaped => {
                escaped = true;
                continue;
            }
            (Some(q), c) if c == q && !escaped => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, '[' | ']') => return None,
            (None, ',') => {
                items.push(inner[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
        escaped = false;
    }
    if quote.is_some() {
        return None;
    }
    let last = inner[start..].trim();
    if !last.is_empty() {
        items.push(last);
    }
    items.into_iter().map(literal).collect()
}

fn unquote(s: &str) -> Option<&str> {
    let q = s.chars().next()?;
    if (q == '"' || q == '\'') && s.len() >= 2 && s.ends_with(q) {
        Some(&s[1..s.len() - 1])
    } else {
        None
    }
}

fn unescape(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        out.push(match chars.next()? {
            'n' => '\n',
            't' => '\t',
            c @ ('\\' | '\'' | '"') => c,
            _ => return None,
        });
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_literals() {
        assert_eq!(literal("True"), Some(Value::Bool(true)));
        assert_eq!(literal("60"), Some(Value::Int(60)));
        assert_eq!(literal("0.016666"), Some(Value::Float(0.016666)));
        assert_eq!(literal("1.0 / 60"), Some(Value::Float(1.0 / 60.0)));
        assert_eq!(literal("'file'"), Some(Value::Str("file".into())));
        assert_eq!(
            literal("['a:1', \"b,c:2\",]"),
            Some(Value::List(vec![
                Value::Str("a:1".into()),
                Value::Str("b,c:2".into())
            ]))
        );
        assert_eq!(literal("[]"), Some(Value::List(vec![])));
        assert_eq!(literal("['a', [1]]"), None);
        assert_eq!(literal("['a]"), None);
        assert_eq!(literal("\"a\\\"b\""), Some(Value::Str("a\"b".into())));
        assert_eq!(
            literal("cherrypy.lib.sessions.FileSession"),
            Some(Value::Name("cherrypy.lib.sessions.FileSession".into()))
        );
        assert_eq!(literal("'unterminated"), None);
        assert_eq!(
            literal("[1, 2]"),
            Some(Value::List(vec![Value::Int(1), Value::Int(2)]))
        );
        assert_eq!(literal("os.system('x')"), None);
    }

    #[test]
    fn syntax_errors_have_lines() {
        for (text, line) in [
            ("[/\nx = 1\n", 1),
            ("[/]\njust words\n", 2),
            ("k = 1\n", 1),
            ("[/]\n[/]\n", 2),
        ] {
            match parse(text, "f") {
                Err(Error::Syntax { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }
}
