//! Kubernetes label selectors as `kubectl -l` takes them (`node-role.kubernetes.io/control-plane`,
//! `!key`, `key=value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, joined by commas), read
//! into kube's own [`Expression`]s, which also do the matching.

use kube::core::Expression;

const FORMS: &str =
    "KEY, !KEY, KEY=VALUE, KEY!=VALUE, KEY in (V1,V2) or KEY notin (V1,V2), separated by commas";

/// The requirements of `s`, all of which a node's labels must meet. An empty string selects
/// every node.
pub fn parse(s: &str) -> Result<Vec<Expression>, String> {
    let mut out = Vec::new();
    for part in split(s)? {
        let part = part.trim();
        if part.is_empty() {
            if s.trim().is_empty() {
                continue;
            }
            return Err(format!(
                "empty requirement in label selector `{s}`; expected {FORMS}"
            ));
        }
        out.push(requirement(part).map_err(|e| format!("label selector `{s}`: {e}"))?);
    }
    Ok(out)
}

/// Splits at the commas that are not inside `(...)`.
fn split(s: &str) -> Result<Vec<&str>, String> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => return Err(format!("unbalanced `)` in label selector `{s}`")),
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("unclosed `(` in label selector `{s}`"));
    }
    parts.push(&s[start..]);
    Ok(parts)
}

fn requirement(r: &str) -> Result<Expression, String> {
    if let Some(key) = r.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    if let Some((key, value)) = r.split_once("!=") {
        return Ok(Expression::NotEqual(
            key_of(key.trim())?,
            value_of(value.trim())?,
        ));
    }
    if let Some((key, value)) = r.split_once('=') {
        let value = value.strip_prefix('=').unwrap_or(value);
        return Ok(Expression::Equal(
            key_of(key.trim())?,
            value_of(value.trim())?,
        ));
    }
    let mut words = r.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default();
    let rest = words.next().unwrap_or_default().trim_start();
    if rest.is_empty() {
        return Ok(Expression::Exists(key_of(key)?));
    }
    let (op, list) = rest.split_at(rest.find(['(', ' ']).unwrap_or(rest.len()));
    let list = list.trim();
    let values = match list.strip_prefix('(').and_then(|l| l.strip_suffix(')')) {
        Some(inner) => inner
            .split(',')
            .map(|v| value_of(v.trim()))
            .collect::<Result<_, _>>()?,
        None => return Err(format!("`{r}` is not a requirement; expected {FORMS}")),
    };
    match op {
        "in" => Ok(Expression::In(key_of(key)?, values)),
        "notin" => Ok(Expression::NotIn(key_of(key)?, values)),
        _ => Err(format!(
            "unknown operator `{op}` in `{r}`; expected in or notin"
        )),
    }
}

/// `[prefix/]name`: the prefix a DNS subdomain, the name 1-63 characters of `[A-Za-z0-9._-]`
/// starting and ending with a letter or digit.
fn key_of(key: &str) -> Result<String, String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        if !super::api_sources::dns_subdomain(p) {
            return Err(format!(
                "label key `{key}`: the prefix `{p}` is not a DNS subdomain"
            ));
        }
    }
    if name.is_empty() || !label_text(name) {
        return Err(format!("label key `{key}` is not valid: a name of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (optionally after a DNS prefix and '/')"));
    }
    Ok(key.to_string())
}

fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() || label_text(value) {
        Ok(value.to_string())
    } else {
        Err(format!("label value `{value}` is not valid: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"))
    }
}

fn label_text(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(v: &[&str]) -> std::collections::BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn every_form_kubectl_takes() {
        let key = "node-role.kubernetes.io/control-plane";
        assert_eq!(parse(key), Ok(vec![Expression::Exists(key.into())]));
        assert_eq!(parse(""), Ok(vec![]));
        assert_eq!(
            parse("a=b, c==d,e!=f , !g,h in (x, y),i notin (z)"),
            Ok(vec![
                Expression::Equal("a".into(), "b".into()),
                Expression::Equal("c".into(), "d".into()),
                Expression::NotEqual("e".into(), "f".into()),
                Expression::DoesNotExist("g".into()),
                Expression::In("h".into(), set(&["x", "y"])),
                Expression::NotIn("i".into(), set(&["z"])),
            ])
        );
        assert_eq!(
            parse("zone="),
            Ok(vec![Expression::Equal("zone".into(), "".into())])
        );
    }

    #[test]
    fn mistakes_say_what_is_wrong() {
        for (bad, why) in [
            ("a b", "not a requirement"),
            ("a in x", "not a requirement"),
            ("a within (x)", "unknown operator `within`"),
            ("a,,b", "empty requirement"),
            ("a in (x", "unclosed"),
            ("a)", "unbalanced"),
            ("-a", "label key `-a`"),
            ("Bad_Prefix!/a=b", "not a DNS subdomain"),
            ("a=b c", "label value `b c`"),
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
