//! The parts of AWX answers the client reads. Unknown fields are ignored and absent optional
//! fields default, but a field of the wrong type is an error: a proxy's or another service's
//! answer must not be mistaken for a controller's.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A list page: `{count, next, previous, results}`.
#[derive(Debug, Deserialize)]
pub(crate) struct Page<T> {
    #[serde(default)]
    pub(crate) count: Option<u64>,
    pub(crate) results: Vec<T>,
}

/// An item of `/v2/job_templates/` or `/v2/workflow_job_templates/`.
#[derive(Debug, Deserialize)]
pub(crate) struct TemplateItem {
    #[serde(deserialize_with = "de_id")]
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) name: Option<String>,
}

/// The answer to a launch: the new job (serialised like its detail) plus `job` or
/// `workflow_job` and `ignored_fields`.
#[derive(Debug, Deserialize)]
pub(crate) struct LaunchAnswer {
    #[serde(default, deserialize_with = "de_opt_id")]
    pub(crate) id: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub(crate) job: Option<u64>,
    #[serde(default, deserialize_with = "de_opt_id")]
    pub(crate) workflow_job: Option<u64>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    #[serde(default)]
    pub(crate) ignored_fields: Option<Value>,
}

/// A job or workflow job, from its detail page or a list page.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct AapJob {
    /// The numeric id.
    #[serde(deserialize_with = "de_id")]
    pub id: u64,
    /// `new`, `pending`, `waiting`, `running`, `successful`, `failed`, `error`, `canceled`, or
    /// whatever else a controller version reports. Empty when the answer had none (list items
    /// of some versions).
    #[serde(default, deserialize_with = "de_opt_string_or_null")]
    pub status: String,
    /// When the job started (RFC 3339 text); `None` until it has.
    #[serde(default)]
    pub started: Option<String>,
    /// When the job finished (RFC 3339 text); `None` until it has.
    #[serde(default)]
    pub finished: Option<String>,
    /// The traceback of a failed job (often empty).
    #[serde(default)]
    pub result_traceback: Option<String>,
    /// Why the controller stopped or skipped the job, when it says.
    #[serde(default)]
    pub job_explanation: Option<String>,
    /// The job's extra variables: in AWX a JSON (or YAML) *string*; `None` when the answer did
    /// not include them (some list pages).
    #[serde(default)]
    pub extra_vars: Option<Value>,
}

impl AapJob {
    /// The value of the extra variable `name`, when the extra variables are a JSON object (or
    /// the JSON text of one) holding it.
    pub fn extra_var(&self, name: &str) -> Option<Value> {
        match self.extra_vars.as_ref()? {
            Value::String(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map.get(name).cloned(),
                _ => None,
            },
            Value::Object(map) => map.get(name).cloned(),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum IdRepr {
    Number(u64),
    Text(String),
}

fn id_from_repr<E: serde::de::Error>(repr: IdRepr) -> Result<u64, E> {
    match repr {
        IdRepr::Number(n) if n > 0 => Ok(n),
        IdRepr::Number(n) => Err(E::custom(format!("expected a positive id, got {n}"))),
        IdRepr::Text(t) => parse_decimal_id(&t)
            .ok_or_else(|| E::custom(format!("expected a numeric id, got {:?}", short(&t)))),
    }
}

/// Accepts `42` and, leniently, `"42"`; never 0 (AWX ids start at 1).
fn de_id<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let repr =
        IdRepr::deserialize(d).map_err(|_| serde::de::Error::custom("expected a numeric id"))?;
    id_from_repr(repr)
}

fn de_opt_id<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let repr = Option::<IdRepr>::deserialize(d)
        .map_err(|_| serde::de::Error::custom("expected a numeric id"))?;
    repr.map(id_from_repr).transpose()
}

fn de_opt_string_or_null<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// A positive decimal number of at most 19 digits, nothing else (no sign, no blanks).
pub(crate) fn parse_decimal_id(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 19 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u64>().ok().filter(|n| *n > 0)
}

fn short(text: &str) -> String {
    crate::text::truncate(text, 40)
}
