//! Azure's built-in Key Vault policy definitions, with Azure's ids, display
//! names, parameters and rules (`builtins.json`, written from Azure's
//! published definitions; see docs/policy.md for which were checked).

use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::Definition;

/// One built-in: its name (a GUID), its `properties` as ARM shows them,
/// and the parsed definition.
pub struct BuiltIn {
    /// The GUID.
    pub name: String,
    /// `properties`.
    pub properties: Value,
    /// Parsed.
    pub definition: Arc<Definition>,
}

/// Every built-in definition.
pub fn all() -> &'static [BuiltIn] {
    static ALL: OnceLock<Vec<BuiltIn>> = OnceLock::new();
    ALL.get_or_init(|| {
        let raw: Vec<Value> =
            serde_json::from_str(include_str!("builtins.json")).unwrap_or_default();
        raw.into_iter()
            .filter_map(|d| {
                let name = d.get("name")?.as_str()?.to_owned();
                let properties = d.get("properties")?.clone();
                // A built-in that did not parse is a bug the tests catch.
                let definition = Arc::new(Definition::parse(&properties).ok()?);
                Some(BuiltIn {
                    name,
                    properties,
                    definition,
                })
            })
            .collect()
    })
}

/// The built-in named `name` (case-insensitive).
pub fn get(name: &str) -> Option<&'static BuiltIn> {
    all().iter().find(|b| b.name.eq_ignore_ascii_case(name))
}

/// The id of a built-in definition.
pub fn id_of(name: &str) -> String {
    format!("/providers/Microsoft.Authorization/policyDefinitions/{name}")
}

/// The built-in a definition id names, if it names one.
pub fn by_id(id: &str) -> Option<&'static BuiltIn> {
    let prefix = "/providers/microsoft.authorization/policydefinitions/";
    let lower = id.to_ascii_lowercase();
    let name = lower.strip_prefix(prefix)?;
    get(name)
}
