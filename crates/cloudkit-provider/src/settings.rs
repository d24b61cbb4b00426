//! What every provider's settings and the operator's command line have in common: the error that
//! names a setting, and the one duration syntax all duration settings are written in.
//!
//! ```
//! use std::time::Duration;
//! use cloudkit_provider::settings::{ConfigError, parse_go_duration};
//!
//! assert_eq!(parse_go_duration("2m30s"), Ok(Duration::from_secs(150)));
//!
//! let bad = parse_go_duration("soon").unwrap_err();
//! let err = ConfigError::new("CLOUDKIT_AAP_STATUS_POLL_INTERVAL", bad.to_string());
//! assert_eq!(err.setting(), "CLOUDKIT_AAP_STATUS_POLL_INTERVAL");
//! assert_eq!(
//!     err.to_string(),
//!     "CLOUDKIT_AAP_STATUS_POLL_INTERVAL: \"soon\" is not a duration; use a number with a unit, like 30s, 2m30s or 1h"
//! );
//! ```

use std::time::Duration;

/// A setting is missing or invalid.
///
/// It displays as `SETTING: message` on one line, which is how the operator reports it at
/// start-up. The setting is named by its environment variable (such as `CLOUDKIT_AAP_URL`), or
/// by a short description for settings only an embedding program can set (such as
/// `EDA request timeout`). Messages never repeat a credential.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    setting: &'static str,
    message: String,
}

impl ConfigError {
    /// An error about `setting`: `message` says what is wrong, without repeating the name.
    pub fn new(setting: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            setting,
            message: message.into(),
        }
    }

    /// The setting to fix: its environment variable, or a description when it has none.
    pub fn setting(&self) -> &'static str {
        self.setting
    }

    /// What is wrong with the setting.
    pub fn message(&self) -> &str {
        &self.message
    }
}

/// A value that is not a duration in the syntax of [`parse_go_duration`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a duration; use a number with a unit, like 30s, 2m30s or 1h")]
pub struct InvalidDuration {
    value: String,
}

impl InvalidDuration {
    /// The rejected text.
    pub fn value(&self) -> &str {
        &self.value
    }
}

/// Longest accepted duration: Go's own limit (the nanoseconds of an `i64`, about 292 years).
const MAX_NANOS: u128 = i64::MAX as u128;

/// Parses a duration written as Go writes them (`time.ParseDuration`): one or more numbers, each
/// with a unit (`ns`, `us` or `µs`, `ms`, `s`, `m`, `h`), such as `30s`, `2m30s`, `1.5h` or
/// `500ms`; a bare `0` is zero. Surrounding white space is ignored.
///
/// Settings are the operator's Go predecessor's, so their values keep Go's syntax. A sign is
/// refused (a negative wait means nothing here), and so is a number without a unit: `30` could
/// mean seconds or milliseconds.
pub fn parse_go_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let bad = || InvalidDuration {
        value: text.to_string(),
    };
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(bad());
    }
    let mut nanos: u128 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (number, tail) = rest.split_at(number_len);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad());
        }
        let whole: u128 = if whole.is_empty() {
            0
        } else {
            whole.parse().map_err(|_| bad())?
        };
        // Digits past the eighteenth cannot change a nanosecond count below Go's limit.
        let fraction = &fraction[..fraction.len().min(18)];
        let fraction_nanos = if fraction.is_empty() {
            0
        } else {
            let digits: u128 = fraction.parse().map_err(|_| bad())?;
            digits * unit_nanos / 10u128.pow(fraction.len() as u32)
        };
        nanos = whole
            .checked_mul(unit_nanos)
            .and_then(|n| n.checked_add(fraction_nanos))
            .and_then(|n| n.checked_add(nanos))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(bad)?;
        rest = tail;
    }
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        let rows: [(&str, Duration); 17] = [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("30s", Duration::from_secs(30)),
            (" 30s\n", Duration::from_secs(30)),
            ("2m30s", Duration::from_secs(150)),
            ("1h", Duration::from_secs(3600)),
            ("1.5h", Duration::from_secs(5400)),
            ("1h2m3s4ms", Duration::from_millis(3_723_004)),
            ("500ms", Duration::from_millis(500)),
            ("0.1s", Duration::from_millis(100)),
            (".5s", Duration::from_millis(500)),
            ("5.s", Duration::from_secs(5)),
            ("250us", Duration::from_micros(250)),
            ("250µs", Duration::from_micros(250)),
            ("7ns", Duration::from_nanos(7)),
            ("1.0000000001s", Duration::from_nanos(1_000_000_000)),
            ("2562047h", Duration::from_secs(2_562_047 * 3600)),
        ];
        for (text, want) in rows {
            assert_eq!(parse_go_duration(text), Ok(want), "{text:?}");
        }
    }

    #[test]
    fn not_durations() {
        for text in [
            "", " ", "30", "1.5", "s", "3x", "1y", "-5s", "+5s", "1e3s", "2m30", "abc", ".s",
            "1..5s", "1.2.3s", "5 s", "3000000h", "0x10s",
        ] {
            let err = parse_go_duration(text).expect_err(text);
            assert_eq!(err.value(), text);
            assert_eq!(
                err.to_string(),
                format!(
                    "{text:?} is not a duration; use a number with a unit, like 30s, 2m30s or 1h"
                )
            );
        }
    }

    #[test]
    fn config_errors_name_the_setting() {
        let err = ConfigError::new("CLOUDKIT_X", "must be greater than 0");
        assert_eq!(err.setting(), "CLOUDKIT_X");
        assert_eq!(err.message(), "must be greater than 0");
        assert_eq!(err.to_string(), "CLOUDKIT_X: must be greater than 0");
    }
}
