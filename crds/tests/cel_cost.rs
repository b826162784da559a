//! The CRD's CEL rules against the apiserver's cost limits, the way Kubernetes 1.32 costs them.
//!
//! A static estimate per rule must stay under 10,000,000 (`StaticEstimatedCostLimit`) and their
//! sum under 100,000,000 (`StaticEstimatedCRDCostLimit`), or the apiserver refuses the CRD; one
//! evaluation may cost at most 1,000,000 (`PerCallLimit`), or an object is refused at apply time.
//! No Rust crate estimates CEL costs, so this follows the model of cel-go's checker
//! (`checker/cost.go`, v0.22 as pinned by k8s.io/apiserver v0.32) and of apiextensions' size
//! estimates (`pkg/cel/common/schemas.go`), for the expressions this CRD uses:
//!
//! - identifiers and field selects cost 1 each; `has(x.f)` costs what `x` costs (Kubernetes turns
//!   off the presence-test cost); literals are free;
//! - `&&`, `||`: both sides; `!`, `<`, `<=`, `size()`: 1 plus their operands;
//! - `==` on strings: ceil(0.1 · the smaller maximum size), on numbers 1;
//! - `l.all(x, p)`: C(l) + 1 + N·(3 + C(p)); `exists`: C(l) + 1 + N·(4 + C(p)); `exists_one`:
//!   C(l) + 2 + N·(2 + C(p)); `map`: C(l) + 11 + N·(12 + C(f)); `sum()`: N plus the list's;
//! - `s.matches(re)`: ceil(0.1 · size(s)) · ceil(0.25 · size(re));
//! - sizes: a string's maximum is `maxLength`·4 bytes, an enum's its longest value, else the 3 MiB
//!   request limit; a list's is `maxItems`, else the request limit over its items' smallest
//!   serialised size; `metadata.name` is unbounded there;
//! - a rule on a list item counts once per item the enclosing lists can hold.
//!
//! The estimator is checked against the figure an independent run of the real estimator gave
//! for the old bounds (34,703,365 for the `faults[].regions` rule).

use serde_json::Value;

const RULE_LIMIT: u64 = 10_000_000;
const CRD_LIMIT: u64 = 100_000_000;
const PER_CALL_LIMIT: u64 = 1_000_000;
/// Each rule's static estimate stays under a quarter of the limit (the dearest is the name
/// pattern, ~2.2M, as `metadata.name` is unbounded to the estimator; the list rules are ~1.1M),
/// and a maximal spec's runtime cost under half the per-call limit: room for a new field or rule
/// without a surprise refusal.
const STATIC_MARGIN: u64 = 4;
const RUNTIME_MARGIN: u64 = 2;
const MAX_REQUEST: u64 = 3 * 1024 * 1024;

// ---------------------------------------------------------------- parser (the subset used)

#[derive(Clone, Debug, PartialEq)]
enum Expr {
    Ident(String),
    Int(i64),
    Str(String),
    Select(Box<Expr>, String),
    Has(Box<Expr>),
    Not(Box<Expr>),
    Bin(&'static str, Box<Expr>, Box<Expr>),
    /// `target.method(args)`; macros keep their variable as the first argument.
    Call(Box<Expr>, String, Vec<Expr>),
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn parse(src: &str) -> Expr {
        let mut p = Parser {
            s: src.as_bytes(),
            i: 0,
        };
        let e = p.or();
        p.ws();
        assert_eq!(p.i, p.s.len(), "unparsed tail in {src:?}");
        e
    }
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, t: &str) -> bool {
        self.ws();
        if self.s[self.i..].starts_with(t.as_bytes()) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    fn or(&mut self) -> Expr {
        let mut l = self.and();
        while self.eat("||") {
            l = Expr::Bin("||", Box::new(l), Box::new(self.and()));
        }
        l
    }
    fn and(&mut self) -> Expr {
        let mut l = self.rel();
        while self.eat("&&") {
            l = Expr::Bin("&&", Box::new(l), Box::new(self.rel()));
        }
        l
    }
    fn rel(&mut self) -> Expr {
        let l = self.unary();
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat(op) {
                return Expr::Bin(op, Box::new(l), Box::new(self.unary()));
            }
        }
        l
    }
    fn unary(&mut self) -> Expr {
        if self.eat("!") {
            return Expr::Not(Box::new(self.unary()));
        }
        let mut e = self.primary();
        while self.eat(".") {
            let name = self.ident();
            if self.eat("(") {
                let args = self.args();
                e = Expr::Call(Box::new(e), name, args);
            } else {
                e = Expr::Select(Box::new(e), name);
            }
        }
        e
    }
    fn args(&mut self) -> Vec<Expr> {
        let mut v = vec![];
        if self.eat(")") {
            return v;
        }
        loop {
            v.push(self.or());
            if self.eat(")") {
                return v;
            }
            assert!(self.eat(","), "expected ',' at {}", self.i);
        }
    }
    fn ident(&mut self) -> String {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
        {
            self.i += 1;
        }
        assert!(self.i > start, "expected an identifier at {start}");
        String::from_utf8(self.s[start..self.i].to_vec()).unwrap()
    }
    fn primary(&mut self) -> Expr {
        if self.eat("(") {
            let e = self.or();
            assert!(self.eat(")"));
            return e;
        }
        self.ws();
        let c = self.s[self.i];
        if c == b'\'' || c == b'"' {
            let start = self.i + 1;
            let end = start + self.s[start..].iter().position(|&b| b == c).unwrap();
            self.i = end + 1;
            return Expr::Str(String::from_utf8(self.s[start..end].to_vec()).unwrap());
        }
        if c.is_ascii_digit() {
            let start = self.i;
            while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                self.i += 1;
            }
            let t = std::str::from_utf8(&self.s[start..self.i]).unwrap();
            return Expr::Int(t.parse().unwrap());
        }
        let name = self.ident();
        if name == "has" {
            assert!(self.eat("("));
            let e = self.or();
            assert!(self.eat(")"));
            return Expr::Has(Box::new(e));
        }
        Expr::Ident(name)
    }
}

// ---------------------------------------------------------------- static estimate

/// What an expression evaluates to, as far as costs go.
#[derive(Clone, Debug)]
enum Ty<'a> {
    Node(&'a Value),
    /// A list the rule built (`map`), of this many items at most.
    List(u64),
    Scalar,
}

fn ceil(x: f64) -> u64 {
    x.ceil() as u64
}

/// The smallest serialised size of a value of this schema (apiextensions' estimate).
fn min_size(s: &Value) -> u64 {
    match s["type"].as_str() {
        Some("string") => 2,
        Some("boolean") => 4,
        Some("integer") | Some("number") => 1,
        Some("array") => 2,
        Some("object") => {
            let required: Vec<&str> = s["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            2 + required
                .iter()
                .filter(|f| s["properties"][**f]["default"].is_null())
                .map(|f| f.len() as u64 + min_size(&s["properties"][*f]) + 4)
                .sum::<u64>()
        }
        _ => 1,
    }
}

/// Largest size: bytes for strings, items for lists and maps.
fn max_size(s: &Value) -> u64 {
    match s["type"].as_str() {
        Some("string") => {
            if let Some(n) = s["maxLength"].as_u64() {
                n * 4
            } else if let Some(e) = s["enum"].as_array() {
                e.iter()
                    .filter_map(Value::as_str)
                    .map(|v| v.len() as u64)
                    .max()
                    .unwrap_or(0)
            } else {
                MAX_REQUEST - 2
            }
        }
        Some("array") => s["maxItems"]
            .as_u64()
            .unwrap_or_else(|| (MAX_REQUEST - 2) / (min_size(&s["items"]) + 1)),
        Some("object") => s["maxProperties"]
            .as_u64()
            .unwrap_or_else(|| (MAX_REQUEST - 2) / (min_size(&s["additionalProperties"]) + 6)),
        _ => 1,
    }
}

fn ty_size(t: &Ty) -> u64 {
    match t {
        Ty::Node(s) => max_size(s),
        Ty::List(n) => *n,
        Ty::Scalar => 1,
    }
}

struct Estimator<'a> {
    vars: Vec<(String, Ty<'a>)>,
}

impl<'a> Estimator<'a> {
    fn var(&self, name: &str) -> Ty<'a> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("unknown variable {name}"))
    }

    /// (cost, type) of `e`.
    fn cost(&mut self, e: &Expr) -> (u64, Ty<'a>) {
        match e {
            Expr::Ident(n) => (1, self.var(n)),
            Expr::Int(_) => (0, Ty::Scalar),
            Expr::Str(_) => (0, Ty::Scalar),
            Expr::Select(x, f) => {
                let (c, t) = self.cost(x);
                let Ty::Node(s) = t else {
                    panic!("select .{f} on a non-object")
                };
                let field = &s["properties"][f.as_str()];
                assert!(!field.is_null(), "no field {f} in the schema");
                (c + 1, Ty::Node(field))
            }
            Expr::Has(x) => {
                let Expr::Select(inner, _) = &**x else {
                    panic!("has() takes a select")
                };
                (self.cost(inner).0, Ty::Scalar)
            }
            Expr::Not(x) => (1 + self.cost(x).0, Ty::Scalar),
            Expr::Bin(op, l, r) => {
                let (cl, tl) = self.cost(l);
                let (cr, tr) = self.cost(r);
                let own = match *op {
                    "&&" | "||" => 0,
                    "==" | "!=" => {
                        let string = |t: &Ty| matches!(t, Ty::Node(s) if s["type"] == "string");
                        if string(&tl) || string(&tr) {
                            let size = |t: &Ty| match t {
                                Ty::Node(s) => max_size(s),
                                _ => 1,
                            };
                            ceil(0.1 * size(&tl).min(size(&tr)) as f64)
                        } else {
                            1
                        }
                    }
                    _ => 1,
                };
                (cl + cr + own, Ty::Scalar)
            }
            Expr::Call(target, m, args) => {
                let (ct, tt) = self.cost(target);
                match m.as_str() {
                    "size" => (ct + 1, Ty::Scalar),
                    "sum" => (ct + ty_size(&tt), Ty::Scalar),
                    "matches" => {
                        let Expr::Str(re) = &args[0] else {
                            panic!("matches takes a literal")
                        };
                        let s = ceil(0.1 * ty_size(&tt) as f64);
                        (ct + s * ceil(0.25 * re.len() as f64), Ty::Scalar)
                    }
                    "all" | "exists" | "exists_one" | "map" => {
                        let Expr::Ident(v) = &args[0] else {
                            panic!("a macro binds an identifier")
                        };
                        let Ty::Node(list) = tt else {
                            panic!("{m} over a non-list")
                        };
                        let n = max_size(list);
                        self.vars.push((v.clone(), Ty::Node(&list["items"])));
                        let body = self.cost(&args[1]).0;
                        self.vars.pop();
                        let (fixed, per) = match m.as_str() {
                            "all" => (1, 3),
                            "exists" => (1, 4),
                            "exists_one" => (2, 2),
                            _ => (11, 12),
                        };
                        let ty = if m == "map" { Ty::List(n) } else { Ty::Scalar };
                        (ct + fixed + n * (per + body), ty)
                    }
                    other => panic!("no cost model for .{other}()"),
                }
            }
        }
    }
}

/// A rule, where it sits, and how many times an object can hold that place.
struct Rule<'a> {
    path: String,
    rule: String,
    node: &'a Value,
    cardinality: u64,
}

fn rules<'a>(s: &'a Value, path: String, cardinality: u64, out: &mut Vec<Rule<'a>>) {
    for r in s["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
    {
        out.push(Rule {
            path: path.clone(),
            rule: r["rule"].as_str().unwrap().to_owned(),
            node: s,
            cardinality,
        });
    }
    if let Some(props) = s["properties"].as_object() {
        for (k, v) in props {
            rules(v, format!("{path}.{k}"), cardinality, out);
        }
    }
    if s["items"].is_object() {
        let n = max_size(s);
        rules(&s["items"], format!("{path}[]"), cardinality * n, out);
    }
    if s["additionalProperties"].is_object() {
        let n = max_size(s);
        rules(
            &s["additionalProperties"],
            format!("{path}{{}}"),
            cardinality * n,
            out,
        );
    }
}

fn schema_of(crd: &Value) -> Value {
    let mut s = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    // What the apiserver gives rules on the root: metadata.name and generateName, unbounded.
    s["properties"]["metadata"] = serde_json::json!({
        "type": "object",
        "properties": {"name": {"type": "string"}, "generateName": {"type": "string"}}
    });
    s
}

/// Static estimates of every rule: (path, rule, cost × cardinality).
fn estimates(crd: &Value) -> Vec<(String, String, u64)> {
    let root = schema_of(crd);
    let mut all = vec![];
    rules(&root, "".into(), 1, &mut all);
    all.into_iter()
        .map(|r| {
            let mut e = Estimator {
                vars: vec![("self".into(), Ty::Node(r.node))],
            };
            let c = e.cost(&Parser::parse(&r.rule)).0;
            (r.path, r.rule, c * r.cardinality)
        })
        .collect()
}

fn crd_json() -> Value {
    serde_json::to_value(syncnet_crds::crd()).unwrap()
}

/// The CRD as it was when the apiserver refused it: 256 faults of 64 regions each, 64 regions,
/// names up to 63 characters.
fn old_crd() -> Value {
    let mut crd = crd_json();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    spec["faults"]["maxItems"] = 256.into();
    spec["faults"]["items"]["properties"]["regions"]["maxItems"] = 64.into();
    spec["faults"]["items"]["properties"]["regions"]["items"]["maxLength"] = 63.into();
    spec["faults"]["items"]["properties"]["target"]["properties"]["region"]["maxLength"] =
        63.into();
    spec["regions"]["maxItems"] = 64.into();
    spec["regions"]["items"]["properties"]["name"]["maxLength"] = 63.into();
    spec["producer"]["properties"]["region"]["maxLength"] = 63.into();
    crd
}

#[test]
fn the_estimator_reproduces_the_apiservers_figure_for_the_refused_crd() {
    let est = estimates(&old_crd());
    let regions_rule = est
        .iter()
        .find(|(_, r, _)| r.contains("f.regions.all(x"))
        .expect("the faults[].regions rule");
    // What Kubernetes 1.32's estimator reported for this rule ("exceeds budget by factor of 3.5x").
    assert_eq!(regions_rule.2, 34_703_365, "{est:#?}");
    // The uniqueness rule, checked by hand: 3 + 64·(7 + 64·(6 + 26)).
    let unique = est
        .iter()
        .find(|(_, r, _)| r.contains("exists_one"))
        .unwrap();
    assert_eq!(unique.2, 3 + 64 * (7 + 64 * (6 + 26)));
    // A rule on each fault counts once per fault the list can hold.
    let per_fault = est
        .iter()
        .find(|(_, r, _)| r == "has(self.atSecs) != has(self.everySecs)")
        .unwrap();
    assert_eq!(per_fault.2, 3 * 256);
}

#[test]
fn every_rule_is_well_under_the_apiservers_static_limits() {
    let est = estimates(&crd_json());
    assert!(est.len() >= 10, "{est:#?}");
    for (path, rule, cost) in &est {
        eprintln!("{cost:>10}  {path}: {rule}");
        assert!(
            cost * STATIC_MARGIN <= RULE_LIMIT,
            "{path}: `{rule}` costs {cost}, over a {STATIC_MARGIN}th of {RULE_LIMIT}"
        );
    }
    let total: u64 = est.iter().map(|e| e.2).sum();
    assert!(
        total * STATIC_MARGIN <= CRD_LIMIT,
        "all rules: {total}, over a {STATIC_MARGIN}th of {CRD_LIMIT}"
    );
}

// ---------------------------------------------------------------- runtime cost

/// Evaluates a rule on a JSON object and counts the cost as cel-go's runtime tracker does:
/// 1 per variable, field and call; a string comparison ceil(0.1 · the shorter length); per loop
/// iteration the condition and step (all 2, exists 3, exists_one 0, map: list append 1); `&&`,
/// `||` and loops stop as soon as the result is known.
struct Runtime<'a> {
    vars: Vec<(String, &'a Value)>,
    cost: u64,
}

#[derive(Clone, Debug, PartialEq)]
enum Val<'a> {
    V(&'a Value),
    Bool(bool),
    Int(i64),
    Str(String),
    Ints(Vec<i64>),
    Missing,
}

impl<'a> Runtime<'a> {
    fn eval(&mut self, e: &Expr) -> Val<'a> {
        match e {
            Expr::Ident(n) => {
                self.cost += 1;
                let v = self.vars.iter().rev().find(|(k, _)| k == n).unwrap().1;
                Val::V(v)
            }
            Expr::Int(i) => Val::Int(*i),
            Expr::Str(s) => Val::Str(s.clone()),
            Expr::Select(x, f) => {
                let v = self.eval(x);
                self.cost += 1;
                match v {
                    Val::V(o) if !o[f.as_str()].is_null() => Val::V(&o[f.as_str()]),
                    _ => Val::Missing,
                }
            }
            Expr::Has(x) => {
                let Expr::Select(inner, f) = &**x else {
                    unreachable!()
                };
                let v = self.eval(inner);
                Val::Bool(matches!(v, Val::V(o) if !o[f.as_str()].is_null()))
            }
            Expr::Not(x) => {
                self.cost += 1;
                Val::Bool(!self.truth(x))
            }
            Expr::Bin(op, l, r) => match *op {
                "&&" => Val::Bool(self.truth(l) && self.truth(r)),
                "||" => Val::Bool(self.truth(l) || self.truth(r)),
                _ => {
                    let (a, b) = (self.eval(l), self.eval(r));
                    self.cost += 1;
                    let (a, b) = (scalar(&a), scalar(&b));
                    if let (Val::Str(x), Val::Str(y)) = (&a, &b) {
                        let n = x.chars().count().min(y.chars().count());
                        self.cost += ceil(0.1 * n as f64).saturating_sub(1);
                    }
                    Val::Bool(match *op {
                        "==" => a == b,
                        "!=" => a != b,
                        "<" => int(&a) < int(&b),
                        "<=" => int(&a) <= int(&b),
                        ">" => int(&a) > int(&b),
                        _ => int(&a) >= int(&b),
                    })
                }
            },
            Expr::Call(target, m, args) => {
                let t = self.eval(target);
                match m.as_str() {
                    "size" => {
                        self.cost += 1;
                        match t {
                            Val::V(Value::String(s)) => Val::Int(s.chars().count() as i64),
                            Val::V(Value::Array(a)) => Val::Int(a.len() as i64),
                            other => panic!("size of {other:?}"),
                        }
                    }
                    "sum" => {
                        let Val::Ints(v) = t else {
                            panic!("sum of {t:?}")
                        };
                        self.cost += 1 + v.len() as u64;
                        Val::Int(v.iter().sum())
                    }
                    "matches" => {
                        let (Val::V(Value::String(s)), Expr::Str(re)) = (&t, &args[0]) else {
                            panic!("matches on {t:?}")
                        };
                        self.cost += ceil(0.1 * s.len() as f64) * ceil(0.25 * re.len() as f64);
                        // The only pattern in the CRD: a DNS-1035 label.
                        assert_eq!(re, "^[a-z]([-a-z0-9]*[a-z0-9])?$");
                        let b = s.as_bytes();
                        Val::Bool(
                            b.first().is_some_and(u8::is_ascii_lowercase)
                                && b.last().is_some_and(|c| *c != b'-')
                                && b.iter().all(|c| {
                                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-'
                                }),
                        )
                    }
                    "all" | "exists" | "exists_one" | "map" => {
                        let Expr::Ident(var) = &args[0] else {
                            unreachable!()
                        };
                        let Val::V(Value::Array(items)) = t else {
                            panic!("{m} over {t:?}")
                        };
                        let (per, fixed) = match m.as_str() {
                            "all" => (2, 1),
                            "exists" => (3, 1),
                            "exists_one" => (0, 2),
                            _ => (1, 11),
                        };
                        self.cost += fixed;
                        let (mut hits, mut ints) = (0, vec![]);
                        let mut result = m == "all";
                        for it in items {
                            self.cost += per;
                            self.vars.push((var.clone(), it));
                            match m.as_str() {
                                "map" => ints.push(int(&scalar(&self.eval(&args[1])))),
                                _ => {
                                    let p = self.truth(&args[1]);
                                    hits += usize::from(p);
                                    match m.as_str() {
                                        "all" if !p => result = false,
                                        "exists" if p => result = true,
                                        _ => {}
                                    }
                                }
                            }
                            self.vars.pop();
                            let done = match m.as_str() {
                                "all" => !result,
                                "exists" => result,
                                _ => false,
                            };
                            if done {
                                break;
                            }
                        }
                        match m.as_str() {
                            "map" => Val::Ints(ints),
                            "exists_one" => Val::Bool(hits == 1),
                            _ => Val::Bool(result),
                        }
                    }
                    other => panic!("no runtime model for .{other}()"),
                }
            }
        }
    }

    fn truth(&mut self, e: &Expr) -> bool {
        match self.eval(e) {
            Val::Bool(b) => b,
            other => panic!("not a bool: {other:?}"),
        }
    }
}

fn scalar<'a>(v: &Val<'a>) -> Val<'a> {
    match v {
        Val::V(Value::String(s)) => Val::Str(s.clone()),
        Val::V(Value::Number(n)) => Val::Int(n.as_i64().unwrap()),
        other => other.clone(),
    }
}

fn int(v: &Val) -> i64 {
    match v {
        Val::Int(i) => *i,
        other => panic!("not an int: {other:?}"),
    }
}

/// The most expensive object the schema admits: every list at its maximum, every name at its
/// longest, and every region reference naming the last region, so every `exists` scans them all.
fn maximal_spec() -> Value {
    use syncnet_crds::{MAX_FAULT_REGIONS, MAX_FAULTS, MAX_NAME, MAX_REGION_NAME, MAX_REGIONS};
    let name = |i: usize| {
        let s = format!("r{i}");
        format!("{s}{}", "x".repeat(MAX_REGION_NAME - s.len()))
    };
    let regions: Vec<Value> = (0..MAX_REGIONS)
        .map(|i| serde_json::json!({"name": name(i), "replicas": 5000 / MAX_REGIONS}))
        .collect();
    let last = name(MAX_REGIONS - 1);
    let faults: Vec<Value> = (0..MAX_FAULTS)
        .map(|i| {
            serde_json::json!({
                "name": format!("f{i}"), "everySecs": 600, "durationSecs": 60,
                "target": {"region": last}, "action": "partition",
                "regions": vec![last.clone(); MAX_FAULT_REGIONS],
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "syncnet.dev/v1alpha1", "kind": "SyncNetwork",
        "metadata": {"name": format!("n{}", "x".repeat(MAX_NAME - 1))},
        "spec": {
            "regions": regions,
            "producer": {"region": last, "blockIntervalMs": 1000, "payloadBytes": 1024},
            "sync": {"streamsLow": 2, "streamsHigh": 4},
            "faults": faults,
            "soak": {"durationSecs": 3600, "warmupSecs": 600},
        }
    })
}

/// Runs every rule where it sits in `obj`: (path, rule, cost of each evaluation, total).
fn runtime_costs(crd: &Value, obj: &Value) -> Vec<(String, String, u64, u64)> {
    let root = schema_of(crd);
    let mut all = vec![];
    rules(&root, "".into(), 1, &mut all);
    let mut out = vec![];
    for r in all {
        // The values the rule's node holds in the object (one per list item).
        let mut nodes = vec![obj];
        for part in r
            .path
            .trim_start_matches('.')
            .split('.')
            .filter(|p| !p.is_empty())
        {
            let (field, each) = match part.strip_suffix("[]") {
                Some(f) => (f, true),
                None => (part, false),
            };
            nodes = nodes
                .into_iter()
                .filter_map(|n| n.get(field))
                .flat_map(|n| {
                    if each {
                        n.as_array().map(|a| a.iter().collect()).unwrap_or_default()
                    } else {
                        vec![n]
                    }
                })
                .collect();
        }
        let expr = Parser::parse(&r.rule);
        let (mut worst, mut total) = (0, 0);
        for n in nodes {
            let mut rt = Runtime {
                vars: vec![("self".into(), n)],
                cost: 0,
            };
            assert!(
                rt.truth(&expr),
                "{}: `{}` refuses the maximal spec",
                r.path,
                r.rule
            );
            worst = worst.max(rt.cost);
            total += rt.cost;
        }
        out.push((r.path, r.rule, worst, total));
    }
    out
}

#[test]
fn a_maximal_spec_is_valid_and_each_rule_stays_under_the_per_call_limit() {
    let spec = maximal_spec();
    let text = serde_yaml::to_string(&spec).unwrap();
    syncnet_crds::SyncNetwork::from_yaml(&text).expect("the maximal spec is valid");
    let costs = runtime_costs(&crd_json(), &spec);
    for (path, rule, worst, total) in &costs {
        eprintln!("{worst:>8} {total:>8}  {path}: {rule}");
        assert!(
            worst * RUNTIME_MARGIN <= PER_CALL_LIMIT,
            "{path}: `{rule}` costs {worst} at runtime, over 1/{RUNTIME_MARGIN} of {PER_CALL_LIMIT}"
        );
    }
    // The whole object within the apiserver's runtime budget per object.
    let total: u64 = costs.iter().map(|c| c.3).sum();
    assert!(total * RUNTIME_MARGIN <= 10_000_000, "total {total}");
    // The costly rule is the one the bounds were chosen for, and it is far from free.
    let worst = costs.iter().max_by_key(|c| c.2).unwrap();
    assert!(worst.1.contains("f.regions.all(x"), "{worst:?}");
    assert!(worst.2 > 100_000, "{worst:?}");
}

#[test]
fn the_refused_crd_would_also_have_failed_at_runtime() {
    // The same maximal shape under the old bounds: the per-call limit was exceeded too.
    let mut spec = maximal_spec();
    let last = spec["spec"]["regions"][31]["name"].clone();
    let faults = spec["spec"]["faults"].as_array_mut().unwrap();
    let one = faults[0].clone();
    faults.resize(256, one);
    for f in faults.iter_mut() {
        f["regions"] = Value::Array(vec![last.clone(); 64]);
    }
    let regions = spec["spec"]["regions"].as_array_mut().unwrap();
    let extra: Vec<Value> = (32..64)
        .map(|i| serde_json::json!({"name": format!("s{i}"), "replicas": 1}))
        .collect();
    regions.splice(0..0, extra);
    for r in regions.iter_mut() {
        r["replicas"] = 1.into();
    }
    let costs = runtime_costs(&old_crd(), &spec);
    let worst = costs.iter().map(|c| c.2).max().unwrap();
    assert!(worst > PER_CALL_LIMIT, "{costs:#?}");
}
