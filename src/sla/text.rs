//! The one-line SLA summary `ticket show` and `explain` print, from the
//! ticket JSON's `sla` object (SPEC §9), so both read the same.

use serde_json::Value;

/// `fast: first response due 2026-11-23T05:00:04Z, resolution due …`;
/// `-` when no policy matched.
pub fn line(sla: &Value) -> String {
    let Some(policy) = sla.get("policy").and_then(Value::as_str) else {
        return "-".into();
    };
    let at = |k: &str| sla.get(k).and_then(Value::as_str);
    let first = match (at("first_response_at"), at("first_response_due")) {
        (Some(m), _) => format!("first response met {m}"),
        (None, Some(d)) => format!("first response due {d}"),
        (None, None) => "first response -".into(),
    };
    let res = match at("resolution_due") {
        Some(d) => format!("resolution due {d}"),
        None => "resolution -".into(),
    };
    let breaches: Vec<&str> = sla
        .get("breaches")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let breached = if breaches.is_empty() {
        String::new()
    } else {
        format!("; BREACHED: {}", breaches.join(", "))
    };
    format!("{policy}: {first}, {res}{breached}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_says_policy_due_met_and_breached() {
        assert_eq!(line(&serde_json::json!({"policy": null})), "-");
        let v = serde_json::json!({
            "policy": "fast",
            "first_response_due": null,
            "first_response_at": "2026-11-23T05:00:01Z",
            "resolution_due": "2026-11-23T05:00:08Z",
            "breaches": ["resolution"],
        });
        assert_eq!(
            line(&v),
            "fast: first response met 2026-11-23T05:00:01Z, resolution due 2026-11-23T05:00:08Z; BREACHED: resolution"
        );
        let v = serde_json::json!({"policy": "std", "first_response_due": "2026-11-23T09:00:00Z"});
        assert_eq!(
            line(&v),
            "std: first response due 2026-11-23T09:00:00Z, resolution -"
        );
    }
}
