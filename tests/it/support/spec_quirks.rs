//! The one list of places where a vendor's API description (tests/vendor-specs/) and the
//! vendor's real behaviour disagree, each with its source. The validator (spec.rs) applies
//! exactly these and nothing else; docs/GUARANTEES.md repeats the list for readers.

use serde_json::Value;

pub enum Quirk {
    /// An operation flightplan calls that the trimmed description lacks.
    ExtraOperation {
        vendor: &'static str,
        path: &'static str,
        method: &'static str,
        /// The operation object, as the vendor's full description has it (trimmed to what
        /// is checked).
        operation: &'static str,
        source: &'static str,
    },
    /// Statuses the vendor answers that an operation does not document (and it has no
    /// `default`): their body is checked against `schema`.
    UndocumentedStatus {
        vendor: &'static str,
        /// Operation ids, or `*` for all.
        operations: &'static [&'static str],
        statuses: &'static [u16],
        schema: &'static str,
        source: &'static str,
    },
    /// The answer wraps the documented schema as `{"status": …, "data": …}`.
    Envelope {
        vendor: &'static str,
        operations: &'static [&'static str],
        source: &'static str,
    },
    /// A query parameter the vendor's own client sends that the description omits.
    ExtraQueryParam {
        vendor: &'static str,
        operation: &'static str,
        name: &'static str,
        source: &'static str,
    },
    /// A disagreement flightplan handles in its requests; listed so it is written down
    /// once (nothing is tolerated by the validator for it).
    Noted {
        vendor: &'static str,
        what: &'static str,
        source: &'static str,
    },
}

pub const QUIRKS: &[Quirk] = &[
    Quirk::Envelope {
        vendor: "fly",
        operations: &["Machines_create_lease", "Machines_show_lease"],
        source: "fly-go flaps/flaps_machines.go (AcquireLease, GetLease read a `MachineLease` \
                 {status, data}); Fly docs machines-resource (lease examples)",
    },
    Quirk::ExtraQueryParam {
        vendor: "fly",
        operation: "Machines_create_lease",
        name: "ttl",
        source: "fly-go flaps/flaps_machines.go AcquireLease/RefreshLease send `?ttl=N` (and no \
                 body); flightplan sends it beside the body {ttl, description} the description \
                 requires, so either reading gets the TTL",
    },
    Quirk::UndocumentedStatus {
        vendor: "fly",
        operations: &["Machines_create_lease"],
        statuses: &[200],
        schema: "#/components/schemas/Lease",
        source: "fly-go RefreshLease: a lease refreshed with its nonce is answered 200 (the \
                 description documents only 201 for a new one)",
    },
    Quirk::UndocumentedStatus {
        vendor: "fly",
        operations: &["*"],
        statuses: &[
            400, 401, 403, 404, 408, 409, 412, 422, 429, 500, 502, 503, 504,
        ],
        schema: "#/components/schemas/ErrorResponse",
        source: "vendor-specs README: several operations document no 401/409/429 and no \
                 `default`; Fly docs working-with-machines-api lists 400, 401, 404, 408 (wait \
                 timeout), 422, 5xx with the ErrorResponse body; fly-go flaps_error.go",
    },
    Quirk::UndocumentedStatus {
        vendor: "github",
        operations: &["*"],
        statuses: &[401, 403, 404, 409, 410, 422, 429, 500, 502, 503, 504],
        schema: "#/components/schemas/basic-error",
        source: "GitHub REST docs, 'Troubleshooting' and 'Rate limits for the REST API': every \
                 endpoint may answer 401/403/429/5xx with {message, documentation_url}",
    },
    Quirk::ExtraOperation {
        vendor: "github",
        path: "/repos/{owner}/{repo}/pulls/{pull_number}/files",
        method: "get",
        operation: r##"{
            "operationId": "pulls/list-files",
            "parameters": [
                {"name": "owner", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "repo", "in": "path", "required": true, "schema": {"type": "string"}},
                {"name": "pull_number", "in": "path", "required": true, "schema": {"type": "integer"}},
                {"name": "per_page", "in": "query", "schema": {"type": "integer", "default": 30}},
                {"name": "page", "in": "query", "schema": {"type": "integer", "default": 1}}
            ],
            "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["additions", "blob_url", "changes", "contents_url", "deletions",
                                 "filename", "raw_url", "sha", "status"],
                    "properties": {
                        "sha": {"type": "string"},
                        "filename": {"type": "string"},
                        "status": {"type": "string", "enum": ["added", "removed", "modified",
                                   "renamed", "copied", "changed", "unchanged"]},
                        "additions": {"type": "integer"},
                        "deletions": {"type": "integer"},
                        "changes": {"type": "integer"},
                        "blob_url": {"type": "string"},
                        "raw_url": {"type": "string"},
                        "contents_url": {"type": "string"},
                        "patch": {"type": "string"},
                        "previous_filename": {"type": "string"}
                    }
                }
            }}}}}
        }"##,
        source: "@octokit/openapi 23.0.2 generated/api.github.com.json, operation \
                 pulls/list-files and #/components/schemas/diff-entry (rehearse reads a \
                 fork PR's files; the trimmed github.json lacks it)",
    },
    Quirk::Noted {
        vendor: "fly",
        what: "POST …/lease: the description requires the JSON body {ttl, description}; fly-go \
               sends ?ttl=N and no body. flightplan sends both.",
        source: "vendor-specs README; fly-go flaps/flaps_machines.go AcquireLease",
    },
    Quirk::Noted {
        vendor: "fly",
        what: "update, start, stop and wait do not declare the fly-machine-lease-nonce header \
               fly-go sends (and Fly requires on a leased machine); an undeclared header is \
               not a violation, so nothing is tolerated for it.",
        source: "vendor-specs README; fly-go flaps (NonceHeader); Fly docs machines-resource",
    },
    Quirk::Noted {
        vendor: "fly",
        what: "GET …/wait: `instance_id` is deprecated for `version`; flightplan sends both \
               (the docs name instance_id, fly-go sends version).",
        source: "fly.json Machines_wait parameters; fly-go flaps_machines_wait.go",
    },
    Quirk::Noted {
        vendor: "neon",
        what: "the request id also comes back in a response header (x-neon-ret-request-id); \
               the description documents only GeneralError.request_id and X-Request-ID.",
        source: "issue 15 (names x-neon-ret-request-id beside the body's request_id); not in \
                 neon.json, so flightplan reads the body first and the header only as a fallback",
    },
];

/// A query parameter a quirk adds to an operation.
pub fn extra_query(vendor: &str, op: &str, name: &str) -> bool {
    QUIRKS.iter().any(|q| {
        matches!(q, Quirk::ExtraQueryParam { vendor: v, operation, name: n, .. }
            if *v == vendor && *operation == op && *n == name)
    })
}

/// The schema for a status an operation does not document, if a quirk covers it.
pub fn undocumented_status(vendor: &str, op: &str, status: u16) -> Option<&'static str> {
    QUIRKS.iter().find_map(|q| match q {
        Quirk::UndocumentedStatus {
            vendor: v,
            operations,
            statuses,
            schema,
            ..
        } if *v == vendor
            && statuses.contains(&status)
            && operations.iter().any(|o| *o == "*" || *o == op) =>
        {
            Some(*schema)
        }
        _ => None,
    })
}

/// The documented part of an answer wrapped in an envelope.
pub fn unwrap_envelope(vendor: &str, op: &str, body: Value) -> Value {
    let wrapped = QUIRKS.iter().any(|q| {
        matches!(q, Quirk::Envelope { vendor: v, operations, .. }
            if *v == vendor && operations.contains(&op))
    });
    match body {
        Value::Object(mut m) if wrapped && m.contains_key("data") && m.contains_key("status") => {
            m.remove("data").unwrap_or(Value::Null)
        }
        other => other,
    }
}
