//! Real OPA as the differential tests' oracle (`tests/differential/oracle.py`, in a Python
//! process), the answers compared, Rego v0 converted for it, and the JSON edits both the
//! differential test and the generated programs use.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use serde_json::{Value, json};

use super::repo_path;

/// A whole-number setting from the environment, `default` without it.
pub fn setting(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?}: give a whole number")),
        Err(_) => default,
    }
}

// ---------------------------------------------------------------------------------------------
// The oracle: real OPA in a Python process

/// What an engine answered for one input: the violation set (each violation as canonical JSON),
/// or an error. Two errors are the same answer whatever they say (both fail closed).
#[derive(Debug, Clone)]
pub enum Answer {
    Violations(BTreeSet<String>),
    Error(String),
    /// OPA's answer under strict builtin errors was a builtin's error: what it would be in
    /// Gatekeeper's (non-strict) mode is not known, so the input is not compared.
    Unknown(String),
}

impl Answer {
    pub fn same(&self, other: &Answer) -> bool {
        match (self, other) {
            (Answer::Violations(a), Answer::Violations(b)) => a == b,
            (Answer::Error(_), Answer::Error(_)) => true,
            (Answer::Unknown(_), _) | (_, Answer::Unknown(_)) => true,
            _ => false,
        }
    }

    /// A violation document: a set (an array in JSON) of violations; undefined is none.
    pub fn of(value: Value) -> Self {
        match value {
            Value::Null => Answer::Violations(BTreeSet::new()),
            Value::Array(items) => Answer::Violations(items.iter().map(canonical).collect()),
            other => Answer::Error(format!("violation is not a set: {other}")),
        }
    }

    pub fn json(&self) -> Value {
        match self {
            Answer::Violations(v) => Value::Array(
                v.iter()
                    .map(|s| serde_json::from_str(s).unwrap_or(Value::Null))
                    .collect(),
            ),
            Answer::Error(e) => json!({ "error": e }),
            Answer::Unknown(e) => json!({ "unknown": e }),
        }
    }
}

/// JSON as the API server writes it (Go's encoding/json), where OPA keeps a number's text and
/// may print it back in messages. Go writes a float64 as a plain decimal when it is zero or
/// between 1e-6 and 1e21 (5, not serde_json's 5.0), and otherwise in exponent form with a sign
/// (1e-7, 1.5e+300).
pub fn api_server_json(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                if f == 0.0 || (1e-6..1e21).contains(&f.abs()) {
                    format!("{f}")
                } else {
                    let e = format!("{f:e}");
                    match e.split_once('e') {
                        Some((m, x)) if !x.starts_with('-') => format!("{m}e+{x}"),
                        _ => e,
                    }
                }
            }
            _ => n.to_string(),
        },
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(api_server_json).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("{}:{}", Value::from(k.as_str()), api_server_json(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => other.to_string(),
    }
}

/// JSON with sorted keys and numbers written one way: an integral value below 2^53 as an
/// integer, any other as Rust writes an f64 (OPA and regorus may hold 1 and 1.0 differently;
/// what a message shows is compared exactly anyway, since messages are strings).
fn canonical(v: &Value) -> String {
    fn normal(v: &Value) -> Value {
        match v {
            Value::Number(n) => {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() == 0.0 && f.abs() < 9_007_199_254_740_992.0 {
                    json!(f as i64)
                } else if n.is_f64() {
                    v.clone()
                } else {
                    json!(f)
                }
            }
            Value::Array(a) => Value::Array(a.iter().map(normal).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, v)| (k.clone(), normal(v))).collect())
            }
            _ => v.clone(),
        }
    }
    normal(v).to_string()
}

pub struct Oracle {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Oracle {
    /// Starts the oracle, installing OPA first if it is missing (as `.ci/run` does).
    pub fn start() -> Self {
        let importable = || {
            Command::new("python3")
                .args(["-c", "import opa_bindings"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !importable() {
            let installed = Command::new(repo_path("tests/differential/install-opa"))
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                installed && importable(),
                "OPA (PyPI's opa-golib-python-bindings) is not importable by python3 and could not be \
                 installed: run tests/differential/install-opa and read its error"
            );
        }
        let mut child = Command::new("python3")
            .arg(repo_path("tests/differential/oracle.py"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 tests/differential/oracle.py");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        Self {
            child,
            stdin,
            stdout,
        }
    }

    fn request(&mut self, request: &Value) -> Value {
        self.send(&request.to_string())
    }

    fn send(&mut self, request: &str) -> Value {
        writeln!(self.stdin, "{request}").expect("write to the oracle");
        self.stdin.flush().expect("write to the oracle");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("read the oracle");
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the oracle answered {line:?} ({e}); it may have crashed"))
    }

    /// A new OPA engine with these modules and this data document.
    pub fn load(&mut self, modules: &[(String, String)], data: &Value) -> Result<(), String> {
        let modules: serde_json::Map<String, Value> = modules
            .iter()
            .map(|(name, src)| (name.clone(), Value::String(src.clone())))
            .collect();
        let answer = self.request(&json!({"op": "load", "modules": modules, "data": data}));
        match answer["error"].as_str() {
            Some(e) => Err(e.to_owned()),
            None => Ok(()),
        }
    }

    /// `data.<path>` for each input.
    pub fn eval(&mut self, path: &str, inputs: &[Value]) -> Vec<Answer> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(200) {
            // Each input as the text the API server would send: the oracle hands it to OPA as
            // is, since a JSON parser in between would rewrite its numbers.
            let inputs: Vec<String> = chunk
                .iter()
                .map(|v| Value::from(api_server_json(v)).to_string())
                .collect();
            let request = format!(
                r#"{{"op": "eval", "path": {}, "inputs": [{}]}}"#,
                Value::from(path),
                inputs.join(",")
            );
            let answer = self.send(&request);
            let results = answer["results"]
                .as_array()
                .unwrap_or_else(|| panic!("the oracle answered {answer}"));
            out.extend(results.iter().map(|r| {
                if let Some(e) = r["error"].as_str() {
                    // The bindings run OPA with strict builtin errors, Gatekeeper does not: where
                    // a builtin fails, OPA's non-strict answer is not known.
                    if e.contains("eval_builtin_error") || e.contains("eval_type_error") {
                        Answer::Unknown(e.to_owned())
                    } else {
                        Answer::Error(e.to_owned())
                    }
                } else if r["undefined"] == true {
                    Answer::Violations(BTreeSet::new())
                } else {
                    Answer::of(r["value"].clone())
                }
            }));
        }
        out
    }
}

impl Drop for Oracle {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Rego v0 as OPA 1.x reads it

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The word (identifier) ending just before `end`, skipping spaces before it.
fn word_before(m: &[u8], end: usize) -> &[u8] {
    let mut e = end;
    while e > 0 && m[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    let mut s = e;
    while s > 0 && ident_byte(m[s - 1]) {
        s -= 1;
    }
    &m[s..e]
}

fn byte_before(m: &[u8], end: usize) -> Option<u8> {
    m[..end]
        .iter()
        .rev()
        .copied()
        .find(|b| !b.is_ascii_whitespace())
}

/// Converts a Rego v0 module to v1, for these constructs: `if` before every rule body (rules,
/// functions, `else`, `default`-less partial rules), `contains` in partial set heads (`p[x] {`
/// and `p[x]` facts), and the builtins v1 removed that have a same-meaning replacement
/// (`re_match` → `regex.match`, `net.cidr_overlap` → `net.cidr_contains`). Lines are kept, so
/// OPA's line numbers are the template's. Anything else v1 refuses makes OPA refuse the module,
/// and the test says so.
pub fn to_v1(src: &str) -> String {
    let m = palisade::policy::mask_rego_source(src);
    // Edits as (position, bytes removed, text inserted), applied from the end.
    let mut edits: Vec<(usize, usize, &str)> = Vec::new();
    let mut depth = 0usize;
    // Kinds of the `{` open at depth 0 → 1, and of the last one closed: body or value.
    let mut open_is_body = false;
    let mut last_closed_was_body = false;
    let mut i = 0;
    while i < m.len() {
        match m[i] {
            b'{' if depth == 0 => {
                let prev = byte_before(&m, i);
                let word = word_before(&m, i);
                let value = matches!(prev, Some(b'=' | b',' | b':' | b'|'))
                    || word == b"contains"
                    || word == b"if"
                    || (prev == Some(b'}') && last_closed_was_body);
                // `p { a } { b }`: a second body needs no `if`; `x = {…} { … }`: a body after
                // a value does.
                let continuation = prev == Some(b'}') && last_closed_was_body;
                open_is_body = !value || continuation;
                if !value && word != b"if" {
                    if word == b"else" {
                        edits.push((i, 0, "= true if "));
                    } else {
                        edits.push((i, 0, "if "));
                    }
                }
                depth += 1;
            }
            b'}' if depth == 1 => {
                depth = 0;
                last_closed_was_body = open_is_body;
            }
            b'{' | b'[' | b'(' => depth += 1,
            b'}' | b']' | b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        // A partial set head: `name[` at the start of a line, its `]` followed by a body or
        // by the end of the line (a fact), not by `=`.
        if m[i] == b'[' && depth == 1 && i > 0 && ident_byte(m[i - 1]) {
            let mut s = i;
            while s > 0 && (ident_byte(m[s - 1]) || m[s - 1] == b'.') {
                s -= 1;
            }
            let at_line_start = m[..s]
                .iter()
                .rev()
                .take_while(|&&b| b != b'\n')
                .all(|b| *b == b' ' || *b == b'\t');
            if at_line_start
                && !matches!(&m[s..i], b"default" | b"import" | b"package")
                && let Some(close) =
                    palisade::policy::closing_rego_bracket(&m, i).filter(|&c| m[c] == b']')
            {
                let after = m[close + 1..]
                    .iter()
                    .copied()
                    .find(|b| *b != b' ' && *b != b'\t');
                if matches!(after, None | Some(b'{' | b'\n' | b'#')) {
                    edits.push((i, 1, " contains "));
                    edits.push((close, 1, ""));
                }
            }
        }
        i += 1;
    }
    for name in ["re_match", "net.cidr_overlap"] {
        let mut from = 0;
        while let Some(at) = find(&m[from..], name.as_bytes()).map(|p| p + from) {
            let end = at + name.len();
            if (at == 0 || !(ident_byte(m[at - 1]) || m[at - 1] == b'.'))
                && m.get(end) == Some(&b'(')
            {
                let new = if name == "re_match" {
                    "regex.match"
                } else {
                    "net.cidr_contains"
                };
                edits.push((at, name.len(), new));
            }
            from = end;
        }
    }
    edits.sort_by_key(|e| std::cmp::Reverse(e.0));
    let mut out = src.to_owned();
    for (at, removed, inserted) in edits {
        out.replace_range(at..at + removed, inserted);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The JSON pointers of every node under `v`, `at` included.
pub fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                pointers(
                    c,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                pointers(c, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

pub fn remove(root: &mut Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let key = last.replace("~1", "/").replace("~0", "~");
    match root.pointer_mut(parent) {
        Some(Value::Object(o)) => {
            o.remove(&key);
        }
        Some(Value::Array(a)) => {
            if let Ok(i) = key.parse::<usize>()
                && i < a.len()
            {
                a.remove(i);
            }
        }
        _ => {}
    }
}
