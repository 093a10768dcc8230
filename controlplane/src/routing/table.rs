//! The routing table: which trunks, in order of preference, carry a call to a
//! given E.164 number, chosen by the longest matching digit prefix.
//!
//! What it does: [`RouteTable::build`] checks a list of [`RouteConfig`]s
//! against the known trunks and compiles them into a digit trie;
//! [`RouteTable::lookup`] walks the number's digits once (at most 15 steps)
//! and returns the trunk list of the longest prefix that matched. The empty
//! prefix is the default route.
//!
//! What it does not: normalize numbers (see [`super::e164`]), fail over
//! between trunks, or count calls (see [`super::admission`]). A table is
//! immutable; a configuration reload builds a new one.
//!
//! Invariants: every prefix in a built table is digits only, unique and at
//! most [`MAX_DIGITS`] long; every route has at least one trunk, each known and
//! listed once.

#![deny(clippy::indexing_slicing, clippy::unwrap_used)]

use super::e164::{E164, MAX_DIGITS};

/// One configured route: numbers starting with `prefix` go to `trunks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Leading digits of the E.164 number, without `+`; empty for the
    /// default route.
    pub prefix: String,
    /// Trunk names, first choice first.
    pub trunks: Vec<String>,
}

/// Index of "no child" in [`Node::children`]: the root (index 0) is never
/// anyone's child, so 0 is free to mean absent.
const NO_CHILD: u32 = 0;

/// A trie node: one child per decimal digit, and the route ending here.
#[derive(Debug, Clone, Default)]
struct Node {
    children: [u32; 10],
    route: Option<u32>,
}

/// Compiled routes, looked up by longest prefix.
///
/// A digit trie rather than a sorted list of prefixes: a lookup costs one
/// step per digit of the number whatever the table's size, and building it
/// finds duplicate prefixes on the way.
#[derive(Debug, Clone)]
pub struct RouteTable {
    /// Node 0 is the root (the empty prefix).
    nodes: Vec<Node>,
    /// Trunk lists, indexed by [`Node::route`].
    routes: Vec<Box<[String]>>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable {
            nodes: vec![Node::default()],
            routes: Vec::new(),
        }
    }
}

impl RouteTable {
    /// Checks and compiles `routes`; `known_trunks` are the trunk names the
    /// configuration defines.
    ///
    /// The error names the entry and the problem, e.g.
    /// `routes[2].trunks[0]: unknown trunk "mts"` or
    /// `routes[3].prefix: "7495" duplicates routes[1].prefix`.
    pub fn build(routes: &[RouteConfig], known_trunks: &[&str]) -> Result<RouteTable, String> {
        let mut table = RouteTable::default();
        for (i, route) in routes.iter().enumerate() {
            check_route(i, route, known_trunks)?;
            let index = u32::try_from(table.routes.len())
                .map_err(|_| format!("routes[{i}]: too many routes"))?;
            let mut node = 0usize;
            for b in route.prefix.bytes() {
                let digit = usize::from(b.wrapping_sub(b'0'));
                let child = table
                    .nodes
                    .get(node)
                    .and_then(|n| n.children.get(digit))
                    .copied()
                    .unwrap_or(NO_CHILD);
                node = if child == NO_CHILD {
                    let new = table.nodes.len();
                    let new_id =
                        u32::try_from(new).map_err(|_| format!("routes[{i}]: too many routes"))?;
                    table.nodes.push(Node::default());
                    if let Some(slot) = table
                        .nodes
                        .get_mut(node)
                        .and_then(|n| n.children.get_mut(digit))
                    {
                        *slot = new_id;
                    }
                    new
                } else {
                    child as usize
                };
            }
            let Some(end) = table.nodes.get_mut(node) else {
                return Err(format!("routes[{i}]: internal error building the table"));
            };
            if let Some(previous) = end.route {
                return Err(format!(
                    "routes[{i}].prefix: {:?} duplicates routes[{previous}].prefix",
                    route.prefix
                ));
            }
            end.route = Some(index);
            table.routes.push(route.trunks.clone().into_boxed_slice());
        }
        Ok(table)
    }

    /// The trunks of the longest prefix of `number`, first choice first, or
    /// `None` when no prefix matches and there is no default route.
    pub fn lookup(&self, number: &E164) -> Option<&[String]> {
        let mut node = self.nodes.first()?;
        let mut best = node.route;
        for b in number.digits().bytes() {
            let digit = usize::from(b.wrapping_sub(b'0'));
            let child = node.children.get(digit).copied().unwrap_or(NO_CHILD);
            if child == NO_CHILD {
                break;
            }
            let Some(next) = self.nodes.get(child as usize) else {
                break;
            };
            node = next;
            if node.route.is_some() {
                best = node.route;
            }
        }
        best.and_then(|r| self.routes.get(r as usize)).map(|t| &**t)
    }

    /// Whether the table has no routes at all.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// How many routes the table holds.
    pub fn len(&self) -> usize {
        self.routes.len()
    }
}

fn check_route(i: usize, route: &RouteConfig, known_trunks: &[&str]) -> Result<(), String> {
    if let Some(c) = route.prefix.chars().find(|c| !c.is_ascii_digit()) {
        return Err(format!(
            "routes[{i}].prefix: {:?} has a non-digit character {c:?} (digits of the E.164 \
             number, without '+')",
            route.prefix
        ));
    }
    if route.prefix.len() > MAX_DIGITS {
        return Err(format!(
            "routes[{i}].prefix: {:?} is longer than the {MAX_DIGITS} digits of an E.164 number",
            route.prefix
        ));
    }
    if route.trunks.is_empty() {
        return Err(format!(
            "routes[{i}].trunks: empty; list at least one trunk"
        ));
    }
    for (j, trunk) in route.trunks.iter().enumerate() {
        if !known_trunks.contains(&trunk.as_str()) {
            return Err(format!("routes[{i}].trunks[{j}]: unknown trunk {trunk:?}"));
        }
        if let Some(k) = route
            .trunks
            .get(..j)
            .and_then(|before| before.iter().position(|t| t == trunk))
        {
            return Err(format!(
                "routes[{i}].trunks[{j}]: trunk {trunk:?} already listed as routes[{i}].trunks[{k}]"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::routing::e164::{normalize, NumberingConfig};

    const TRUNKS: &[&str] = &["mts", "beeline", "megafon", "intl"];

    fn route(prefix: &str, trunks: &[&str]) -> RouteConfig {
        RouteConfig {
            prefix: prefix.to_owned(),
            trunks: trunks.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    fn num(s: &str) -> E164 {
        normalize(s, &NumberingConfig::default()).unwrap()
    }

    fn trunks<'a>(table: &'a RouteTable, number: &str) -> Option<Vec<&'a str>> {
        table
            .lookup(&num(number))
            .map(|t| t.iter().map(String::as_str).collect())
    }

    #[test]
    fn picks_the_longest_matching_prefix() {
        let table = RouteTable::build(
            &[
                route("7", &["mts"]),
                route("7495", &["beeline", "mts"]),
                route("74951", &["megafon"]),
            ],
            TRUNKS,
        )
        .unwrap();
        assert_eq!(trunks(&table, "+74951234567"), Some(vec!["megafon"]));
        assert_eq!(trunks(&table, "+74952234567"), Some(vec!["beeline", "mts"]));
        assert_eq!(trunks(&table, "+79161234567"), Some(vec!["mts"]));
        assert_eq!(table.len(), 3);
        assert!(!table.is_empty());
    }

    #[test]
    fn order_of_routes_does_not_matter() {
        let table = RouteTable::build(
            &[route("74951", &["megafon"]), route("7", &["mts"])],
            TRUNKS,
        )
        .unwrap();
        assert_eq!(trunks(&table, "+74951234567"), Some(vec!["megafon"]));
        assert_eq!(trunks(&table, "+74961234567"), Some(vec!["mts"]));
    }

    #[test]
    fn falls_back_to_the_default_route() {
        let table = RouteTable::build(&[route("", &["intl", "mts"]), route("7", &["mts"])], TRUNKS)
            .unwrap();
        assert_eq!(trunks(&table, "+442079460958"), Some(vec!["intl", "mts"]));
        assert_eq!(trunks(&table, "+74951234567"), Some(vec!["mts"]));
    }

    #[test]
    fn finds_nothing_without_a_default_route() {
        let table = RouteTable::build(&[route("7495", &["mts"])], TRUNKS).unwrap();
        assert_eq!(trunks(&table, "+442079460958"), None);
        // A prefix longer than what matched is not a match.
        assert_eq!(trunks(&table, "+74961234567"), None);
    }

    #[test]
    fn a_prefix_as_long_as_the_number_matches() {
        let table = RouteTable::build(&[route("74951234567", &["mts"])], TRUNKS).unwrap();
        assert_eq!(trunks(&table, "+74951234567"), Some(vec!["mts"]));
    }

    #[test]
    fn empty_table_routes_nothing() {
        let table = RouteTable::build(&[], TRUNKS).unwrap();
        assert!(table.is_empty());
        assert_eq!(table.len(), 0);
        assert_eq!(trunks(&table, "+74951234567"), None);
        assert!(RouteTable::default().is_empty());
    }

    #[test]
    fn rejects_an_unknown_trunk() {
        let e = RouteTable::build(&[route("7", &["mts", "rostelecom"])], TRUNKS).unwrap_err();
        assert_eq!(e, "routes[0].trunks[1]: unknown trunk \"rostelecom\"");
    }

    #[test]
    fn rejects_a_duplicate_prefix() {
        let e = RouteTable::build(
            &[
                route("7", &["mts"]),
                route("7495", &["mts"]),
                route("7495", &["beeline"]),
            ],
            TRUNKS,
        )
        .unwrap_err();
        assert_eq!(e, "routes[2].prefix: \"7495\" duplicates routes[1].prefix");
        let e =
            RouteTable::build(&[route("", &["mts"]), route("", &["intl"])], TRUNKS).unwrap_err();
        assert!(e.starts_with("routes[1].prefix"), "{e}");
    }

    #[test]
    fn rejects_a_non_digit_prefix() {
        let e = RouteTable::build(&[route("+7", &["mts"])], TRUNKS).unwrap_err();
        assert!(
            e.starts_with("routes[0].prefix: \"+7\" has a non-digit character '+'"),
            "{e}"
        );
        let e =
            RouteTable::build(&[route("7", &["mts"]), route("7x", &["mts"])], TRUNKS).unwrap_err();
        assert!(e.starts_with("routes[1].prefix"), "{e}");
    }

    #[test]
    fn rejects_a_prefix_longer_than_e164() {
        let e = RouteTable::build(&[route("1234567890123456", &["mts"])], TRUNKS).unwrap_err();
        assert!(e.starts_with("routes[0].prefix"), "{e}");
    }

    #[test]
    fn rejects_an_empty_trunk_list() {
        let e = RouteTable::build(&[route("7", &[])], TRUNKS).unwrap_err();
        assert_eq!(e, "routes[0].trunks: empty; list at least one trunk");
    }

    #[test]
    fn rejects_a_trunk_listed_twice() {
        let e = RouteTable::build(&[route("7", &["mts", "intl", "mts"])], TRUNKS).unwrap_err();
        assert!(e.starts_with("routes[0].trunks[2]"), "{e}");
    }
}
