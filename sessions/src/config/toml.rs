//! The TOML form of a config: `["/path"]` tables with `sessions.*` keys
//! (or `tools.sessions.*`), and `[global]` with `server.*`.

use toml_edit::{Document, Item, Table, Value as TomlValue};

use super::keys::{Entry, Value};
use super::path::RawSection;
use super::Error;

pub(super) fn parse(text: &str, file: &str) -> Result<Vec<RawSection>, Error> {
    let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
    let doc = Document::parse(text).map_err(|e| Error::Syntax {
        file: file.into(),
        line: e.span().map_or(1, |s| line_of(s.start)),
        message: e.message().to_string(),
    })?;
    let mut sections = Vec::new();
    for (name, item) in doc.as_table().iter() {
        let section_line = item.span().map_or(1, |s| line_of(s.start));
        let Some(table) = item.as_table() else {
            return Err(Error::Key {
                file: file.into(),
                line: section_line,
                key: name.into(),
                message: "top-level keys must be inside a [\"/path\"] or [global] table".into(),
            });
        };
        let mut entries = Vec::new();
        flatten(table, String::new(), &mut entries, file, &line_of)?;
        let header_line = table.span().map_or(section_line, |s| line_of(s.start));
        sections.push(RawSection {
            name: name.to_string(),
            line: header_line,
            entries,
        });
    }
    Ok(sections)
}

/// Turns dotted keys (`sessions.on = true`, or a `[\"/\".sessions]` table)
/// into flat `sessions.on` entries with their lines.
fn flatten(
    table: &Table,
    prefix: String,
    out: &mut Vec<Entry>,
    file: &str,
    line_of: &dyn Fn(usize) -> usize,
) -> Result<(), Error> {
    for (key, item) in table.iter() {
        let full = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        let line = table
            .key(key)
            .and_then(|k| k.span())
            .or_else(|| item.span())
            .map_or(1, |s| line_of(s.start));
        match item {
            Item::Table(t) => flatten(t, full, out, file, line_of)?,
            Item::Value(TomlValue::InlineTable(t)) => {
                let t = t.clone().into_table();
                flatten(&t, full, out, file, line_of)?
            }
            Item::Value(v) => {
                let value = match v {
                    TomlValue::Boolean(b) => Value::Bool(*b.value()),
                    TomlValue::Integer(i) => Value::Int(*i.value()),
                    TomlValue::Float(f) => Value::Float(*f.value()),
                    TomlValue::String(s) => Value::Str(s.value().clone()),
                    TomlValue::Array(items) if items.iter().all(|i| i.as_str().is_some()) => {
                        Value::List(
                            items
                                .iter()
                                .filter_map(|i| i.as_str().map(|s| Value::Str(s.to_owned())))
                                .collect(),
                        )
                    }
                    _ => {
                        return Err(Error::Key {
                            file: file.into(),
                            line,
                            key: full,
                            message: "expected a boolean, number, string or list of strings".into(),
                        })
                    }
                };
                out.push(Entry {
                    key: full,
                    value,
                    line,
                });
            }
            _ => {
                return Err(Error::Key {
                    file: file.into(),
                    line,
                    key: full,
                    message: "unsupported value".into(),
                })
            }
        }
    }
    Ok(())
}
