//! JSON lines export and import, so a log can be verified offline
//! (`dkms audit verify --file log.jsonl`).
//!
//! The writer is hand-made so the text is the same whatever serde_json features the build
//! unifies (key order, escaping); the reader is serde_json, strict: unknown fields,
//! duplicate keys and non-canonical hashes or times are refused.

use crate::chain::{AuditEntry, parse_hash};
use crate::encoding::FORMAT_VERSION;
use crate::record::{AuditRecord, Decision, Details, Principal, PrincipalKind};
use crate::timestamp::{TimeError, Timestamp};
use crate::verify::{ChainError, Summary, Verifier, VerifyOptions};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::fmt;
use std::io::BufRead;

/// Why a line was refused.
#[derive(Debug, thiserror::Error)]
pub enum JsonLineError {
    #[error("not a valid audit entry line: {0}")]
    Json(#[from] serde_json::Error),
    #[error("audit format version {0} is not supported (this build reads version 1)")]
    UnsupportedVersion(u64),
    #[error("{field} is not 64 lowercase hex digits")]
    Hash { field: &'static str },
    #[error("time: {0}")]
    Time(#[from] TimeError),
    #[error("unknown principal kind {0:?}")]
    PrincipalKind(String),
    #[error("unknown decision {0:?}")]
    Decision(String),
}

/// Why a JSON lines file did not verify.
#[derive(Debug, thiserror::Error)]
pub enum JsonLinesError {
    #[error("reading line {line}: {source}")]
    Io {
        line: u64,
        #[source]
        source: std::io::Error,
    },
    #[error("line {line}: {source}")]
    Line {
        line: u64,
        #[source]
        source: JsonLineError,
    },
    #[error(transparent)]
    Chain(#[from] ChainError),
}

/// One entry as one line of JSON (no trailing newline). Field names are camelCase and
/// stable; hashes are lowercase hex; `resource` is `null` when absent.
pub fn to_json_line(entry: &AuditEntry) -> String {
    let r = &entry.record;
    let mut out = String::with_capacity(512);
    out.push_str("{\"version\":");
    out.push_str(&FORMAT_VERSION.to_string());
    out.push_str(",\"seq\":");
    out.push_str(&entry.seq.to_string());
    out.push_str(",\"prevHash\":\"");
    out.push_str(&hex::encode(entry.prev_hash));
    out.push_str("\",\"hash\":\"");
    out.push_str(&hex::encode(entry.hash));
    out.push_str("\",\"time\":\"");
    out.push_str(&r.time.to_string());
    out.push_str("\",\"requestId\":");
    push_json_str(&mut out, &r.request_id);
    out.push_str(",\"principal\":{\"kind\":");
    push_json_str(&mut out, r.principal.kind.as_str());
    out.push_str(",\"id\":");
    push_json_str(&mut out, &r.principal.id);
    out.push_str("},\"action\":");
    push_json_str(&mut out, &r.action);
    out.push_str(",\"resource\":");
    match &r.resource {
        Some(resource) => push_json_str(&mut out, resource),
        None => out.push_str("null"),
    }
    out.push_str(",\"decision\":");
    push_json_str(&mut out, r.decision.as_str());
    out.push_str(",\"policies\":[");
    for (i, policy) in r.policies.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, policy);
    }
    out.push_str("],\"outcome\":");
    push_json_str(&mut out, &r.outcome);
    out.push_str(",\"details\":{");
    for (i, (key, value)) in r.details.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_str(&mut out, key);
        out.push(':');
        push_json_str(&mut out, value);
    }
    out.push_str("}}");
    out
}

/// Escapes only what JSON requires (quote, backslash, control characters), so no raw
/// newline can split a line.
fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str(&format!("\\u{:04x}", u32::from(c)));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EntryLine {
    version: u64,
    seq: u64,
    prev_hash: String,
    hash: String,
    time: String,
    request_id: String,
    principal: PrincipalLine,
    action: String,
    resource: Option<String>,
    decision: String,
    policies: Vec<String>,
    outcome: String,
    #[serde(deserialize_with = "unique_keys")]
    details: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalLine {
    kind: String,
    id: String,
}

/// Parses one line. It does not check the hash: that is [`crate::verify`]'s job, which
/// also needs the neighbours. The secret-key guard is not applied either, so a log
/// written before a marker was added still reads.
pub fn from_json_line(line: &str) -> Result<AuditEntry, JsonLineError> {
    let l: EntryLine = serde_json::from_str(line)?;
    if l.version != u64::from(FORMAT_VERSION) {
        return Err(JsonLineError::UnsupportedVersion(l.version));
    }
    let kind = PrincipalKind::from_name(&l.principal.kind)
        .ok_or(JsonLineError::PrincipalKind(l.principal.kind))?;
    let decision = Decision::from_name(&l.decision).ok_or(JsonLineError::Decision(l.decision))?;
    Ok(AuditEntry {
        seq: l.seq,
        prev_hash: parse_hash(&l.prev_hash).ok_or(JsonLineError::Hash { field: "prevHash" })?,
        hash: parse_hash(&l.hash).ok_or(JsonLineError::Hash { field: "hash" })?,
        record: AuditRecord {
            time: Timestamp::parse_rfc3339(&l.time)?,
            request_id: l.request_id,
            principal: Principal {
                kind,
                id: l.principal.id,
            },
            action: l.action,
            resource: l.resource,
            decision,
            policies: l.policies,
            outcome: l.outcome,
            details: Details::from_stored(l.details),
        },
    })
}

/// Parses and verifies an exported file line by line, without holding it in memory.
/// Blank lines are skipped; everything else must be an entry.
pub fn verify_json_lines(
    reader: impl BufRead,
    options: &VerifyOptions,
) -> Result<Summary, JsonLinesError> {
    let mut verifier = Verifier::new(options);
    for (n, line) in (1u64..).zip(reader.lines()) {
        let line = line.map_err(|source| JsonLinesError::Io { line: n, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let entry =
            from_json_line(&line).map_err(|source| JsonLinesError::Line { line: n, source })?;
        verifier.push(&entry)?;
    }
    Ok(verifier.finish()?)
}

/// A JSON object would otherwise let the last of two equal keys win silently, and a
/// viewer might show the first.
fn unique_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    struct UniqueKeys;

    impl<'de> Visitor<'de> for UniqueKeys {
        type Value = BTreeMap<String, String>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an object of strings with distinct keys")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
            let mut map = BTreeMap::new();
            while let Some((key, value)) = access.next_entry::<String, String>()? {
                match map.entry(key) {
                    Entry::Vacant(slot) => {
                        slot.insert(value);
                    }
                    Entry::Occupied(slot) => {
                        return Err(de::Error::custom(format_args!(
                            "duplicate details key {:?}",
                            slot.key()
                        )));
                    }
                }
            }
            Ok(map)
        }
    }

    d.deserialize_map(UniqueKeys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::test_support::{arb_record, chain_of};
    use crate::verify::{Start, verify};
    use proptest::prelude::*;

    #[test]
    fn a_line_looks_like_this() {
        let e = chain_of(1).remove(0);
        let line = to_json_line(&e);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        let mut expected = [
            "version",
            "seq",
            "prevHash",
            "hash",
            "time",
            "requestId",
            "principal",
            "action",
            "resource",
            "decision",
            "policies",
            "outcome",
            "details",
        ];
        expected.sort_unstable();
        let mut keys_sorted = keys.clone();
        keys_sorted.sort();
        assert_eq!(keys_sorted, expected);
        assert!(line.starts_with("{\"version\":1,\"seq\":1,\"prevHash\":\"0000"));
        assert_eq!(value["hash"], hex::encode(e.hash));
        assert_eq!(value["principal"]["kind"], "user");
        assert!(!line.contains('\n'));
    }

    #[test]
    fn entries_round_trip() {
        for e in chain_of(50) {
            let line = to_json_line(&e);
            let back = from_json_line(&line).unwrap();
            assert_eq!(back, e);
            assert_eq!(to_json_line(&back), line);
        }
    }

    #[test]
    fn awkward_text_round_trips() {
        let mut chain = Chain::new();
        let mut r = crate::test_support::record(1);
        r.outcome = "quote \" backslash \\ nl \n cr \r tab \t nul \0 esc \x1b del \x7f".into();
        r.action = "ünïcødé ✓ 🔑 \u{2028}".into();
        r.resource = None;
        r.policies = vec![];
        let e = chain.append(r).unwrap();
        let line = to_json_line(&e);
        assert!(!line.contains('\n') && !line.contains('\r'));
        assert!(line.contains("\\u0000") && line.contains("\\u001b"));
        assert!(line.contains("\"resource\":null") && line.contains("\"policies\":[]"));
        assert_eq!(from_json_line(&line).unwrap(), e);
    }

    #[test]
    fn bad_lines_are_refused() {
        let e = chain_of(1).remove(0);
        let line = to_json_line(&e);
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        let with = |path: &[&str], v: serde_json::Value| {
            let mut changed = value.clone();
            let mut at = &mut changed;
            for p in path {
                at = &mut at[*p];
            }
            *at = v;
            changed.to_string()
        };
        let upper = hex::encode_upper(e.hash);
        let cases = [
            (with(&["version"], 2.into()), "version 2"),
            (with(&["hash"], upper.into()), "hash is not"),
            (with(&["prevHash"], "00".into()), "prevHash is not"),
            (with(&["time"], "2024-01-01T00:00:00Z".into()), "time:"),
            (
                with(&["principal", "kind"], "admin".into()),
                "principal kind",
            ),
            (with(&["decision"], "Allow".into()), "decision"),
            (with(&["extra"], 1.into()), "unknown field"),
            (
                with(&["principal", "role"], "admin".into()),
                "unknown field",
            ),
            (with(&["seq"], (-1).into()), "invalid value"),
            ("{}".to_owned(), "missing field"),
            (format!("{line} x"), "trailing"),
            (
                line.replace(
                    "\"details\":{",
                    "\"details\":{\"digest\":\"1\",\"digest\":\"2\",",
                ),
                "duplicate details key",
            ),
            (
                line.replace("\"seq\":1", "\"seq\":1,\"seq\":2"),
                "duplicate field",
            ),
        ];
        for (bad, why) in cases {
            let err = from_json_line(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}\n=> {err}");
        }
    }

    #[test]
    fn import_does_not_apply_the_secret_guard() {
        let e = chain_of(1).remove(0);
        let line = to_json_line(&e).replace("\"details\":{", "\"details\":{\"seedId\":\"1\",");
        let back = from_json_line(&line).unwrap();
        assert_eq!(back.record.details.get("seedId"), Some("1"));
    }

    #[test]
    fn files_verify_and_errors_name_the_line() {
        let entries = chain_of(20);
        let file: String = entries
            .iter()
            .map(|e| to_json_line(e) + "\n")
            .collect::<String>()
            + "\n";
        let summary = verify_json_lines(file.as_bytes(), &VerifyOptions::default()).unwrap();
        assert_eq!(summary.entries, 20);
        assert_eq!(summary.last, Some(entries[19].anchor()));

        let crlf = file.replace('\n', "\r\n");
        assert!(verify_json_lines(crlf.as_bytes(), &VerifyOptions::default()).is_ok());

        let mut lines: Vec<_> = file.lines().map(str::to_owned).collect();
        lines[6] = lines[6].replace("\"outcome\":\"", "\"outcome\":\"x");
        let edited = lines.join("\n");
        let err = verify_json_lines(edited.as_bytes(), &VerifyOptions::default()).unwrap_err();
        assert!(matches!(
            err,
            JsonLinesError::Chain(ChainError::Altered { seq: 7 })
        ));

        lines[3] = "{not json".to_owned();
        let broken = lines.join("\n");
        let err = verify_json_lines(broken.as_bytes(), &VerifyOptions::default()).unwrap_err();
        assert!(matches!(err, JsonLinesError::Line { line: 4, .. }), "{err}");
        assert!(err.to_string().starts_with("line 4: "));

        let tail_cut: String = file.lines().take(15).map(|l| format!("{l}\n")).collect();
        let options = VerifyOptions {
            start: Start::Genesis,
            checkpoints: vec![entries[19].anchor()],
        };
        let err = verify_json_lines(tail_cut.as_bytes(), &options).unwrap_err();
        assert!(matches!(
            err,
            JsonLinesError::Chain(ChainError::TruncatedTail {
                checkpoint: 20,
                ends_at: Some(15)
            })
        ));
    }

    proptest! {
        #[test]
        fn random_entries_round_trip(
            records in prop::collection::vec(arb_record(), 1..6),
        ) {
            let mut chain = Chain::new();
            for r in records {
                let e = chain.append(r).unwrap();
                let line = to_json_line(&e);
                prop_assert!(!line.contains('\n'));
                prop_assert_eq!(from_json_line(&line).unwrap(), e);
            }
        }

        /// The hand-made escaper against serde_json's reader, on any Unicode text.
        #[test]
        fn any_text_round_trips(text in any::<String>(), key in "\\PC{1,8}") {
            let mut r = crate::test_support::record(1);
            r.request_id = text.clone();
            r.principal.id = text.clone();
            r.action = text.clone();
            r.resource = Some(text.clone());
            r.policies = vec![text.clone(), String::new()];
            r.outcome = text.clone();
            let mut map = BTreeMap::new();
            map.insert(key, text);
            r.details = Details::from_stored(map);
            let e = Chain::new().append(r).unwrap();
            let line = to_json_line(&e);
            prop_assert!(!line.contains('\n') && !line.contains('\r'));
            prop_assert_eq!(from_json_line(&line).unwrap(), e);
        }

        /// The exported text is the thing an auditor holds: any one changed byte either
        /// makes a line unreadable, leaves the entry identical, or fails verification.
        #[test]
        fn any_single_byte_change_of_an_export_is_caught(
            records in prop::collection::vec(arb_record(), 1..5),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut chain = Chain::new();
            let entries: Vec<_> = records.into_iter().map(|r| chain.append(r).unwrap()).collect();
            let text: String = entries.iter().map(|e| to_json_line(e) + "\n").collect();
            let mut bytes = text.into_bytes();
            let i = at.index(bytes.len());
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            let Ok(changed) = String::from_utf8(bytes) else {
                return Ok(()); // not UTF-8: refused by any reader
            };
            let parsed: Result<Vec<_>, _> = changed
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(from_json_line)
                .collect();
            let Ok(parsed) = parsed else {
                return Ok(());
            };
            if parsed != entries {
                prop_assert!(verify(parsed).is_err());
            }
        }
    }
}
