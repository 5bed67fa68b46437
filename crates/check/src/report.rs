//! The three output formats: an aligned table (coloured on a terminal),
//! JSON, and JUnit XML for CI.

use crate::{Outcome, Status};

/// `29 rules: 27 pass, 1 warn, 1 fail, 0 skip`.
pub fn summary(outcomes: &[Outcome]) -> String {
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    format!(
        "{} rules: {} pass, {} warn, {} fail, {} skip",
        outcomes.len(),
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail),
        count(Status::Skip)
    )
}

/// One line per rule (`status  id  evidence`), a `fix:` line under each
/// warning and failure, then the summary.
pub fn table(outcomes: &[Outcome], colour: bool) -> String {
    let width = outcomes.iter().map(|o| o.id.len()).max().unwrap_or(0);
    let mut out = String::new();
    for o in outcomes {
        let status = o.status.as_str();
        let shown = if colour {
            let code = match o.status {
                Status::Pass => "32",
                Status::Warn => "33",
                Status::Fail => "1;31",
                Status::Skip => "2",
            };
            format!("\x1b[{code}m{status}\x1b[0m")
        } else {
            status.to_string()
        };
        out.push_str(&format!("{shown}  {:<width$}  {}\n", o.id, o.evidence));
        if !o.fix.is_empty() {
            let fix = if colour {
                format!("\x1b[2mfix:\x1b[0m {}", o.fix)
            } else {
                format!("fix: {}", o.fix)
            };
            out.push_str(&format!("{:<4}  {:<width$}  {fix}\n", "", ""));
        }
    }
    out.push_str(&summary(outcomes));
    out.push('\n');
    out
}

/// A JSON array of `{id, group, status, evidence, fix}`.
pub fn json(outcomes: &[Outcome]) -> String {
    serde_json::to_string_pretty(outcomes).unwrap_or_else(|_| "[]".into()) + "\n"
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 has no way to write these.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one `<testcase>` per rule (classname = group). A failure has a
/// `<failure>`, a skipped rule `<skipped>`, and a warning passes with its
/// evidence in `<system-out>`.
pub fn junit(outcomes: &[Outcome], suite: &str) -> String {
    let count = |s: Status| outcomes.iter().filter(|o| o.status == s).count();
    let (tests, failures, skipped) = (outcomes.len(), count(Status::Fail), count(Status::Skip));
    let suite = xml_escape(suite);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(&format!(
        "<testsuites name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n"
    ));
    out.push_str(&format!(
        "  <testsuite name=\"{suite}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">\n"
    ));
    for o in outcomes {
        let (id, group, evidence) = (xml_escape(&o.id), xml_escape(&o.group), xml_escape(&o.evidence));
        out.push_str(&format!("    <testcase classname=\"{group}\" name=\"{id}\""));
        match o.status {
            Status::Pass => out.push_str(&format!(">\n      <system-out>{evidence}</system-out>\n    </testcase>\n")),
            Status::Warn => out.push_str(&format!(
                ">\n      <system-out>warn: {evidence}\nfix: {}</system-out>\n    </testcase>\n",
                xml_escape(&o.fix)
            )),
            Status::Skip => out.push_str(&format!(">\n      <skipped message=\"{evidence}\"/>\n    </testcase>\n")),
            Status::Fail => out.push_str(&format!(
                ">\n      <failure message=\"{evidence}\" type=\"fail\">{evidence}\nfix: {}</failure>\n    </testcase>\n",
                xml_escape(&o.fix)
            )),
        }
    }
    out.push_str("  </testsuite>\n</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(id: &str, status: Status, evidence: &str) -> Outcome {
        Outcome {
            id: id.into(),
            group: id.rsplit_once('.').map_or(id, |(g, _)| g).into(),
            status,
            evidence: evidence.into(),
            fix: if status == Status::Pass {
                String::new()
            } else {
                "do <this> & that".into()
            },
        }
    }

    #[test]
    fn junit_escapes_and_counts() {
        let outcomes = [
            outcome("login.lifetime", Status::Fail, "no \"exp\" <here>"),
            outcome("identifier.unique", Status::Skip, "one user"),
            outcome("transport.plain_http", Status::Warn, "http"),
            outcome("system.no_store", Status::Pass, "ok"),
        ];
        let xml = junit(&outcomes, "deskbridge check: acme");
        assert_eq!(xml.matches("<testcase ").count(), 4);
        assert_eq!(xml.matches("<failure ").count(), 1);
        assert_eq!(xml.matches("<skipped ").count(), 1);
        assert!(xml.contains("failures=\"1\"") && xml.contains("skipped=\"1\""));
        assert!(xml.contains("no &quot;exp&quot; &lt;here&gt;"));
        assert!(xml.contains("do &lt;this&gt; &amp; that"));
        assert!(!xml.contains("<here>"));
    }

    #[test]
    fn table_aligns_and_colours_only_when_asked() {
        let outcomes = [
            outcome("login.lifetime", Status::Fail, "x"),
            outcome("system.no_store", Status::Pass, "y"),
        ];
        let plain = table(&outcomes, false);
        assert!(!plain.contains('\x1b'));
        assert!(plain.contains("fail  login.lifetime   x\n"));
        assert!(plain.contains("pass  system.no_store  y\n"));
        assert!(plain.contains("fix: do <this> & that"));
        assert!(plain.ends_with("2 rules: 1 pass, 0 warn, 1 fail, 0 skip\n"));
        assert!(table(&outcomes, true).contains("\x1b[1;31mfail\x1b[0m"));
    }
}
