//! Azure ABAC conditions (version 2.0), the subset that constrains who may
//! write and delete role assignments: `ActionMatches{'…'}`, `@Request[…]` and
//! `@Resource[…]` on the role-assignment attributes `RoleDefinitionId` and
//! `PrincipalId`, with `GuidEquals`/`GuidNotEquals` and their
//! `ForAnyOfAnyValues`/`ForAllOfAnyValues`/`ForAnyOfAllValues`/`ForAllOfAllValues`
//! forms, joined by `AND`, `OR`, `NOT`/`!` and parentheses. It is what Key
//! Vault Data Access Administrator's definition carries. A condition is
//! parsed whole before it is stored; anything outside the subset is refused
//! there, and evaluation of an unparsable one is false (fail closed).

use std::collections::HashMap;

/// An attribute a condition reads, e.g. `Microsoft.Authorization/roleAssignments:RoleDefinitionId`.
pub const ROLE_DEFINITION_ID: &str = "Microsoft.Authorization/roleAssignments:RoleDefinitionId";
/// The principal an assignment is for.
pub const PRINCIPAL_ID: &str = "Microsoft.Authorization/roleAssignments:PrincipalId";

/// What the request being authorized carries: its action, and attribute
/// values of the request (what is being written) and of the resource (what
/// exists). Values are compared as GUIDs (case-insensitively; a full role
/// definition id compares by its last segment).
#[derive(Debug, Default, Clone)]
pub struct Attributes {
    /// `@Request[…]` values.
    pub request: HashMap<&'static str, Vec<String>>,
    /// `@Resource[…]` values.
    pub resource: HashMap<&'static str, Vec<String>>,
}

impl Attributes {
    /// No attributes: a condition that reads one is false.
    pub fn none() -> Self {
        Self::default()
    }

    /// The attributes of writing an assignment of `role` to `principal`.
    pub fn assignment_write(role: &str, principal: &str) -> Self {
        let mut a = Self::default();
        a.request.insert(ROLE_DEFINITION_ID, vec![guid_of(role)]);
        a.request.insert(PRINCIPAL_ID, vec![guid_of(principal)]);
        a
    }

    /// The attributes of deleting an existing assignment of `role` to `principal`.
    pub fn assignment_delete(role: &str, principal: &str) -> Self {
        let mut a = Self::default();
        a.resource.insert(ROLE_DEFINITION_ID, vec![guid_of(role)]);
        a.resource.insert(PRINCIPAL_ID, vec![guid_of(principal)]);
        a
    }
}

/// Why a condition is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConditionError(pub String);

/// Checks that `condition` is in the supported subset.
pub fn validate(condition: &str) -> Result<(), ConditionError> {
    parse(condition).map(|_| ())
}

/// Evaluates `condition` for `action` with `attrs`. Unparsable is false.
pub fn evaluate(condition: &str, action: &str, attrs: &Attributes) -> bool {
    parse(condition).is_ok_and(|e| e.eval(action, attrs))
}

/// The last segment of an id, as a canonical (hyphenated, lower-case) GUID
/// when it is one, so that every spelling of one GUID compares equal.
fn guid_of(v: &str) -> String {
    canonical_guid(v.trim_end_matches('/').rsplit('/').next().unwrap_or(""))
}

fn canonical_guid(v: &str) -> String {
    match uuid::Uuid::parse_str(v.trim()) {
        Ok(u) => u.hyphenated().to_string(),
        Err(_) => v.trim().to_ascii_lowercase(),
    }
}

#[derive(Debug)]
enum Expr {
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    ActionMatches(String),
    Compare {
        resource: bool,
        attribute: &'static str,
        any_of_attr: bool,
        any_of_values: bool,
        equals: bool,
        values: Vec<String>,
    },
}

impl Expr {
    fn eval(&self, action: &str, attrs: &Attributes) -> bool {
        match self {
            Expr::Not(e) => !e.eval(action, attrs),
            Expr::And(a, b) => a.eval(action, attrs) && b.eval(action, attrs),
            Expr::Or(a, b) => a.eval(action, attrs) || b.eval(action, attrs),
            Expr::ActionMatches(p) => crate::rbac::matches(p, action),
            Expr::Compare {
                resource,
                attribute,
                any_of_attr,
                any_of_values,
                equals,
                values,
            } => {
                let source = if *resource {
                    &attrs.resource
                } else {
                    &attrs.request
                };
                // A missing attribute makes the comparison false, whatever
                // its operator: a condition never allows on absent data.
                let Some(have) = source.get(attribute).filter(|v| !v.is_empty()) else {
                    return false;
                };
                let one = |h: &String| {
                    let hit = |v: &String| (v == h) == *equals;
                    if *any_of_values {
                        values.iter().any(hit)
                    } else {
                        values.iter().all(hit)
                    }
                };
                if *any_of_attr {
                    have.iter().any(one)
                } else {
                    have.iter().all(one)
                }
            }
        }
    }
}

/// Deepest nesting accepted (a bound on recursion for hostile input).
const MAX_DEPTH: usize = 32;
/// Longest condition accepted.
const MAX_LEN: usize = 8192;

fn parse(s: &str) -> Result<Expr, ConditionError> {
    if s.len() > MAX_LEN {
        return Err(ConditionError("The condition is too long.".into()));
    }
    let mut p = Parser {
        s: s.as_bytes(),
        at: 0,
        depth: 0,
    };
    let e = p.or()?;
    p.ws();
    if p.at != p.s.len() {
        return Err(p.error("unexpected text"));
    }
    Ok(e)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, what: &str) -> ConditionError {
        ConditionError(format!(
            "The condition is not supported: {what} at offset {}. Keyhaven evaluates ActionMatches and GUID comparisons of the role assignment's RoleDefinitionId and PrincipalId.",
            self.at
        ))
    }

    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    /// Consumes `word` (case-insensitive) if it is next.
    fn eat(&mut self, word: &str) -> bool {
        self.ws();
        let end = self.at + word.len();
        match self.s.get(self.at..end) {
            Some(w) if w.eq_ignore_ascii_case(word.as_bytes()) => {
                // A keyword must not run into a longer identifier.
                let alpha = word.bytes().last().is_some_and(|c| c.is_ascii_alphabetic());
                if alpha && self.s.get(end).is_some_and(u8::is_ascii_alphanumeric) {
                    return false;
                }
                self.at = end;
                true
            }
            _ => false,
        }
    }

    fn expect(&mut self, word: &str) -> Result<(), ConditionError> {
        if self.eat(word) {
            Ok(())
        } else {
            Err(self.error(&format!("expected '{word}'")))
        }
    }

    fn nest(&mut self) -> Result<(), ConditionError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error("nesting too deep"));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, ConditionError> {
        self.nest()?;
        let mut e = self.and()?;
        while self.eat("OR") || self.eat("||") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ConditionError> {
        let mut e = self.unary()?;
        while self.eat("AND") || self.eat("&&") {
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, ConditionError> {
        if self.eat("!") || self.eat("NOT") {
            self.nest()?;
            let e = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(e)));
        }
        if self.eat("(") {
            let e = self.or()?;
            self.expect(")")?;
            return Ok(e);
        }
        if self.eat("ActionMatches") {
            self.expect("{")?;
            let p = self.quoted()?;
            self.expect("}")?;
            return Ok(Expr::ActionMatches(p));
        }
        let resource = if self.eat("@Request") {
            false
        } else if self.eat("@Resource") {
            true
        } else {
            return Err(self.error("expected an expression"));
        };
        self.expect("[")?;
        let name = self.until(b']')?;
        self.expect("]")?;
        let attribute = [ROLE_DEFINITION_ID, PRINCIPAL_ID]
            .into_iter()
            .find(|a| a.eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| self.error("unsupported attribute"))?;
        self.ws();
        // Which attribute values and which listed values must match.
        let quantifier = [
            ("ForAnyOfAnyValues:", (true, true)),
            ("ForAllOfAnyValues:", (false, true)),
            ("ForAnyOfAllValues:", (true, false)),
            ("ForAllOfAllValues:", (false, false)),
        ]
        .into_iter()
        .find(|(q, _)| self.eat(q))
        .map(|(_, m)| m);
        let quantified = quantifier.is_some();
        let (any_of_attr, any_of_values) = quantifier.unwrap_or((true, true));
        let equals = if self.eat("GuidEquals") {
            true
        } else if self.eat("GuidNotEquals") {
            false
        } else {
            return Err(self.error("unsupported operator"));
        };
        self.ws();
        let values: Vec<String> = if self.eat("{") {
            let v = self.until(b'}')?;
            self.expect("}")?;
            v.split(',').map(canonical_guid).collect()
        } else {
            let start = self.at;
            while self
                .s
                .get(self.at)
                .is_some_and(|c| c.is_ascii_hexdigit() || *c == b'-')
            {
                self.at += 1;
            }
            let v = std::str::from_utf8(self.s.get(start..self.at).unwrap_or_default())
                .unwrap_or_default();
            vec![canonical_guid(v)]
        };
        if values.is_empty() || values.iter().any(|v| uuid::Uuid::parse_str(v).is_err()) {
            return Err(self.error("expected GUID values"));
        }
        // Azure: a set of values needs a cross-product quantifier; without
        // one, `GuidNotEquals {a, b}` would read as "not a, or not b".
        if values.len() > 1 && !quantified {
            return Err(self.error("a list of values needs ForAnyOfAnyValues and the like"));
        }
        Ok(Expr::Compare {
            resource,
            attribute,
            any_of_attr,
            any_of_values,
            equals,
            values,
        })
    }

    fn quoted(&mut self) -> Result<String, ConditionError> {
        self.ws();
        if self.s.get(self.at) != Some(&b'\'') {
            return Err(self.error("expected a quoted action"));
        }
        self.at += 1;
        let v = self.until(b'\'')?;
        self.at += 1;
        Ok(v)
    }

    fn until(&mut self, end: u8) -> Result<String, ConditionError> {
        let start = self.at;
        while self.s.get(self.at).is_some_and(|c| *c != end) {
            self.at += 1;
        }
        if self.at >= self.s.len() {
            return Err(self.error("unterminated"));
        }
        std::str::from_utf8(self.s.get(start..self.at).unwrap_or_default())
            .map(str::to_owned)
            .map_err(|_| self.error("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KV_ADMIN: &str = "00482a5a-887f-4fb3-b363-3b7fe8e74483";
    const OWNER: &str = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635";
    const WRITE: &str = "Microsoft.Authorization/roleAssignments/write";
    const DELETE: &str = "Microsoft.Authorization/roleAssignments/delete";

    fn cond() -> String {
        crate::rbac::builtin_role("8b54135c-b56d-4d72-a534-26097cfdc8d8")
            .and_then(|r| r.permissions.first().and_then(|p| p.condition.clone()))
            .unwrap()
    }

    #[test]
    fn data_access_administrator_may_assign_key_vault_roles_only() {
        let c = cond();
        validate(&c).unwrap();
        let kv = Attributes::assignment_write(
            &format!(
                "/subscriptions/s/providers/Microsoft.Authorization/roleDefinitions/{KV_ADMIN}"
            ),
            "p",
        );
        assert!(evaluate(&c, WRITE, &kv));
        assert!(!evaluate(
            &c,
            WRITE,
            &Attributes::assignment_write(OWNER, "p")
        ));
        assert!(!evaluate(&c, WRITE, &Attributes::none()));
        assert!(evaluate(
            &c,
            DELETE,
            &Attributes::assignment_delete(KV_ADMIN, "p")
        ));
        assert!(!evaluate(
            &c,
            DELETE,
            &Attributes::assignment_delete(OWNER, "p")
        ));
        // Other actions are not constrained by it.
        assert!(evaluate(
            &c,
            "Microsoft.Authorization/roleAssignments/read",
            &Attributes::none()
        ));
    }

    #[test]
    fn conditions_outside_the_subset_are_refused_and_false() {
        for bad in [
            "@Resource[Microsoft.KeyVault/vaults/secrets:name] StringEquals 'x'",
            "((!(ActionMatches{'a'})",
            "@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] GuidEquals {not-a-guid}",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
            assert!(!evaluate(bad, WRITE, &Attributes::assignment_write(KV_ADMIN, "p")));
        }
        let deep = format!("{}ActionMatches{{'a'}}{}", "(".repeat(100), ")".repeat(100));
        assert!(validate(&deep).is_err());
    }

    #[test]
    fn every_spelling_of_a_guid_compares_equal() {
        let bare = OWNER.replace('-', "").to_uppercase();
        let c =
            format!("@Request[{ROLE_DEFINITION_ID}] ForAnyOfAllValues:GuidNotEquals {{{bare}}}");
        assert!(!evaluate(
            &c,
            WRITE,
            &Attributes::assignment_write(OWNER, "p")
        ));
        assert!(!evaluate(
            &c,
            WRITE,
            &Attributes::assignment_write(&bare, "p")
        ));
        let unquantified =
            format!("@Request[{ROLE_DEFINITION_ID}] GuidNotEquals {{{OWNER}, {KV_ADMIN}}}");
        assert!(validate(&unquantified).is_err());
    }

    #[test]
    fn not_equals_blocks_a_listed_role() {
        let c =
            format!("@Request[{ROLE_DEFINITION_ID}] ForAnyOfAllValues:GuidNotEquals {{{OWNER}}}");
        assert!(evaluate(
            &c,
            WRITE,
            &Attributes::assignment_write(KV_ADMIN, "p")
        ));
        assert!(!evaluate(
            &c,
            WRITE,
            &Attributes::assignment_write(OWNER, "p")
        ));
    }
}
