//! Desk policies (issue #8), the PURE part: routing rules, default owner,
//! fair distribution. Nothing here reads the clock, the store or the
//! network; the delivery path, `explain` and `rules test` pass every input
//! in, so they cannot disagree. The config shapes and their checks live in
//! `config::policy`; docs/policies.md explains the behaviour to operators.

pub mod distribute;
pub mod rules;

pub use distribute::{
    away_at, counts_as_load, distribute, DistributeInput, Distributed, PassedOver, Unavailable,
};
pub use rules::{
    domain_matches, evaluate, glob_match, header_pairs, render_trace, Assignee, Check,
    MergedActions, RuleInput, RuleTrace, Rules, RulesOutcome, Verdict,
};

use crate::config::Category;

/// Who owns a new ticket no rule assigned (Okdesk's order): the customer's
/// `manager` from the customer directory, else the category's
/// `default_owner`, else nobody. Lower-cased.
pub fn default_owner(
    customer_manager: Option<&str>,
    category: Option<&Category>,
) -> Option<String> {
    let clean = |s: &str| Some(s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty());
    customer_manager.and_then(clean).or_else(|| {
        category
            .and_then(|c| c.default_owner.as_deref())
            .and_then(clean)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_owner_order_is_manager_then_category_then_nobody() {
        let cat = Category {
            id: "billing".into(),
            default_owner: Some("Bob@X.test".into()),
            ..Category::default()
        };
        assert_eq!(
            default_owner(Some("Alice@X.test"), Some(&cat)).as_deref(),
            Some("alice@x.test")
        );
        assert_eq!(
            default_owner(None, Some(&cat)).as_deref(),
            Some("bob@x.test")
        );
        assert_eq!(
            default_owner(Some("  "), Some(&cat)).as_deref(),
            Some("bob@x.test")
        );
        assert_eq!(default_owner(None, Some(&Category::default())), None);
        assert_eq!(default_owner(None, None), None);
    }
}
