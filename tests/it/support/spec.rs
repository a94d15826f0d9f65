//! Conformance to the vendors' own API descriptions (tests/vendor-specs/, copies of the
//! OpenAPI 3 files in the project's shared vendor-specs): every request a fake receives is
//! checked against its operation (known operation, path and query parameters, required
//! headers and security, the JSON body against the request schema) and every answer the
//! fake gives against the response schema of its status. Violations are kept per fake and
//! fail the test when the test's last handle on the fake is dropped ([`Conformance`]), so
//! no test can forget to look. What a description gets wrong is in `spec_quirks.rs`, the
//! one list of tolerated disagreements, each with its source.
//!
//! The validator is a focused OpenAPI 3.0 subset, written here because no JSON Schema
//! crate reads OpenAPI's dialect as is (`nullable`, `$ref` siblings ignored) nor reports a
//! field no schema of an `allOf` declares, which is the only way to catch a misspelled
//! field (no schema of these descriptions forbids unknown ones): `$ref`, `nullable`,
//! `allOf`/`oneOf`/`anyOf`, `required`, `type`, `enum`, `properties` (unknown names are
//! violations unless `additionalProperties` allows them), `additionalProperties`, `items`,
//! `pattern`, `minLength`/`maxLength`, `minimum`/`maximum`, `maxProperties`, and the
//! formats `date-time` and `uuid`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Value, json};

use super::spec_quirks::{self, Quirk};

/// One vendor's description, parsed.
pub struct Spec {
    pub vendor: &'static str,
    doc: Value,
    ops: Vec<Op>,
}

struct Op {
    method: String,
    /// `["v1", "apps", "{app_name}", …]`.
    template: Vec<String>,
    id: String,
    /// Path-level and operation-level parameters, `$ref`s resolved.
    params: Vec<Value>,
    op: Value,
}

/// The operation a request matched, for checking its answer.
#[derive(Debug, Clone)]
pub struct Matched {
    pub id: String,
    index: usize,
}

fn load(vendor: &'static str, file: &str) -> Spec {
    let path = format!("{}/tests/vendor-specs/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut doc: Value = serde_json::from_str(&text).unwrap();
    // Operations a trimmed description lacks, with their source (spec_quirks.rs).
    for q in spec_quirks::QUIRKS {
        if let Quirk::ExtraOperation {
            vendor: v,
            path,
            method,
            operation,
            ..
        } = q
            && *v == vendor
        {
            let op: Value = serde_json::from_str(operation).unwrap();
            doc["paths"][*path][*method] = op;
        }
    }
    let mut ops = Vec::new();
    let paths = doc["paths"].as_object().unwrap().clone();
    for (path, item) in &paths {
        let shared: Vec<Value> = item
            .get("parameters")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (method, op) in item.as_object().unwrap() {
            if method == "parameters" {
                continue;
            }
            let mut params: Vec<Value> = Vec::new();
            let own: Vec<Value> = op
                .get("parameters")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for p in shared.iter().chain(own.iter()) {
                let p = resolve(&doc, p).clone();
                params.retain(|q: &Value| !(q["name"] == p["name"] && q["in"] == p["in"]));
                params.push(p);
            }
            ops.push(Op {
                method: method.to_uppercase(),
                template: path
                    .trim_matches('/')
                    .split('/')
                    .map(str::to_string)
                    .collect(),
                id: op["operationId"].as_str().unwrap_or("?").to_string(),
                params,
                op: op.clone(),
            });
        }
    }
    Spec { vendor, doc, ops }
}

impl Spec {
    pub fn neon() -> &'static Spec {
        static S: OnceLock<Spec> = OnceLock::new();
        S.get_or_init(|| load("neon", "neon.json"))
    }

    pub fn fly() -> &'static Spec {
        static S: OnceLock<Spec> = OnceLock::new();
        S.get_or_init(|| load("fly", "fly.json"))
    }

    pub fn github() -> &'static Spec {
        static S: OnceLock<Spec> = OnceLock::new();
        S.get_or_init(|| load("github", "github.json"))
    }

    /// Checks one request; `path` is relative to the server URL of the description (e.g.
    /// `/projects/p/branches` for Neon, whose server is `…/api/v2`).
    pub fn check_request(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        header: &dyn Fn(&str) -> Option<String>,
        body: &[u8],
    ) -> (Option<Matched>, Vec<String>) {
        let mut v = Vec::new();
        let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
        let found = self.ops.iter().enumerate().find(|(_, op)| {
            op.method == method
                && op.template.len() == segs.len()
                && op
                    .template
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| t.starts_with('{') || t == s)
        });
        let Some((index, op)) = found else {
            v.push(format!(
                "{method} {path}: no such operation in {}.json",
                self.vendor
            ));
            return (None, v);
        };
        let at = format!("{method} {path} ({})", op.id);
        // Path parameters.
        for (t, s) in op.template.iter().zip(&segs) {
            if let Some(name) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
                if let Some(p) = op
                    .params
                    .iter()
                    .find(|p| p["name"] == name && p["in"] == "path")
                {
                    self.check_param(
                        &p["schema"],
                        s,
                        &format!("{at}: path parameter {name}"),
                        &mut v,
                    );
                } else {
                    v.push(format!("{at}: path parameter {name} is not declared"));
                }
            }
        }
        // Query parameters: each one declared (a `metadata.{key}` template matches any key).
        for (k, val) in query {
            let p = op.params.iter().find(|p| {
                p["in"] == "query"
                    && p["name"].as_str().is_some_and(|n| match n.split_once('{') {
                        Some((prefix, _)) => k.starts_with(prefix) && k.len() > prefix.len(),
                        None => n == k,
                    })
            });
            match p {
                Some(p) => self.check_param(&p["schema"], val, &format!("{at}: query {k}"), &mut v),
                None if spec_quirks::extra_query(self.vendor, &op.id, k) => {}
                None => v.push(format!(
                    "{at}: query parameter `{k}` is not in the description"
                )),
            }
        }
        for p in &op.params {
            let name = p["name"].as_str().unwrap_or("");
            let required = p["required"].as_bool() == Some(true);
            match p["in"].as_str() {
                Some("query") if required && !query.iter().any(|(k, _)| k == name) => {
                    v.push(format!("{at}: required query parameter `{name}` missing"));
                }
                Some("header") if required && header(name).is_none() => {
                    v.push(format!("{at}: required header `{name}` missing"));
                }
                Some("header") => {
                    if let Some(h) = header(name) {
                        self.check_param(&p["schema"], &h, &format!("{at}: header {name}"), &mut v);
                    }
                }
                _ => {}
            }
        }
        // Security: an `http` bearer scheme wants `Authorization: Bearer …`.
        let security = op.op.get("security").or_else(|| self.doc.get("security"));
        if let Some(reqs) = security.and_then(Value::as_array)
            && !reqs.is_empty()
        {
            let schemes = &self.doc["components"]["securitySchemes"];
            let met = reqs.iter().any(|r| {
                r.as_object().is_some_and(|r| {
                    r.keys().all(|name| {
                        let s = &schemes[name];
                        match (s["type"].as_str(), s["scheme"].as_str()) {
                            (Some("http"), Some("bearer")) => header("authorization")
                                .is_some_and(|a| a.starts_with("Bearer ") && a.len() > 7),
                            (Some("apiKey"), _) if s["in"] == "header" => {
                                header(s["name"].as_str().unwrap_or("")).is_some()
                            }
                            (Some("apiKey"), _) if s["in"] == "cookie" => header("cookie")
                                .is_some_and(|c| c.contains(s["name"].as_str().unwrap_or("?"))),
                            _ => false,
                        }
                    })
                })
            });
            if !met {
                v.push(format!(
                    "{at}: no security requirement of the description is met"
                ));
            }
        }
        // The body.
        let rb = op.op.get("requestBody").map(|b| resolve(&self.doc, b));
        let empty = body.iter().all(u8::is_ascii_whitespace);
        match rb {
            None if !empty => v.push(format!("{at}: a body was sent, the operation takes none")),
            None => {}
            Some(rb) => {
                if empty {
                    if rb["required"].as_bool() == Some(true) {
                        v.push(format!("{at}: the required request body is missing"));
                    }
                } else {
                    let ct = header("content-type").unwrap_or_default();
                    if !ct.starts_with("application/json") {
                        v.push(format!("{at}: body sent as `{ct}`, not application/json"));
                    }
                    match serde_json::from_slice::<Value>(body) {
                        Ok(json) => {
                            let schema = &rb["content"]["application/json"]["schema"];
                            self.validate(schema, &json, &format!("{at} request"), &mut v);
                        }
                        Err(e) => v.push(format!("{at}: the body is not JSON: {e}")),
                    }
                }
            }
        }
        (
            Some(Matched {
                id: op.id.clone(),
                index,
            }),
            v,
        )
    }

    /// Checks the answer a fake gives to a matched request.
    pub fn check_response(&self, m: &Matched, status: u16, body: &[u8]) -> Vec<String> {
        let mut v = Vec::new();
        let op = &self.ops[m.index];
        let at = format!("{} answer HTTP {status}", op.id);
        let responses = &op.op["responses"];
        let documented = responses
            .get(status.to_string())
            .or_else(|| responses.get(format!("{}XX", status / 100)))
            .or_else(|| responses.get("default"));
        let mut schema = documented
            .map(|r| resolve(&self.doc, r)["content"]["application/json"]["schema"].clone());
        if documented.is_none() {
            match spec_quirks::undocumented_status(self.vendor, &op.id, status) {
                Some(s) => schema = Some(json!({ "$ref": s })),
                None => {
                    v.push(format!("{at}: status not in the description"));
                    return v;
                }
            }
        }
        let Some(schema) = schema.filter(|s| !s.is_null()) else {
            // Documented without content: nothing to check the body against.
            return v;
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            v.push(format!("{at}: empty body, the description has a schema"));
            return v;
        }
        let json: Value = match serde_json::from_slice(body) {
            Ok(j) => j,
            Err(e) => {
                v.push(format!("{at}: the body is not JSON: {e}"));
                return v;
            }
        };
        let json = spec_quirks::unwrap_envelope(self.vendor, &op.id, json);
        self.validate(&schema, &json, &at, &mut v);
        v
    }

    /// A parameter's text value against its schema (`integer`, `boolean`, `enum`, …).
    fn check_param(&self, schema: &Value, raw: &str, at: &str, v: &mut Vec<String>) {
        let schema = resolve(&self.doc, schema);
        let value = match schema["type"].as_str() {
            Some("integer") => match raw.parse::<i64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    v.push(format!("{at}: `{raw}` is not an integer"));
                    return;
                }
            },
            Some("boolean") => match raw {
                "true" => json!(true),
                "false" => json!(false),
                _ => {
                    v.push(format!("{at}: `{raw}` is not true/false"));
                    return;
                }
            },
            Some("number") => match raw.parse::<f64>() {
                Ok(n) => json!(n),
                Err(_) => {
                    v.push(format!("{at}: `{raw}` is not a number"));
                    return;
                }
            },
            _ => json!(raw),
        };
        self.validate(schema, &value, at, v);
    }

    /// Validates `value` against `schema`; each violation names its JSON path.
    pub fn validate(&self, schema: &Value, value: &Value, at: &str, v: &mut Vec<String>) {
        self.walk(schema, value, at, "$", v);
        self.unknown_fields(schema, value, at, "$", v);
    }

    fn walk(&self, schema: &Value, value: &Value, at: &str, path: &str, v: &mut Vec<String>) {
        let schema = resolve(&self.doc, schema);
        let Some(obj) = schema.as_object() else {
            return;
        };
        if value.is_null() {
            let nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
            if !nullable && (obj.contains_key("type") || obj.contains_key("properties")) {
                v.push(format!("{at}: {path} is null, not nullable"));
            }
            if !nullable {
                for sub in obj
                    .get("allOf")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    self.walk(sub, value, at, path, v);
                }
            }
            return;
        }
        if let Some(all) = obj.get("allOf").and_then(Value::as_array) {
            for sub in all {
                self.walk(sub, value, at, path, v);
            }
        }
        for (key, exactly_one) in [("oneOf", true), ("anyOf", false)] {
            if let Some(alts) = obj.get(key).and_then(Value::as_array) {
                let fits = alts
                    .iter()
                    .filter(|s| {
                        let mut sub = Vec::new();
                        self.walk(s, value, at, path, &mut sub);
                        sub.is_empty()
                    })
                    .count();
                if fits == 0 || (exactly_one && fits > 1) {
                    v.push(format!(
                        "{at}: {path} matches {fits} of the {key} alternatives"
                    ));
                }
            }
        }
        if let Some(t) = obj.get("type").and_then(Value::as_str) {
            let ok = match t {
                "object" => value.is_object(),
                "array" => value.is_array(),
                "string" => value.is_string(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                _ => true,
            };
            if !ok {
                v.push(format!("{at}: {path} is {}, not {t}", kind(value)));
                return;
            }
        }
        if let Some(e) = obj.get("enum").and_then(Value::as_array)
            && !e.contains(value)
        {
            v.push(format!(
                "{at}: {path} = {value} is not one of {}",
                Value::Array(e.clone())
            ));
        }
        if let Some(s) = value.as_str() {
            let n = s.chars().count() as u64;
            if obj
                .get("maxLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n > m)
            {
                v.push(format!("{at}: {path} is longer than maxLength"));
            }
            if obj
                .get("minLength")
                .and_then(Value::as_u64)
                .is_some_and(|m| n < m)
            {
                v.push(format!("{at}: {path} is shorter than minLength"));
            }
            if let Some(p) = obj.get("pattern").and_then(Value::as_str) {
                match regex::Regex::new(p) {
                    Ok(re) if !re.is_match(s) => {
                        v.push(format!("{at}: {path} = {s:?} does not match /{p}/"));
                    }
                    Ok(_) => {}
                    Err(e) => v.push(format!("{at}: pattern /{p}/ cannot be compiled: {e}")),
                }
            }
            match obj.get("format").and_then(Value::as_str) {
                Some("date-time") if !is_date_time(s) => {
                    v.push(format!("{at}: {path} = {s:?} is not an RFC 3339 date-time"));
                }
                Some("uuid") if !is_uuid(s) => {
                    v.push(format!("{at}: {path} = {s:?} is not a UUID"));
                }
                _ => {}
            }
        }
        if let Some(n) = value.as_f64() {
            if obj
                .get("minimum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n < m)
            {
                v.push(format!("{at}: {path} = {n} is below the minimum"));
            }
            if obj
                .get("maximum")
                .and_then(Value::as_f64)
                .is_some_and(|m| n > m)
            {
                v.push(format!("{at}: {path} = {n} is above the maximum"));
            }
        }
        if let Some(map) = value.as_object() {
            if let Some(req) = obj.get("required").and_then(Value::as_array) {
                for r in req.iter().filter_map(Value::as_str) {
                    if !map.contains_key(r) {
                        v.push(format!("{at}: {path}.{r} is required and missing"));
                    }
                }
            }
            if obj
                .get("maxProperties")
                .and_then(Value::as_u64)
                .is_some_and(|m| map.len() as u64 > m)
            {
                v.push(format!("{at}: {path} has more than maxProperties fields"));
            }
            let props = obj.get("properties").and_then(Value::as_object);
            for (k, child) in map {
                let sub = format!("{path}.{k}");
                match props.and_then(|p| p.get(k)) {
                    Some(s) => self.walk(s, child, at, &sub, v),
                    None => {
                        if let Some(extra) =
                            obj.get("additionalProperties").filter(|a| a.is_object())
                        {
                            self.walk(extra, child, at, &sub, v);
                        }
                    }
                }
            }
        }
        if let (Some(items), Some(list)) = (obj.get("items"), value.as_array()) {
            for (i, item) in list.iter().enumerate() {
                self.walk(items, item, at, &format!("{path}[{i}]"), v);
            }
        }
    }

    /// Field names no schema declares, looking through `allOf` (and the alternative that
    /// fits, for `oneOf`/`anyOf`): the descriptions forbid no unknown field, so this is the
    /// only way a misspelled one is caught.
    fn unknown_fields(
        &self,
        schema: &Value,
        value: &Value,
        at: &str,
        path: &str,
        v: &mut Vec<String>,
    ) {
        match value {
            Value::Object(map) => {
                let mut known: HashMap<String, Value> = HashMap::new();
                let mut open = false;
                self.declared(schema, value, &mut known, &mut open);
                if known.is_empty() && !self.is_object_schema(schema) {
                    return;
                }
                for (k, child) in map {
                    match known.get(k) {
                        Some(s) => self.unknown_fields(s, child, at, &format!("{path}.{k}"), v),
                        None if open => {}
                        None => v.push(format!(
                            "{at}: {path}.{k} is not a field of the description"
                        )),
                    }
                }
            }
            Value::Array(list) => {
                let schema = resolve(&self.doc, schema);
                if let Some(items) = schema.get("items") {
                    for (i, item) in list.iter().enumerate() {
                        self.unknown_fields(items, item, at, &format!("{path}[{i}]"), v);
                    }
                }
            }
            _ => {}
        }
    }

    fn is_object_schema(&self, schema: &Value) -> bool {
        let s = resolve(&self.doc, schema);
        s["type"] == "object" || s.get("properties").is_some()
    }

    /// Collects the properties a schema declares for `value`; `open` when any part allows
    /// other fields (`additionalProperties`, or no `properties` at all).
    fn declared(
        &self,
        schema: &Value,
        value: &Value,
        known: &mut HashMap<String, Value>,
        open: &mut bool,
    ) {
        let s = resolve(&self.doc, schema);
        let Some(obj) = s.as_object() else { return };
        if let Some(p) = obj.get("properties").and_then(Value::as_object) {
            for (k, sub) in p {
                known.insert(k.clone(), sub.clone());
            }
        }
        match obj.get("additionalProperties") {
            Some(Value::Bool(false)) | None => {}
            Some(extra) => {
                *open = true;
                if let Some(map) = value.as_object() {
                    for k in map.keys() {
                        known.entry(k.clone()).or_insert_with(|| extra.clone());
                    }
                }
            }
        }
        let composed = ["allOf", "oneOf", "anyOf"]
            .iter()
            .any(|k| obj.contains_key(*k));
        if obj.get("properties").is_none() && !composed && obj.get("additionalProperties").is_none()
        {
            *open = true;
        }
        for sub in obj
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.declared(sub, value, known, open);
        }
        for key in ["oneOf", "anyOf"] {
            for sub in obj.get(key).and_then(Value::as_array).into_iter().flatten() {
                let mut errs = Vec::new();
                self.walk(sub, value, "", "$", &mut errs);
                if errs.is_empty() {
                    self.declared(sub, value, known, open);
                }
            }
        }
    }
}

/// Follows `$ref`s (its siblings are ignored, as OpenAPI 3.0 says).
fn resolve<'a>(doc: &'a Value, mut schema: &'a Value) -> &'a Value {
    for _ in 0..32 {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                schema = doc
                    .pointer(r.trim_start_matches('#'))
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
            }
            None => return schema,
        }
    }
    panic!("a $ref cycle")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// RFC 3339 `date-time`: `2026-01-16T10:00:00Z`, fractions and offsets allowed.
fn is_date_time(s: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
            .unwrap()
    })
    .is_match(s)
}

fn is_uuid(s: &str) -> bool {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| {
        regex::Regex::new(
            r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$",
        )
        .unwrap()
    })
    .is_match(s)
}

/// A fake's conformance record: the fake's server checks every exchange into it; the
/// test's handles on the fake hold [`Conformance`], whose last drop fails the test on any
/// violation (also when the test never asked).
#[derive(Clone)]
pub struct Conformance {
    spec: &'static Spec,
    violations: Arc<Mutex<Vec<String>>>,
    _guard: Arc<Guard>,
}

struct Guard {
    vendor: &'static str,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let v = self.violations.lock().unwrap_or_else(|e| e.into_inner());
        if !v.is_empty() && !std::thread::panicking() {
            panic!(
                "the {} fake saw {} violation(s) of {}.json:\n  {}",
                self.vendor,
                v.len(),
                self.vendor,
                v.join("\n  ")
            );
        }
    }
}

/// The server side of a [`Conformance`]: what the fake's handler checks with.
#[derive(Clone)]
pub struct Checker {
    spec: &'static Spec,
    violations: Arc<Mutex<Vec<String>>>,
}

impl Conformance {
    pub fn new(spec: &'static Spec) -> (Conformance, Checker) {
        let violations = Arc::new(Mutex::new(Vec::new()));
        (
            Conformance {
                spec,
                violations: violations.clone(),
                _guard: Arc::new(Guard {
                    vendor: spec.vendor,
                    violations: violations.clone(),
                }),
            },
            Checker { spec, violations },
        )
    }

    /// The violations so far (tests of the validator itself read them).
    pub fn violations(&self) -> Vec<String> {
        self.violations.lock().unwrap().clone()
    }

    /// Forgets the violations so far: for a test that sends a deliberately bad request.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.violations.lock().unwrap())
    }

    pub fn spec(&self) -> &'static Spec {
        self.spec
    }
}

impl Checker {
    /// Checks one exchange: the request as received, the answer as about to be sent.
    #[allow(clippy::too_many_arguments)]
    pub fn exchange(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        status: u16,
        answer: &[u8],
    ) {
        let query: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let header = |k: &str| {
            headers
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let (matched, mut v) = self.spec.check_request(method, path, &query, &header, body);
        if let Some(m) = matched {
            v.extend(self.spec.check_response(&m, status, answer));
        }
        if !v.is_empty() {
            self.violations.lock().unwrap().extend(v);
        }
    }

    /// Runs the check on an axum response, giving the response back unchanged.
    pub async fn respond(
        &self,
        method: &str,
        path: &str,
        query: &str,
        headers: &axum::http::HeaderMap,
        body: &[u8],
        resp: axum::response::Response,
    ) -> axum::response::Response {
        let (parts, b) = resp.into_parts();
        let bytes = axum::body::to_bytes(b, usize::MAX)
            .await
            .unwrap_or_default();
        self.exchange(
            method,
            path,
            query,
            headers,
            body,
            parts.status.as_u16(),
            &bytes,
        );
        axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
    }
}
