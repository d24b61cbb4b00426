use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Sets condition `type_` in `conditions`. `lastTransitionTime` changes only when the status
/// changes; reason, message and observedGeneration are always brought up to date.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.status = status.to_string();
                c.last_transition_time = Time(now);
            }
            c.reason = reason.to_string();
            c.message = message.to_string();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message: message.to_string(),
            observed_generation: generation,
            last_transition_time: Time(now),
        }),
    }
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Removes condition `type_` from `conditions`, if present.
pub fn remove_condition(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

/// Whether condition `type_` is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_with_status() {
        let t0 = Timestamp::from_second(100).unwrap_or(Timestamp::UNIX_EPOCH);
        let t1 = Timestamp::from_second(200).unwrap_or(Timestamp::UNIX_EPOCH);
        let t2 = Timestamp::from_second(300).unwrap_or(Timestamp::UNIX_EPOCH);
        let mut c = Vec::new();
        set_condition(&mut c, "A", false, "Applying", "one", Some(1), t0);
        set_condition(&mut c, "A", false, "Applying", "two", Some(2), t1);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].last_transition_time, Time(t0));
        assert_eq!(c[0].message, "two");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(&mut c, "A", true, "Applied", "", Some(2), t2);
        assert_eq!(c[0].last_transition_time, Time(t2));
        assert_eq!(c[0].status, "True");
        assert!(is_true(&c, "A"));
        assert!(!is_true(&c, "B"));
    }
}
