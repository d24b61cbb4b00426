//! Shards: several operators split the CIs of one scope by a label selector, each taking the
//! CIs its selector matches.
//!
//! [`ShardSelector::parse`] reads the Kubernetes label selector syntax (`key=value`,
//! `key==value`, `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key`, `!key`, joined by
//! commas) into a [`kube::core::Selector`], which both filters the watches on the API server
//! and matches labels in memory.
//!
//! ```
//! use std::collections::BTreeMap;
//! use cloudkit_api::shard::ShardSelector;
//!
//! let shard = ShardSelector::parse("cloudkit.openshift.io/shard=a").unwrap();
//! assert_eq!(shard.default_name().as_deref(), Some("a"));
//! let labels = BTreeMap::from([("cloudkit.openshift.io/shard".to_string(), "a".to_string())]);
//! assert!(shard.matches(&labels));
//! assert!(ShardSelector::parse("shard in (a,").is_err());
//! ```

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};

/// The label the sharding recipe suggests for CIs (and which their Tenants inherit).
pub const SHARD_LABEL: &str = "cloudkit.openshift.io/shard";

/// Annotation in which a shard writes its selector on its Lease, so that every shard knows
/// which selectors exist and can count the CIs none of them matches.
pub const SHARD_SELECTOR_ANNOTATION: &str = "cloudkit.openshift.io/shard-selector";

/// A validated label selector on CIs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSelector {
    selector: Selector,
    expressions: Vec<Expression>,
}

impl ShardSelector {
    /// Parses a label selector; the error says what is wrong without naming the setting.
    /// An empty selector (which would select everything) is refused.
    pub fn parse(text: &str) -> Result<ShardSelector, String> {
        let expressions = parse_expressions(text)?;
        if expressions.is_empty() {
            return Err("is empty: a shard selects CIs by at least one label".to_string());
        }
        Ok(ShardSelector {
            selector: expressions.iter().cloned().collect(),
            expressions,
        })
    }

    /// The selector for the API server (`labelSelector=`).
    pub fn selector(&self) -> &Selector {
        &self.selector
    }

    /// Whether an object with `labels` belongs to this shard.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.selector.matches(labels)
    }

    /// The label keys the selector mentions.
    pub fn keys(&self) -> BTreeSet<&str> {
        self.expressions.iter().map(expression_key).collect()
    }

    /// The labels of `labels` whose keys the selector mentions: given to a CI's Tenant, they
    /// make the Tenant match exactly the selectors its CI matches, since a selector reads no
    /// other key.
    pub fn relevant_labels(&self, labels: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let keys = self.keys();
        labels
            .iter()
            .filter(|(k, _)| keys.contains(k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// A selector of the objects that none of `shards` selects, when the API server can
    /// evaluate it: every shard selects by values of one and the same key (`key=value` or
    /// `key in (...)`, as the sharding recipe has it), so the objects of no shard are
    /// `key notin (every value)`, which also takes the objects without the key. `None` for any
    /// other set of selectors: then only matching each object's labels tells.
    pub fn none_of(shards: &[ShardSelector]) -> Option<Selector> {
        let mut key: Option<&str> = None;
        let mut values = BTreeSet::new();
        for shard in shards {
            let (k, vs): (&str, Vec<&String>) = match shard.expressions.as_slice() {
                [Expression::Equal(k, v)] => (k, vec![v]),
                [Expression::In(k, vs)] => (k, vs.iter().collect()),
                _ => return None,
            };
            if key.is_some_and(|key| key != k) || vs.iter().any(|v| v.is_empty()) {
                return None;
            }
            key = Some(k);
            values.extend(vs.into_iter().cloned());
        }
        Some(Selector::from(Expression::NotIn(key?.to_string(), values)))
    }

    /// The shard's name when the selector is one `key=value` equality: the value.
    pub fn default_name(&self) -> Option<String> {
        match self.expressions.as_slice() {
            [Expression::Equal(_, value)] if !value.is_empty() => Some(value.clone()),
            _ => None,
        }
    }
}

impl std::fmt::Display for ShardSelector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.selector.fmt(f)
    }
}

fn expression_key(e: &Expression) -> &str {
    match e {
        Expression::In(k, _)
        | Expression::NotIn(k, _)
        | Expression::Equal(k, _)
        | Expression::NotEqual(k, _)
        | Expression::Exists(k)
        | Expression::DoesNotExist(k) => k,
    }
}

/// Whether `name` can be a shard's name: it becomes part of a Lease name, so a DNS label
/// (lowercase letters, digits and '-', at most 63).
pub fn valid_shard_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a shard name (lowercase letters, digits and '-', at most 63 characters)"
        ))
    }
}

/// Splits at the commas that are not inside parentheses.
fn split_requirements(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' => {
                if depth > 0 {
                    return Err(format!("{text:?}: nested parentheses"));
                }
                depth += 1;
            }
            ')' => {
                depth = depth
                    .checked_sub(1)
                    .ok_or_else(|| format!("{text:?}: ')' without '('"))?;
            }
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: '(' without ')'"));
    }
    parts.push(&text[start..]);
    Ok(parts)
}

fn parse_expressions(text: &str) -> Result<Vec<Expression>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_requirements(text)?
        .into_iter()
        .map(|part| parse_requirement(part.trim()))
        .collect()
}

fn parse_requirement(req: &str) -> Result<Expression, String> {
    if req.is_empty() {
        return Err("an empty requirement (two commas in a row, or a trailing comma)".to_string());
    }
    if let Some(key) = req.strip_prefix('!') {
        return Ok(Expression::DoesNotExist(key_of(key.trim())?));
    }
    if let Some((key, value)) = req.split_once("!=") {
        return Ok(Expression::NotEqual(key_of(key)?, value_of(value)?));
    }
    if let Some((key, value)) = req.split_once("==").or_else(|| req.split_once('=')) {
        return Ok(Expression::Equal(key_of(key)?, value_of(value)?));
    }
    if let Some(open) = req.find('(') {
        let head = req[..open].trim();
        let Some(body) = req[open + 1..].trim_end().strip_suffix(')') else {
            return Err(format!("{req:?}: expected ')' at the end"));
        };
        let (key, op) = head
            .rsplit_once(char::is_whitespace)
            .ok_or_else(|| format!("{req:?}: expected 'key in (...)' or 'key notin (...)'"))?;
        let values = body
            .split(',')
            .map(value_of)
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match op {
            "in" => Ok(Expression::In(key_of(key)?, values)),
            "notin" => Ok(Expression::NotIn(key_of(key)?, values)),
            other => Err(format!(
                "{req:?}: unknown operator {other:?}; use in or notin"
            )),
        };
    }
    if req.contains(['<', '>']) {
        return Err(format!(
            "{req:?}: '<' and '>' are not supported; use =, ==, !=, in, notin, key or !key"
        ));
    }
    Ok(Expression::Exists(key_of(req)?))
}

/// A label key: an optional DNS subdomain prefix and '/', then a name.
fn key_of(key: &str) -> Result<String, String> {
    let key = key.trim();
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    if !prefix_ok || !is_label_name(name) || name.is_empty() {
        return Err(format!("{key:?} is not a label key"));
    }
    Ok(key.to_string())
}

/// A label value: empty, or a name of at most 63 characters.
fn value_of(value: &str) -> Result<String, String> {
    let value = value.trim();
    if is_label_name(value) {
        Ok(value.to_string())
    } else {
        Err(format!("{value:?} is not a label value"))
    }
}

/// At most 63 characters of `[A-Za-z0-9._-]`, beginning and ending with an alphanumeric
/// (or empty).
fn is_label_name(s: &str) -> bool {
    let alnum = |c: Option<char>| c.is_none_or(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && alnum(s.chars().next())
        && alnum(s.chars().last())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_cis_of_no_shard_are_one_notin_selector_when_the_shards_share_a_key() {
        let parse = |texts: &[&str]| -> Vec<ShardSelector> {
            texts
                .iter()
                .map(|t| ShardSelector::parse(t).unwrap())
                .collect()
        };
        let shards = parse(&["shard=a", "shard in (b,c)", "shard==a"]);
        let none = ShardSelector::none_of(&shards).expect("one key");
        assert_eq!(none.to_string(), "shard notin (a,b,c)");
        // It takes exactly the objects no shard matches, those without the key included.
        for l in [
            labels(&[("shard", "a")]),
            labels(&[("shard", "c")]),
            labels(&[("shard", "d")]),
            labels(&[("shard", "")]),
            labels(&[("other", "a")]),
            labels(&[]),
        ] {
            let owned = shards.iter().any(|s| s.matches(&l));
            assert_eq!(none.matches(&l), !owned, "{l:?}");
        }
        // Anything else is left to matching in memory.
        for texts in [
            &["shard=a", "zone=b"][..],
            &["shard=a,zone=b"],
            &["shard!=a"],
            &["shard notin (a)"],
            &["shard"],
            &["shard=a", "shard="],
            &[],
        ] {
            assert_eq!(ShardSelector::none_of(&parse(texts)), None, "{texts:?}");
        }
    }

    #[test]
    fn parses_what_kubectl_accepts() {
        // (selector, its form for the API server, labels it matches, labels it does not)
        type Row = (
            &'static str,
            &'static str,
            &'static [(&'static str, &'static str)],
            &'static [(&'static str, &'static str)],
        );
        let rows: [Row; 9] = [
            ("shard=a", "shard=a", &[("shard", "a")], &[("shard", "b")]),
            ("shard==a", "shard=a", &[("shard", "a")], &[]),
            (
                " shard = a ",
                "shard=a",
                &[("shard", "a")],
                &[("shard", "")],
            ),
            ("shard!=a", "shard!=a", &[], &[("shard", "a")]),
            (
                "cloudkit.openshift.io/shard in (b, a)",
                "cloudkit.openshift.io/shard in (a,b)",
                &[("cloudkit.openshift.io/shard", "b")],
                &[("cloudkit.openshift.io/shard", "c")],
            ),
            (
                "shard notin (a,b)",
                "shard notin (a,b)",
                &[],
                &[("shard", "a")],
            ),
            ("shard", "shard", &[("shard", "")], &[]),
            ("!shard", "!shard", &[("other", "x")], &[("shard", "x")]),
            (
                "tier=gold,zone in (z1,z2),!legacy",
                "tier=gold,zone in (z1,z2),!legacy",
                &[("tier", "gold"), ("zone", "z2")],
                &[("tier", "gold"), ("zone", "z2"), ("legacy", "")],
            ),
        ];
        for (text, canonical, yes, no) in rows {
            let s = ShardSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.to_string(), canonical, "{text}");
            assert!(s.matches(&labels(yes)), "{text} should match {yes:?}");
            assert!(!s.matches(&labels(no)), "{text} should not match {no:?}");
        }
    }

    #[test]
    fn refuses_what_kubectl_refuses() {
        let rows = [
            ("", "empty"),
            ("  ", "empty"),
            ("shard=a,", "empty requirement"),
            ("shard=a,,b=c", "empty requirement"),
            ("shard in (a", "without ')'"),
            ("shard in a)", "without '('"),
            ("shard in (a,(b))", "nested"),
            ("shard within (a)", "unknown operator"),
            ("shard=a b", "not a label value"),
            ("shard=-a", "not a label value"),
            ("sh ard", "not a label key"),
            ("=a", "not a label key"),
            ("Example.com/shard=a", "not a label key"),
            ("/shard=a", "not a label key"),
            ("shard>1", "not supported"),
        ];
        for (text, why) in rows {
            let e = ShardSelector::parse(text).expect_err(text);
            assert!(e.contains(why), "{text:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        let long = format!("shard={}", "v".repeat(64));
        assert!(ShardSelector::parse(&long).is_err());
    }

    #[test]
    fn a_single_equality_names_the_shard() {
        let rows = [
            ("cloudkit.openshift.io/shard=a", Some("a")),
            ("shard==blue", Some("blue")),
            ("shard=", None),
            ("shard!=a", None),
            ("shard in (a)", None),
            ("shard=a,zone=z1", None),
            ("shard", None),
        ];
        for (text, name) in rows {
            let s = ShardSelector::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(s.default_name().as_deref(), name, "{text}");
        }
    }

    #[test]
    fn tenants_get_the_labels_the_selector_reads() {
        let s = ShardSelector::parse("shard in (a,b),!legacy").unwrap();
        let ci = labels(&[("shard", "a"), ("app", "web")]);
        assert_eq!(s.relevant_labels(&ci), labels(&[("shard", "a")]));
        assert!(s.matches(&s.relevant_labels(&ci)));
        let other = labels(&[("shard", "c"), ("legacy", "")]);
        assert_eq!(s.relevant_labels(&other), other);
        assert!(!s.matches(&s.relevant_labels(&other)));
    }

    #[test]
    fn shard_names_are_dns_labels() {
        for ok in ["a", "shard-1", "0"] {
            assert!(valid_shard_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "A", "a_b", "-a", "a-", "a.b", &"x".repeat(64)] {
            assert!(valid_shard_name(bad).is_err(), "{bad}");
        }
    }
}
