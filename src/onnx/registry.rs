//! The op registry: ONNX (domain, op type) -> parser producing an IR [`Op`].

use super::node::NodeCtx;
use super::ops;
use crate::error::Result;
use crate::ir::Op;
use std::collections::BTreeMap;
use std::sync::OnceLock;

pub type Parser = fn(&mut NodeCtx) -> Result<Op>;

/// Parsers keyed by (domain, op type); the default domain is "".
pub struct Registry {
    parsers: BTreeMap<(&'static str, &'static str), (Parser, &'static str)>,
    /// Family being registered (the ops/ file), recorded with each entry for the docs.
    family: &'static str,
}

impl Registry {
    fn new() -> Registry {
        let mut r = Registry { parsers: BTreeMap::new(), family: "" };
        r.family = "math";
        ops::math::register(&mut r);
        r.family = "nn";
        ops::nn::register(&mut r);
        r.family = "array";
        ops::array::register(&mut r);
        r.family = "quant";
        ops::quant::register(&mut r);
        r
    }

    pub fn insert(&mut self, op_type: &'static str, parser: Parser) {
        self.parsers.insert(("", op_type), (parser, self.family));
    }

    pub fn insert_domain(&mut self, domain: &'static str, op_type: &'static str, parser: Parser) {
        self.parsers.insert((domain, op_type), (parser, self.family));
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<Parser> {
        let domain = if domain == "ai.onnx" { "" } else { domain };
        self.parsers.get(&(domain, op_type)).map(|e| e.0)
    }

    /// Every registered (domain, op type), sorted.
    pub fn op_types(&self) -> Vec<(&'static str, &'static str)> {
        self.parsers.keys().copied().collect()
    }

    /// The op support table of the README, generated so it cannot go stale.
    pub fn markdown_table(&self) -> String {
        let mut s = String::from("| Op | Domain | Family |\n|---|---|---|\n");
        for ((domain, op), (_, family)) in &self.parsers {
            let d = if domain.is_empty() { "ai.onnx" } else { domain };
            s.push_str(&format!("| {op} | {d} | {family} |\n"));
        }
        s
    }
}

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    static R: OnceLock<Registry> = OnceLock::new();
    R.get_or_init(Registry::new)
}
