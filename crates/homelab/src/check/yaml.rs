//! YAML documents as trees that remember where each node was written, for findings with a line.
//! Built from saphyr's event parser (not a serde mapping) so that duplicate keys, anchors and
//! the original positions survive. Plain scalars resolve as in YAML 1.2's core schema.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    /// 1-based line and 0-based column (characters) where the node starts. u32: a manifest
    /// tree holds millions of nodes, and no file the check accepts has 4 billion lines.
    pub line: u32,
    pub col: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Keys keep their own position; order is the file's.
    Map(Vec<(Node, Node)>),
}

/// A key written twice in one mapping (the second silently wins in most tools).
#[derive(Debug, Clone, PartialEq)]
pub struct DuplicateKey {
    pub key: String,
    pub line: u32,
    pub col: u32,
    pub first_line: u32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyntaxError {
    pub line: usize,
    pub col: usize,
    pub message: String,
}

#[derive(Debug, Default)]
pub struct Parsed {
    pub documents: Vec<Node>,
    pub duplicates: Vec<DuplicateKey>,
}

enum Frame {
    Seq(Vec<Node>, Span, usize),
    Map(MapBuilder, Option<Node>, Span, usize),
}

/// A mapping being read: its entries in file order, and each key's place among them, so that a
/// duplicate is found in constant time (a mapping with a million keys stays linear).
#[derive(Default)]
struct MapBuilder {
    /// `None` where a later duplicate replaced the entry.
    entries: Vec<Option<(Node, Node)>>,
    index: HashMap<String, usize>,
}

impl MapBuilder {
    /// Adds an entry; a key already present is a duplicate: returned with the first one's
    /// line, and the later value wins, as in Kubernetes' own decoder.
    fn insert(&mut self, key: Node, value: Node) -> Option<DuplicateKey> {
        let name = key.scalar_text();
        let duplicate = match self.index.get(&name) {
            Some(&at) => {
                let first = self.entries[at].take().map(|(k, _)| k.line);
                Some(DuplicateKey {
                    key: name.clone(),
                    line: key.line,
                    col: key.col,
                    first_line: first.unwrap_or(key.line),
                })
            }
            None => None,
        };
        self.index.insert(name, self.entries.len());
        self.entries.push(Some((key, value)));
        duplicate
    }

    fn finish(self) -> Vec<(Node, Node)> {
        self.entries.into_iter().flatten().collect()
    }
}

/// Deeper than any manifest; keeps the recursive walks over the tree (and its drop) off the
/// end of the stack.
const MAX_DEPTH: usize = 200;
/// Nodes that aliases may copy in one file: stops an alias bomb ("billion laughs").
const MAX_ALIASED_NODES: usize = 100_000;

pub fn parse(text: &str) -> Result<Parsed, SyntaxError> {
    let mut parsed = Parsed::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Node, usize)> = HashMap::new();
    let mut aliased = 0;
    let refuse = |span: &Span, message: &str| SyntaxError {
        line: span.start.line(),
        col: span.start.col(),
        message: message.to_owned(),
    };
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| SyntaxError {
            line: e.marker().line(),
            col: e.marker().col(),
            message: e.info().to_owned(),
        })?;
        let done = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let verbatim =
                    style != ScalarStyle::Plain || tag.as_ref().is_some_and(|t| t.suffix == "str");
                let node = at(&span, resolve(&text, verbatim));
                remember(&mut anchors, anchor, &node);
                node
            }
            Event::Alias(id) => {
                let (node, size) = anchors
                    .get(&id)
                    .ok_or_else(|| refuse(&span, "alias to an unknown anchor"))?;
                aliased += size;
                if aliased > MAX_ALIASED_NODES {
                    return Err(refuse(&span, "aliases expand to too many nodes"));
                }
                node.clone()
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _)
                if stack.len() >= MAX_DEPTH =>
            {
                let _ = anchor;
                return Err(refuse(&span, "nested too deep"));
            }
            Event::SequenceStart(anchor, _) => {
                stack.push(Frame::Seq(Vec::new(), span, anchor));
                continue;
            }
            Event::MappingStart(anchor, _) => {
                stack.push(Frame::Map(MapBuilder::default(), None, span, anchor));
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (node, anchor) = match stack.pop() {
                    Some(Frame::Seq(items, start, anchor)) => {
                        (at(&start, Value::Seq(items)), anchor)
                    }
                    Some(Frame::Map(entries, _, start, anchor)) => {
                        (at(&start, Value::Map(merge_keys(entries.finish()))), anchor)
                    }
                    None => continue,
                };
                remember(&mut anchors, anchor, &node);
                node
            }
            Event::DocumentEnd => {
                anchors.clear();
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart(_) => {
                continue;
            }
        };
        match stack.last_mut() {
            None => parsed.documents.push(done),
            Some(Frame::Seq(items, ..)) => items.push(done),
            Some(Frame::Map(entries, pending, ..)) => match pending.take() {
                None => *pending = Some(done),
                Some(key) => {
                    if let Some(duplicate) = entries.insert(key, done) {
                        parsed.duplicates.push(duplicate);
                    }
                }
            },
        }
    }
    Ok(parsed)
}

/// YAML merge keys (`<<: *base`, `<<: [*a, *b]`), which kustomize expands: the mapping's own
/// keys win, then earlier sources over later ones.
fn merge_keys(entries: Vec<(Node, Node)>) -> Vec<(Node, Node)> {
    if !entries.iter().any(|(k, _)| k.str() == Some("<<")) {
        return entries;
    }
    let (sources, mut merged): (Vec<_>, Vec<_>) = entries
        .into_iter()
        .partition(|(k, _)| k.str() == Some("<<"));
    for (_, source) in sources {
        let maps: Vec<Node> = match source.value {
            Value::Map(_) => vec![source],
            Value::Seq(items) => items,
            _ => Vec::new(),
        };
        let mut present: std::collections::HashSet<String> =
            merged.iter().map(|(k, _)| k.scalar_text()).collect();
        for map in maps {
            for (key, value) in map.entries() {
                if present.insert(key.scalar_text()) {
                    merged.push((key.clone(), value.clone()));
                }
            }
        }
    }
    merged
}

fn remember(anchors: &mut HashMap<usize, (Node, usize)>, anchor: usize, node: &Node) {
    if anchor != 0 {
        anchors.insert(anchor, (node.clone(), node.size()));
    }
}

fn at(span: &Span, value: Value) -> Node {
    let narrow = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Node {
        value,
        line: narrow(span.start.line()),
        col: narrow(span.start.col()),
    }
}

/// YAML 1.2 core schema for plain scalars.
fn resolve(text: &str, verbatim: bool) -> Value {
    if verbatim {
        return Value::Str(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    if let Some(n) = integer(text) {
        return Value::Int(n);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if looks_like_float(unsigned)
        && let Ok(f) = text.parse::<f64>()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// An integer as kustomize's YAML library reads one (what Flux applies): underscores dropped,
/// `0x`, `0o`, `0b` prefixes, and a leading zero meaning octal (`0755` is 493).
fn integer(text: &str) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if digits.is_empty() || digits.starts_with('_') {
        return None;
    }
    let digits = digits.replace('_', "");
    let (radix, body) = if let Some(hex) = digits.strip_prefix("0x") {
        (16, hex.to_owned())
    } else if let Some(octal) = digits.strip_prefix("0o") {
        (8, octal.to_owned())
    } else if let Some(binary) = digits.strip_prefix("0b") {
        (2, binary.to_owned())
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, digits[1..].to_owned())
    } else {
        (10, digits)
    };
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let n = i64::from_str_radix(&body, radix).ok()?;
    Some(if negative { -n } else { n })
}

fn looks_like_float(text: &str) -> bool {
    let mut digits = false;
    let mut rest = text.trim_start_matches(|c: char| {
        digits |= c.is_ascii_digit();
        c.is_ascii_digit()
    });
    if let Some(fraction) = rest.strip_prefix('.') {
        rest = fraction.trim_start_matches(|c: char| {
            digits |= c.is_ascii_digit();
            c.is_ascii_digit()
        });
    }
    if !digits {
        return false;
    }
    match rest.strip_prefix(['e', 'E']) {
        None => rest.is_empty(),
        Some(exponent) => {
            let exponent = exponent.strip_prefix(['-', '+']).unwrap_or(exponent);
            !exponent.is_empty() && exponent.bytes().all(|b| b.is_ascii_digit())
        }
    }
}

impl Node {
    /// How many nodes this one is, counting itself and everything below.
    fn size(&self) -> usize {
        1 + match &self.value {
            Value::Seq(items) => items.iter().map(Node::size).sum(),
            Value::Map(entries) => entries.iter().map(|(k, v)| k.size() + v.size()).sum(),
            _ => 0,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.value {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// Follows a path of mapping keys.
    pub fn path(&self, keys: &[&str]) -> Option<&Node> {
        keys.iter().try_fold(self, |node, key| node.get(key))
    }

    pub fn str(&self) -> Option<&str> {
        match &self.value {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn items(&self) -> &[Node] {
        match &self.value {
            Value::Seq(items) => items,
            _ => &[],
        }
    }

    pub fn entries(&self) -> &[(Node, Node)] {
        match &self.value {
            Value::Map(entries) => entries,
            _ => &[],
        }
    }

    /// Where the key `key` of this mapping was written (for findings about a whole entry).
    pub fn key_node(&self, key: &str) -> Option<&Node> {
        self.entries()
            .iter()
            .find(|(k, _)| k.str() == Some(key))
            .map(|(k, _)| k)
    }

    /// The scalar as text: a string as is, numbers and booleans as written in JSON.
    pub fn scalar_text(&self) -> String {
        match &self.value {
            Value::Str(s) => s.clone(),
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(n) => n.to_string(),
            Value::Float(f) => f.to_string(),
            Value::Seq(_) | Value::Map(_) => String::new(),
        }
    }

    /// The node as a JSON value (a key written twice keeps its last value, as JSON parsers do).
    pub fn to_json(&self) -> serde_json::Value {
        match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(n) => serde_json::Value::from(*n),
            Value::Float(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect(),
            Value::Map(entries) => serde_json::Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.scalar_text(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The node a JSON pointer (as a schema validator reports it) leads to, or the nearest
    /// ancestor that exists. A mapping entry whose value starts on a later line (a block) is
    /// shown at its key: that is the line a person reads as "the field".
    pub fn at_pointer(&self, pointer: &str) -> &Node {
        let parts: Vec<String> = pointer
            .split('/')
            .skip(1)
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect();
        let mut node = self;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            match &node.value {
                Value::Map(entries) => {
                    let Some((key, value)) = entries.iter().find(|(k, _)| k.str() == Some(part))
                    else {
                        break;
                    };
                    node = if last && value.line != key.line {
                        key
                    } else {
                        value
                    };
                }
                Value::Seq(items) => match part.parse::<usize>().ok().and_then(|i| items.get(i)) {
                    Some(item) => node = item,
                    None => break,
                },
                _ => break,
            }
        }
        node
    }
}

/// The node written as JSON straight from the tree, without building a `serde_json::Value`
/// first (for measuring an object's size as the API server receives it).
impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match &self.value {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(n) => serializer.serialize_i64(*n),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::Str(s) => serializer.serialize_str(s),
            Value::Seq(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (key, value) in entries {
                    map.serialize_entry(&key.scalar_text(), value)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_as_json_it_is_its_json_value() {
        let text = "a: 1\nb: [\"x\\n\\u0001\", 2.5, true, ~]\nc: {d: -3, 'e f': 1e300}\n";
        let node = &parse(text).unwrap().documents[0];
        let direct = serde_json::to_string(node).unwrap();
        assert_eq!(direct, serde_json::to_string(&node.to_json()).unwrap());
    }

    #[test]
    fn positions_types_and_duplicates() {
        let parsed =
            parse("---\na: 1\nb:\n  - \"2\"\n  - 2.5\n  - yes\na: x\n---\nc: ~\n").unwrap();
        assert_eq!(parsed.documents.len(), 2);
        let first = &parsed.documents[0];
        assert_eq!(first.get("a").unwrap().str(), Some("x"));
        let b = first.get("b").unwrap();
        assert_eq!(b.items()[0].value, Value::Str("2".into()));
        assert_eq!(b.items()[1].value, Value::Float(2.5));
        assert_eq!(b.items()[2].value, Value::Str("yes".into()));
        assert_eq!(b.items()[1].line, 5);
        assert_eq!(parsed.duplicates[0].key, "a");
        assert_eq!(parsed.duplicates[0].line, 7);
        assert_eq!(parsed.duplicates[0].first_line, 2);
        assert_eq!(parsed.documents[1].get("c").unwrap().value, Value::Null);
    }

    #[test]
    fn merge_keys_expand() {
        let text = "base: &b {x: 1, y: 2}\nother: &o {z: 3}\nuse:\n  <<: [*b, *o]\n  y: 5\n";
        let parsed = parse(text).unwrap();
        let used = parsed.documents[0].get("use").unwrap();
        assert_eq!(used.get("x").unwrap().value, Value::Int(1));
        assert_eq!(used.get("y").unwrap().value, Value::Int(5));
        assert_eq!(used.get("z").unwrap().value, Value::Int(3));
        assert!(used.get("<<").is_none());
    }

    #[test]
    fn anchors_and_syntax_errors() {
        let parsed = parse("base: &b {x: 1}\ncopy: *b\n").unwrap();
        assert_eq!(
            parsed.documents[0].path(&["copy", "x"]).unwrap().value,
            Value::Int(1)
        );
        let error = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(error.line >= 1, "{error:?}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused() {
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for level in 1..9 {
            let previous = format!("*a{}", level - 1);
            let items = [previous.as_str(); 10].join(", ");
            bomb.push_str(&format!("a{level}: &a{level} [{items}]\n"));
        }
        let error = parse(&bomb).unwrap_err();
        assert!(error.message.contains("too many nodes"), "{error:?}");
        // saphyr stops deep flow nesting itself; block nesting reaches our own limit.
        let flow = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse(&flow).is_err());
        let block: String = (0..250)
            .map(|i| format!("{}k:\n", "  ".repeat(i)))
            .collect();
        let error = parse(&block).unwrap_err();
        assert!(error.message.contains("nested too deep"), "{error:?}");
    }

    #[test]
    fn numbers_that_are_strings() {
        for text in ["1.2.3", "0x", "v1", "1e", "-", "10m", "0755x"] {
            assert!(matches!(resolve(text, false), Value::Str(_)), "{text}");
        }
        assert_eq!(resolve("0755", false), Value::Int(493));
        assert_eq!(resolve("1_000", false), Value::Int(1000));
        assert_eq!(resolve("0x1F", false), Value::Int(31));
        assert_eq!(resolve("0789", false), Value::Float(789.0));
        assert_eq!(resolve("-3", false), Value::Int(-3));
        assert_eq!(resolve("1e3", false), Value::Float(1000.0));
    }
}
