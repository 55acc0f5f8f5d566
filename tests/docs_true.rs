//! The docs stay true to the code: every config key (walked from
//! `Config::default()` and the list item types) is documented in
//! docs/configuration.md, and the production template loads.

use postdesk::config::{
    Actions, Agent, BusinessHours, Category, Conditions, Config, Customer, Distribution, Group,
    HeaderCondition, Priority, Rule, SlaConditions, SlaPolicy, Vacation,
};
use serde_json::Value;

fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            out.push(path.clone());
            keys(&path, child, out);
        }
    }
}

#[test]
fn every_config_key_is_in_configuration_md() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/configuration.md"
    ))
    .unwrap();
    let mut all = Vec::new();
    keys(
        "",
        &serde_json::to_value(Config::default()).unwrap(),
        &mut all,
    );
    let vacation = Vacation {
        from: "2026-07-01".parse().unwrap(),
        until: "2026-07-14".parse().unwrap(),
    };
    let agent = Agent {
        email: "a@b".into(),
        name: Some("A".into()),
        vacation: vec![vacation.clone()],
    };
    keys(
        "team.agents[]",
        &serde_json::to_value(agent).unwrap(),
        &mut all,
    );
    keys(
        "team.agents[].vacation[]",
        &serde_json::to_value(vacation).unwrap(),
        &mut all,
    );
    let customer = Customer {
        id: "X".into(),
        name: None,
        addresses: vec![],
        domains: vec![],
        category: Some("gold".into()),
        manager: Some("a@b".into()),
    };
    keys(
        "customers[]",
        &serde_json::to_value(customer).unwrap(),
        &mut all,
    );
    // Desk policy items: walked from fully written examples, since the
    // defaults leave these lists empty (or hold only plain values).
    let items: Vec<(&str, Value)> = vec![
        (
            "priorities[]",
            serde_json::to_value(Priority::default()).unwrap(),
        ),
        ("groups[]", serde_json::to_value(Group::default()).unwrap()),
        (
            "categories[]",
            serde_json::to_value(Category {
                distribution: Some(Distribution::default()),
                ..Category::default()
            })
            .unwrap(),
        ),
        (
            "routing[]",
            serde_json::to_value(Rule {
                when: Conditions {
                    header: Some(HeaderCondition::default()),
                    ..Conditions::default()
                },
                then: Actions::default(),
                ..Rule::default()
            })
            .unwrap(),
        ),
        (
            "policy.business_hours",
            serde_json::to_value(BusinessHours::default()).unwrap(),
        ),
        (
            "sla.policies[]",
            serde_json::to_value(SlaPolicy {
                when: SlaConditions::default(),
                ..SlaPolicy::default()
            })
            .unwrap(),
        ),
    ];
    for (prefix, v) in &items {
        keys(prefix, v, &mut all);
    }
    assert!(all.len() > 40, "walked too few keys: {all:?}");
    let missing: Vec<_> = all
        .iter()
        .filter(|k| !doc.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from docs/configuration.md: {missing:?}"
    );
}

#[test]
fn shipped_config_files_load() {
    let p = concat!(env!("CARGO_MANIFEST_DIR"), "/config/postdesk.yaml");
    let c = Config::load(std::path::Path::new(p)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.listen.lmtp, vec!["127.0.0.1:2424"]);
    assert_eq!(c.outbound.relay, "smtp://127.0.0.1:10025");
}

#[test]
fn customers_file_is_merged_and_its_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/customers.yaml"),
        dir.path().join("customers.yaml"),
    )
    .unwrap();
    let cfg = dir.path().join("postdesk.yaml");
    std::fs::write(
        &cfg,
        "support: {address: support@example.com}\ncustomers:\n  - {id: FIRST, domains: [first.example]}\ncustomers_file: customers.yaml\n",
    )
    .unwrap();
    let c = Config::load(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = c.customers.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["FIRST", "ACME", "KALEV"]);
    std::fs::write(
        dir.path().join("customers.yaml"),
        "- id: X\n  domainz: [x.example]\n",
    )
    .unwrap();
    let e = Config::load(&cfg).unwrap_err().to_string();
    assert!(
        e.contains("customers.yaml:2:") && e.contains("domainz"),
        "{e}"
    );
}
